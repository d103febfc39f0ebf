#!/usr/bin/env python3
"""Client for the reverse protocol: one request, a load test, or a line stream.

One request:  python client.py 8000 hello
    sends "hello!" (a "!" is added when the message has none), prints the reply
    ("!olleh") and exits 0; a refused connection, a timeout or a wrong reply is
    one line on stderr and exit 1.

Load:  python client.py 8000 --clients 100 --requests 1000 --size 64
    keeps 100 connections in flight until 1000 requests are done, checks every
    reply, and prints ok/failed, wall time, requests/s and latency percentiles.
    It runs its own small event loop, so ten thousand connections at once fit
    in one process, and it costs less per request than the servers it measures.

Stream:  python client.py 8000 --stream
    for socketserver_variants.py --variant stream: each line of stdin goes to
    the server, and each reversed line is printed as it arrives.

Importing this module has no side effects: test_all.py and bench.py use
request(), expected_reply() and run_load().
"""

from __future__ import annotations

import argparse
import errno
import math
import os
import selectors
import socket
import sys
import time
from collections import Counter, deque
from dataclasses import dataclass, field

DELIMITER = b"!"
CHUNK_SIZE = 64 * 1024
# Payload bytes for load tests: anything but the delimiter, and not a palindrome,
# so a server that forgot to reverse is caught.
ALPHABET = b"abcdefghijklmnopqrstuvwxyz0123456789"
SPARE_FILES = 32  # open files besides the connections: stdio, the selector, imports
MAX_SIZE = 256 * 1024 * 1024  # --size: one request is held in memory whole
MAX_TIMEOUT = 24 * 60 * 60.0  # --timeout: a day (past 292 years, socket timeouts overflow)


class OpenFileLimit(Exception):
    """More connections at once than this process may have files open."""

    def __init__(self, wanted: int) -> None:
        super().__init__(
            f"{wanted} connections at once need more open files than this process may have"
            f" ({open_file_limit()}): raise the limit with `ulimit -n {wanted + SPARE_FILES}`"
            " (as root if that is above the hard limit, `ulimit -Hn`), or use fewer --clients"
        )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        if args.stream:
            return stream_lines(args.host, args.port, args.timeout)
        if args.clients:
            requests = args.requests or args.clients
            result = run_load(args.host, args.port, args.clients, requests, args.size, args.timeout)
            print(result.summary())
            return 0 if result.failed == 0 else 1
        # The bytes as typed: os.fsencode() undoes the surrogateescape that
        # turned them into str, where str.encode() failed on a message that is
        # not UTF-8 ($'\xff').
        return send_one(args.host, args.port, os.fsencode(args.message), args.timeout)
    except OpenFileLimit as exc:
        print(exc, file=sys.stderr)
        return 1
    except socket.gaierror as exc:  # load mode resolves the host first
        print(f"cannot resolve {args.host}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    except UnicodeError as exc:  # the idna codec refused the host: an empty label, one of 64 letters
        print(f"not a host name: {args.host} ({exc})", file=sys.stderr)
        return 1
    except BrokenPipeError:
        # stdout was closed early (client.py ... | head). Silence is the
        # answer, as for any Unix tool; and stdout now points at /dev/null,
        # or the interpreter's last flush at exit would print the error anyway.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # type: ignore[union-attr]
        return 1
    except KeyboardInterrupt:
        return 130


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        epilog=__doc__.split("\n", 1)[1].split("Importing this module")[0].strip(),  # the examples
        formatter_class=HelpFormatter,
    )
    parser.add_argument("port", type=port_number, help="the server's TCP port")
    parser.add_argument("message", nargs="?", default="hello", help="what to send; a '!' is added when it has none")
    parser.add_argument("--host", default="127.0.0.1", help="the server's address")
    parser.add_argument("--clients", type=int, default=0, metavar="N", help="load mode: connections in flight at once")
    parser.add_argument("--requests", type=int, default=0, metavar="M", help="load mode: requests in all; 0: N")
    parser.add_argument("--size", type=int, default=64, metavar="BYTES", help="load mode: request size, '!' included")
    parser.add_argument("--timeout", type=float, default=30.0, metavar="S", help="seconds allowed for each request")
    parser.add_argument("--stream", action="store_true", help="send stdin line by line (the stream variant)")
    # Options before and after the message: 'client.py 8000 --host ::1 hello' as well.
    # (parse_args() stops the positionals at the first option, and calls 'hello' unrecognized.)
    args = parser.parse_intermixed_args(argv)
    if args.clients < 0 or args.requests < 0:
        parser.error("--clients and --requests must be >= 0")
    if not 1 <= args.size <= MAX_SIZE:
        parser.error(f"--size must be from 1 to {MAX_SIZE} bytes")
    if not (math.isfinite(args.timeout) and 0 < args.timeout <= MAX_TIMEOUT):
        parser.error(f"--timeout must be above 0 and at most {MAX_TIMEOUT:g} seconds")
    return args


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """--help as the docstring has it: its paragraphs as written, and each default where it says something."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.default is False:  # "(default: None)" tells a reader nothing
            return action.help
        return super()._get_help_string(action)


def port_number(text: str) -> int:
    port = int(text)
    if not 0 <= port <= 65535:  # the C library would take 70000 as 70000 % 65536, a port of someone else's
        raise argparse.ArgumentTypeError(f"port must be 0..65535, not {port}")
    return port


def expected_reply(message: bytes) -> bytes:
    """What a correct server answers: the request, up to its first '!', reversed."""
    return message[: message.index(DELIMITER) + 1][::-1]


def request(host: str, port: int, message: bytes, timeout: float = 30.0) -> bytes:
    """Send one request and return everything the server sends back before it closes.

    Raises OSError: ConnectionRefusedError, socket.timeout (the whole exchange
    took longer than timeout), and the like.
    """
    deadline = time.monotonic() + timeout
    with socket.create_connection((host, port), timeout=timeout) as conn:
        conn.sendall(message)
        chunks: list[bytes] = []
        while True:
            conn.settimeout(max(deadline - time.monotonic(), 0.001))
            chunk = conn.recv(CHUNK_SIZE)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)


def send_one(host: str, port: int, message: bytes, timeout: float) -> int:
    if DELIMITER not in message:
        message += DELIMITER
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        reply = request(host, port, message, timeout)
    except socket.timeout:
        print(f"no reply from {address} within {timeout:g} s", file=sys.stderr)
        return 1
    except ConnectionRefusedError:
        print(f"connection refused by {address}: is the server running?", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"cannot talk to {address}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    if reply != expected_reply(message):
        print(f"wrong reply from {address}: {reply[:80]!r}", file=sys.stderr)
        return 1
    write_out(reply + b"\n")
    return 0


def write_out(data: bytes) -> None:
    """Bytes to stdout, as they are; nowhere if there is no stdout at all (client.py ... >&-)."""
    if sys.stdout is not None:
        sys.stdout.buffer.write(data)
        sys.stdout.flush()


@dataclass
class LoadResult:
    """What a load run saw: one latency per good reply, a count per kind of failure."""

    wall: float
    latencies: list[float] = field(default_factory=list)
    spans: list[tuple[float, float]] = field(default_factory=list)  # per good reply: (sent, answered), from the start
    errors: Counter[str] = field(default_factory=Counter)

    @property
    def ok(self) -> int:
        return len(self.latencies)

    @property
    def failed(self) -> int:
        return sum(self.errors.values())

    def percentile(self, fraction: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if ordered else float("nan")

    def summary(self) -> str:
        rate = self.ok / self.wall if self.wall else 0.0
        # Three significant digits: 3 requests in 15 s are 0.2 requests/s, not 0.
        shown = f"{rate:.0f}" if rate >= 100 else f"{rate:.3g}"
        lines = [f"{self.ok} ok, {self.failed} failed in {self.wall:.2f} s: {shown} requests/s"]
        if self.latencies:
            lines.append(
                "latency ms: p50 {:.1f}, p90 {:.1f}, p99 {:.1f}, max {:.1f}".format(
                    *(1000 * self.percentile(f) for f in (0.5, 0.9, 0.99, 1.0))
                )
            )
        else:
            lines.append("latency ms: no reply to measure")
        for error, count in self.errors.most_common(5):
            lines.append(f"failed: {count} x {error}")
        return "\n".join(lines)


def run_load(host: str, port: int, clients: int, requests: int, size: int, timeout: float = 30.0) -> LoadResult:
    """Keep `clients` requests in flight until `requests` are done; check every reply.

    A small event loop of its own on selectors, not asyncio: a load generator
    must cost less per request than the servers it measures, and asyncio's
    transports and futures cost as much per connection as the fastest servers
    here spend on a whole request. So the numbers measure the server.
    """
    in_flight = min(clients, requests)
    raise_open_file_limit()
    if in_flight + SPARE_FILES > open_file_limit():
        raise OpenFileLimit(in_flight)
    message = (ALPHABET * (size // len(ALPHABET) + 1))[: size - 1] + DELIMITER
    family, _, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    load = Load(family, address, message, timeout)
    started = time.perf_counter()
    load.run(in_flight, requests)
    load.result.wall = time.perf_counter() - started
    return load.result


class Load:
    """The load loop: a non-blocking connection per request, a selector for them all."""

    def __init__(self, family: socket.AddressFamily, address: tuple, message: bytes, timeout: float) -> None:
        self.family = family
        self.address = address
        self.message = message
        self.expected = expected_reply(message)
        self.timeout = timeout
        self.selector = selectors.DefaultSelector()
        self.result = LoadResult(wall=0.0)
        self.started = time.monotonic()
        # Every request gets the same timeout, so requests in the order they
        # started are also in the order of their deadlines: no heap needed.
        self.deadlines: deque[tuple[float, Request]] = deque()

    def run(self, in_flight: int, requests: int) -> None:
        to_start = requests
        for _ in range(in_flight):
            self.start()
            to_start -= 1
        while self.deadlines:
            wait = max(0.0, self.deadlines[0][0] - time.monotonic())
            for key, events in self.selector.select(wait):
                request = key.data
                if request.step(events) and to_start:
                    self.start()  # one finished: keep the number in flight
                    to_start -= 1
            now = time.monotonic()
            while self.deadlines and (self.deadlines[0][1].done or self.deadlines[0][0] <= now):
                _, request = self.deadlines.popleft()
                if not request.done:
                    request.finish(f"no reply within {self.timeout:g} s")
                    if to_start:
                        self.start()
                        to_start -= 1
        self.selector.close()

    def start(self) -> None:
        try:
            request = Request(self)
        except OSError as exc:
            if exc.errno in (errno.EMFILE, errno.ENFILE):  # files held elsewhere, or the system's table
                raise OpenFileLimit(len(self.deadlines) + 1) from None
            raise
        self.deadlines.append((request.started + self.timeout, request))


class Request:
    """One connection of a load run: connect, send, read until the server closes."""

    def __init__(self, load: Load) -> None:
        self.load = load
        self.started = time.monotonic()
        self.done = False
        self.unsent = memoryview(load.message)
        self.chunks: list[bytes] = []
        self.sock = socket.socket(load.family, socket.SOCK_STREAM)
        self.sock.setblocking(False)
        self.sock.connect_ex(load.address)  # EINPROGRESS: writable once connected
        load.selector.register(self.sock, selectors.EVENT_WRITE, self)

    def step(self, events: int) -> bool:
        """Move on as far as the socket allows; True once the request is over."""
        try:
            if events & selectors.EVENT_WRITE:
                error = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if error:
                    raise OSError(error, os.strerror(error))
                self.unsent = self.unsent[self.sock.send(self.unsent) :]
                if not self.unsent:
                    self.load.selector.modify(self.sock, selectors.EVENT_READ, self)
                return False
            chunk = self.sock.recv(CHUNK_SIZE)
        except BlockingIOError:
            return False
        except OSError as exc:
            self.finish(exc.strerror or type(exc).__name__)
            return True
        if chunk:
            self.chunks.append(chunk)
            return False
        self.finish(None if b"".join(self.chunks) == self.load.expected else "wrong reply")
        return True

    def finish(self, error: str | None) -> None:
        self.done = True
        self.load.selector.unregister(self.sock)
        self.sock.close()
        if error is None:
            now = time.monotonic()
            self.load.result.latencies.append(now - self.started)
            self.load.result.spans.append((self.started - self.load.started, now - self.load.started))
        else:
            self.load.result.errors[error] += 1


def raise_open_file_limit() -> None:
    """Each connection in flight holds a file descriptor; the soft limit is often 1024."""
    try:
        import resource  # Unix only
    except ImportError:
        return
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError):
        pass


def open_file_limit() -> float:
    """How many files this process may have open (no limit where there is no such thing)."""
    try:
        import resource  # Unix only
    except ImportError:
        return float("inf")
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return float("inf") if soft == resource.RLIM_INFINITY else soft


def stream_lines(host: str, port: int, timeout: float) -> int:
    """Send stdin a line at a time; print each reply line as it comes back."""
    try:
        conn = socket.create_connection((host, port), timeout=timeout)
    except OSError as exc:
        print(f"cannot connect to {host}:{port}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    with conn, conn.makefile("rb") as replies:
        for line in sys.stdin.buffer if sys.stdin is not None else ():  # no stdin at all (<&-): no lines
            if not line.endswith(b"\n"):
                line += b"\n"
            try:
                conn.sendall(line)
                reply = replies.readline()
            except OSError as exc:  # socket.timeout included
                print(f"no reply from {host}:{port}: {exc.strerror or exc or 'timed out'}", file=sys.stderr)
                return 1
            if not reply:
                print(f"{host}:{port} closed the connection", file=sys.stderr)
                return 1
            write_out(reply)
    return 0


if __name__ == "__main__":
    sys.exit(main())
