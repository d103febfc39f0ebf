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

ASGI (--asgi, instead of the tables above): requests/s from wrk, keep-alive,
--asgi-connections connections: asgi_server.py against uvicorn with --http h11
(pure Python, as this is) and with --http httptools (C), both --loop asyncio,
serving the same application: the demo's GET /, and a FastAPI JSON route
(uvicorn, httptools and fastapi must be importable: pip install uvicorn
httptools fastapi).

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
Then /chat across processes (--redis), where Debian's redis-server is installed:
one process against two on one Redis (a redis-server of its own, on a free
port, no persistence), in alternating rounds:
  latency       one message to 2 members (one on each process): median of 31
  broadcast     one message to --ws-broadcast members, half on each process
  room          messages/s a room of --ws-room members sustains, each member
                keeping --ws-window messages in flight, counted at one member
The load comes from this file's own WebSocket client: one process, selectors,
each frame built once.

prefork_server.py's sockets (--reuseport, instead of the tables above): --workers 4
with one listening socket shared, against one per worker (SO_REUSEPORT), in the
same alternating rounds:
  spread        each worker's share of --requests quick requests, 50 in flight,
                from the log: the busiest worker's and the least busy one's
  one held      --requests quick requests, --reuseport-in-flight at a time, while
                one client holds a worker (it connects and sends nothing, for
                --timeout 2 s): latency p50, p99 and max, and the run's wall time

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
      python bench.py --websocket            # websocket_server.py against websockets, then across processes: 1.5 min
      python bench.py --http                 # the HTTP servers, from wrk: about 1 minute
      python bench.py --asgi                 # asgi_server.py against uvicorn, from wrk: about 1 minute
      python bench.py --http-static --seed-dir DIR   # http_static.py at 1, 20, 50 connections against
                                             # the blog post's server, http.server and nginx: 2 minutes
      python bench.py --reuseport            # prefork's shared socket against SO_REUSEPORT: about 30 s
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
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
from collections import Counter
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
    python: str = sys.executable  # the interpreter that runs the server (--python)
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
    missing = [python for python in args.python or [] if shutil.which(python) is None]
    if missing:  # checked here, not by parse_args(): a documented command names interpreters of its machine
        print(f"--python: no interpreter {missing[0]!r}", file=sys.stderr)
        return 2
    pythons = {python: python_label(python) for python in args.python or [sys.executable]}
    if args.python:
        # Each approach once per interpreter, side by side: the rounds
        # alternate them as they alternate the approaches.
        chosen = [
            dataclasses.replace(approach, name=f"{approach.name}, {label}", python=python, samples={}, timelines={})
            for approach in chosen
            for python, label in pythons.items()
        ]
    if args.plot and not have_matplotlib():
        print("--plot needs matplotlib, a development dependency: pip install matplotlib", file=sys.stderr)
        return 2
    command = " ".join(argv if argv is not None else sys.argv[1:])
    print(f"Python {platform.python_version()}, {platform.system()} {platform.machine()}, {CORES} cores")
    print(f"command: python bench.py {command}".rstrip())
    if args.python:
        print("servers run by: " + "; ".join(f"{label} ({python})" for python, label in pythons.items()))
    print_load("before the run")
    if args.websocket:
        status = measure_websockets(args)
    elif args.http:
        status = measure_http(args, pythons)
    elif args.asgi:
        status = measure_asgi(args)
    elif args.http_static:
        status = measure_http_static(args)
    elif args.reuseport:
        status = measure_reuseport(args)
    else:
        for round_number in range(args.rounds):
            order = chosen if round_number % 2 == 0 else chosen[::-1]
            for approach in order:
                measure_round(approach, args, last=round_number == args.rounds - 1)
            print(f"round {round_number + 1} of {args.rounds} done", file=sys.stderr, flush=True)
        print_tables(chosen, args)
        if len(pythons) > 1:
            print_interpreters(chosen, pythons, args)
        if args.plot:
            # With --python given more than once the rows are approaches on
            # each interpreter: other figures, which leave the default ones be.
            plot(chosen, args, suffix="-by-interpreter" if len(pythons) > 1 else "")
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
    parser.add_argument(
        "--reuseport", action="store_true", help="prefork_server.py: one shared listening socket against one each"
    )
    parser.add_argument(
        "--reuseport-in-flight", type=int, default=8, help="--reuseport: quick requests in flight, one worker held"
    )
    parser.add_argument("--http-connections", type=int, default=20, help="--http: wrk's connections")
    parser.add_argument(
        "--asgi", action="store_true", help="measure asgi_server.py with wrk, against uvicorn with h11 and httptools"
    )
    parser.add_argument("--asgi-connections", type=int, default=50, help="--asgi: wrk's connections")
    parser.add_argument(
        "--http-static",
        action="store_true",
        help="measure http_static.py with wrk, against the blog post's server, python -m http.server and nginx",
    )
    parser.add_argument(
        "--http-static-connections",
        type=int,
        nargs="+",
        default=[1, 20, 50],
        metavar="N",
        help="--http-static: wrk's connections, one table row each (ratios to own rate at the first)",
    )
    parser.add_argument("--http-seconds", type=int, default=3, help="--http: seconds per wrk run (whole: wrk's unit)")
    parser.add_argument("--ws-connections", type=int, default=100, help="--websocket: echo connections")
    parser.add_argument("--ws-seconds", type=float, default=2.0, help="--websocket: seconds of echo per sample")
    parser.add_argument("--ws-size", type=int, default=64, help="--websocket: bytes per echoed text message")
    parser.add_argument("--ws-idle", type=int, default=10_000, help="--websocket: idle connections held open")
    parser.add_argument("--ws-compressed", type=int, default=1000, help="--websocket: compressed connections")
    parser.add_argument("--ws-broadcast", type=int, default=1000, help="--websocket: /chat clients a message reaches")
    parser.add_argument("--ws-room", type=int, default=10, help="--websocket: members of a room sending at once")
    parser.add_argument("--ws-window", type=int, default=4, help="--websocket: messages each member keeps in flight")
    parser.add_argument(
        "--load",
        metavar="PROGRAM",
        help="a load generator for the requests/s figures instead of client.py, run as PROGRAM HOST PORT"
        " IN_FLIGHT REQUESTS SIZE TIMEOUT and printing ok=N err=N rps=X (tools/loadgen.c, built)",
    )
    parser.add_argument(
        "--python",
        action="append",
        metavar="PATH",
        help="an interpreter to run the servers with (default: this one); given more than once, each approach"
        " runs on each, in the same alternating rounds, and a table compares them with the first",
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


def python_label(python: str) -> str:
    """An interpreter's version as a table names it: '3.13.0', or '3.13.5t' for a free-threaded build."""
    free_threaded = "'t' * bool(sysconfig.get_config_var('Py_GIL_DISABLED'))"
    code = f"import platform, sysconfig; print(platform.python_version() + {free_threaded})"
    return subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=30).stdout.strip() or python


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


def print_interpreters(chosen: list[Approach], pythons: dict[str, str], args: argparse.Namespace) -> None:
    """--python, more than once: each interpreter against the first, approach by approach.

    Each ratio is the median of the rounds' ratios: the two ran in the same
    round, next to each other, on the same machine load.
    """

    def ratio(metric: str, approach: Approach, first: Approach) -> str:
        ratios = [
            ours / theirs for ours, theirs in zip(approach.samples.get(metric, []), first.samples.get(metric, []))
        ]
        ratios = [value for value in ratios if value]
        return f"{statistics.median(ratios):.2f}x" if ratios else "-"

    labels = list(pythons.values())
    print(f"\nInterpreters, against {labels[0]}: requests/s (above 1: faster), burst latency (below 1: sooner)\n")
    print("| approach | interpreter | waiting requests/s | computing requests/s | computing burst p50 | burst max |")
    print("|---|---|---:|---:|---:|---:|")
    for index in range(0, len(chosen), len(pythons)):
        first = chosen[index]
        base = first.name[: -len(f", {labels[0]}")]
        for approach, label in zip(chosen[index + 1 : index + len(pythons)], labels[1:]):
            print(
                f"| {base} | {label} | {ratio('quiet', approach, first)} | {ratio('cpu', approach, first)} "
                f"| {ratio('cpu p50', approach, first)} | {ratio('cpu max', approach, first)} |"
            )


def have_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def plot(chosen: list[Approach], args: argparse.Namespace, suffix: str = "") -> None:
    """Draw the timelines of the last round's bursts and the computing requests/s, as PNG files in args.plot."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no screen needed
    import matplotlib.pyplot as plt

    folder = Path(args.plot)
    folder.mkdir(parents=True, exist_ok=True)
    figures = {
        f"timeline-waiting{suffix}.png": timeline_figure(plt, chosen, "waiting", args),
        f"timeline-computing{suffix}.png": timeline_figure(plt, chosen, "computing", args),
        f"requests-per-second{suffix}.png": computing_rate_figure(plt, chosen, args),
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

    def __init__(
        self, approach: Approach, *options: str, seed_dir: Path | None = None, log: Any = subprocess.DEVNULL
    ) -> None:
        seed = seed_dir is not None
        if seed_dir is not None:
            # The seed's scripts print no ready line and know no options: give
            # them a free port and wait until it accepts.
            self.host, self.port = "127.0.0.1", free_port()
            command = [approach.python, str(seed_dir / approach.seed), str(self.port)]
        elif approach.command:
            command = [*approach.command, *options]
        else:
            command = [approach.python, str(HERE / approach.script), "0", *approach.options, *options]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL if seed else subprocess.PIPE, stderr=log)
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


# prefork_server.py's listening sockets (--reuseport): one shared, or one per worker.

REUSEPORT_WORKERS = 4
HELD_TIMEOUT = 2.0  # --timeout of the server that a silent client holds: how long it holds a worker


def measure_reuseport(args: argparse.Namespace) -> int:
    """prefork_server.py --workers 4: how evenly the requests spread, and quick requests while one worker is held.

    A shared socket's queue goes to whichever worker calls accept() first; with
    SO_REUSEPORT the kernel hashes each connection to one worker's socket when
    it arrives, whether that worker is free or not.
    """
    variants = {
        "one shared socket": Approach("shared", "prefork_server.py", ("--workers", str(REUSEPORT_WORKERS))),
        "a socket per worker (--reuseport)": Approach(
            "reuseport", "prefork_server.py", ("--workers", str(REUSEPORT_WORKERS), "--reuseport")
        ),
    }
    for round_number in range(args.rounds):
        order = list(variants.values())
        for approach in order if round_number % 2 == 0 else order[::-1]:
            shares = worker_shares(approach, args)
            approach.add("busiest", shares[0])
            approach.add("least busy", shares[-1])
            with Server(approach, "--delay", "0", "--timeout", str(HELD_TIMEOUT), "--quiet") as server:
                warm_up(server)
                with socket.create_connection((server.host, server.port)):  # sends nothing: holds a worker
                    time.sleep(0.2)  # until a worker has accepted it
                    result = client.run_load(
                        server.host, server.port, args.reuseport_in_flight, args.requests, args.size, timeout=30
                    )
            if result.failed:
                raise SystemExit(f"--reuseport: {result.failed} requests failed: {dict(result.errors)}")
            for metric, fraction in (("p50", 0.5), ("p99", 0.99), ("max", 1.0)):
                approach.add(metric, result.percentile(fraction))
            approach.add("wall", result.wall)
        print(f"round {round_number + 1} of {args.rounds} done", file=sys.stderr, flush=True)
    print(f"\nprefork_server.py --workers {REUSEPORT_WORKERS}, median of {args.rounds} alternating rounds.")
    print(f"Spread: {args.requests} requests, {args.concurrency} in flight, each worker's share from its log lines.")
    print(f"One held: {args.requests} quick requests, {args.reuseport_in_flight} in flight, while one client holds a")
    print(f"worker ({HELD_TIMEOUT:g} s: the server's --timeout)\n")
    print("| listening | busiest worker | least busy | one held: p50 | p99 | max | all done in |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, approach in variants.items():
        shares = f"{approach.median('busiest'):.0%} | {approach.median('least busy'):.0%}"
        latency = " | ".join(f"{1000 * approach.median(metric):.1f} ms" for metric in ("p50", "p99", "max"))
        print(f"| {name} | {shares} | {latency} | {approach.median('wall'):.2f} s |")
    return 0


def worker_shares(approach: Approach, args: argparse.Namespace) -> list[float]:
    """Each worker's share of a load's requests, from the server's log: the largest first."""
    with tempfile.TemporaryFile() as log:
        with Server(approach, "--delay", "0", log=log) as server:
            warm_up(server)
            started = log.tell()
            client.run_load(server.host, server.port, args.concurrency, args.requests, args.size, timeout=30)
        log.seek(started)
        served = Counter(re.findall(rb"\[(\d+)\] #\d+ answered", log.read()))
    counts = sorted(served.values(), reverse=True) + [0] * (REUSEPORT_WORKERS - len(served))
    return [count / sum(counts) for count in counts]


# HTTP (--http): the two HTTP servers against their references, from wrk.


def measure_http(args: argparse.Namespace, pythons: dict[str, str]) -> int:
    """requests/s from wrk: http_static.py against python -m http.server, wsgi_app.py against gunicorn.

    wrk (Debian's wrk package) keeps --http-connections connections busy for
    --http-seconds; the figures are medians of alternating rounds, and each
    ratio the median of the rounds' ratios. gunicorn (one sync worker, the
    prefork model's worker) is measured where this interpreter can import it.
    With --python, each of this collection's two servers runs on each
    interpreter instead, against itself on the first.
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
        # name, the command (PORT: a free port), the path, the interpreter; then what it is measured against
        ours = [
            (
                "http_static.py, a 1 KiB file",
                [str(HERE / "http_static.py"), "PORT", "-q", "--directory", site],
                "/1k.txt",
            ),
            ("wsgi_app.py, GET /", [str(HERE / "wsgi_app.py"), "PORT", "-q"], "/"),
        ]
        if len(pythons) > 1:
            first = next(iter(pythons.values()))
            servers = [
                (f"{name}, {label}", command, path, python, f"{name}, {first}" if label != first else None)
                for name, command, path in ours
                for python, label in pythons.items()
            ]
            return run_http(servers, args)
        python = next(iter(pythons))
        http_server = "python -m http.server, a 1 KiB file"
        servers = [
            (*ours[0], python, http_server),
            (http_server, ["-m", "http.server", "PORT", "-b", "127.0.0.1", "-d", site], "/1k.txt", python, None),
            (*ours[1], python, None),
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
            gunicorn_name = f"gunicorn {gunicorn.__version__}, 1 sync worker, GET /"
            servers[2] = (*ours[1], python, gunicorn_name)
            servers.append((gunicorn_name, gunicorn_command, "/", python, None))
        return run_http(servers, args)


def run_http(servers: list[tuple[str, list[str], str, str, str | None]], args: argparse.Namespace) -> int:
    """wrk against each server, in alternating rounds; a table of the medians, and of each against its reference."""
    rates: dict[str, list[float]] = {name: [] for name, *_ in servers}
    for round_number in range(args.rounds):
        for name, command, path, python, _ in servers if round_number % 2 == 0 else servers[::-1]:
            rates[name].append(wrk_rate([python, *command], path, args))
        print(f"round {round_number + 1} of {args.rounds} done", file=sys.stderr, flush=True)
    print(f"\nHTTP: requests/s from wrk, {args.http_connections} connections, {args.http_seconds:g} s a run,")
    print(f"median of {args.rounds} alternating rounds; each ratio the median of the rounds' ratios\n")
    print("| server | requests/s | against | ratio |")
    print("|---|---:|---|---:|")
    for name, _, _, _, reference in servers:
        ratios = [ours / theirs for ours, theirs in zip(rates[name], rates.get(reference or "", [])) if theirs]
        shown = f"{statistics.median(ratios):.2f}x" if ratios else "-"
        print(f"| {name} | {statistics.median(rates[name]):,.0f} | {reference or '-'} | {shown} |")
    return 0


def wrk_rate(
    command: list[str],
    path: str,
    args: argparse.Namespace,
    connections: int = 0,
    cwd: str | None = None,
    configure: Callable[[int], None] | None = None,
    socket_errors_ok: bool = False,
) -> float:
    """requests/s from wrk against command (its interpreter first), started on a free port (PORT).

    configure(port), when given, runs first (nginx's config names its port).
    socket_errors_ok: a server that closes each connection (the blog post's)
    costs wrk a reconnect, which it counts as a socket error.
    """
    port = free_port()
    argv = [part.replace("PORT", str(port)) for part in command]
    if configure is not None:
        configure(port)
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=cwd)
    try:
        wait_until(lambda: accepts("127.0.0.1", port), f"{' '.join(argv)} did not start")
        seconds = f"{max(1, args.http_seconds)}s"
        url = f"http://127.0.0.1:{port}{path}"
        wrk = ["wrk", "-t1", f"-c{connections or args.http_connections}", f"-d{seconds}", url]
        output = subprocess.run(wrk, capture_output=True, text=True, timeout=args.http_seconds + 30).stdout
        match = re.search(r"Requests/sec:\s+([\d.]+)", output)
        errors = "Socket errors" in output and "read 0" not in output and not socket_errors_ok
        if not match or "Non-2xx" in output or errors:
            raise SystemExit(f"wrk against {' '.join(argv)}: {output.strip()[-300:]!r}")
        return float(match.group(1))
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# ASGI (--asgi): asgi_server.py against uvicorn, on the same applications.
FASTAPI_APP = """
from fastapi import FastAPI

app = FastAPI()


@app.get("/json")
async def json_route():
    return {"message": "Hello world!"}
"""


def measure_asgi(args: argparse.Namespace) -> int:
    """requests/s from wrk: asgi_server.py, uvicorn --http h11 and uvicorn --http httptools, on one application.

    Each round runs the three on the demo's GET / and on a FastAPI JSON
    route, in the opposite order from the round before; each ratio is the
    median of the rounds' ratios.
    """
    if shutil.which("wrk") is None:
        print("--asgi needs wrk (Debian: apt-get install wrk)", file=sys.stderr)
        return 2
    try:
        import fastapi
        import httptools  # noqa: F401  (uvicorn's C parser: measured, never imported by a server script)
        import uvicorn
    except ImportError as exc:
        print(f"--asgi needs uvicorn, httptools and fastapi (pip install them): {exc}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as directory:
        Path(directory, "bench_fastapi.py").write_text(FASTAPI_APP)
        applications = [
            ("the demo's GET /", "asgi_server:app", "/"),
            (f"FastAPI {fastapi.__version__}, GET /json", "bench_fastapi:app", "/json"),
        ]
        servers = {
            "asgi_server.py": lambda name: [str(HERE / "asgi_server.py"), "PORT", "-q", "--app", name],
            **{
                f"uvicorn {uvicorn.__version__} --http {http}": lambda name, http=http: [
                    *("-m", "uvicorn", "--port", "PORT", "--http", http, "--loop", "asyncio"),
                    *("--no-access-log", "--log-level", "warning", "--app-dir", str(HERE), name),
                ]
                for http in ("h11", "httptools")
            },
        }
        rates: dict[tuple[str, str], list[float]] = {}
        for round_number in range(args.rounds):
            order = list(servers) if round_number % 2 == 0 else list(servers)[::-1]
            for label, name, path in applications:
                for server in order:
                    rate = wrk_rate(
                        [sys.executable, *servers[server](name)], path, args, args.asgi_connections, cwd=directory
                    )
                    rates.setdefault((label, server), []).append(rate)
            print(f"round {round_number + 1} of {args.rounds} done", file=sys.stderr, flush=True)
    ours, h11, httptools_ = servers
    print(
        f"\nASGI: requests/s from wrk, keep-alive, {args.asgi_connections} connections, {args.http_seconds:g} s a run,"
    )
    print(f"median of {args.rounds} alternating rounds; each ratio the median of the rounds' ratios\n")
    print(f"| application | {ours} | {h11} | ratio | {httptools_} | ratio |")
    print("|---|---:|---:|---:|---:|---:|")
    for label, _, _ in applications:

        def ratio(against: str, label: str = label) -> str:
            pairs = zip(rates[(label, ours)], rates[(label, against)])
            return f"{statistics.median(mine / theirs for mine, theirs in pairs):.2f}x"

        figures = {server: f"{statistics.median(rates[(label, server)]):,.0f}" for server in servers}
        columns = [label, figures[ours], figures[h11], ratio(h11), figures[httptools_], ratio(httptools_)]
        print(f"| {' | '.join(columns)} |")
    return 0


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
    measure_across_processes(args)
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


def broadcast_seconds(server: Server | list[Server], count: int, repeats: int = 3) -> float:
    """The median, over repeats messages, of the time from a /chat message sent to its arrival at the last client.

    With several servers, the clients are spread over them in turn.
    """
    servers = server if isinstance(server, list) else [server]
    sockets = [ws_open(servers[index % len(servers)], "/chat") for index in range(count)]
    selector = selectors.DefaultSelector()
    for sock in sockets:
        selector.register(sock, selectors.EVENT_READ)
    times = []
    for index in range(repeats):
        message = b"broadcast %03d" % index
        waiting = {sock: len(message) + 2 for sock in sockets}
        started = time.monotonic()
        sockets[index % count].send(ws_frame(0x1, message))
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


def measure_across_processes(args: argparse.Namespace) -> None:
    """/chat in one process against two processes on one Redis: latency, fan-out, and a room's rate."""
    program = shutil.which("redis-server")
    if program is None:
        print("\nNo redis-server (apt-get install redis-server): /chat across processes not measured.")
        return
    one = Approach("one process", "websocket_server.py")
    two = Approach("two processes, one Redis", "websocket_server.py")
    port = free_port()
    with tempfile.TemporaryDirectory() as directory:
        redis = subprocess.Popen(
            [program, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
            + ["--dir", directory],
            stdout=subprocess.DEVNULL,
        )
        try:
            wait_until(lambda: accepts("127.0.0.1", port), "redis-server did not start")
            url = f"redis://127.0.0.1:{port}/"
            for round_number in range(args.rounds):
                for approach in (one, two) if round_number % 2 == 0 else (two, one):
                    spans = ("--redis", url) if approach is two else ()
                    with Server(approach, "--quiet", "--no-compression", *spans) as first:
                        if approach is one:
                            measure_room(approach, [first], args)
                            continue
                        with Server(approach, "--quiet", "--no-compression", *spans) as second:
                            wait_until(lambda: subscribers(port) == 2, "the servers did not subscribe")
                            measure_room(approach, [first, second], args)
                print(f"across processes: round {round_number + 1} of {args.rounds} done", file=sys.stderr, flush=True)
        finally:
            redis.terminate()
            redis.wait()
    print(f"\n/chat across processes: median of {args.rounds} alternating rounds; ratios against one process\n")
    print("| figure | setup | value | ratio |")
    print("|---|---|---:|---:|")
    for metric, title in (
        ("latency", "latency: one message to 2 members"),
        ("broadcast", f"broadcast: one message to {args.ws_broadcast:,} members"),
        ("room", f"room: messages/s, {args.ws_room} members, {args.ws_window} in flight each"),
    ):
        for approach in (one, two):
            pairs = zip(approach.samples[metric], one.samples[metric])
            ratio = statistics.median(value / base for value, base in pairs)
            value = approach.median(metric)
            shown = f"{value:,.0f}" if metric == "room" else f"{value * 1000:.2f} ms"
            print(f"| {title} | {approach.name} | {shown} | {ratio:.2f}x |")
    print(f"\nload average: {' '.join(Path('/proc/loadavg').read_text().split()[:3])} ({os.cpu_count()} cores)")


def measure_room(approach: Approach, servers: list[Server], args: argparse.Namespace) -> None:
    approach.add("latency", broadcast_seconds(servers, 2, repeats=31))
    approach.add("broadcast", broadcast_seconds(servers, args.ws_broadcast))
    approach.add("room", room_rate(servers, args.ws_room, args.ws_window, args.ws_seconds))


def subscribers(port: int) -> int:
    """How many connections Redis has subscribed to the channel chat (PUBSUB NUMSUB)."""
    reply = b""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        conn.sendall(b"PUBSUB NUMSUB chat\r\nQUIT\r\n")
        while chunk := conn.recv(4096):
            reply += chunk
    match = re.search(rb"\r\n:(\d+)\r\n", reply)  # *2 $4 chat :N, then QUIT's +OK
    return int(match.group(1)) if match else 0


def room_rate(servers: list[Server], members: int, window: int, seconds: float) -> float:
    """Messages per second through a room: each member keeps window messages in flight; counted at member 0.

    Every member gets every message, so a member that has received one
    message from each member (members of them) sends one more: the messages
    in flight stay members x window. Half a second of warm-up first.
    """
    message = b"m" * 32
    frame = ws_frame(0x1, message)
    size = len(message) + 2  # the server's frame: two bytes of header, unmasked
    sockets = [ws_open(servers[index % len(servers)], "/chat") for index in range(members)]
    selector = selectors.DefaultSelector()
    received = {}
    for sock in sockets:
        selector.register(sock, selectors.EVENT_READ)
        received[sock] = 0
        sock.send(frame * window)
    counted = 0
    started = time.monotonic()
    warm, end = started + 0.5, started + 0.5 + seconds
    now = started
    while now < end:
        for key, _ in selector.select(1.0):
            sock = key.fileobj
            data = sock.recv(65536)  # type: ignore[union-attr]
            if not data:
                raise SystemExit("a room member's connection closed")
            before = received[sock] // size
            received[sock] += len(data)
            arrived = received[sock] // size - before
            sends = (before % members + arrived) // members
            if sends:
                sock.send(frame * sends)  # type: ignore[union-attr]
            if sock is sockets[0] and now >= warm:
                counted += arrived
        now = time.monotonic()
    for sock in sockets:
        sock.close()
    selector.close()
    return counted / seconds


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


# http_static.py (--http-static): against the blog post's server, python -m http.server and nginx, from wrk.

NGINX_CONFIG = """
daemon off;
master_process off;
worker_processes 1;
pid {folder}/nginx.pid;
error_log {folder}/error.log;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    sendfile on;
    keepalive_requests 1000000;
    client_body_temp_path {folder}/client;
    proxy_temp_path {folder}/proxy;
    fastcgi_temp_path {folder}/fastcgi;
    uwsgi_temp_path {folder}/uwsgi;
    scgi_temp_path {folder}/scgi;
    server {{
        listen 127.0.0.1:{port};
        root {site};
    }}
}}
"""


def measure_http_static(args: argparse.Namespace) -> int:
    """http_static.py's requests/s at each of --http-static-connections, against its yardsticks, from wrk.

    The yardsticks, in the same alternating rounds: the blog post's server (a
    TCPServer with SimpleHTTPRequestHandler: one client at a time, a
    connection per request; with --seed-dir), python -m http.server (a thread
    per connection), and nginx (Debian's nginx-light, one worker process,
    from a config written here), the limit of this machine. Each ratio is the
    median of the rounds' ratios; "own 1" is each rate against http_static.py's
    own at one connection in the same round.
    """
    if shutil.which("wrk") is None:
        print("--http-static needs wrk (Debian: apt-get install wrk)", file=sys.stderr)
        return 2
    seed = args.seed_dir.resolve() / "seed_http_static.py" if args.seed_dir else None
    nginx = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)
    with tempfile.TemporaryDirectory() as folder:
        site = Path(folder, "site")
        site.mkdir()
        Path(site, "1k.txt").write_bytes(b"x" * 1024)
        config = Path(folder, "nginx.conf")

        def configure_nginx(port: int) -> None:
            config.write_text(NGINX_CONFIG.format(folder=folder, site=site, port=port))

        # name, the command (PORT: a free port), the folder it runs in, what to do with the port first
        servers: list[tuple[str, list[str], str | None, Callable[[int], None] | None]] = []
        ours = [sys.executable, str(HERE / "http_static.py"), "PORT", "-q", "--directory", str(site)]
        servers.append(("http_static.py", ours, None, None))
        if seed is not None and seed.exists():
            servers.append(("the blog post's server", [sys.executable, str(seed), "PORT"], str(site), None))
        stdlib = [sys.executable, "-m", "http.server", "PORT", "-b", "127.0.0.1"]
        servers.append(("python -m http.server", stdlib, str(site), None))
        if nginx is not None:
            servers.append(("nginx", [nginx, "-p", folder, "-c", str(config)], None, configure_nginx))
        rates: dict[tuple[str, int], list[float]] = {}
        for round_number in range(args.rounds):
            for connections in args.http_static_connections:
                order = servers if round_number % 2 == 0 else servers[::-1]
                for name, command, cwd, configure in order:
                    rate = wrk_rate(command, "/1k.txt", args, connections, cwd, configure, socket_errors_ok=True)
                    rates.setdefault((name, connections), []).append(rate)
            print(f"round {round_number + 1} of {args.rounds} done", file=sys.stderr, flush=True)
    print(f"\nhttp_static.py: requests/s from wrk (-t1), a 1 KiB file, {args.http_seconds} s a run, keep-alive;")
    print(f"median of {args.rounds} alternating rounds; each ratio the median of the rounds' ratios")
    load = " ".join(f"{value:.2f}" for value in os.getloadavg())
    print(f"load average (1, 5, 15 minutes) at the end: {load}, on {CORES} cores\n")
    names = [name for name, _, _, _ in servers]
    first = args.http_static_connections[0]
    against = [f"ours / {name}" for name in names[1:]] + [f"ours / own at {first}"]
    print("| connections | " + " | ".join(names + against) + " |")
    print("|---:|" + "---:|" * (2 * len(names)))
    for connections in args.http_static_connections:
        ours = rates[("http_static.py", connections)]
        cells = [f"{statistics.median(rates[(name, connections)]):,.0f}" for name in names]
        for name in names[1:]:
            cells.append(f"{statistics.median(a / b for a, b in zip(ours, rates[(name, connections)]) if b):.2f}x")
        own = rates[("http_static.py", first)]
        cells.append(f"{statistics.median(a / b for a, b in zip(ours, own) if b):.2f}x")
        print(f"| {connections} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
