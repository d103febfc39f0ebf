#!/usr/bin/env python3
"""Measure every TCP server the same way and print Markdown tables.

Each figure is the median of --rounds rounds, and the rounds alternate: every
round runs each approach once, in the opposite order from the round before, so
a machine that slows down for a while weighs on all of them alike. On a shared
2-core machine one sample swings by 40%; medians of alternating rounds, and
ratios taken within the same run, are what can be compared. The load average
before and after the run is printed with the results, and a load above the
core count before it is a warning: other programs, competing for the cores.

Waiting (the servers' --delay, the work threads and event loops are made for):
  requests/s    --delay 0, --size-byte requests, --concurrency in flight
  logs on       the same without --quiet, as a ratio: what logging costs
  vs seed       the blog post's script for the approach (its sleep removed),
                in the same rounds, as a ratio: above 1 is faster than the seed;
                with --seed-dir only (the post's scripts are not ours to ship:
                seed_sync_nodelay.py, seed_threaded_nodelay.py,
                seed_forking_nodelay.py, seed_asyncio_nodelay.py)
  burst         --burst clients at once with --delay --burst-delay: wall time
                against the ideal (all at once: one delay; k at a time: n/k)
Computing (--cpu, pure-Python work that holds the GIL):
  requests/s    --cpu --cpu-seconds, --concurrency in flight, against the ideal
                for this machine: cores / cpu-seconds
  burst         --cpu-burst clients at once, each computing --cpu-burst-seconds:
                latency p50 and max. With threads the median client waits
                about as long as the last one: the GIL's convoy.
Optional: --scale N clients at once with --delay 1 (event loops, threads):
served, wall time, p99, peak RSS.

HTTP (--http, instead of the tables above): requests/s from wrk (Debian's wrk),
--http-connections connections for --http-seconds a run: http_static.py on a
1 KiB file against python -m http.server, wsgi_app.py's GET / against gunicorn
with one sync worker (where gunicorn is importable: pip install gunicorn).

WebSocket (--websocket, instead of the tables above): websocket_server.py against
the websockets library's own server (the websockets package must be importable
by this interpreter: pip install websockets; its C speedups are part of the
wheel), compression off on both, in the same alternating rounds:
  echo          messages/s on /echo, --ws-connections each with one message of
                --ws-size bytes in flight; also websocket_server.py with its
                masking done a byte at a time, to show what the hot loop costs
  idle          memory per connection, --ws-idle connections held open: the
                server's RSS with them, less its RSS before, over the count
  compressed    the same, --ws-compressed connections with permessage-deflate,
                after one message each (so both zlib streams exist)
  broadcast     seconds for one /chat message to reach --ws-broadcast clients
The load comes from this file's own WebSocket client: one process, selectors,
each frame built once.

The load comes from client.py's load mode: one process with its own small
event loop. --plot DIR also draws, from the same run, a timeline per approach
of each burst (one bar per client, from connect to reply, in the order they
were answered) and the computing requests/s against what one core and every
core do (matplotlib, needed for --plot only).

Run:  python bench.py                        # about 1.5 minutes on 2 cores: quick, and noisier
      python bench.py --requests 2000 --burst-delay 0.5 --cpu-requests 200 \\
          --cpu-burst-seconds 0.1 --scale 10000 --plot images    # the README's run, 4 to 8 minutes
      python bench.py --scripts sync_server.py asyncio_server.py --rounds 5
      python bench.py --plot images/         # the figures too, from the same run
      python bench.py --load ./loadgen       # requests/s from a C load generator:
                                             # cc -O2 -o loadgen tools/loadgen.c
      python bench.py --seed-dir DIR         # and against the blog post's scripts, kept in DIR
      python bench.py --websocket            # websocket_server.py against websockets: about 1 minute
      python bench.py --http                 # the HTTP servers, from wrk: about 1 minute
"""

from __future__ import annotations

import argparse
import base64
import math
import os
import platform
import re
import selectors
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import timeit
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import client

HERE = Path(__file__).resolve().parent
CORES = os.cpu_count() or 1


@dataclass
class Approach:
    name: str
    script: str
    options: tuple[str, ...] = ()
    served_at_once: int | None = None  # None: every client at once
    seed: str = ""  # the blog post's script for this approach, with its sleep removed
    scale: bool = False  # worth a --scale run
    command: tuple[str, ...] = ()  # a server that is not a script here: the whole command that starts it
    # Every figure of every round: metric name -> samples; and the last round's bursts.
    samples: dict[str, list[float]] = field(default_factory=dict)
    timelines: dict[str, list[tuple[float, float]]] = field(default_factory=dict)

    def add(self, metric: str, value: float) -> None:
        self.samples.setdefault(metric, []).append(value)

    def median(self, metric: str) -> float:
        values = self.samples.get(metric)
        return statistics.median(values) if values else float("nan")


APPROACHES = [
    Approach("sync", "sync_server.py", served_at_once=1, seed="seed_sync_nodelay.py"),
    Approach("threaded", "threaded_server.py", seed="seed_threaded_nodelay.py", scale=True),
    Approach("pool (8 workers)", "pool_server.py", ("--max-workers", "8"), served_at_once=8),
    Approach("forking", "forking_server.py", seed="seed_forking_nodelay.py"),
    Approach("prefork (2 workers)", "prefork_server.py", ("--workers", "2"), served_at_once=2),
    Approach("socketserver threading", "socketserver_variants.py", ("--variant", "threading")),
    Approach("asyncio", "asyncio_server.py", seed="seed_asyncio_nodelay.py", scale=True),
    Approach("asyncio, 2 cpu workers", "asyncio_server.py", ("--cpu-workers", "2")),
    Approach("asyncio protocols", "asyncio_protocol_server.py", seed="seed_asyncio_nodelay.py", scale=True),
    Approach("selectors", "selectors_server.py", scale=True),
]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    scripts = getattr(args, "scripts", [])
    chosen = [approach for approach in APPROACHES if not scripts or approach.script in scripts]
    if not chosen:
        print(f"no known script among {scripts}", file=sys.stderr)
        return 2
    if args.plot and not have_matplotlib():
        print("--plot needs matplotlib, a development dependency: pip install matplotlib", file=sys.stderr)
        return 2
    command = " ".join(argv if argv is not None else sys.argv[1:])
    print(f"Python {platform.python_version()}, {platform.system()} {platform.machine()}, {CORES} cores")
    print(f"command: python bench.py {command}".rstrip())
    print_load("before the run")
    if args.websocket:
        status = measure_websockets(args)
    elif args.http:
        status = measure_http(args)
    else:
        for round_number in range(args.rounds):
            order = chosen if round_number % 2 == 0 else chosen[::-1]
            for approach in order:
                measure_round(approach, args, last=round_number == args.rounds - 1)
            print(f"round {round_number + 1} of {args.rounds} done", file=sys.stderr, flush=True)
        print_tables(chosen, args)
        if args.plot:
            plot(chosen, args)
        status = 0
    print_load("after the run, its own load included")
    return status


def print_load(when: str) -> None:
    """Print the load average (1, 5, 15 minutes); before the run, warn if other programs keep the cores busy.

    A busy machine changes every figure, silently: on this 2-core machine the
    threaded server measured 772 requests/s at a load average of 2.5, and
    4,495 at 0.9. Past the run's start the load is partly the run's own (a
    server and its load generator keep two cores busy), so only the load
    before it tells of the others.
    """
    try:
        load = os.getloadavg()
    except (AttributeError, OSError):  # Windows, or a system that does not keep one
        return
    print(f"load average {when}: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} ({CORES} cores)", flush=True)
    if when == "before the run" and load[0] > CORES:
        print(
            f"warning: a load average of {load[0]:.2f} is more than the {CORES} cores: other programs are"
            " running, and every figure will be lower and noisier than on a quiet machine",
            file=sys.stderr,
            flush=True,
        )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=client.HelpFormatter)
    # SUPPRESS: no "(default: None)" after a help that names the default itself.
    parser.add_argument(
        "--scripts", nargs="+", metavar="SCRIPT", default=argparse.SUPPRESS, help="measure only these (default: all)"
    )
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds; each figure is their median")
    parser.add_argument("--requests", type=int, default=1000, help="requests per throughput run")
    parser.add_argument("--concurrency", type=int, default=50, help="requests in flight in throughput runs")
    parser.add_argument("--size", type=int, default=64, help="bytes per request")
    parser.add_argument("--burst", type=int, default=32, help="clients in a waiting burst (fewer for sync)")
    parser.add_argument("--burst-delay", type=float, default=0.2, help="--delay in a waiting burst")
    parser.add_argument("--cpu-seconds", type=float, default=0.005, help="--cpu in computing runs")
    parser.add_argument("--cpu-requests", type=int, default=100, help="requests per computing throughput run")
    parser.add_argument("--cpu-burst", type=int, default=8, help="clients in a computing burst")
    parser.add_argument("--cpu-burst-seconds", type=float, default=0.05, help="--cpu in a computing burst")
    parser.add_argument("--scale", type=int, default=0, help="clients at once in a scale run (0: none)")
    parser.add_argument("--plot", metavar="DIR", help="also draw the figures (PNG) into DIR")
    parser.add_argument("--websocket", action="store_true", help="measure websocket_server.py against websockets")
    parser.add_argument(
        "--http",
        action="store_true",
        help="measure the HTTP servers with wrk, against python -m http.server and gunicorn",
    )
    parser.add_argument("--http-connections", type=int, default=20, help="--http: wrk's connections")
    parser.add_argument("--http-seconds", type=int, default=3, help="--http: seconds per wrk run (whole: wrk's unit)")
    parser.add_argument("--ws-connections", type=int, default=100, help="--websocket: echo connections")
    parser.add_argument("--ws-seconds", type=float, default=2.0, help="--websocket: seconds of echo per sample")
    parser.add_argument("--ws-size", type=int, default=64, help="--websocket: bytes per echoed text message")
    parser.add_argument("--ws-idle", type=int, default=10_000, help="--websocket: idle connections held open")
    parser.add_argument("--ws-compressed", type=int, default=1000, help="--websocket: compressed connections")
    parser.add_argument("--ws-broadcast", type=int, default=1000, help="--websocket: /chat clients a message reaches")
    parser.add_argument(
        "--load",
        metavar="PROGRAM",
        help="a load generator for the requests/s figures instead of client.py, run as PROGRAM HOST PORT"
        " IN_FLIGHT REQUESTS SIZE TIMEOUT and printing ok=N err=N rps=X (tools/loadgen.c, built)",
    )
    parser.add_argument(
        "--seed-dir",
        metavar="DIR",
        type=Path,
        help="a folder with the blog post's scripts (seed_*_nodelay.py), to compare each server with the post's",
    )
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.requests < 1 or args.cpu_requests < 1:
        parser.error("--rounds, --requests and --cpu-requests must be >= 1")
    if min(args.ws_connections, args.ws_idle, args.ws_compressed, args.ws_broadcast) < 1 or args.ws_seconds <= 0:
        parser.error("--ws-connections, --ws-idle, --ws-compressed, --ws-broadcast and --ws-seconds must be > 0")
    if not 0 <= args.ws_size < 65536:
        parser.error("--ws-size must be 0..65535")
    if args.load and shutil.which(args.load) is None:
        parser.error(f"--load: no program {args.load!r} (build it first: cc -O2 -o loadgen tools/loadgen.c)")
    if args.seed_dir and not args.seed_dir.is_dir():
        parser.error(f"--seed-dir: no folder {args.seed_dir}")
    return args


def measure_round(approach: Approach, args: argparse.Namespace, last: bool) -> None:
    """One sample of every figure for one approach."""
    load = (args.concurrency, args.requests, args.size, args.load)
    approach.add("quiet", rate(Server(approach, "--delay", "0", "--quiet"), *load))
    approach.add("logs", rate(Server(approach, "--delay", "0"), *load))
    if approach.seed and args.seed_dir and (args.seed_dir / approach.seed).exists():
        approach.add("seed", rate(Server(approach, seed_dir=args.seed_dir), *load))

    clients = burst_clients(approach, args)
    with Server(approach, "--delay", str(args.burst_delay), "--quiet") as server:
        burst = client.run_load(server.host, server.port, clients, clients, args.size, timeout=60)
    approach.add("burst", burst.wall)
    if last:
        approach.timelines["waiting"] = burst.spans

    cpu_load = (args.concurrency, args.cpu_requests, args.size, args.load)
    approach.add("cpu", rate(Server(approach, "--delay", "0", "--cpu", str(args.cpu_seconds), "--quiet"), *cpu_load))
    cpu_options = ("--delay", "0", "--cpu", str(args.cpu_burst_seconds), "--quiet")
    with Server(approach, *cpu_options) as server:
        warm_up(server)
        burst = client.run_load(server.host, server.port, args.cpu_burst, args.cpu_burst, args.size, timeout=60)
    approach.add("cpu p50", burst.percentile(0.5))
    approach.add("cpu max", burst.percentile(1.0))
    if last:
        approach.timelines["computing"] = burst.spans

    if approach.scale and args.scale:
        with Server(approach, "--delay", "1", "--quiet") as server:
            result = client.run_load(server.host, server.port, args.scale, args.scale, args.size, timeout=60)
            approach.add("scale ok", result.ok)
            approach.add("scale wall", result.wall)
            approach.add("scale p99", result.percentile(0.99))
            approach.add("scale rss", server.peak_rss_mib())


def burst_clients(approach: Approach, args: argparse.Namespace) -> int:
    """--burst, or for an approach that serves k at a time, 4k at most: four waves."""
    return args.burst if approach.served_at_once is None else min(args.burst, 4 * approach.served_at_once)


def rate(server: Server, in_flight: int, requests: int, size: int, program: str | None) -> float:
    """Requests per second; a run with failures counts as 0, so that it shows."""
    with server:
        warm_up(server)
        if program:
            return external_rate(program, server, in_flight, requests, size)
        result = client.run_load(server.host, server.port, in_flight, requests, size, timeout=30)
    return result.ok / result.wall if not result.failed else 0.0


def external_rate(program: str, server: Server, in_flight: int, requests: int, size: int) -> float:
    """--load: the same run from another load generator, a C one for instance.

    client.py is one Python process: past about 9,000 requests/s here it is
    the bottleneck, and the fastest servers all measure alike. A C generator
    measures the server instead.
    """
    command = [program, server.host, str(server.port), str(in_flight), str(requests), str(size), "30"]
    output = subprocess.run(command, capture_output=True, text=True, timeout=60).stdout
    figures = dict(re.findall(r"(\w+)=([\d.]+)", output))
    if "rps" not in figures:
        raise SystemExit(f"--load {program}: no rps=... in its output: {output.strip()[:200]!r}")
    failed = any(float(figures.get(name, 0)) for name in ("err", "mismatch", "unfinished", "timeout"))
    return 0.0 if failed or int(figures.get("ok", 0)) < requests else float(figures["rps"])


def warm_up(server: Server) -> None:
    # One request first: a process pool starts its workers on the first one.
    client.run_load(server.host, server.port, 1, 1, 8, timeout=30)


def print_tables(chosen: list[Approach], args: argparse.Namespace) -> None:
    def ratio(numerator: float, denominator: float) -> str:
        # NaN: not measured; 0: a run that failed, which shows as 0 requests/s.
        if not (numerator == numerator and denominator == denominator and numerator and denominator):
            return "-"
        return f"{numerator / denominator:.2f}x"

    print(f"\nWaiting: requests/s with --delay 0, {args.concurrency} in flight;", end=" ")
    print(f"a burst with --delay {args.burst_delay:g}")
    print(f"(median of {args.rounds} alternating rounds)\n")
    print("| approach | requests/s | logs on | vs seed | burst: wall / ideal |")
    print("|---|---:|---:|---:|---|")
    for approach in chosen:
        quiet = approach.median("quiet")
        clients = burst_clients(approach, args)
        waves = 1 if approach.served_at_once is None else -(-clients // approach.served_at_once)
        ideal = waves * args.burst_delay
        print(
            f"| {approach.name} | {quiet:,.0f} | {ratio(approach.median('logs'), quiet)} "
            f"| {ratio(quiet, approach.median('seed'))} "
            f"| n={clients}: {approach.median('burst'):.2f} s / {ideal:g} s |"
        )

    ideal_rate = CORES / args.cpu_seconds
    print(f"\nComputing: --cpu {args.cpu_seconds:g} (ideal on {CORES} cores: {ideal_rate:,.0f} requests/s);")
    print(f"a burst of {args.cpu_burst} clients at once, each --cpu {args.cpu_burst_seconds:g}\n")
    print("| approach | requests/s | of ideal | burst latency p50 | burst latency max |")
    print("|---|---:|---:|---:|---:|")
    for approach in chosen:
        cpu = approach.median("cpu")
        print(
            f"| {approach.name} | {cpu:,.0f} | {cpu / ideal_rate:.0%} "
            f"| {approach.median('cpu p50'):.2f} s | {approach.median('cpu max'):.2f} s |"
        )

    scaled = [approach for approach in chosen if approach.scale and approach.samples.get("scale wall")]
    if scaled:
        print(f"\n{args.scale:,} clients at once, --delay 1\n")
        print("| approach | served | wall | p99 | peak RSS |")
        print("|---|---:|---:|---:|---:|")
        for approach in scaled:
            print(
                f"| {approach.name} | {approach.median('scale ok'):,.0f} | {approach.median('scale wall'):.2f} s "
                f"| {approach.median('scale p99'):.2f} s | {approach.median('scale rss'):.0f} MiB |"
            )


def have_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def plot(chosen: list[Approach], args: argparse.Namespace) -> None:
    """Draw the timelines of the last round's bursts and the computing requests/s, as PNG files in args.plot."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no screen needed
    import matplotlib.pyplot as plt

    folder = Path(args.plot)
    folder.mkdir(parents=True, exist_ok=True)
    figures = {
        "timeline-waiting.png": timeline_figure(plt, chosen, "waiting", args),
        "timeline-computing.png": timeline_figure(plt, chosen, "computing", args),
        "requests-per-second.png": computing_rate_figure(plt, chosen, args),
    }
    for name, figure in figures.items():
        figure.savefig(folder / name, dpi=100)
        plt.close(figure)
    print(f"\nfigures: {', '.join(sorted(figures))} in {folder}")


def timeline_figure(plt: Any, chosen: list[Approach], kind: str, args: argparse.Namespace) -> Any:
    """One row of bars per approach, one bar per client of the last burst, from connect to reply.

    The bars are in the order the clients were answered, the first on top: a
    staircase is one at a time, a wall at the right is everyone late. Each row
    says when its median and its last client were answered.
    """
    if kind == "waiting":
        title = f"{args.burst} clients at once, each waiting --delay {args.burst_delay:g} s (fewer for sync)"
    else:
        title = f"{args.cpu_burst} clients at once, each computing --cpu {args.cpu_burst_seconds:g} s"
    figure, axes = plt.subplots(len(chosen), 1, figsize=(8, 1.1 * len(chosen) + 0.8), sharex=True, squeeze=False)
    rows = [row for (row,) in axes]
    for axis, approach in zip(rows, chosen):
        spans = sorted(approach.timelines.get(kind, []), key=lambda span: span[1])  # by the time of the reply
        axis.barh(range(len(spans)), [end - start for start, end in spans], left=[s for s, _ in spans], height=0.8)
        axis.set_yticks([])
        axis.set_ylabel(approach.name, rotation=0, ha="right", va="center", fontsize=8)
        axis.invert_yaxis()  # the first answered on top
        if spans:
            ends = [end for _, end in spans]
            summary = f"median {statistics.median(ends):.2f} s, last {ends[-1]:.2f} s"
            axis.text(1.01, 0.5, summary, transform=axis.transAxes, va="center", fontsize=7)
    if kind == "computing":
        # Where the last client would be answered with every core computing, and with one.
        work = args.cpu_burst * args.cpu_burst_seconds
        for axis in rows:
            axis.axvline(work / CORES, color="green", linestyle="--", linewidth=1)
            if CORES > 1:
                axis.axvline(work, color="red", linestyle=":", linewidth=1)
        rows[0].text(work / CORES, 1.0, f"all {CORES} cores", transform=rows[0].get_xaxis_transform(),
                     color="green", ha="right", va="bottom", fontsize=7)  # fmt: skip
        if CORES > 1:
            rows[0].text(work, 1.0, "one core", transform=rows[0].get_xaxis_transform(),
                         color="red", ha="left", va="bottom", fontsize=7)  # fmt: skip
    rows[-1].set_xlabel("seconds since the burst began (one bar per client, connect to reply, first answered on top)")
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    return figure


def computing_rate_figure(plt: Any, chosen: list[Approach], args: argparse.Namespace) -> Any:
    """One question: how many cores does each approach put to work on requests that compute?

    The requests/s with --cpu, against two marks: what one core does (1 /
    --cpu-seconds requests a second) and what every core does. Waiting's
    requests/s are in the tables: a share of the fastest server is another
    question, with another denominator, and does not belong on this axis.
    """
    figure, axis = plt.subplots(figsize=(8, 0.45 * len(chosen) + 1.4))
    rates = [approach.median("cpu") for approach in chosen]
    one_core = 1 / args.cpu_seconds
    positions = list(range(len(chosen)))
    axis.barh(positions, rates, height=0.6)
    for position, rate_ in zip(positions, rates):
        label = f"{rate_:,.0f} ({rate_ / (CORES * one_core):.0%})"
        axis.annotate(label, (rate_, position), xytext=(4, 0), textcoords="offset points", va="center", fontsize=7,
                      bbox={"facecolor": "white", "edgecolor": "none", "pad": 1})  # fmt: skip
    marks = [(one_core, "one core", "red", ":"), (CORES * one_core, f"all {CORES} cores", "green", "--")]
    for value, label, colour, style in marks[1:] if CORES == 1 else marks:
        axis.axvline(value, color=colour, linestyle=style, linewidth=1)
        axis.text(value, 1.0, label, transform=axis.get_xaxis_transform(), color=colour, ha="center", va="bottom",
                  fontsize=7)  # fmt: skip
    axis.set_yticks(positions)
    axis.set_yticklabels([approach.name for approach in chosen], fontsize=8)
    axis.invert_yaxis()
    axis.set_xlim(0, max([CORES * one_core, *[rate_ for rate_ in rates if not math.isnan(rate_)]]) * 1.25)
    axis.set_xlabel(
        f"requests/s, each request computing --cpu {args.cpu_seconds:g} s, {args.concurrency} in flight"
        f" (in parentheses: of all {CORES} cores)"
    )
    axis.set_title(f"Computing: how many of the {CORES} cores does each approach use?", fontsize=10, pad=14)
    figure.tight_layout()
    return figure


class Server:
    """A server script (or the seed's) on a free port, stopped on leaving the with-block."""

    def __init__(self, approach: Approach, *options: str, seed_dir: Path | None = None) -> None:
        seed = seed_dir is not None
        if seed_dir is not None:
            # The seed's scripts print no ready line and know no options: give
            # them a free port and wait until it accepts.
            self.host, self.port = "127.0.0.1", free_port()
            command = [sys.executable, str(seed_dir / approach.seed), str(self.port)]
        elif approach.command:
            command = [*approach.command, *options]
        else:
            command = [sys.executable, str(HERE / approach.script), "0", *approach.options, *options]
        self.process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL if seed else subprocess.PIPE, stderr=subprocess.DEVNULL
        )
        if seed:
            wait_until(lambda: accepts(self.host, self.port), f"{approach.seed} did not start")
            return
        assert self.process.stdout is not None
        line = self.process.stdout.readline().decode()
        match = re.match(r"Listening on (?:http://)?(\[[^\]]+\]|[^:\s]+):(\d+)", line)
        if not match:
            self.process.kill()
            raise SystemExit(f"{approach.script}: no ready line, got {line!r}")
        self.host = match.group(1).strip("[]")
        self.port = int(match.group(2))

    def peak_rss_mib(self) -> float:
        try:
            with open(f"/proc/{self.process.pid}/status") as status:
                for line in status:
                    if line.startswith("VmHWM:"):
                        return int(line.split()[1]) / 1024
        except OSError:
            pass
        return float("nan")

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        if self.process.stdout:
            self.process.stdout.close()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def accepts(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=1).close()
    except OSError:
        return False
    return True


def wait_until(condition: Callable[[], Any], failure: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(failure)
        time.sleep(0.05)


# HTTP (--http): the two HTTP servers against their references, from wrk.


def measure_http(args: argparse.Namespace) -> int:
    """requests/s from wrk: http_static.py against python -m http.server, wsgi_app.py against gunicorn.

    wrk (Debian's wrk package) keeps --http-connections connections busy for
    --http-seconds; the figures are medians of alternating rounds, and each
    ratio the median of the rounds' ratios. gunicorn (one sync worker, the
    prefork model's worker) is measured where this interpreter can import it.
    """
    if shutil.which("wrk") is None:
        print("--http needs wrk (Debian: apt-get install wrk)", file=sys.stderr)
        return 2
    try:
        import gunicorn
    except ImportError:
        gunicorn = None
    with tempfile.TemporaryDirectory() as site:
        Path(site, "1k.txt").write_bytes(b"x" * 1024)
        # name, the command (PORT: a free port), the path; then what it is measured against
        servers = [
            (
                "http_static.py, a 1 KiB file",
                [str(HERE / "http_static.py"), "PORT", "-q", "--directory", site],
                "/1k.txt",
            ),
            (
                "python -m http.server, a 1 KiB file",
                ["-m", "http.server", "PORT", "-b", "127.0.0.1", "-d", site],
                "/1k.txt",
            ),
            ("wsgi_app.py, GET /", [str(HERE / "wsgi_app.py"), "PORT", "-q"], "/"),
        ]
        if gunicorn is not None:
            gunicorn_command = [
                "-m",
                "gunicorn",
                "-w",
                "1",
                "-b",
                "127.0.0.1:PORT",
                "--chdir",
                str(HERE),
                "wsgi_app:app",
            ]
            servers.append((f"gunicorn {gunicorn.__version__}, 1 sync worker, GET /", gunicorn_command, "/"))
        rates: dict[str, list[float]] = {name: [] for name, _, _ in servers}
        for round_number in range(args.rounds):
            for name, command, path in servers if round_number % 2 == 0 else servers[::-1]:
                rates[name].append(wrk_rate(command, path, args))
            print(f"round {round_number + 1} of {args.rounds} done", file=sys.stderr, flush=True)
    print(f"\nHTTP: requests/s from wrk, {args.http_connections} connections, {args.http_seconds:g} s a run,")
    print(f"median of {args.rounds} alternating rounds; each ratio the median of the rounds' ratios\n")
    print("| server | requests/s | against | ratio |")
    print("|---|---:|---|---:|")
    for index, (name, _, _) in enumerate(servers):
        reference = servers[index + 1][0] if index % 2 == 0 and index + 1 < len(servers) else None
        ratios = [ours / theirs for ours, theirs in zip(rates[name], rates.get(reference, [])) if theirs]
        shown = f"{statistics.median(ratios):.2f}x" if ratios else "-"
        print(f"| {name} | {statistics.median(rates[name]):,.0f} | {reference or '-'} | {shown} |")
    return 0


def wrk_rate(command: list[str], path: str, args: argparse.Namespace) -> float:
    port = free_port()
    argv = [sys.executable, *[part.replace("PORT", str(port)) for part in command]]
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: accepts("127.0.0.1", port), f"{' '.join(argv)} did not start")
        seconds = f"{max(1, args.http_seconds)}s"
        url = f"http://127.0.0.1:{port}{path}"
        wrk = ["wrk", "-t1", f"-c{args.http_connections}", f"-d{seconds}", url]
        output = subprocess.run(wrk, capture_output=True, text=True, timeout=args.http_seconds + 30).stdout
        match = re.search(r"Requests/sec:\s+([\d.]+)", output)
        if not match or "Non-2xx" in output or "Socket errors" in output and "read 0" not in output:
            raise SystemExit(f"wrk against {' '.join(argv)}: {output.strip()[-300:]!r}")
        return float(match.group(1))
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# WebSocket (--websocket): websocket_server.py against the websockets library.

# The websockets library's own server, doing what websocket_server.py does on
# /echo and /chat, with the backlog and open-file limit ours has (its defaults,
# 100 and 1,024, would measure SYN retries and EMFILE, not the server).
WEBSOCKETS_SERVER = """
import asyncio, resource, sys
from websockets.asyncio.server import broadcast, serve
resource.setrlimit(resource.RLIMIT_NOFILE, (resource.getrlimit(resource.RLIMIT_NOFILE)[1],) * 2)
room = set()
async def handler(websocket):
    if websocket.request.path == "/chat":
        room.add(websocket)
        try:
            async for message in websocket:
                broadcast(room, message)
        finally:
            room.discard(websocket)
    else:
        async for message in websocket:
            await websocket.send(message)
async def main():
    compression = "deflate" if "--deflate" in sys.argv else None
    async with serve(handler, "127.0.0.1", 0, compression=compression, backlog=4096, max_size=2**20) as server:
        print("Listening on http://127.0.0.1:%d/" % server.sockets[0].getsockname()[1], flush=True)
        await asyncio.Future()
asyncio.run(main())
"""
# websocket_server.py with its masking done a byte at a time, the way a first
# version would write it: what the hot loop costs.
BYTE_BY_BYTE = """
import sys, websocket_server
websocket_server.unmask = lambda data, key: bytes(byte ^ key[index % 4] for index, byte in enumerate(data))
sys.argv[0] = "websocket_server.py"
sys.exit(websocket_server.main())
"""
OFFER_DEFLATE = "permessage-deflate; client_max_window_bits"
MASK = b"\x5a\x1c\xe3\x07"


def measure_websockets(args: argparse.Namespace) -> int:
    """The WebSocket section: every figure for each server, in alternating rounds; one table."""
    raise_open_file_limit()  # the client holds --ws-idle sockets itself
    ours = Approach("websocket_server.py", "websocket_server.py")
    byte_loop = Approach(
        "websocket_server.py, masking a byte at a time", "", command=(sys.executable, "-c", BYTE_BY_BYTE)
    )
    theirs = Approach("websockets", "", command=(sys.executable, "-c", WEBSOCKETS_SERVER))
    # Each server's options with compression off, and on (None: not measured).
    options: dict[str, tuple[tuple[str, ...], tuple[str, ...] | None]] = {
        ours.name: (("--quiet", "--no-compression"), ("--quiet",)),
        byte_loop.name: (("0", "--quiet", "--no-compression"), None),
        theirs.name: ((), ("--deflate",)),
    }
    try:
        import websockets
    except ImportError:
        print("websockets is not installed for this Python (pip install websockets): measuring ours alone")
        chosen = [ours, byte_loop]
    else:
        options[f"websockets {websockets.__version__}"] = options.pop(theirs.name)
        theirs.name = f"websockets {websockets.__version__}"
        chosen = [ours, byte_loop, theirs]
    for round_number in range(args.rounds):
        for approach in chosen if round_number % 2 == 0 else chosen[::-1]:
            measure_websocket_round(approach, args, *options[approach.name])
        print(f"round {round_number + 1} of {args.rounds} done", file=sys.stderr, flush=True)
    print_websocket_table(chosen, args)
    return 0


def measure_websocket_round(
    approach: Approach, args: argparse.Namespace, plain: tuple[str, ...], deflate: tuple[str, ...] | None
) -> None:
    with Server(approach, *plain) as server:
        approach.add("echo", echo_rate(server, args.ws_connections, args.ws_seconds, args.ws_size))
    if deflate is None:
        return
    with Server(approach, *plain) as server:
        approach.add("idle", memory_per_connection(server, args.ws_idle, compressed=False))
    with Server(approach, *deflate) as server:
        approach.add("compressed", memory_per_connection(server, args.ws_compressed, compressed=True))
    with Server(approach, *plain) as server:
        approach.add("broadcast", broadcast_seconds(server, args.ws_broadcast))


def print_websocket_table(chosen: list[Approach], args: argparse.Namespace) -> None:
    ours, byte_loop, reference = chosen[0], chosen[1], chosen[-1]

    def ratio(metric: str, approach: Approach, against: Approach) -> float:
        """The median of the rounds' ratios: each round's two figures were taken minutes apart at most."""
        pairs = zip(approach.samples.get(metric, []), against.samples.get(metric, []))
        ratios = [value / base for value, base in pairs if base]
        return statistics.median(ratios) if ratios else float("nan")

    compare = reference.name.startswith("websockets")
    against = f"against {reference.name}, each the median of the rounds' ratios" if compare else "(no websockets)"
    print(f"\nWebSocket: median of {args.rounds} alternating rounds; ratios {against}\n")
    print("| figure | server | value | ratio |")
    print("|---|---|---:|---:|")
    for metric, title in (
        ("echo", f"echo: messages/s, {args.ws_connections} connections, {args.ws_size}-byte text"),
        ("idle", f"idle: memory per connection, {args.ws_idle:,} open"),
        ("compressed", f"permessage-deflate: memory per connection, {args.ws_compressed:,} open"),
        ("broadcast", f"broadcast: one /chat message reaching {args.ws_broadcast:,} clients"),
    ):
        for approach in chosen:
            if not approach.samples.get(metric):
                continue
            value = approach.median(metric)
            shown = {"echo": f"{value:,.0f}", "broadcast": f"{value:.3f} s"}.get(metric, f"{value / 1024:.1f} KiB")
            relative = f"{ratio(metric, approach, reference):.2f}x" if compare else "-"
            print(f"| {title} | {approach.name} | {shown} | {relative} |")
    print(f"\nMasking a byte at a time: {ratio('echo', byte_loop, ours):.2f}x the echo rate of {ours.name}.")
    print("\nunmask() itself, in this process: one big integer against a byte at a time\n")
    print("| payload | as an integer | a byte at a time | ratio |")
    print("|---:|---:|---:|---:|")
    for size, integer, loop in unmask_costs():
        print(f"| {size:,} bytes | {integer * 1e6:.2f} us | {loop * 1e6:.2f} us | {loop / integer:.0f}x |")


def unmask_costs() -> list[tuple[int, float, float]]:
    """Seconds per call of websocket_server.unmask(), and of the byte-by-byte loop, for a few sizes."""
    import websocket_server

    def byte_by_byte(data: bytes, key: bytes) -> bytes:
        return bytes(byte ^ key[index % 4] for index, byte in enumerate(data))

    costs = []
    for size in (64, 1024, 65536):
        data = os.urandom(size)
        assert websocket_server.unmask(data, MASK) == byte_by_byte(data, MASK)
        number = max(10, 2_000_000 // (size + 64))
        loops = number // 20 + 1
        integer = min(timeit.repeat(lambda data=data: websocket_server.unmask(data, MASK), number=number, repeat=3))
        loop = min(timeit.repeat(lambda data=data: byte_by_byte(data, MASK), number=loops, repeat=3))
        costs.append((size, integer / number, loop / loops))
    return costs


def ws_frame(opcode: int, payload: bytes) -> bytes:
    """A client frame: FIN, the opcode, the length, a masking key, the masked payload (RFC 6455 section 5.2)."""
    length = len(payload)
    header = (
        bytes((0x80 | opcode, 0x80 | length))
        if length < 126
        else bytes((0x80 | opcode, 0xFE)) + length.to_bytes(2, "big")
    )
    mask = (MASK * (length // 4 + 1))[:length]
    masked = (int.from_bytes(payload, "big") ^ int.from_bytes(mask, "big")).to_bytes(length, "big") if length else b""
    return header + MASK + masked


def ws_open(server: Server, path: str, extensions: str = "") -> socket.socket:
    """A WebSocket handshake on a new connection; the connection after it, non-blocking."""
    sock = socket.create_connection((server.host, server.port), timeout=30)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    key = base64.b64encode(os.urandom(16)).decode()
    offer = f"Sec-WebSocket-Extensions: {extensions}\r\n" if extensions else ""
    sock.sendall(
        f"GET {path} HTTP/1.1\r\nHost: {server.host}:{server.port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n{offer}\r\n".encode()
    )
    response = b""
    while b"\r\n\r\n" not in response:
        chunk = sock.recv(4096)
        if not chunk:
            raise SystemExit(f"the server closed during a handshake: {response[:80]!r}")
        response += chunk
    if not response.startswith(b"HTTP/1.1 101 "):
        raise SystemExit(f"no WebSocket: {response[:80]!r}")
    if extensions and b"permessage-deflate" not in response:
        raise SystemExit("permessage-deflate was offered and not agreed")
    sock.setblocking(False)
    return sock


def echo_rate(server: Server, connections: int, seconds: float, size: int) -> float:
    """Echoes per second: each connection sends a message, waits for it back, and sends it again.

    Half a second of warm-up first. The server's reply to a text message of
    this size is this many bytes exactly, so counting bytes counts echoes.
    """
    frame = ws_frame(0x1, b"x" * size)
    echo = size + (2 if size < 126 else 4)
    sockets = [ws_open(server, "/echo") for _ in range(connections)]
    selector = selectors.DefaultSelector()
    unread = {}
    for sock in sockets:
        selector.register(sock, selectors.EVENT_READ)
        unread[sock] = 0
        sock.send(frame)
    counted = 0
    started = time.monotonic()
    warm, end = started + 0.5, started + 0.5 + seconds
    now = started
    while now < end:
        for key, _ in selector.select(1.0):
            sock = key.fileobj
            data = sock.recv(65536)  # type: ignore[union-attr]
            if not data:
                raise SystemExit(f"{server.process.args[1][:40]}: an echo connection closed")
            echoes, unread[sock] = divmod(unread[sock] + len(data), echo)
            if echoes:
                sock.send(frame)  # type: ignore[union-attr]
                if now >= warm:
                    counted += echoes
        now = time.monotonic()
    for sock in sockets:
        sock.close()
    selector.close()
    return counted / seconds


def memory_per_connection(server: Server, count: int, compressed: bool) -> float:
    """Bytes of the server's RSS per connection held open (with compression: after one message each)."""
    before = process_rss(server.process.pid)
    sockets = [ws_open(server, "/echo", OFFER_DEFLATE if compressed else "") for _ in range(count)]
    if compressed:
        # One message each, so the server makes both of its zlib streams; the
        # same bytes serve every connection, each a fresh stream.
        compressor = zlib.compressobj(6, zlib.DEFLATED, -12)
        data = compressor.compress(b"a chat message " * 20) + compressor.flush(zlib.Z_SYNC_FLUSH)
        frame = bytearray(ws_frame(0x1, data[:-4]))
        frame[0] |= 0x40  # RSV1: compressed
        for sock in sockets:
            sock.send(frame)
        for sock in sockets:
            select_readable(sock)
            sock.recv(65536)
    after = process_rss(server.process.pid)
    for sock in sockets:
        sock.close()
    return (after - before) / count


def broadcast_seconds(server: Server, count: int) -> float:
    """The median, over three messages, of the time from a /chat message sent to its arrival at the last client."""
    sockets = [ws_open(server, "/chat") for _ in range(count)]
    selector = selectors.DefaultSelector()
    for sock in sockets:
        selector.register(sock, selectors.EVENT_READ)
    times = []
    for index in range(3):
        message = b"broadcast %d" % index
        waiting = {sock: len(message) + 2 for sock in sockets}
        started = time.monotonic()
        sockets[index].send(ws_frame(0x1, message))
        while waiting:
            if time.monotonic() - started > 30:
                raise SystemExit(f"a broadcast had not reached {len(waiting)} of {count} clients after 30 s")
            for key, _ in selector.select(1.0):
                sock = key.fileobj
                left = waiting.get(sock, 0) - len(sock.recv(65536))  # type: ignore[union-attr]
                if left <= 0:
                    waiting.pop(sock, None)  # type: ignore[call-overload]
                else:
                    waiting[sock] = left  # type: ignore[index]
        times.append(time.monotonic() - started)
    for sock in sockets:
        sock.close()
    selector.close()
    return statistics.median(times)


def select_readable(sock: socket.socket, timeout: float = 30.0) -> None:
    import select

    if not select.select([sock], [], [], timeout)[0]:
        raise SystemExit(f"no reply within {timeout} s")


def process_rss(pid: int) -> int:
    """A process's resident memory now, in bytes (Linux: /proc)."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise SystemExit(f"no VmRSS for process {pid}")


def raise_open_file_limit() -> None:
    try:
        import resource
    except ImportError:
        return
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


if __name__ == "__main__":
    sys.exit(main())
