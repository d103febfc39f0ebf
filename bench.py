#!/usr/bin/env python3
"""Measure every TCP server the same way and print Markdown tables.

Each figure is the median of --rounds rounds, and the rounds alternate: every
round runs each approach once, in the opposite order from the round before, so
a machine that slows down for a while weighs on all of them alike. On a shared
2-core machine one sample swings by 40%; medians of alternating rounds, and
ratios taken within the same run, are what can be compared.

Waiting (the servers' --delay, the work threads and event loops are made for):
  requests/s    --delay 0, --size-byte requests, --concurrency in flight
  logs on       the same without --quiet, as a ratio: what logging costs
  vs seed       the blog post's script for the approach (its sleep removed),
                in the same rounds, as a ratio: above 1 is faster than the seed
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

The load comes from client.py's load mode: one process with its own small
event loop. --plot DIR also draws, from the same run, a timeline per approach
of each burst (one bar per client, from connect to reply) and the requests/s
waiting against computing (matplotlib, needed for --plot only).

Run:  python bench.py                        # about 1.5 minutes on 2 cores: quick, and noisier
      python bench.py --requests 2000 --burst-delay 0.5 --cpu-requests 200 \\
          --cpu-burst-seconds 0.1 --scale 10000 --plot images    # the README's run, 4 to 8 minutes
      python bench.py --scripts sync_server.py asyncio_server.py --rounds 5
      python bench.py --plot images/         # the figures too, from the same run
      python bench.py --load /tmp/rload      # requests/s from a C load generator:
                                             # gcc -O2 -o /tmp/rload ../shared/tools/rload.c
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import client

HERE = Path(__file__).resolve().parent
SEED = HERE.parent / "shared" / "seed"  # the blog post's scripts, where this checkout has them
CORES = os.cpu_count() or 1


@dataclass
class Approach:
    name: str
    script: str
    options: tuple[str, ...] = ()
    served_at_once: int | None = None  # None: every client at once
    seed: str = ""  # the blog post's script for this approach, with its sleep removed
    scale: bool = False  # worth a --scale run
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
    for round_number in range(args.rounds):
        order = chosen if round_number % 2 == 0 else chosen[::-1]
        for approach in order:
            measure_round(approach, args, last=round_number == args.rounds - 1)
        print(f"round {round_number + 1} of {args.rounds} done", file=sys.stderr, flush=True)
    print_tables(chosen, args)
    if args.plot:
        plot(chosen, args)
    return 0


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
    parser.add_argument(
        "--load",
        metavar="PROGRAM",
        help="a load generator for the requests/s figures instead of client.py, run as PROGRAM HOST PORT"
        " IN_FLIGHT REQUESTS SIZE TIMEOUT and printing ok=N err=N rps=X (../shared/tools/rload.c, built)",
    )
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.requests < 1 or args.cpu_requests < 1:
        parser.error("--rounds, --requests and --cpu-requests must be >= 1")
    if args.load and shutil.which(args.load) is None:
        parser.error(f"--load: no program {args.load!r} (build it first: see the help)")
    return args


def measure_round(approach: Approach, args: argparse.Namespace, last: bool) -> None:
    """One sample of every figure for one approach."""
    load = (args.concurrency, args.requests, args.size, args.load)
    approach.add("quiet", rate(Server(approach, "--delay", "0", "--quiet"), *load))
    approach.add("logs", rate(Server(approach, "--delay", "0"), *load))
    if approach.seed and (SEED / approach.seed).exists():
        approach.add("seed", rate(Server(approach, seed=True), *load))

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
    failed = any(float(figures.get(name, 0)) for name in ("err", "mismatch", "unfinished"))
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
    """Draw the timelines of the last round's bursts and the requests/s, as PNG files in args.plot."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no screen needed
    import matplotlib.pyplot as plt

    folder = Path(args.plot)
    folder.mkdir(parents=True, exist_ok=True)
    titles = {
        "waiting": f"{args.burst} clients at once, each waiting --delay {args.burst_delay:g} s (fewer for sync)",
        "computing": f"{args.cpu_burst} clients at once, each computing --cpu {args.cpu_burst_seconds:g} s",
    }
    for kind, title in titles.items():
        figure, axes = plt.subplots(len(chosen), 1, figsize=(8, 1.1 * len(chosen) + 0.8), sharex=True)
        for axis, approach in zip(axes if len(chosen) > 1 else [axes], chosen):
            spans = sorted(approach.timelines.get(kind, []))
            axis.barh(range(len(spans)), [end - start for start, end in spans], left=[s for s, _ in spans], height=0.8)
            axis.set_yticks([])
            axis.set_ylabel(approach.name, rotation=0, ha="right", va="center", fontsize=8)
            axis.invert_yaxis()  # the first client on top
        axes_list = axes if len(chosen) > 1 else [axes]
        axes_list[-1].set_xlabel("seconds since the burst began (one bar per client: connect to reply)")
        figure.suptitle(title, fontsize=10)
        figure.tight_layout()
        figure.savefig(folder / f"timeline-{kind}.png", dpi=100)
        plt.close(figure)

    figure, axis = plt.subplots(figsize=(8, 0.45 * len(chosen) + 1.2))
    names = [approach.name for approach in chosen]
    positions = range(len(chosen))
    waiting = [approach.median("quiet") for approach in chosen]
    computing = [approach.median("cpu") * args.cpu_seconds / CORES for approach in chosen]  # a share of the ideal
    axis.barh(
        [p - 0.2 for p in positions],
        [w / max(waiting) for w in waiting],
        height=0.4,
        label="waiting (share of the fastest)",
    )
    axis.barh([p + 0.2 for p in positions], computing, height=0.4, label=f"computing (share of {CORES} cores)")
    axis.set_yticks(list(positions))
    axis.set_yticklabels(names, fontsize=8)
    axis.invert_yaxis()
    axis.set_xlim(0, 1.05)
    axis.legend(fontsize=8, loc="lower right")
    axis.set_title(f"requests/s: --delay 0 against --cpu {args.cpu_seconds:g}", fontsize=10)
    figure.tight_layout()
    figure.savefig(folder / "requests-per-second.png", dpi=100)
    plt.close(figure)
    print(f"\nfigures: {', '.join(sorted(path.name for path in folder.glob('*.png')))} in {folder}")


class Server:
    """A server script (or the seed's) on a free port, stopped on leaving the with-block."""

    def __init__(self, approach: Approach, *options: str, seed: bool = False) -> None:
        if seed:
            # The seed's scripts print no ready line and know no options: give
            # them a free port and wait until it accepts.
            self.host, self.port = "127.0.0.1", free_port()
            command = [sys.executable, str(SEED / approach.seed), str(self.port)]
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
        match = re.match(r"Listening on (\[[^\]]+\]|[^:\s]+):(\d+)", line)
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


if __name__ == "__main__":
    sys.exit(main())
