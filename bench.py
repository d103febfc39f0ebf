#!/usr/bin/env python3
"""Measure every TCP server the same way and print one Markdown table.

For each approach, with --quiet and on loopback:
  requests/s    --delay 0, --size-byte requests, --concurrency in flight, --requests in all
  logs on       the same, without --quiet: what per-client logging costs
  burst         --burst clients at once with --delay 1, wall time against the
                ideal for the approach: 1 s if all are served at once; with only k
                at a time (sync: 1), a burst of 4k clients, ideally 4 s
  10,000        --scale clients at once with --delay 1 (event loops and threads
                only): all served?, wall time, p99 latency, the server's peak RSS
  16 MiB        one request of --large MiB with --delay 0: MB/s, the best of three

The load comes from client.py's load mode: one process, its own small event
loop, about 25,000 requests/s on one core, so the fastest servers here come
close to what it can send. Defaults finish in under two minutes on 2 cores.

Run:  python bench.py
      python bench.py --scripts sync_server.py asyncio_server.py --requests 5000
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import client

HERE = Path(__file__).resolve().parent
DELAY = 1.0  # the simulated work in burst and scale runs


@dataclass
class Approach:
    name: str
    script: str
    options: tuple[str, ...] = ()
    served_at_once: int | None = None  # None: every client at once
    scale: bool = False  # worth a 10,000-client run


APPROACHES = [
    Approach("sync", "sync_server.py", served_at_once=1),
    Approach("threaded", "threaded_server.py", scale=True),
    Approach("pool (8 workers)", "pool_server.py", ("--max-workers", "8"), served_at_once=8),
    Approach("forking", "forking_server.py"),
    Approach("prefork (2 workers)", "prefork_server.py", ("--workers", "2"), served_at_once=2),
    Approach("socketserver threading", "socketserver_variants.py", ("--variant", "threading")),
    Approach("asyncio", "asyncio_server.py", scale=True),
    Approach("selectors", "selectors_server.py", scale=True),
]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    chosen = [approach for approach in APPROACHES if not args.scripts or approach.script in args.scripts]
    if not chosen:
        print(f"no known script among {args.scripts}", file=sys.stderr)
        return 2
    print(f"Python {platform.python_version()}, {platform.system()} {platform.machine()}, {os.cpu_count() or 1} cores")
    print(f"command: python bench.py {' '.join(argv if argv is not None else sys.argv[1:])}".rstrip())
    print()
    print(
        f"| approach | requests/s | logs on | burst of n, {DELAY:g} s each: wall / ideal "
        f"| {args.scale:,} at once: served, wall, p99, peak RSS | {args.large} MiB request |"
    )
    print("|---|---:|---:|---|---|---:|")
    for approach in chosen:
        print(measure(approach, args), flush=True)
    return 0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--scripts", nargs="+", metavar="SCRIPT", help="measure only these (default: all)")
    parser.add_argument("--requests", type=int, default=3000, help="requests per throughput run")
    parser.add_argument("--concurrency", type=int, default=50, help="requests in flight in throughput runs")
    parser.add_argument("--size", type=int, default=64, help="bytes per request in throughput runs")
    parser.add_argument("--burst", type=int, default=50, help="clients in a burst")
    parser.add_argument("--scale", type=int, default=10_000, help="clients at once in scale runs (0: skip)")
    parser.add_argument("--large", type=int, default=16, help="MiB in the large request (0: skip)")
    return parser.parse_args(argv)


def measure(approach: Approach, args: argparse.Namespace) -> str:
    quiet = ("--quiet",)
    with Server(approach, "--delay", "0", *quiet) as server:
        rate = throughput(server, args)
    with Server(approach, "--delay", "0") as server:
        rate_logging = throughput(server, args)

    clients = args.burst if approach.served_at_once is None else min(args.burst, 4 * approach.served_at_once)
    with Server(approach, "--delay", str(DELAY), *quiet) as server:
        burst = client.run_load(server.host, server.port, clients, clients, args.size, timeout=60)
    rounds = 1 if approach.served_at_once is None else math.ceil(clients / approach.served_at_once)
    burst_cell = f"n={clients}: {burst.wall:.2f} s / {rounds * DELAY:g} s"
    if burst.failed:
        burst_cell += f" ({burst.failed} failed)"

    scale_cell = "-"
    if approach.scale and args.scale:
        with Server(approach, "--delay", str(DELAY), *quiet) as server:
            result = client.run_load(server.host, server.port, args.scale, args.scale, args.size, timeout=60)
            peak = server.peak_rss_mib()
        scale_cell = (
            f"{result.ok:,}/{args.scale:,}, {result.wall:.2f} s, p99 {result.percentile(0.99):.2f} s, {peak} MiB"
        )

    large_cell = "-"
    if args.large:
        size = args.large * 1024 * 1024
        message = bytes(size - 1) + b"!"
        with Server(approach, "--delay", "0", "--max-request", str(size), *quiet) as server:
            best = math.inf
            for _ in range(3):  # one transfer is noisy: the best of three
                started = time.perf_counter()
                reply = client.request(server.host, server.port, message, timeout=60)
                best = min(best, time.perf_counter() - started)
        large_cell = f"{size / best / 1e6:.0f} MB/s" if reply == message[::-1] else "wrong reply"

    return f"| {approach.name} | {rate} | {rate_logging} | {burst_cell} | {scale_cell} | {large_cell} |"


def throughput(server: Server, args: argparse.Namespace) -> str:
    result = client.run_load(server.host, server.port, args.concurrency, args.requests, args.size, timeout=30)
    cell = f"{result.ok / result.wall:,.0f}"
    return cell if not result.failed else f"{cell} ({result.failed} failed)"


class Server:
    """A server script on port 0, stopped with SIGTERM on leaving the with-block."""

    def __init__(self, approach: Approach, *options: str) -> None:
        command = [sys.executable, str(HERE / approach.script), "0", *approach.options, *options]
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        assert self.process.stdout is not None
        line = self.process.stdout.readline().decode()
        match = re.match(r"Listening on (\[[^\]]+\]|[^:\s]+):(\d+)", line)
        if not match:
            self.process.kill()
            raise SystemExit(f"{approach.script}: no ready line, got {line!r}")
        self.host = match.group(1).strip("[]")
        self.port = int(match.group(2))

    def peak_rss_mib(self) -> str:
        try:
            with open(f"/proc/{self.process.pid}/status") as status:
                for line in status:
                    if line.startswith("VmHWM:"):
                        return str(int(line.split()[1]) // 1024)
        except OSError:
            pass
        return "?"

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


if __name__ == "__main__":
    sys.exit(main())
