#!/usr/bin/env python3
"""The collection's contract (CONTRACT.md), checked the way a user would see it.

Each test starts a script with this interpreter on port 0, reads its ready line,
talks to it over real loopback sockets, and stops it with SIGTERM. Every server
runs in a process group of its own, killed at clean-up, so a failing test leaves
nothing behind, forked children included.

Run:  python test_all.py            (all of it, in 3 processes at once: about 50 s on 2 cores)
      python test_all.py -k Pool    (with arguments: in this process, unittest's own options)
      TEST_WORKERS=1 python test_all.py   (all of it, in this process)
"""

from __future__ import annotations

import ast
import concurrent.futures
import http.client
import importlib
import itertools
import json
import os
import re
import select
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import urllib.parse
import urllib.request
import zlib
from pathlib import Path
from typing import Any, Callable, Sequence

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import client  # noqa: E402  (the one import between scripts the contract allows)

READY_LINE = re.compile(r"^Listening on (?:https?://)?(\[[^\]]+\]|[^:\s]+):(\d+)")
START_TIMEOUT = 10.0  # a loaded CI machine can be slow to start an interpreter
STOP_TIMEOUT = 10.0
MIB = 1024 * 1024
# What no server may ever print: a traceback, or a warning (CI runs the suite
# once more with PYTHONDEVMODE=1 and PYTHONWARNINGS=error, which turn up
# ResourceWarnings and DeprecationWarnings).
TRACEBACK = r"Traceback \(most recent call last\)"
WARNING = r"\w+Warning: "
UNCLEAN = re.compile(f"{TRACEBACK}|{WARNING}")
# The options most tests run with: no simulated work, short limits, and a
# maximum request large enough to exceed what kernel buffers absorb (4 MiB).
QUICK = ("--delay", "0", "--timeout", "0.5", "--max-request", str(8 * MIB))


def has_ipv6() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
        return True
    except OSError:
        return False


def require_peer(module: str) -> Any:
    """Import a development peer (h11, websockets) for a test, or skip the test and say why.

    Peers live in CI's throwaway venv, never in a script. CI sets
    TEST_REQUIRE_PEERS=1 where it has installed them: there a missing peer
    fails the test instead of skipping it.
    """
    try:
        return importlib.import_module(module)
    except ImportError:
        if os.environ.get("TEST_REQUIRE_PEERS"):
            raise AssertionError(f"{module} is not installed, and TEST_REQUIRE_PEERS=1 says it must be") from None
        raise unittest.SkipTest(f"{module} is not installed (pip install {module}): skipped") from None


class Server:
    """A script started (on port 0 unless told): its process, its address, and its log."""

    def __init__(
        self,
        script: str,
        args: Sequence[str],
        add_cleanup: Callable,
        host: str = "127.0.0.1",
        port: int = 0,
        prefix: Sequence[str] = (),  # a command to run it under: ip netns exec NAME
        unclean: re.Pattern = UNCLEAN,  # what its log must not show when the test ends
    ) -> None:
        self.script = script
        self.unclean = unclean
        self.log_file = tempfile.TemporaryFile()
        add_cleanup(self.log_file.close)
        # A session of its own makes the server a process-group leader, so
        # clean-up can kill it together with any child it forked.
        self.process = subprocess.Popen(
            [*prefix, sys.executable, str(HERE / script), str(port), "--host", host, *args],
            stdout=subprocess.PIPE,
            stderr=self.log_file,
            start_new_session=True,
        )
        add_cleanup(self.assert_nothing_unclean)
        add_cleanup(self.kill)  # runs first: clean-ups run last in, first out
        self.ready_line = self.read_ready_line()
        match = READY_LINE.match(self.ready_line)
        if not match:
            raise AssertionError(f"{script}: first line is not a ready line: {self.ready_line!r}\n{self.log()}")
        self.host = match.group(1).strip("[]")
        self.port = int(match.group(2))

    def read_ready_line(self) -> str:
        assert self.process.stdout is not None
        ready, _, _ = select.select([self.process.stdout], [], [], START_TIMEOUT)
        if not ready:
            raise AssertionError(f"{self.script}: no ready line within {START_TIMEOUT} s\n{self.log()}")
        return self.process.stdout.readline().decode()

    def kill(self) -> None:
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.process.wait()
        if self.process.stdout:
            self.process.stdout.close()

    def assert_nothing_unclean(self) -> None:
        match = self.unclean.search(self.log())
        if match:
            raise AssertionError(f"{self.script} printed {match.group()!r}:\n{self.log()}")

    def log(self) -> str:
        # pread(), not seek() and read(): the server writes through the same
        # open file, and so at the same offset; a seek(0) between two of its
        # writes made the next one overwrite the start of the log.
        fd = self.log_file.fileno()
        return os.pread(fd, os.fstat(fd).st_size, 0).decode(errors="replace")

    def wait_for_log(self, pattern: str, timeout: float = 5.0) -> re.Match:
        deadline = time.monotonic() + timeout
        while True:
            match = re.search(pattern, self.log())
            if match:
                return match
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.script}: no log line like {pattern!r} within {timeout} s:\n{self.log()}")
            time.sleep(0.02)

    def connect(self) -> socket.socket:
        conn = socket.create_connection((self.host, self.port), timeout=10)
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return conn

    def request(self, message: bytes, timeout: float = 10.0) -> bytes:
        return client.request(self.host, self.port, message, timeout)

    def stop(self, signum: int = signal.SIGTERM) -> int:
        """Send a stop signal and return the exit status."""
        self.process.send_signal(signum)
        return self.process.wait(STOP_TIMEOUT)

    def wait_until_accepted(self, timeout: float = 5.0) -> None:
        """Return once no connection waits in the listen queue: all are accepted.

        On Linux a listening socket's rx_queue in /proc/net/tcp is the number of
        connections the kernel has completed and the server not yet accepted.
        """
        deadline = time.monotonic() + timeout
        while listen_queue_length(self.port) > 0:
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.script}: a connection still waits to be accepted after {timeout} s")
            time.sleep(0.01)


def listen_queue_length(port: int) -> int:
    """Connections queued on the listening socket at port (0 where /proc is absent)."""
    queued = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as rows:
                next(rows)
                for row in rows:
                    fields = row.split()
                    local, state, queues = fields[1], fields[3], fields[4]
                    if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:  # 0A: LISTEN
                        queued += int(queues.split(":")[1], 16)
        except FileNotFoundError:
            pass
    return queued


def run_script(
    *args: str, timeout: float = 10.0, stdin: str = "", prefix: Sequence[str] = ()
) -> subprocess.CompletedProcess:
    """Run a script to its end. Whatever it started dies with it, even on a time-out."""
    command = [*prefix, sys.executable, *args]
    pipe = subprocess.PIPE
    with subprocess.Popen(
        command, stdin=pipe, stdout=pipe, stderr=pipe, text=True, cwd=HERE, start_new_session=True
    ) as process:
        try:
            stdout, stderr = process.communicate(stdin, timeout=timeout)
        finally:
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


def read_until_closed(conn: socket.socket, timeout: float) -> tuple[bytes, float]:
    """Everything the server sends until it closes (a reset counts as closed), and when that was."""
    conn.settimeout(timeout)
    chunks = []
    try:
        while chunk := conn.recv(client.CHUNK_SIZE):
            chunks.append(chunk)
    except ConnectionError:
        pass
    return b"".join(chunks), time.monotonic()


def exchange_while_sending(host: str, port: int, data: bytes, timeout: float = 10.0) -> tuple[bytes, str]:
    """Send data from a second thread while reading, as any full-duplex client does.

    Returns what the server sent and how the stream ended: "end of stream",
    "reset" (what a server that closes with unread input causes) or "time-out".
    """
    with socket.create_connection((host, port), timeout=timeout) as conn:

        def send() -> None:
            try:
                conn.sendall(data)
            except OSError:
                pass  # the server may stop reading: the reply tells

        sender = threading.Thread(target=send)
        sender.start()
        chunks = []
        try:
            while chunk := conn.recv(client.CHUNK_SIZE):
                chunks.append(chunk)
            ending = "end of stream"
        except ConnectionResetError:
            ending = "reset"
        except socket.timeout:
            ending = "time-out"
        try:
            conn.shutdown(socket.SHUT_RDWR)  # unblocks the sender if the server stopped reading
        except OSError:  # reset: nothing left to unblock
            pass
        sender.join()
    return b"".join(chunks), ending


def exchange_summary(port: int, size: int, extra: int) -> tuple[int, bool, str]:
    """A request of size bytes, '!' included, and extra bytes after it, sent while
    reading: (reply length, whether the reply is right, how it ended)."""
    request = b"r" * (size - 1) + b"!"
    reply, ending = exchange_while_sending("127.0.0.1", port, request + b"x" * extra)
    return len(reply), reply == request[::-1], ending


def post(host: str, port: int, path: str, size: int) -> int:
    """POST size bytes the way urllib does (all of them, then read); return the status."""
    conn = http.client.HTTPConnection(host, port, timeout=10)
    try:
        conn.request("POST", path, body=b"x" * size)
        return conn.getresponse().status
    finally:
        conn.close()


def trickle(server: Server, data: bytes, interval: float = 0.05) -> float:
    """Send data a byte at a time until the server closes; return how long it took (at most 10 s)."""
    with server.connect() as conn:
        opened = time.monotonic()
        for byte in data:
            try:
                conn.sendall(bytes([byte]))
            except ConnectionError:
                break
            readable, _, _ = select.select([conn], [], [], interval)
            if readable and conn.recv(65536) == b"" or time.monotonic() - opened > 10:
                break
        return time.monotonic() - opened


def timed(action: Callable[[], object]) -> float:
    started = time.monotonic()
    action()
    return time.monotonic() - started


def send_at_once(server: Server, count: int, timeout: float = 10.0) -> dict[int, bytes | str]:
    """count clients at once, each sending its own request: each one's reply, or the error it met."""
    replies: dict[int, bytes | str] = {}

    def one(index: int) -> None:
        try:
            replies[index] = server.request(b"client %d!" % index, timeout)
        except OSError as exc:
            replies[index] = repr(exc)

    threads = [threading.Thread(target=one, args=(index,)) for index in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return replies


def run_clients(server: Server, count: int, timeout: float = 10.0) -> None:
    """count clients at once, each sending its own request; all must be answered."""
    replies = send_at_once(server, count, timeout)
    assert replies == {index: (b"client %d!" % index)[::-1] for index in range(count)}, replies


class ServerTestCase(unittest.TestCase):
    script = ""

    def assert_same_bytes(self, actual: bytes, expected: bytes) -> None:
        # Not assertEqual inside a tuple: unittest would diff the reprs of two
        # large byte strings, which takes minutes for a few hundred KiB.
        if actual != expected:
            at = next((i for i, (a, b) in enumerate(zip(actual, expected)) if a != b), min(len(actual), len(expected)))
            self.fail(f"{len(actual)} bytes, {len(expected)} expected; they differ from byte {at}")

    args: tuple[str, ...] = ()  # options every server of the class gets, such as --variant

    def start(self, *args: str, host: str = "127.0.0.1") -> Server:
        return Server(self.script, (*self.args, *args), self.addCleanup, host)

    def assert_clean_exit(self, server: Server) -> None:
        self.assertEqual(server.stop(), 0, server.log())
        self.assertNotIn("Traceback", server.log())


class CommandLineTests(ServerTestCase):
    """Section 1 of the contract, for any server script; subclasses name it."""

    server: Server
    quick_args: tuple[str, ...] = ()
    ready_line = r"^Listening on 127\.0\.0\.1:[1-9]\d*\b"

    @classmethod
    def setUpClass(cls) -> None:
        cls.server = Server(cls.script, (*cls.args, *cls.quick_args), cls.addClassCleanup)

    def assert_serves(self, server: Server) -> None:
        raise NotImplementedError  # one request, the reply checked

    def test_ready_line_names_the_real_port(self) -> None:
        self.assertRegex(self.server.ready_line, self.ready_line)

    def test_help_describes_the_approach_and_the_defaults(self) -> None:
        result = run_script(self.script, *self.args, "--help")
        self.assertEqual(result.returncode, 0)
        first_docstring_line = (HERE / self.script).read_text().split('"""')[1].splitlines()[0]
        self.assertIn(" ".join(first_docstring_line.split()[:4]), " ".join(result.stdout.split()))
        self.assertRegex(" ".join(result.stdout.split()), r"--host HOST .*\(default: 127\.0\.0\.1\)")

    def test_bad_arguments_exit_2_with_usage(self) -> None:
        for bad in (["not-a-port"], ["70000"], ["0", "--timeout", "-1"], ["0", "--no-such-option"]):
            with self.subTest(bad=bad):
                result = run_script(self.script, *self.args, *bad)
                self.assertEqual(result.returncode, 2)
                self.assertIn("usage:", result.stderr)
                self.assertNotIn("Traceback", result.stderr)

    def test_port_in_use_is_one_line_and_exit_1(self) -> None:
        with socket.create_server(("127.0.0.1", 0)) as taken:
            port = taken.getsockname()[1]
            result = run_script(self.script, *self.args, str(port))
        self.assertEqual(result.returncode, 1)
        self.assertEqual(result.stderr.count("\n"), 1, result.stderr)
        self.assertIn(f"127.0.0.1:{port}", result.stderr)
        self.assertIn("in use", result.stderr)

    def test_unknown_host_is_one_line_and_exit_1(self) -> None:
        result = run_script(self.script, *self.args, "0", "--host", "no-such-host.invalid")
        self.assertEqual(result.returncode, 1)
        self.assertEqual(result.stderr.count("\n"), 1, result.stderr)
        self.assertIn("no-such-host.invalid", result.stderr)

    @unittest.skipUnless(has_ipv6(), "no IPv6 on this machine")
    def test_ipv6_host_is_bracketed_and_served(self) -> None:
        server = self.start(*self.quick_args, host="::1")
        self.assertRegex(server.ready_line, r"^Listening on (http://)?\[::1\]:\d+")
        self.assert_serves(server)

    # A request in two parts, options that keep it in progress a while, and
    # the reply it must get although SIGTERM arrives between the two parts.
    in_flight: tuple[bytes, bytes, bytes] = (b"", b"", b"")
    in_flight_args: tuple[str, ...] = ()

    def test_sigterm_lets_a_request_in_flight_finish(self) -> None:
        self.assert_request_in_flight_finishes(lambda server: server.process.send_signal(signal.SIGTERM))

    def assert_request_in_flight_finishes(self, stop: Callable[[Server], None]) -> None:
        first, rest, expected = self.in_flight
        server = self.start(*self.in_flight_args)
        with server.connect() as conn:
            conn.sendall(first)
            server.wait_until_accepted()
            stop(server)
            time.sleep(0.2)  # let the signal land while the request is half sent
            conn.sendall(rest)
            reply, _ = read_until_closed(conn, timeout=5)
        self.assertRegex(reply, expected)
        self.assertEqual(server.process.wait(STOP_TIMEOUT), 0, server.log())
        self.assertNotIn("Traceback", server.log())

    def test_stop_signals_in_a_burst_still_exit_0(self) -> None:
        # GNU timeout sends its SIGTERM twice; a user presses Ctrl+C again. A
        # signal that lands while the interpreter shuts down, after it has put
        # back the default actions, kills it (exit status 143) unless ignored.
        server = self.start(*self.quick_args)
        deadline = time.monotonic() + STOP_TIMEOUT
        signals = itertools.cycle((signal.SIGTERM, signal.SIGINT))
        while server.process.poll() is None and time.monotonic() < deadline:
            try:
                server.process.send_signal(next(signals))
            except ProcessLookupError:
                break
            time.sleep(0.002)
        self.assertEqual(server.process.wait(STOP_TIMEOUT), 0, server.log())

    def test_sigint_stops_an_idle_server_cleanly(self) -> None:
        server = self.start(*self.quick_args)
        self.assertEqual(server.stop(signal.SIGINT), 0, server.log())
        self.assertNotIn("Traceback", server.log())

    def test_restart_binds_the_same_port_at_once(self) -> None:
        # Leave a connection in TIME_WAIT on the port: without SO_REUSEADDR the
        # next bind would fail for a minute.
        first = self.start(*self.quick_args)
        self.assert_serves(first)
        self.assert_clean_exit(first)
        second = Server(self.script, (*self.args, *self.quick_args), self.addCleanup, port=first.port)
        self.assertEqual(second.port, first.port)
        self.assert_serves(second)


class ReverseProtocolTests(CommandLineTests):
    """Sections 1 and 2 of the contract, for one TCP server; subclasses name it."""

    quick_args = QUICK
    in_flight = (b"in fl", b"ight!", rb"^!thgilf ni$")
    in_flight_args = ("--delay", "0.5", "--timeout", "5")

    def assert_serves(self, server: Server) -> None:
        self.assertEqual(server.request(b"served!"), b"!devres")

    # Section 2: the reverse protocol.

    def test_reply_is_the_request_reversed(self) -> None:
        self.assertEqual(self.server.request(b"hello!"), b"!olleh")

    def test_request_split_across_writes(self) -> None:
        with self.server.connect() as conn:
            for piece in (b"hel", b"lo, wor", b"ld!"):
                conn.sendall(piece)
                time.sleep(0.02)  # separate segments: the server must reassemble them
            reply, _ = read_until_closed(conn, timeout=5)
        self.assertEqual(reply, b"!dlrow ,olleh")

    def test_bytes_after_the_delimiter_are_ignored(self) -> None:
        self.assertEqual(self.server.request(b"abc!def!ghi"), b"!cba")

    def test_every_byte_value_passes_through(self) -> None:
        message = bytes(value for value in range(256) if value != ord("!")) + b"!"
        self.assertEqual(self.server.request(message), message[::-1])

    def test_a_one_mib_request(self) -> None:
        message = os.urandom(MIB).replace(b"!", b".") + b"!"
        self.assert_same_bytes(self.server.request(message), message[::-1])

    def test_bytes_sent_while_reading_do_not_reset_the_reply(self) -> None:
        # A full-duplex client goes on sending after the '!' while it reads.
        # Closing with that input unread makes the kernel send RST instead of
        # FIN, which destroys whatever of the reply the client has not read.
        for request, extra in ((b"hello!", 256 * 1024), (b"r" * MIB + b"!", 100_000)):
            with self.subTest(request=len(request), extra=extra):
                reply, ending = exchange_while_sending(self.server.host, self.server.port, request + b"x" * extra)
                self.assert_same_bytes(reply, request[::-1])
                self.assertEqual(ending, "end of stream")

    def test_a_client_that_half_closes_gets_its_reply(self) -> None:
        # shutdown(SHUT_WR) after the request, as `nc -N` does: the end of the
        # client's stream, not of the connection. A reply too large for the
        # kernel's buffers is still being written when that end arrives.
        for request in (b"half!", b"h" * (4 * MIB) + b"!"):
            with self.subTest(size=len(request)), self.server.connect() as conn:
                conn.sendall(request)
                conn.shutdown(socket.SHUT_WR)
                reply, _ = read_until_closed(conn, timeout=5)
                self.assert_same_bytes(reply, request[::-1])
        self.server.wait_for_log(rf"#\d+ answered {4 * MIB + 1} bytes")  # and the server knows it

    # The class's server lingers min(2 s, --timeout) = 0.5 s.

    def test_a_client_that_never_closes_is_cut_off_at_the_linger_bound(self) -> None:
        with self.server.connect() as conn:
            conn.sendall(b"still here!")
            reply, answered = read_until_closed(conn, timeout=5)
            self.assertEqual(reply, b"!ereh llits")
            self.server.wait_for_log(r"#\d+ answered 11 bytes", timeout=3)  # logged once the server has closed
            self.assertLess(time.monotonic() - answered, 1.5)
        self.assertEqual(self.server.request(b"next!"), b"!txen")

    def test_a_client_that_reads_and_closes_costs_no_linger(self) -> None:
        # Five lingers would take 2.5 s; a round trip each takes milliseconds.
        self.assertLess(timed(lambda: [self.server.request(b"quick!") for _ in range(5)]), 1.0)

    def test_disconnect_before_the_delimiter_is_logged(self) -> None:
        with self.server.connect() as conn:
            conn.sendall(b"no delimiter")
        self.server.wait_for_log(r"#\d+ disconnected before a complete request")
        self.assertEqual(self.server.request(b"next!"), b"!txen")

    def test_oversized_request_is_cut_off(self) -> None:
        with self.server.connect() as conn:
            try:
                conn.sendall(b"x" * (8 * MIB + 1))
            except ConnectionError:
                pass  # the server closed while we were still sending: as it should
            reply, _ = read_until_closed(conn, timeout=5)
        self.assertEqual(reply, b"")
        self.server.wait_for_log(r"#\d+ sent \d+ bytes without !: too large")
        self.assertEqual(self.server.request(b"next!"), b"!txen")

    def test_idle_client_is_closed_after_the_timeout(self) -> None:
        with self.server.connect() as conn:
            opened = time.monotonic()
            reply, closed = read_until_closed(conn, timeout=5)
        self.assertEqual(reply, b"")
        self.assertGreaterEqual(closed - opened, 0.4)
        self.assertLess(closed - opened, 3.0)
        self.server.wait_for_log(r"#\d+ sent no complete request in time")

    def test_trickling_client_does_not_extend_the_deadline(self) -> None:
        with self.server.connect() as conn:
            opened = time.monotonic()
            while time.monotonic() - opened < 5:
                try:
                    conn.sendall(b"x")
                except ConnectionError:
                    break
                readable, _, _ = select.select([conn], [], [], 0.05)
                if readable:
                    break
            closed = time.monotonic()
        self.assertLess(closed - opened, 3.0, "a byte every 50 ms kept the connection open")

    def test_client_that_does_not_read_is_cut_off(self) -> None:
        with socket.socket() as conn:
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: a small window
            conn.connect((self.server.host, self.server.port))
            conn.sendall(b"r" * (6 * MIB) + b"!")  # a reply larger than kernel buffers hold
            self.server.wait_for_log(r"#\d+ did not read the reply in time", timeout=10)


class SyncServerTest(ReverseProtocolTests):
    script = "sync_server.py"

    def test_clients_are_served_one_after_another(self) -> None:
        server = self.start("--delay", "0.3")
        self.assertGreaterEqual(timed(lambda: run_clients(server, 3)), 0.85)


class ConcurrentServerTests(ReverseProtocolTests):
    """Servers that serve every client at once: n clients take about one delay."""

    def test_clients_are_served_at_once(self) -> None:
        server = self.start("--delay", "0.5")
        elapsed = timed(lambda: run_clients(server, 10))
        self.assertGreaterEqual(elapsed, 0.5)
        self.assertLess(elapsed, 2.0)  # one after another would take 5 s


class ThreadedServerTest(ConcurrentServerTests):
    script = "threaded_server.py"


class PoolServerTest(ReverseProtocolTests):
    script = "pool_server.py"

    def test_clients_beyond_max_workers_wait_their_turn(self) -> None:
        server = self.start("--delay", "0.5", "--min-workers", "1", "--max-workers", "2")
        elapsed = timed(lambda: run_clients(server, 4))  # two rounds of two: 1 s
        self.assertGreaterEqual(elapsed, 0.95)
        self.assertLess(elapsed, 1.9)

    def test_pool_grows_under_load_and_shrinks_when_idle(self) -> None:
        server = self.start("--delay", "0.3", "--min-workers", "1", "--max-workers", "4", "--idle-timeout", "0.3")
        run_clients(server, 4)
        server.wait_for_log(r"pool grew to 4 workers")
        server.wait_for_log(r"pool shrank to 1 workers")
        self.assertEqual(server.request(b"still there!"), b"!ereht llits")

    def test_min_workers_above_max_workers_is_refused(self) -> None:
        result = run_script(self.script, "0", "--min-workers", "5", "--max-workers", "2")
        self.assertEqual(result.returncode, 2)
        self.assertIn("--min-workers cannot exceed --max-workers", result.stderr)


def children_of(pid: int) -> dict[int, str]:
    """The child processes of pid and their states (Z: exited, not yet reaped), from /proc."""
    children = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            state, parent = stat.rsplit(")", 1)[1].split()[:2]
            if int(parent) == pid:
                children[int(entry.name)] = state
    return children


def assert_refuses_without_fork(test: ServerTestCase) -> None:
    """On a platform without os.fork (Windows): one clear line, exit 1."""
    without_fork = (
        "import os, runpy, sys; del os.fork; sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], None, '__main__')"
    )
    result = run_script("-c", without_fork, test.script, "0", *test.args)
    test.assertEqual(result.returncode, 1, result.stderr)
    test.assertEqual(result.stderr.count("\n"), 1, result.stderr)
    test.assertIn("os.fork()", result.stderr)


def wait_for(condition: Callable[[], bool], timeout: float, message: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(message)
        time.sleep(0.02)


class ForkingServerTests(ConcurrentServerTests):
    def test_without_fork_it_says_so(self) -> None:
        assert_refuses_without_fork(self)

    def test_a_bug_in_a_child_is_logged_and_the_others_are_served(self) -> None:
        # The script run as a module, with a handler that fails on one request.
        buggy = (
            "import os, sys; sys.path.insert(0, os.path.dirname(sys.argv[2]))\n"
            f"import {Path(self.script).stem} as server\n"
            "original = server.handle_request\n"
            "def handle_request(request, *args):\n"
            "    if request.startswith(b'crash'):\n"
            "        raise ZeroDivisionError('a bug in the handler')\n"
            "    return original(request, *args)\n"
            "server.handle_request = handle_request\n"
            "sys.exit(server.main(sys.argv[3:]))\n"
        )
        server = Server(
            self.script,
            (*self.args, *QUICK),
            self.addCleanup,
            prefix=(sys.executable, "-c", buggy),
            unclean=re.compile(WARNING),
        )
        with server.connect() as conn:
            conn.sendall(b"crash!")
            reply, _ = read_until_closed(conn, timeout=5)
        self.assertEqual(reply, b"")  # the child died: no reply, and the connection closed
        server.wait_for_log(r"Traceback \(most recent call last\):\n(.*\n)*ZeroDivisionError: a bug in the handler")
        self.assertEqual(server.request(b"fine!"), b"!enif")
        self.assertEqual(server.stop(), 0, server.log())

    def test_ctrl_c_lets_the_child_in_flight_finish(self) -> None:
        # Ctrl+C in a terminal signals the whole process group: the child
        # serving a client gets SIGINT too, and must finish its reply.
        self.assert_request_in_flight_finishes(lambda server: os.killpg(server.process.pid, signal.SIGINT))

    @unittest.skipUnless(Path("/proc/self/stat").exists(), "needs /proc to see zombies")
    def test_children_are_reaped_while_idle(self) -> None:
        server = self.start("--delay", "0")
        run_clients(server, 3)
        # A child exits right after its reply; unreaped, it would stay a zombie
        # until the next client arrived. None arrives here.
        wait_for(
            lambda: "Z" not in children_of(server.process.pid).values(),
            timeout=1.5,
            message=f"zombies left: {children_of(server.process.pid)}",
        )


class ForkingServerTest(ForkingServerTests):
    script = "forking_server.py"

    def test_max_children_makes_clients_wait(self) -> None:
        server = self.start("--delay", "0.5", "--max-children", "2")
        elapsed = timed(lambda: run_clients(server, 4))
        self.assertGreaterEqual(elapsed, 0.95)
        self.assertLess(elapsed, 1.9)


class SocketserverSyncTest(ReverseProtocolTests):
    script = "socketserver_variants.py"
    args = ("--variant", "sync")

    def test_clients_are_served_one_after_another(self) -> None:
        server = self.start("--delay", "0.3")
        self.assertGreaterEqual(timed(lambda: run_clients(server, 3)), 0.85)


class SocketserverThreadingTest(ConcurrentServerTests):
    script = "socketserver_variants.py"
    args = ("--variant", "threading")


class SocketserverForkingTest(ForkingServerTests):
    script = "socketserver_variants.py"
    args = ("--variant", "forking")


class SocketserverStreamTest(ServerTestCase):
    script = "socketserver_variants.py"
    args = ("--variant", "stream")

    def test_each_line_is_answered_at_once(self) -> None:
        server = self.start("--timeout", "5")
        with server.connect() as conn, conn.makefile("rb") as replies:
            for line in (b"abc\n", b"\n", b"hello world\n", b"\x00\xff\n"):
                conn.sendall(line)
                self.assertEqual(replies.readline(), line[:-1][::-1] + b"\n")
        self.assert_clean_exit(server)

    def test_an_endless_line_is_cut_off(self) -> None:
        server = self.start("--timeout", "5", "--max-request", "1000")
        with server.connect() as conn:
            try:
                for _ in range(100):  # 1 MiB in all, far beyond the limit
                    conn.sendall(b"y" * 10_000)
            except ConnectionError:
                pass
            reply, _ = read_until_closed(conn, timeout=5)
        self.assertEqual(reply, b"")
        server.wait_for_log(r"#1 sent a line longer than 1000 bytes")

    def test_an_idle_session_times_out(self) -> None:
        server = self.start("--timeout", "0.3")
        with server.connect() as conn:
            conn.sendall(b"one\n")
            reply, _ = read_until_closed(conn, timeout=5)
        self.assertEqual(reply, b"eno\n")
        server.wait_for_log(r"#1 idle for 0.3 s: closed")

    def test_client_stream_mode(self) -> None:
        server = self.start("--timeout", "5")
        result = run_script("client.py", str(server.port), "--stream", stdin="abc\nhello\nlast line without newline")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(result.stdout, "cba\nolleh\nenilwen tuohtiw enil tsal\n")


class EventLoopServerTests(ConcurrentServerTests):
    """One thread for every client: a thousand at once is nothing special."""

    def test_a_thousand_clients_at_once(self) -> None:
        server = self.start("--delay", "0.5", "--quiet")
        result = client.run_load(server.host, server.port, clients=1000, requests=1000, size=64, timeout=10)
        self.assertEqual((result.ok, result.failed), (1000, 0), result.summary())
        self.assertLess(result.wall, 5.0)


class AsyncioServerTest(EventLoopServerTests):
    script = "asyncio_server.py"


class AsyncioProtocolServerTest(EventLoopServerTests):
    script = "asyncio_protocol_server.py"


class SelectorsServerTest(EventLoopServerTests):
    script = "selectors_server.py"


@unittest.skipUnless(Path("/proc/self/stat").exists(), "needs /proc to find the workers")
class PreforkServerTest(ReverseProtocolTests):
    script = "prefork_server.py"

    def test_clients_beyond_the_workers_wait_their_turn(self) -> None:
        server = self.start("--delay", "0.5", "--workers", "2")
        elapsed = timed(lambda: run_clients(server, 4))  # two rounds of two: 1 s
        self.assertGreaterEqual(elapsed, 0.95)
        self.assertLess(elapsed, 1.9)

    def test_without_fork_it_says_so(self) -> None:
        assert_refuses_without_fork(self)

    def test_a_killed_worker_is_replaced(self) -> None:
        server = self.start(*QUICK, "--workers", "2")
        workers = lambda: set(children_of(server.process.pid))  # noqa: E731
        wait_for(lambda: len(workers()) == 2, timeout=5, message="two workers did not start")
        victim = min(workers())
        os.kill(victim, signal.SIGKILL)
        server.wait_for_log(rf"worker {victim} was killed by signal 9: starting another")
        wait_for(lambda: len(workers()) == 2 and victim not in workers(), timeout=5, message="no replacement")
        for index in range(6):  # whichever worker takes them, every client is served
            self.assertEqual(server.request(b"%d after!" % index), b"!retfa %d" % index)
        self.assert_clean_exit(server)


class HttpServerTests(CommandLineTests):
    """What both HTTP scripts promise on top of section 1."""

    ready_line = r"^Listening on http://127\.0\.0\.1:[1-9]\d*/"
    in_flight = (b"GET / HTTP/1.1\r\nHost: test\r\nConnection: close\r\n", b"\r\n", rb"^HTTP/1\.[01] 200 ")

    def http(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict | None = None,
        server: Server | None = None,
    ) -> tuple[http.client.HTTPResponse, bytes]:
        server = server or self.server
        conn = http.client.HTTPConnection(server.host, server.port, timeout=10)
        self.addCleanup(conn.close)
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response, response.read()

    def raw(self, request: bytes) -> bytes:
        """Send bytes as they are (http.client would refuse a malformed request) and read the answer."""
        with self.server.connect() as conn:
            conn.sendall(request)
            reply, _ = read_until_closed(conn, timeout=10)
        return reply

    def test_a_malformed_request_gets_400_and_the_server_goes_on(self) -> None:
        # http.server answers a request line it cannot parse the HTTP/0.9 way:
        # the error page, without a status line.
        self.assertRegex(self.raw(b"GET / HTTP/one.one\r\n\r\n"), rb"^HTTP/1\.[01] 400 |Error code: 400")
        self.assert_serves(self.server)

    refused_upload: tuple[str, int] = ("", 0)  # a path that refuses a POST body unread, and its status

    def test_a_client_still_uploading_reads_the_refusal(self) -> None:
        # http.client, like urllib, sends the whole body before it reads: the
        # server must drain it, or its close resets the connection and the
        # client sees a broken pipe instead of the status.
        path, status = self.refused_upload
        self.assertEqual(post(self.server.host, self.server.port, path, 8 * MIB), status)
        self.assert_serves(self.server)

    def test_an_oversized_request_line_gets_414(self) -> None:
        self.assertRegex(self.raw(b"GET /" + b"a" * 70_000 + b" HTTP/1.1\r\n\r\n"), rb"^HTTP/1\.[01] 414 ")
        self.assert_serves(self.server)

    def test_a_connection_that_sends_nothing_is_closed_after_the_timeout(self) -> None:
        # A browser opens spare connections it may never use.
        server = self.start(*self.quick_args, "--timeout", "1")
        with server.connect() as conn:
            opened = time.monotonic()
            reply, closed = read_until_closed(conn, timeout=5)
        self.assertEqual(reply, b"")
        self.assertGreaterEqual(closed - opened, 0.9)
        self.assertLess(closed - opened, 3.0)
        self.assert_serves(server)

    def test_a_request_trickled_a_byte_at_a_time_is_cut_off_at_the_timeout(self) -> None:
        # Slowloris: every byte comes well within the timeout, the request never does.
        server = self.start(*self.quick_args, "--timeout", "1")
        self.assertLess(trickle(server, b"GET / HTTP/1.1\r\nHost: test\r\nX-Slow: " + b"a" * 1000), 3.0)
        self.assert_serves(server)


class HttpStaticTest(HttpServerTests):
    script = "http_static.py"
    refused_upload = ("/", 501)  # a static server has no POST
    files = {
        "index.html": b"<h1>home</h1>",
        "app.wasm": b"\0asm\1\0\0\0",
        "module.mjs": b"export {};",
        "script.js": b"alert(1);",
        "docs/notes.txt": b"0123456789",
        "large.bin": bytes(range(256)) * 1024,  # 256 KiB: past SMALL_BODY, so it goes out with sendfile()
    }

    @classmethod
    def setUpClass(cls) -> None:
        root = Path(tempfile.mkdtemp())
        cls.addClassCleanup(shutil.rmtree, root)
        (root / "secret.txt").write_bytes(b"TOP SECRET")  # outside the served directory
        site = root / "site"
        for name, content in cls.files.items():
            (site / name).parent.mkdir(parents=True, exist_ok=True)
            (site / name).write_bytes(content)
        (site / "escape.txt").symlink_to(root / "secret.txt")
        (site / "linked-index").mkdir()  # a directory whose index.html leads outside
        (site / "linked-index" / "index.html").symlink_to(root / "secret.txt")
        # What a project folder holds and must not serve: dotfiles, and links to or as them.
        (site / ".git").mkdir()
        (site / ".git" / "config").write_bytes(b"[core] SECRET=1")
        (site / ".env").write_bytes(b"SECRET=1")
        (site / "docs" / ".env.local").write_bytes(b"SECRET=2")
        (site / "docs" / "public-link").symlink_to(site / ".env")
        (site / ".hidden-link").symlink_to(site / "docs" / "notes.txt")
        (site / "dot-index").mkdir()  # a directory whose index.html is a dotfile
        (site / "dot-index" / "index.html").symlink_to(site / ".env")
        cls.site = site
        cls.quick_args = ("--directory", str(site), "--timeout", "0.5")
        cls.in_flight_args = ("--directory", str(site), "--timeout", "5")
        super().setUpClass()

    def assert_serves(self, server: Server) -> None:
        response, body = self.http("GET", "/", server=server)
        self.assertEqual((response.status, body), (200, b"<h1>home</h1>"))

    def test_types_browsers_insist_on(self) -> None:
        for path, expected in (
            ("/app.wasm", "application/wasm"),
            ("/module.mjs", "text/javascript"),
            ("/script.js", "text/javascript"),
            ("/index.html", "text/html"),
        ):
            with self.subTest(path=path):
                response, body = self.http("GET", path)
                self.assertEqual(response.status, 200)
                self.assertEqual(response.getheader("Content-Type"), expected)
                self.assertEqual(body, self.files[path[1:]])

    def test_nothing_outside_the_directory_is_reachable(self) -> None:
        attempts = [
            "/../secret.txt",
            "/%2e%2e/secret.txt",
            "/..%2fsecret.txt",
            "/%2e%2e%2fsecret.txt",
            "/docs/../../secret.txt",
            "/..\\secret.txt",
            "/..%5csecret.txt",
            "//../secret.txt",
            "/escape.txt",
            "/%00",
            "/docs/%00../../secret.txt",
        ]
        for path in attempts:
            with self.subTest(path=path):
                reply = self.raw(f"GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".encode())
                self.assertRegex(reply, rb"^HTTP/1\.[01] (400|404) ")
                self.assertNotIn(b"TOP SECRET", reply)
        # A directory's index.html counts as asked for by name: one that links
        # outside is no index, and the directory gets its listing instead.
        for path in ("/linked-index/", "/dot-index/"):
            with self.subTest(path=path):
                response, body = self.http("GET", path)
                self.assertEqual(response.getheader("Content-Type"), "text/html; charset=utf-8")
                self.assertNotIn(b"SECRET", body)
                self.assertNotIn(b"index.html", body)
        self.assert_serves(self.server)

    def test_no_open_redirect(self) -> None:
        # Each of these names a directory of this server (the dot segments
        # collapse), and a Location that echoes it points a browser elsewhere
        # (CVE-2021-28861). Browsers read '\\' as '/' in http(s) URLs.
        hosts = ("example.com", "\\example.com", "/example.com", "%5cexample.com", "%2fexample.com", "%5C%5Cex.com")
        leads = ("/", "//", "/\\", "\\", "/%2f", "/%5c", "/./", "/docs/../", "/docs/%2e%2e/", "/.%2f/")
        tails = ("/..", "/%2e%2e", "/%2E%2E", "/../docs", "/.%2e", "/%2e./")
        base = f"http://{self.server.host}:{self.server.port}/"
        redirects = 0
        for path in {lead + host + tail for lead in leads for host in hosts for tail in tails}:
            if not path.startswith("/"):
                continue  # not a request target an HTTP client sends
            with self.subTest(path=path):
                status, location = self.status_and_location(path)
                if location is None:
                    continue
                redirects += 1
                self.assertEqual(status, 301)
                # Resolve it as a browser does: backslashes are slashes.
                target = urllib.parse.urlsplit(urllib.parse.urljoin(base, location.replace("\\", "/")))
                self.assertEqual(target.netloc, f"{self.server.host}:{self.server.port}", location)
                self.assertRegex(location, r"^/([^/\\]+/)*$")
        self.assertGreater(redirects, 100)  # the family does reach the redirect

    def status_and_location(self, path: str) -> tuple[int, str | None]:
        with self.server.connect() as conn:
            conn.sendall(f"GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n".encode())
            reply, _ = read_until_closed(conn, timeout=10)
        head = reply.split(b"\r\n\r\n")[0].decode("latin-1").split("\r\n")
        headers = dict(line.split(": ", 1) for line in head[1:] if ": " in line)
        return int(head[0].split()[1]), headers.get("Location")

    def test_keep_alive_serves_two_requests_on_one_connection(self) -> None:
        conn = http.client.HTTPConnection(self.server.host, self.server.port, timeout=10)
        self.addCleanup(conn.close)
        conn.request("GET", "/index.html")
        first = conn.getresponse()
        first.read()
        sock = conn.sock
        conn.request("GET", "/docs/notes.txt")
        second = conn.getresponse()
        self.assertEqual((first.version, second.status, second.read()), (11, 200, b"0123456789"))
        self.assertIs(conn.sock, sock)  # the same connection: http.client would have reconnected

    def test_shutdown_closes_idle_connections_at_once(self) -> None:
        server = self.start(*self.in_flight_args)  # --timeout 5: an idle connection would hold shutdown 5 s
        idle = http.client.HTTPConnection(server.host, server.port, timeout=10)
        self.addCleanup(idle.close)
        busy = server.connect()
        self.addCleanup(busy.close)
        idle.request("GET", "/script.js")
        self.assertEqual(idle.getresponse().read(), b"alert(1);")  # kept alive, now idle
        busy.sendall(b"GET /docs/notes.txt HTTP/1.1\r\nHost: test\r\n")  # a request half sent
        server.wait_until_accepted()
        server.process.send_signal(signal.SIGTERM)
        time.sleep(0.2)
        busy.sendall(b"\r\n")
        reply, _ = read_until_closed(busy, timeout=5)
        # The response in progress finished, and then the connection closed: no second request awaited.
        self.assertRegex(reply, rb"(?s)^HTTP/1\.1 200 .*\r\n\r\n0123456789$")
        stopped = time.monotonic()
        self.assertEqual(server.process.wait(STOP_TIMEOUT), 0, server.log())
        self.assertLess(time.monotonic() - stopped, 1.0)
        self.assertNotIn("Traceback", server.log())

    def test_an_idle_connection_is_closed_after_the_timeout(self) -> None:
        with self.server.connect() as conn:
            opened = time.monotonic()
            reply, closed = read_until_closed(conn, timeout=5)
        self.assertEqual(reply, b"")
        self.assertLess(closed - opened, 3.0)

    def test_head_has_the_headers_and_no_body(self) -> None:
        response, body = self.http("HEAD", "/docs/notes.txt")
        self.assertEqual((response.status, response.getheader("Content-Length"), body), (200, "10", b""))

    def test_if_modified_since_gets_304(self) -> None:
        response, _ = self.http("GET", "/docs/notes.txt")
        last_modified = response.getheader("Last-Modified")
        response, body = self.http("GET", "/docs/notes.txt", headers={"If-Modified-Since": last_modified})
        self.assertEqual((response.status, body), (304, b""))

    def test_byte_ranges(self) -> None:
        cases = [
            ("bytes=2-5", 206, b"2345", "bytes 2-5/10"),
            ("bytes=7-", 206, b"789", "bytes 7-9/10"),
            ("bytes=-3", 206, b"789", "bytes 7-9/10"),
            ("bytes=8-100", 206, b"89", "bytes 8-9/10"),
            ("bytes=10-", 416, b"", "bytes */10"),
            ("bytes=-0", 416, b"", "bytes */10"),
            ("bytes=0-1,4-5", 200, b"0123456789", None),  # several ranges: ignored
            ("pages=1-2", 200, b"0123456789", None),
            ("bytes=5-2", 200, b"0123456789", None),
            ("bytes=0-" + "9" * 5000, 200, b"0123456789", None),  # a number no file reaches: ignored
            ("bytes=-" + "9" * 5000, 200, b"0123456789", None),
        ]
        for header, status, body, content_range in cases:
            with self.subTest(range=header):
                response, got = self.http("GET", "/docs/notes.txt", headers={"Range": header})
                self.assertEqual(
                    (response.status, got, response.getheader("Content-Range")), (status, body, content_range)
                )
                self.assertEqual(response.getheader("Content-Length"), str(len(body)))

    def test_a_large_file_and_a_range_of_it(self) -> None:
        content = self.files["large.bin"]
        conn = http.client.HTTPConnection(self.server.host, self.server.port, timeout=10)
        self.addCleanup(conn.close)
        conn.request("GET", "/large.bin")
        whole = conn.getresponse()
        self.assertEqual(whole.status, 200)
        self.assert_same_bytes(whole.read(), content)
        conn.request("GET", "/large.bin", headers={"Range": "bytes=1000-199999"})  # same connection
        part = conn.getresponse()
        self.assertEqual(part.status, 206)
        self.assert_same_bytes(part.read(), content[1000:200000])

    def test_a_directory_without_slash_redirects_with_a_length(self) -> None:
        response, body = self.http("GET", "/docs?x=1")
        self.assertEqual((response.status, response.getheader("Location")), (301, "/docs/?x=1"))
        self.assertEqual((response.getheader("Content-Length"), body), ("0", b""))

    def test_a_directory_is_listed(self) -> None:
        response, body = self.http("GET", "/docs/")
        self.assertEqual(response.status, 200)
        self.assertIn(b"notes.txt", body)
        self.assertEqual(response.getheader("Content-Length"), str(len(body)))

    def test_a_file_asked_for_as_a_directory_is_404(self) -> None:
        response, _ = self.http("GET", "/docs/notes.txt/")  # as the stdlib and nginx answer
        self.assertEqual(response.status, 404)

    hidden = ("/.env", "/%2eenv", "/%2Eenv", "/.git/config", "/.git/", "/docs/../.env", "/docs/%2e%2e/.env")
    hidden += ("/./.env", "//.env", "/docs/public-link", "/.hidden-link", "/.git%2fconfig", "/docs/.env.local")

    def test_dotfiles_are_hidden_however_asked(self) -> None:
        for path in self.hidden:
            with self.subTest(path=path):
                response, body = self.http("GET", path)
                self.assertEqual(response.status, 404)
                self.assertNotIn(b"SECRET", body)
        _, listing = self.http("GET", "/docs/")
        self.assertIn(b"notes.txt", listing)
        self.assertNotIn(b".env.local", listing)
        self.assertNotIn(b"public-link", listing)

    def test_dotfiles_option_serves_them(self) -> None:
        server = self.start("--directory", str(self.site), "--dotfiles")
        for path in ("/.env", "/docs/public-link", "/.git/config"):
            with self.subTest(path=path):
                response, body = self.http("GET", path, server=server)
                self.assertEqual(response.status, 200)
                self.assertIn(b"SECRET", body)
        _, listing = self.http("GET", "/docs/", server=server)
        self.assertIn(b".env.local", listing)

    def test_every_file_is_revalidated_by_its_etag(self) -> None:
        path = self.site / "docs" / "etag.txt"
        path.write_bytes(b"version 1")
        self.addCleanup(path.unlink)
        second = 1_700_000_000 * 10**9
        os.utime(path, ns=(second, second + 100))
        response, _ = self.http("GET", "/docs/etag.txt")
        self.assertEqual(response.getheader("Cache-Control"), "no-cache")
        etag = response.getheader("ETag")
        self.assertRegex(etag, r'^"[0-9a-f]+-[0-9a-f]+"$')
        for if_none_match in (etag, f"W/{etag}", f'"other", {etag}', "*"):
            with self.subTest(if_none_match=if_none_match):
                response, body = self.http("GET", "/docs/etag.txt", headers={"If-None-Match": if_none_match})
                self.assertEqual((response.status, body, response.getheader("ETag")), (304, b"", etag))
        # If-None-Match wins over an If-Modified-Since that alone would give 304.
        late = "Thu, 01 Jan 2099 00:00:00 GMT"
        headers = {"If-None-Match": '"other"', "If-Modified-Since": late}
        response, body = self.http("GET", "/docs/etag.txt", headers=headers)
        self.assertEqual((response.status, body), (200, b"version 1"))
        # Saved again within the same second, with the same size: a new ETag.
        path.write_bytes(b"version 2")
        os.utime(path, ns=(second, second + 200))
        response, body = self.http("GET", "/docs/etag.txt", headers={"If-None-Match": etag})
        self.assertEqual((response.status, body), (200, b"version 2"))
        self.assertNotEqual(response.getheader("ETag"), etag)

    def test_cors_only_when_asked(self) -> None:
        response, _ = self.http("GET", "/script.js")
        self.assertIsNone(response.getheader("Access-Control-Allow-Origin"))
        response, _ = self.http("OPTIONS", "/script.js")
        self.assertEqual(response.status, 501)
        server = self.start("--directory", str(self.site), "--cors")
        for path, status in (("/script.js", 200), ("/no-such-file", 404)):
            response, _ = self.http("GET", path, headers={"Origin": "http://localhost:5173"}, server=server)
            self.assertEqual(response.status, status)
            self.assertEqual(response.getheader("Access-Control-Allow-Origin"), "*")
        preflight = {
            "Origin": "http://localhost:5173",
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "x-requested-with, content-type",
        }
        response, body = self.http("OPTIONS", "/script.js", headers=preflight, server=server)
        self.assertEqual((response.status, body), (204, b""))
        self.assertEqual(response.getheader("Access-Control-Allow-Origin"), "*")
        self.assertEqual(response.getheader("Access-Control-Allow-Methods"), "GET, HEAD, OPTIONS")
        self.assertEqual(response.getheader("Access-Control-Allow-Headers"), "x-requested-with, content-type")

    def test_a_missing_directory_is_one_line_and_exit_1(self) -> None:
        result = run_script(self.script, "0", "--directory", "/no/such/dir")
        self.assertEqual((result.returncode, result.stderr), (1, "not a directory: /no/such/dir\n"))


class HttpsStaticTest(ServerTestCase):
    """http_static.py with --tls-cert and --tls-key: a certificate made here with openssl."""

    script = "http_static.py"

    @classmethod
    def setUpClass(cls) -> None:
        if shutil.which("openssl") is None:
            print("\nHttpsStaticTest skipped: no openssl command to make a certificate", file=sys.stderr)
            raise unittest.SkipTest("no openssl command")
        cls.folder = Path(tempfile.mkdtemp())
        cls.addClassCleanup(shutil.rmtree, cls.folder)
        (cls.folder / "hello.txt").write_bytes(b"over TLS")
        cls.cert, cls.key = cls.folder / "cert.pem", cls.folder / "key.pem"
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=localhost"]
            + ["-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(cls.key), "-out", str(cls.cert)],
            check=True,
            capture_output=True,
            timeout=30,
        )

    def start_tls(self) -> Server:
        return self.start("--directory", str(self.folder), "--tls-cert", str(self.cert), "--tls-key", str(self.key))

    def get(self, server: Server, path: str) -> tuple[int, bytes]:
        context = ssl.create_default_context(cafile=str(self.cert))  # trusts this certificate, verifies the host
        conn = http.client.HTTPSConnection(server.host, server.port, timeout=10, context=context)
        self.addCleanup(conn.close)
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()

    def test_https_is_served_and_the_ready_line_says_so(self) -> None:
        server = self.start_tls()
        self.assertRegex(server.ready_line, r"^Listening on https://127\.0\.0\.1:\d+/")
        self.assertEqual(self.get(server, "/hello.txt"), (200, b"over TLS"))
        self.assert_clean_exit(server)

    def test_a_failed_handshake_is_one_log_line_and_holds_nobody_up(self) -> None:
        server = self.start_tls()
        silent = server.connect()  # never says anything: bounded by --timeout, in its own thread
        self.addCleanup(silent.close)
        with server.connect() as plain:
            plain.sendall(b"GET / HTTP/1.1\r\nHost: test\r\n\r\n")  # plain HTTP to the HTTPS port
            read_until_closed(plain, timeout=5)
        server.wait_for_log(r"#\d+ TLS handshake failed")
        self.assertEqual(self.get(server, "/hello.txt"), (200, b"over TLS"))  # while the silent one still waits
        silent.close()
        self.assert_clean_exit(server)

    def test_a_bad_certificate_is_one_line_and_exit_1(self) -> None:
        for cert, key in ((self.folder / "missing.pem", self.key), (self.folder / "hello.txt", self.key)):
            with self.subTest(cert=cert.name):
                tls = ("--tls-cert", str(cert), "--tls-key", str(key))
                result = run_script(self.script, "0", "--directory", str(self.folder), *tls)
                self.assertEqual(result.returncode, 1)
                self.assertEqual(result.stderr.count("\n"), 1, result.stderr)
                self.assertNotIn("Traceback", result.stderr)


# CPython's own tests of http.server's file handler (SimpleHTTPServerTestCase in
# Lib/test/test_httpservers.py), run against http_static.StaticHandler in a
# child interpreter: test_all.py imports no server script. The suite asserts
# HTTP/1.0 responses, hence the one adaptation.
PEER_SUITE = """
import sys, unittest
sys.path.insert(0, sys.argv[1])
try:
    from test import test_httpservers as peer
except ImportError:
    sys.exit(3)  # this interpreter ships without its test package
import http_static

class Handler(peer.NoLogRequestHandler, http_static.StaticHandler):
    protocol_version = "HTTP/1.0"

peer.HTTPServer = http_static.StaticServer
case = peer.SimpleHTTPServerTestCase
case.request_handler = Handler
for name in sys.argv[2:]:
    setattr(case, name, unittest.expectedFailure(getattr(case, name)))
tests = unittest.defaultTestLoader.loadTestsFromTestCase(case)
sys.exit(0 if unittest.TextTestRunner().run(tests).wasSuccessful() else 1)
"""
# Where http_static.py answers differently from http.server on purpose. Each
# of these tests must fail (an unexpected success fails the run: the entry
# would be stale); every other test of the suite must pass.
PEER_DIFFERENCES = {
    "test_browser_cache_with_If_None_Match_header": "http.server has no ETags and ignores If-None-Match;"
    " here 'If-None-Match: *' matches the file, so 304, as RFC 9110 says",
    "test_get_dir_redirect_location_domain_injection_bug": "the Location comes from the resolved path, not the"
    " request: /python.org/..%2f../dir comes back as /dir/, never echoing another host's name",
    "test_path_without_leading_slash": "a request target without its leading slash redirects to an absolute"
    " path (/dir/?q), not a relative one",
}


class HttpStaticPeerTest(unittest.TestCase):
    def test_cpython_own_suite_passes_but_for_the_declared_differences(self) -> None:
        result = run_script("-c", PEER_SUITE, str(HERE), *PEER_DIFFERENCES, timeout=60)
        if result.returncode == 3:
            self.skipTest("this interpreter has no test.test_httpservers")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn(f"expected failures={len(PEER_DIFFERENCES)}", result.stderr)


# The end of a program that made `server` with wsgi_app.make_server(): it
# serves from a thread, prints what GET / answers, and stops.
SERVE_IN_A_THREAD_AND_GET = """
thread = threading.Thread(target=server.serve_forever)
thread.start()
try:
    with urllib.request.urlopen(f"http://127.0.0.1:{server.server_port}/", timeout=5) as response:
        print(response.read().decode())
finally:
    server.shutdown()  # socketserver's way to stop serve_forever() from another thread
    thread.join()
    server.server_close()
"""


class WsgiAppTest(HttpServerTests):
    script = "wsgi_app.py"
    refused_upload = ("/reverse", 413)  # over 1 MiB
    quick_args = ("--timeout", "2")

    def assert_serves(self, server: Server) -> None:
        response, body = self.http("GET", "/", server=server)
        self.assertEqual((response.status, body), (200, b"Hello world!"))

    def test_a_body_trickled_a_byte_at_a_time_is_cut_off_at_the_timeout(self) -> None:
        # Before, each byte reset the socket's timeout, and four such clients held every thread.
        server = self.start(*self.quick_args, "--timeout", "1")
        head = b"POST /reverse HTTP/1.1\r\nHost: test\r\nContent-Length: 1000\r\n\r\n"
        self.assertLess(trickle(server, head + b"x" * 1000), 3.0)
        self.assert_serves(server)

    def test_a_stalled_client_holds_one_thread_not_the_server(self) -> None:
        server = self.start("--threads", "2", "--timeout", "5")
        with server.connect() as stalled:
            stalled.sendall(b"GET / HTTP/1.0\r\nHost: te")  # and then nothing: a thread waits for the rest
            server.wait_until_accepted()
            other = http.client.HTTPConnection(server.host, server.port, timeout=2)  # well before --timeout
            self.addCleanup(other.close)
            other.request("GET", "/")
            response = other.getresponse()  # the other thread answers
            self.assertEqual((response.status, response.read()), (200, b"Hello world!"))

    def test_hello(self) -> None:
        response, body = self.http("GET", "/")
        self.assertEqual(response.getheader("Content-Type"), "text/plain; charset=utf-8")
        self.assertEqual(response.getheader("Content-Length"), "12")

    def test_reverse_reads_exactly_content_length(self) -> None:
        body = bytes(range(256)) * 100
        response, got = self.http("POST", "/reverse", body=body)
        self.assertEqual(response.status, 200)
        self.assert_same_bytes(got, body[::-1])

    def test_reverse_refuses_a_missing_or_bad_length(self) -> None:
        for headers, status in (
            ("", 411),
            ("Content-Length: abc\r\n", 400),
            ("Content-Length: -1\r\n", 400),
            (f"Content-Length: {2 * MIB}\r\n", 413),
            ("Content-Length: \xb2\r\n", 400),  # a digit to str.isdigit(), not to int()
            (f"Content-Length: {'9' * 5000}\r\n", 413),  # more digits than int() converts (3.11+)
            (f"Content-Length: {'0' * 5000}5\r\n", 400),  # 5 bytes promised, none sent: 400 after --timeout
        ):
            with self.subTest(headers=headers[:30]):
                reply = self.raw(f"POST /reverse HTTP/1.0\r\n{headers}\r\n".encode("latin-1"))
                self.assertRegex(reply, rf"^HTTP/1\.[01] {status} ".encode())

    def test_reverse_with_a_body_shorter_than_its_length(self) -> None:
        with self.server.connect() as conn:
            conn.sendall(b"POST /reverse HTTP/1.0\r\nContent-Length: 10\r\n\r\nabc")
            conn.shutdown(socket.SHUT_WR)
            reply, _ = read_until_closed(conn, timeout=5)
        self.assertRegex(reply, rb"^HTTP/1\.[01] 400 ")

    def test_unknown_path_and_wrong_method(self) -> None:
        self.assertEqual(self.http("GET", "/nowhere")[0].status, 404)
        response, _ = self.http("DELETE", "/reverse")
        self.assertEqual((response.status, response.getheader("Allow")), (405, "POST"))
        response, _ = self.http("POST", "/", body=b"x")
        self.assertEqual((response.status, response.getheader("Allow")), (405, "GET, HEAD"))

    def test_every_route_passes_the_wsgi_validator(self) -> None:
        # In a child interpreter: test_all.py imports no script but client.py.
        program = """
import io, json, warnings, wsgi_app
from wsgiref.util import setup_testing_defaults
from wsgiref.validate import validator
warnings.simplefilter("error")  # a validator warning is a failure
results = []
for method, path, body, length in json.loads(input()):
    environ = {"REQUEST_METHOD": method, "PATH_INFO": path, "SCRIPT_NAME": "", "QUERY_STRING": ""}
    environ["wsgi.input"] = io.BytesIO(body.encode())
    setup_testing_defaults(environ)
    if length is not None:
        environ["CONTENT_LENGTH"] = length
    seen = {}
    def start_response(status, headers, exc_info=None):
        seen.update(status=status, headers=dict(headers))
        return lambda data: None
    chunks = validator(wsgi_app.app)(environ, start_response)
    body = b"".join(chunks)
    chunks.close()
    results.append([seen["status"][:3], body.decode("latin-1"), seen["headers"].get("Allow")])
print(json.dumps(results))
"""
        cases = [
            ["GET", "/", "", None],
            ["HEAD", "/", "", None],
            ["POST", "/reverse", "abc", "3"],
            ["POST", "/reverse", "", None],
            ["POST", "/reverse", "", str(2 * MIB)],
            ["POST", "/reverse", "ab", "3"],
            ["PUT", "/", "", None],
            ["GET", "/nowhere", "", None],
        ]
        result = run_script("-c", program, stdin=json.dumps(cases))
        self.assertEqual(result.returncode, 0, result.stderr)
        statuses = [(status, body[:12], allow) for status, body, allow in json.loads(result.stdout)]
        self.assertEqual(
            statuses,
            [
                ("200", "Hello world!", None),
                ("200", "", None),
                ("200", "cba", None),
                ("411", "a Content-Le", None),
                ("413", "at most 1048", None),
                ("400", "the body is ", None),
                ("405", "use GET or H", "GET, HEAD"),
                ("404", "not found\n", None),
            ],
        )

    def test_the_application_is_told_it_runs_on_threads(self) -> None:
        # PEP 3333: wsgi.multithread is true when another thread may call the
        # application at the same time; an application may count on it.
        program = """
import sys, threading, urllib.request, wsgi_app
server = wsgi_app.make_server(wsgi_app.parse_args(["0"]))
def application(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [repr((environ["wsgi.multithread"], environ["wsgi.multiprocess"])).encode()]
server.set_app(application)
"""
        result = run_script("-c", program + SERVE_IN_A_THREAD_AND_GET)
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(result.stdout.strip(), "(True, False)")

    def test_shutdown_as_soon_as_serving_starts_and_serve_again(self) -> None:
        # socketserver's promise: shutdown() returns once serve_forever() has,
        # whenever it comes, and the server can then serve again. Stopping
        # while serve_forever() was still starting its threads once raised
        # "cannot join thread before it is started" (CI, 3.10).
        program = """
import threading, urllib.request, wsgi_app
server = wsgi_app.make_server(wsgi_app.parse_args(["0"]))
server.set_app(lambda environ, start_response: start_response("200 OK", []) and [b"again"])
for _ in range(8):  # each can wait one accept() poll, 0.5 s
    thread = threading.Thread(target=server.serve_forever)
    thread.start()
    server.shutdown()
    assert not thread.join(5) and not thread.is_alive(), "serve_forever() still running after shutdown()"
"""
        result = run_script("-c", program + SERVE_IN_A_THREAD_AND_GET)
        self.assertEqual((result.returncode, result.stdout.strip()), (0, "again"), result.stderr)

    def test_importing_has_no_side_effects(self) -> None:
        result = run_script("-c", "import wsgi_app")
        self.assertEqual((result.returncode, result.stdout, result.stderr), (0, "", ""))


# websocket_server.py: a WebSocket client written from RFC 6455 for these tests. It
# builds every frame byte by byte, so it can send what no library would (unmasked
# frames, reserved bits, lengths in the wrong form), and it checks what the server
# sends as strictly: server frames unmasked, a close answered, then the end of TCP.
WS_KEY = "dGhlIHNhbXBsZSBub25jZQ=="  # the example of RFC 6455 section 1.3, and the answer it must get
WS_ACCEPT = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
WS_CONTINUATION, WS_TEXT, WS_BINARY, WS_CLOSE, WS_PING, WS_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
WS_MASK = b"\x37\xfa\x21\x3d"


def ws_frame(
    opcode: int,
    payload: bytes = b"",
    fin: bool = True,
    rsv: int = 0,
    key: bytes | None = WS_MASK,
    length: int | None = None,
    form: int | None = None,
) -> bytes:
    """A client frame (section 5.2). key None: unmasked; length: the length to declare
    (default: the payload's); form: 7, 16 or 64 bits for it (default: the shortest)."""
    declared = len(payload) if length is None else length
    if form is None:
        form = 7 if declared < 126 else 16 if declared < 65536 else 64
    first = (0x80 if fin else 0) | rsv | opcode
    masked = 0x80 if key is not None else 0
    if form == 7:
        header = bytes((first, masked | declared))
    elif form == 16:
        header = bytes((first, masked | 126)) + declared.to_bytes(2, "big")
    else:
        header = bytes((first, masked | 127)) + declared.to_bytes(8, "big")
    if key is None:
        return header + payload
    return header + key + bytes(map(int.__xor__, payload, itertools.cycle(key)))


def ws_close(code: int, why: bytes = b"") -> bytes:
    return ws_frame(WS_CLOSE, code.to_bytes(2, "big") + why)


class WebSocketClient:
    """One connection to websocket_server.py: the handshake, then frames both ways."""

    def __init__(
        self,
        server: Server,
        path: str = "/echo",
        headers: dict[str, str | None] | None = None,
        timeout: float = 5.0,
        early: bytes = b"",  # bytes sent with the handshake, in the same write
        receive_buffer: int = 0,  # SO_RCVBUF before connecting: a small window, a client that reads slowly
    ) -> None:
        self.sock = socket.socket(socket.AF_INET6 if ":" in server.host else socket.AF_INET)
        if receive_buffer:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        self.sock.settimeout(timeout)
        self.sock.connect((server.host, server.port))
        fields: dict[str, str | None] = {
            "Host": "test",
            "Upgrade": "websocket",
            "Connection": "Upgrade",
            "Sec-WebSocket-Key": WS_KEY,
            "Sec-WebSocket-Version": "13",
        }
        fields.update(headers or {})
        lines = [f"GET {path} HTTP/1.1", *(f"{name}: {value}" for name, value in fields.items() if value is not None)]
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + early)
        self.buffer = bytearray()
        head = self.read_until(b"\r\n\r\n").decode("latin-1").split("\r\n")
        self.status = int(head[0].split()[1])
        self.headers = {}
        for line in head[1:]:
            name, _, value = line.partition(":")
            self.headers[name.lower()] = value.strip()
        self.body = self.read(int(self.headers.get("content-length", "0"))) if self.status != 101 else b""
        if self.status == 101:
            assert self.headers.get("sec-websocket-accept") == WS_ACCEPT, self.headers
        self.extension = self.headers.get("sec-websocket-extensions")
        agreed = dict(
            (name.strip(), value.strip())
            for name, _, value in (p.partition("=") for p in (self.extension or "").split(";"))
        )
        self.server_resets = "server_no_context_takeover" in agreed
        self.client_resets = "client_no_context_takeover" in agreed
        self.client_bits = int(agreed.get("client_max_window_bits") or 15)
        self.compressor: Any = None
        self.decompressor: Any = None

    def __enter__(self) -> WebSocketClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.sock.close()

    def read(self, count: int) -> bytes:
        while len(self.buffer) < count:
            chunk = self.sock.recv(max(65536, count - len(self.buffer)))
            if not chunk:
                raise AssertionError(f"the server closed with {count - len(self.buffer)} bytes still expected")
            self.buffer += chunk
        data = bytes(self.buffer[:count])
        del self.buffer[:count]
        return data

    def read_until(self, end: bytes) -> bytes:
        while end not in self.buffer:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise AssertionError(f"the server closed before {end!r}: {bytes(self.buffer)!r}")
            self.buffer += chunk
        return self.read(self.buffer.index(end) + len(end))

    def send(self, opcode: int, payload: bytes = b"", **options: Any) -> None:
        self.sock.sendall(ws_frame(opcode, payload, **options))

    def send_compressed(self, opcode: int, payload: bytes) -> None:
        """A message compressed as RFC 7692 section 7.2.1 says: a sync flush, its last 4 bytes removed."""
        if self.compressor is None:
            self.compressor = zlib.compressobj(9, zlib.DEFLATED, -self.client_bits)
        data = self.compressor.compress(payload) + self.compressor.flush(zlib.Z_SYNC_FLUSH)
        assert data.endswith(b"\x00\x00\xff\xff")
        if self.client_resets:
            self.compressor = None
        self.send(opcode, data[:-4], rsv=0x40)

    def recv_frame(self) -> tuple[bool, int, int, bytes]:
        """(FIN, RSV bits, opcode, payload) of the server's next frame."""
        first, second = self.read(2)
        assert not second & 0x80, "a server frame was masked (RFC 6455 section 5.1: it must not be)"
        length = second & 0x7F
        if length == 126:
            length = int.from_bytes(self.read(2), "big")
            assert length >= 126, f"a length of {length} in 16 bits (section 5.2: the shortest form)"
        elif length == 127:
            length = int.from_bytes(self.read(8), "big")
            assert 65536 <= length < 2**63, f"a length of {length} in 64 bits"
        return bool(first & 0x80), first & 0x70, first & 0x0F, self.read(length)

    def recv_message(self) -> tuple[int, bytes]:
        """The next data message, its fragments joined and inflated: (opcode, payload). Pings are answered."""
        fin, rsv, opcode, payload = self.recv_frame()
        while opcode == WS_PING:
            self.send(WS_PONG, payload)
            fin, rsv, opcode, payload = self.recv_frame()
        assert opcode in (WS_TEXT, WS_BINARY), f"opcode {opcode} where a message should begin"
        parts = [payload]
        while not fin:
            fin, _, continuation, payload = self.recv_frame()
            assert continuation == WS_CONTINUATION, continuation
            parts.append(payload)
        data = b"".join(parts)
        if rsv & 0x40:
            if self.decompressor is None or self.server_resets:
                self.decompressor = zlib.decompressobj(-15)
            data = self.decompressor.decompress(data + b"\x00\x00\xff\xff")
        return opcode, data

    def expect_close(self, code: int | None, answer: bool = True) -> bytes:
        """Read to the server's close frame (skipping what was queued before it), check its code,
        answer it, and see TCP end; return the close reason."""
        while True:
            _, _, opcode, payload = self.recv_frame()
            if opcode == WS_CLOSE:
                break
        got = int.from_bytes(payload[:2], "big") if payload else None
        assert got == code, f"close code {got}, {code} expected ({payload[2:]!r})"
        if answer:
            try:
                self.sock.sendall(ws_frame(WS_CLOSE, payload[:2]))
            except OSError:  # the server may have closed already (it failed the connection)
                pass
        self.assert_closed()
        return payload[2:]

    def close(self, code: int = 1000) -> None:
        """The closing handshake begun by the client: the same code back, then the server closes TCP."""
        self.sock.sendall(ws_close(code))
        _, _, opcode, payload = self.recv_frame()
        assert (opcode, payload) == (WS_CLOSE, code.to_bytes(2, "big")), (opcode, payload)
        self.assert_closed()

    def assert_closed(self) -> None:
        """After the close the server ends TCP (section 7.1.1), gracefully: the end of the stream, not a reset."""
        assert not self.buffer, f"bytes after the close frame: {bytes(self.buffer[:40])!r}"
        try:
            end = self.sock.recv(1)
        except ConnectionResetError:
            raise AssertionError("the server reset the connection instead of closing it") from None
        assert end == b"", f"bytes after the close frame: {end!r}"
        self.sock.close()  # as a client does at the end of the stream: the server's linger ends now


def unread_by_server(server: Server, conn: socket.socket) -> int:
    """Bytes conn sent that the server has not read yet: its socket's receive queue, from /proc/net/tcp."""
    port = conn.getsockname()[1]
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as rows:
            next(rows)
            for row in rows:
                fields = row.split()
                local, remote, queues = fields[1], fields[2], fields[4]
                if int(local.rsplit(":", 1)[1], 16) == server.port and int(remote.rsplit(":", 1)[1], 16) == port:
                    return int(queues.split(":")[1], 16)
    raise AssertionError(f"no connection from port {port} in /proc/net/tcp")


def process_memory(pid: int, field: str = "VmHWM") -> int:
    """A process's memory from /proc, in bytes: VmHWM is its peak resident set, VmRSS its current one."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no {field} for process {pid}")


def deflate_bomb(inflated: int, bits: int = 15) -> bytes:
    """A permessage-deflate payload that inflates to this many zero bytes: about a thousandth of that."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -bits)
    chunk = bytes(1024 * 1024)
    parts = [compressor.compress(chunk) for _ in range(inflated // len(chunk))]
    return b"".join(parts) + compressor.flush(zlib.Z_SYNC_FLUSH)[:-4]


class WebSocketServerTest(HttpServerTests):
    """websocket_server.py as an HTTP server: section 1 of the contract, and the opening
    handshake of RFC 6455 section 4 with its Origin check."""

    script = "websocket_server.py"
    quick_args = ("--timeout", "2")
    refused_upload = ("/echo", 405)

    def assert_serves(self, server: Server) -> None:
        with WebSocketClient(server) as ws:
            ws.send(WS_TEXT, b"served")
            self.assertEqual(ws.recv_message(), (WS_TEXT, b"served"))
            ws.close()

    def handshake(self, path: str = "/echo", **headers: str | None) -> WebSocketClient:
        ws = WebSocketClient(self.server, path, {name.replace("_", "-"): value for name, value in headers.items()})
        self.addCleanup(ws.sock.close)
        return ws

    def test_the_page_is_a_chat_over_a_websocket(self) -> None:
        response, body = self.http("GET", "/")
        self.assertEqual((response.status, response.getheader("Content-Type")), (200, "text/html; charset=utf-8"))
        self.assertIn(b'new WebSocket((location.protocol === "https:" ? "wss://" : "ws://") + location.host', body)
        self.assertIn(b'+ "/chat")', body)
        response, body = self.http("HEAD", "/")
        self.assertEqual((response.status, body), (200, b""))

    def test_other_paths_404_and_a_plain_get_on_a_websocket_426(self) -> None:
        for path in ("/nope", "/echo/", "/chat.html", "/%65cho"):
            with self.subTest(path=path):
                self.assertEqual(self.http("GET", path)[0].status, 404)
        for path in ("/echo", "/chat", "/chat?room=1"):
            with self.subTest(path=path):
                response, _ = self.http("GET", path)
                self.assertEqual((response.status, response.getheader("Upgrade")), (426, "websocket"))
        self.assertEqual(self.http("POST", "/", body=b"x")[0].status, 405)

    def test_the_handshake_answers_the_key(self) -> None:
        ws = self.handshake()
        self.assertEqual(ws.status, 101)
        self.assertEqual((ws.headers["upgrade"].lower(), ws.headers["connection"].lower()), ("websocket", "upgrade"))
        self.assertIsNone(ws.extension)  # none offered, none agreed
        # Connection and Upgrade are lists of case-insensitive tokens.
        ws = self.handshake(Connection="keep-alive, UPGRADE", Upgrade="h2c, WebSocket", Origin="http://test")
        self.assertEqual(ws.status, 101)

    def test_a_handshake_the_rfc_does_not_allow_gets_400(self) -> None:
        for headers in (
            {"Connection": "keep-alive"},
            {"Connection": None},
            {"Sec-WebSocket-Key": None},
            {"Sec-WebSocket-Key": "c2hvcnQ="},  # 5 bytes, not 16
            {"Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=!"},  # not base64
            {"Content-Length": "5"},  # a body: its bytes would be read as frames
            {"Host": None},
        ):
            with self.subTest(headers=headers):
                self.assertEqual(self.handshake(**headers).status, 400)
        with self.server.connect() as conn:
            conn.sendall(b"GET /echo HTTP/1.0\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
            self.assertRegex(read_until_closed(conn, 5)[0], rb"^HTTP/1\.1 400 ")

    def test_another_websocket_version_gets_426_naming_13(self) -> None:
        for version in ("8", "14", None):
            with self.subTest(version=version):
                ws = self.handshake(Sec_WebSocket_Version=version)
                self.assertEqual((ws.status, ws.headers.get("sec-websocket-version")), (426, "13"))

    def test_the_request_head_is_parsed_strictly(self) -> None:
        good = b"Host: test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
        good += b"Sec-WebSocket-Key: " + WS_KEY.encode() + b"\r\n"
        for bad in (
            b"GET /echo HTTP/1.1\n" + good,  # a bare LF ends a line
            b"GET /echo HTTP/1.1\r\nX-A: 1\nX-B: 2\r\n" + good,
            b"GET /echo HTTP/1.1\r\nX-A: 1\rX-B: 2\r\n" + good,  # a bare CR
            b"GET /echo HTTP/1.1\r\nX-Folded: a\r\n X-B: c\r\n" + good,  # obs-fold
            b"GET /echo HTTP/1.1\r\nX-Nul: a\x00b\r\n" + good,
            b"GET /echo HTTP/1.1\r\nX-Space : a\r\n" + good,
            b"GET /echo HTTP/1.1\r\nno colon\r\n" + good,
            b"GET /echo HTTP/1.1\r\nHost: other\r\n" + good,  # two Hosts
            b"GET /echo HTTP/1.1\r\nSec-WebSocket-Version: 13\r\n" + good,  # a header that may come once, twice
            b"GET / HTTP/1.1\r\nContent-Length: 0\r\nTransfer-Encoding: chunked\r\n" + good,
            b"GET /echo HTTP/1.1\r\nContent-Length: 0x5\r\n" + good,
            b"GET /echo  HTTP/1.1\r\n" + good,
            b"GET http://test/echo HTTP/1.1\r\n" + good,
        ):
            with self.subTest(bad=bad[:60]):
                self.assertRegex(self.raw(bad + b"\r\n"), rb"^HTTP/1\.1 400 Bad Request\r\n")
        many = b"".join(b"X-%d: x\r\n" % index for index in range(101))
        self.assertRegex(self.raw(b"GET /echo HTTP/1.1\r\n" + many + good + b"\r\n"), rb"^HTTP/1\.1 431 ")
        with self.server.connect() as conn:  # a head that never ends is refused at the bound, not held
            conn.sendall(b"GET /echo HTTP/1.1\r\n" + good + b"X-Large: " + b"x" * 20_000)
            self.assertRegex(conn.recv(100), rb"^HTTP/1\.1 431 ")
        self.assert_serves(self.server)

    def test_a_page_from_another_origin_is_refused(self) -> None:
        # Cross-site WebSocket hijacking: another site's page, in the user's
        # browser, opening a WebSocket here with the user's cookies.
        for origin, status in (
            ("http://test", 101),
            ("http://TEST:80", 101),
            ("https://test", 101),  # a proxy that terminates TLS: Host has no port
            (None, 101),  # not a browser
            ("http://evil.example", 403),
            ("http://test:8080", 403),
            ("http://test.evil.example", 403),
            ("null", 403),  # a sandboxed page, a file
            ("http://test/path", 403),
            ("not an origin", 403),
        ):
            with self.subTest(origin=origin):
                self.assertEqual(self.handshake(Origin=origin).status, status)
        ws = self.handshake(Origin="http://localhost:3000", Host="localhost:3000")
        self.assertEqual(ws.status, 101)
        ws = self.handshake(Origin="http://[::1]:8000", Host="[::1]:8000")
        self.assertEqual(ws.status, 101)

    def test_allow_origin_lets_the_pages_it_names_in(self) -> None:
        server = self.start("--allow-origin", "https://app.example", "--allow-origin", "http://localhost:3000/")
        for origin, status in (
            ("https://app.example", 101),
            ("https://app.example:443", 101),
            ("http://localhost:3000", 101),
            ("http://app.example", 403),
            ("https://other.example", 403),
        ):
            with self.subTest(origin=origin):
                ws = WebSocketClient(server, headers={"Origin": origin})
                self.addCleanup(ws.sock.close)
                self.assertEqual(ws.status, status)

    def test_each_option_refuses_what_it_cannot_serve(self) -> None:
        for option, value in (
            ("--max-message", "0"),
            ("--max-message", "-1"),
            ("--max-message", str(2**40)),
            ("--max-message", "1e6"),
            ("--timeout", "0"),
            ("--timeout", "nan"),
            ("--ping-interval", "0"),
            ("--ping-interval", "inf"),
            ("--ping-timeout", "-1"),
            ("--allow-origin", "app.example"),
            ("--allow-origin", "https://app.example/page"),
        ):
            with self.subTest(option=option, value=value):
                result = run_script(self.script, "0", option, value)
                self.assertEqual(result.returncode, 2)
                self.assertRegex(result.stderr, rf"(?s)^usage: .*\nwebsocket_server\.py: error: argument {option}: ")
                self.assertNotIn("Traceback", result.stderr)

    def test_quiet_keeps_per_client_lines_out_of_the_log(self) -> None:
        server = self.start("--quiet")
        self.assert_serves(server)
        self.assertEqual(self.http("GET", "/nope", server=server)[0].status, 404)
        self.assert_clean_exit(server)
        self.assertNotIn("#", server.log())

    def test_importing_has_no_side_effects(self) -> None:
        result = run_script("-c", "import websocket_server")
        self.assertEqual((result.returncode, result.stdout, result.stderr), (0, "", ""))


class WebSocketTests(ServerTestCase):
    """A server shared by the class's tests, and WebSocket clients that close with the test."""

    script = "websocket_server.py"
    server_args: tuple[str, ...] = ("--max-message", "100000")
    server: Server

    @classmethod
    def setUpClass(cls) -> None:
        cls.server = Server(cls.script, cls.server_args, cls.addClassCleanup)

    def connect(self, path: str = "/echo", server: Server | None = None, **options: Any) -> WebSocketClient:
        ws = WebSocketClient(server or self.server, path, **options)
        self.addCleanup(ws.sock.close)
        self.assertEqual(ws.status, 101, ws.body)
        return ws

    def assert_fails(self, code: int, *frames: bytes) -> bytes:
        """Frames sent on a new /echo connection make the server close with this code, and end TCP; the reason."""
        ws = self.connect()
        ws.sock.sendall(b"".join(frames))
        return ws.expect_close(code)


class WebSocketFramingTest(WebSocketTests):
    """RFC 6455 sections 5 (framing) and 7 (closing) on /echo and /chat, frames built byte by byte."""

    def test_text_and_binary_come_back_as_they_went(self) -> None:
        ws = self.connect()
        for size in (0, 1, 125, 126, 65535, 65536, 100_000):  # each length encoding, and --max-message
            with self.subTest(size=size):
                text = ("aé€😀" * size).encode()[:size].decode(errors="ignore").encode()  # whole characters
                text += b"a" * (size - len(text))
                ws.send(WS_TEXT, text)
                self.assertEqual(ws.recv_message(), (WS_TEXT, text))
                data = bytes(range(256)) * (size // 256 + 1)
                ws.send(WS_BINARY, data[:size])
                self.assertEqual(ws.recv_message(), (WS_BINARY, data[:size]))
        ws.close()

    def test_frames_sent_with_the_handshake_are_read(self) -> None:
        ws = self.connect(early=ws_frame(WS_TEXT, b"early") + ws_frame(WS_PING, b"bird"))
        self.assertEqual(ws.recv_message(), (WS_TEXT, b"early"))
        self.assertEqual(ws.recv_frame(), (True, 0, WS_PONG, b"bird"))

    def test_a_frame_that_arrives_in_pieces(self) -> None:
        # Cut in its header, and in its payload at offsets that are not a
        # multiple of the 4-byte masking key; each piece read by the server
        # before the next is sent.
        ws = self.connect()
        payload = "pieces of ünïcode, ".encode() * 20
        frame = ws_frame(WS_TEXT, payload)
        for start, end in ((0, 1), (1, 3), (3, 9), (9, 14), (14, 201), (201, len(frame))):
            ws.sock.sendall(frame[start:end])
            wait_for(lambda: unread_by_server(self.server, ws.sock) == 0, timeout=5, message="not read")
        self.assertEqual(ws.recv_message(), (WS_TEXT, payload))

    def test_fragments_with_control_frames_between(self) -> None:
        ws = self.connect()
        ws.send(WS_TEXT, b"Hello w\xc3", fin=False)  # the character \xc3\xb6 cut between two fragments
        ws.send(WS_PING, b"between")
        ws.send(WS_CONTINUATION, b"\xb6rld", fin=False)
        ws.send(WS_PONG, b"unsolicited")  # a heartbeat: no answer
        ws.send(WS_CONTINUATION, b"", fin=False)
        ws.send(WS_CONTINUATION, b"!")
        self.assertEqual(ws.recv_frame(), (True, 0, WS_PONG, b"between"))
        self.assertEqual(ws.recv_message(), (WS_TEXT, "Hello wörld!".encode()))
        ws.send(WS_BINARY, b"\x00\xff", fin=False)
        ws.send(WS_CONTINUATION, b"\x80")
        self.assertEqual(ws.recv_message(), (WS_BINARY, b"\x00\xff\x80"))
        ws.close(1001)

    def test_a_ping_gets_a_pong_with_its_payload(self) -> None:
        ws = self.connect()
        for payload in (b"", b"x", bytes(range(125))):
            ws.send(WS_PING, payload)
            self.assertEqual(ws.recv_frame(), (True, 0, WS_PONG, payload))

    def test_protocol_errors_close_with_1002(self) -> None:
        for why, frames in (
            ("an unmasked frame", [ws_frame(WS_TEXT, b"hi", key=None)]),
            ("RSV1 without an extension", [ws_frame(WS_TEXT, b"hi", rsv=0x40)]),
            ("RSV2", [ws_frame(WS_TEXT, b"hi", rsv=0x20)]),
            ("RSV3", [ws_frame(WS_BINARY, b"hi", rsv=0x10)]),
            ("reserved opcode 3", [ws_frame(0x3, b"")]),
            ("reserved opcode 7", [ws_frame(0x7, b"")]),
            ("reserved opcode 11", [ws_frame(0xB, b"")]),
            ("reserved opcode 15", [ws_frame(0xF, b"")]),
            ("a ping of 126 bytes", [ws_frame(WS_PING, b"p" * 126)]),
            ("a fragmented ping", [ws_frame(WS_PING, b"p", fin=False)]),
            ("a fragmented close", [ws_frame(WS_CLOSE, b"\x03\xe8", fin=False)]),
            ("a continuation of nothing", [ws_frame(WS_CONTINUATION, b"x")]),
            ("a new message inside another", [ws_frame(WS_TEXT, b"a", fin=False), ws_frame(WS_TEXT, b"b")]),
            ("a 64-bit length with its top bit", [ws_frame(WS_BINARY, b"", length=2**63 + 5, form=64)]),
            ("5 bytes in a 16-bit length", [ws_frame(WS_TEXT, b"hello", form=16)]),
            ("200 bytes in a 64-bit length", [ws_frame(WS_BINARY, b"x" * 200, form=64)]),
            ("a close of one byte", [ws_frame(WS_CLOSE, b"\xff")]),
            ("a close reason not UTF-8", [ws_frame(WS_CLOSE, b"\x03\xe8\xff")]),
            *((f"close code {code}", [ws_close(code)]) for code in (0, 999, 1004, 1005, 1006, 1012, 1015, 2999, 5000)),
        ):
            with self.subTest(why):
                self.assert_fails(1002, *frames)
        # One byte would be a code below 1000 anyway; the reason tells which check refused it.
        self.assertEqual(self.assert_fails(1002, ws_frame(WS_CLOSE, b"\xff")), b"a close frame of one byte")

    def test_text_that_is_not_utf8_closes_with_1007_at_the_first_bad_byte(self) -> None:
        for bad in (b"\xff", b"caf\xc3", b"\xed\xa0\x80", b"\xc0\xaf", b"\xf4\x90\x80\x80"):
            with self.subTest(bad=bad):
                self.assert_fails(1007, ws_frame(WS_TEXT, bad))
        # A message cut into fragments fails at the fragment that breaks it,
        # before its end has been sent (Autobahn's cases 6.4 check this too).
        ws = self.connect()
        ws.send(WS_TEXT, "κόσμε".encode(), fin=False)
        ws.send(WS_CONTINUATION, b"\xf4\x90\x80\x80", fin=False)
        ws.expect_close(1007)
        ws = self.connect()  # the last fragment ends inside a character
        ws.send(WS_TEXT, b"caf", fin=False)
        ws.send(WS_CONTINUATION, b"\xc3")
        ws.expect_close(1007)
        # And so does one frame, at its first bad byte, with the rest still to come.
        ws = self.connect()
        frame = ws_frame(WS_TEXT, "κόσμε".encode() + b"\xf4\x90\x80\x80" + b"edited" * 1000)
        ws.sock.sendall(frame[:25])
        ws.expect_close(1007)

    def test_a_close_is_answered_with_its_code_then_tcp_closes(self) -> None:
        for code in (1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 3999, 4000, 4999):
            with self.subTest(code=code):
                self.connect().close(code)
        ws = self.connect()
        ws.send(WS_CLOSE, b"")  # no code at all: answered with no code
        self.assertEqual(ws.recv_frame(), (True, 0, WS_CLOSE, b""))
        ws.assert_closed()
        ws = self.connect()
        ws.send(WS_CLOSE, b"\x03\xe8" + "bye, ünïcode".encode())
        ws.send(WS_TEXT, b"after the close: ignored")
        self.assertEqual(ws.recv_frame(), (True, 0, WS_CLOSE, b"\x03\xe8"))
        ws.assert_closed()
        self.server.wait_for_log(r"#\d+ closed by the client \(1000\) after 0 message\(s\)")

    def test_a_message_over_max_message_is_refused_at_its_header(self) -> None:
        self.assert_fails(1009, ws_frame(WS_BINARY, b"", length=100_001))  # the header alone: no payload follows
        small = self.start("--max-message", "1000")  # a frame one byte over, in one read
        for size, code in ((1000, None), (1001, 1009)):
            with self.subTest(size=size):
                ws = self.connect(server=small)
                ws.send(WS_TEXT, b"x" * size)
                if code:
                    ws.expect_close(code)
                else:
                    self.assertEqual(ws.recv_message(), (WS_TEXT, b"x" * size))
        self.assert_fails(1009, ws_frame(WS_TEXT, b"", length=2**62, form=64))
        ws = self.connect()  # in fragments: what counts is the whole message
        ws.send(WS_BINARY, b"x" * 60_000, fin=False)
        ws.sock.sendall(ws_frame(WS_CONTINUATION, b"", length=50_000, fin=True))
        ws.expect_close(1009)

    def test_chat_sends_every_message_to_every_member(self) -> None:
        members = [self.connect("/chat") for _ in range(3)]
        outsider = self.connect("/echo")
        for index, member in enumerate(members):
            member.send(WS_TEXT, b"from %d" % index)
            for other in members:  # each in the order it was sent, the sender included
                self.assertEqual(other.recv_message(), (WS_TEXT, b"from %d" % index))
        members[0].send(WS_BINARY, b"\x00\x01")
        self.assertEqual([member.recv_message() for member in members], [(WS_BINARY, b"\x00\x01")] * 3)
        members[1].close()
        members[2].send(WS_TEXT, b"after one left")
        self.assertEqual(members[0].recv_message(), (WS_TEXT, b"after one left"))
        outsider.send(WS_PING, b"nothing else")
        self.assertEqual(outsider.recv_frame(), (True, 0, WS_PONG, b"nothing else"))  # no chat message before it


class WebSocketCompressionTest(WebSocketTests):
    """permessage-deflate (RFC 7692): the negotiation, compressed messages both ways, and the bound."""

    def offer(self, extensions: str, server: Server | None = None) -> WebSocketClient:
        return self.connect(server=server, headers={"Sec-WebSocket-Extensions": extensions})

    def test_the_negotiation_follows_the_rfc(self) -> None:
        def deflate(*parameters: str) -> str:
            return "; ".join(("permessage-deflate", *parameters))

        window = "server_max_window_bits=12"
        for offer, agreed in (
            (deflate(), deflate(window)),
            (deflate("client_max_window_bits"), deflate(window, "client_max_window_bits=12")),
            (deflate("client_max_window_bits=9"), deflate(window, "client_max_window_bits=9")),
            (deflate('client_max_window_bits="10"'), deflate(window, "client_max_window_bits=10")),
            (deflate("server_max_window_bits=10"), deflate("server_max_window_bits=10")),
            (deflate("server_max_window_bits=15"), deflate(window)),
            (
                deflate("server_no_context_takeover", "client_no_context_takeover"),
                deflate("server_no_context_takeover", "client_no_context_takeover", window),
            ),
            # Offers to decline, each for a reason of RFC 7692 section 7.1:
            (deflate("server_max_window_bits"), None),  # the value is required
            (deflate("server_max_window_bits=16"), None),
            (deflate("client_max_window_bits=7"), None),
            (deflate("server_max_window_bits=010"), None),
            (deflate("server_no_context_takeover=1"), None),
            (deflate("server_no_context_takeover", "server_no_context_takeover"), None),
            (deflate("x-unknown"), None),
            ("x-webkit-deflate-frame", None),
            ("permessage-deflate;;", None),  # malformed
            # The first offer that can be met wins.
            (deflate("x-unknown") + ", " + deflate("server_max_window_bits=11"), deflate("server_max_window_bits=11")),
        ):
            with self.subTest(offer=offer):
                self.assertEqual(self.offer(offer).extension, agreed)

    def test_compressed_messages_both_ways_with_context_takeover(self) -> None:
        ws = self.offer("permessage-deflate; client_max_window_bits")
        message = " ".join(["a chat message that repeats itself"] * 20).encode()
        sizes = []
        for _ in range(3):
            ws.send_compressed(WS_TEXT, message)
            _, rsv, _, payload = ws.recv_frame()
            self.assertEqual(rsv, 0x40)  # compressed
            sizes.append(len(payload))
            ws.decompressor = ws.decompressor or zlib.decompressobj(-15)
            self.assertEqual(ws.decompressor.decompress(payload + b"\x00\x00\xff\xff"), message)
        self.assertLess(sizes[0], len(message) / 5)
        self.assertLess(sizes[1], sizes[0] / 3, sizes)  # the second refers back to the first
        ws.send(WS_TEXT, b"uncompressed, RSV1 clear: allowed")  # any message may go uncompressed
        self.assertEqual(ws.recv_message(), (WS_TEXT, b"uncompressed, RSV1 clear: allowed"))
        ws.send_compressed(WS_BINARY, b"")
        self.assertEqual(ws.recv_message(), (WS_BINARY, b""))
        ws.close()

    def test_no_context_takeover_on_both_sides(self) -> None:
        ws = self.offer("permessage-deflate; server_no_context_takeover; client_no_context_takeover")
        for _ in range(3):  # each message inflates on its own: a fresh decompressor each time
            ws.send_compressed(WS_TEXT, b"same again " * 50)
            self.assertEqual(ws.recv_message(), (WS_TEXT, b"same again " * 50))
        ws.close()

    def test_a_window_of_8_bits_is_agreed_and_answered_uncompressed(self) -> None:
        # zlib cannot compress within 256 bytes; the server accepts, and sends
        # its messages uncompressed, which the RFC allows for any message.
        ws = self.offer("permessage-deflate; server_max_window_bits=8; client_max_window_bits=8")
        self.assertEqual(ws.extension, "permessage-deflate; server_max_window_bits=8; client_max_window_bits=8")
        ws.client_bits = 9  # the client's zlib cannot do 8 either; the server's inflater takes any window
        ws.compressor = zlib.compressobj(9, zlib.DEFLATED, -9)
        ws.send_compressed(WS_TEXT, b"small window " * 10)
        fin, rsv, opcode, payload = ws.recv_frame()
        self.assertEqual((rsv, opcode, payload), (0, WS_TEXT, b"small window " * 10))

    def test_rsv1_where_it_cannot_be_is_1002(self) -> None:
        offer = {"Sec-WebSocket-Extensions": "permessage-deflate"}
        for frames in (
            [ws_frame(WS_PING, b"", rsv=0x40)],
            [ws_frame(WS_TEXT, b"a", fin=False), ws_frame(WS_CONTINUATION, b"b", rsv=0x40)],
            [ws_frame(WS_TEXT, b"a", rsv=0x20)],
        ):
            with self.subTest(frames=frames):
                ws = self.connect(headers=offer)
                ws.sock.sendall(b"".join(frames))
                ws.expect_close(1002)

    def test_data_that_does_not_inflate_closes_with_1007(self) -> None:
        ws = self.offer("permessage-deflate")
        ws.send(WS_TEXT, b"\xff\xff\xff\xff not deflate", rsv=0x40)
        ws.expect_close(1007)
        ws = self.offer("permessage-deflate")
        ws.send_compressed(WS_TEXT, b"\xff invalid UTF-8 inside")
        ws.expect_close(1007)

    def test_a_compression_bomb_is_refused_at_the_bound(self) -> None:
        # 32 MiB of zeros in 32 KB: inflated whole, it would cost the server
        # 32 MiB before the size check; zlib's max_length stops at the bound.
        bomb = deflate_bomb(32 * MIB)
        self.assertLess(len(bomb), 100_000)  # within --max-message, compressed
        before = process_memory(self.server.process.pid)
        ws = self.offer("permessage-deflate")
        ws.send(WS_BINARY, bomb, rsv=0x40, key=b"\x00\x00\x00\x00")
        ws.expect_close(1009)
        self.assertLess(process_memory(self.server.process.pid) - before, 16 * MIB)
        ws = self.offer("permessage-deflate")  # in fragments, their sum inflated counts
        ws.send_compressed(WS_BINARY, bytes(60_000))
        self.assertEqual(ws.recv_message(), (WS_BINARY, bytes(60_000)))
        compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
        ws.send(
            WS_BINARY, compressor.compress(bytes(60_000)) + compressor.flush(zlib.Z_SYNC_FLUSH), rsv=0x40, fin=False
        )
        ws.send(WS_CONTINUATION, compressor.compress(bytes(60_000)) + compressor.flush(zlib.Z_SYNC_FLUSH)[:-4])
        ws.expect_close(1009)

    def test_no_compression_declines_every_offer(self) -> None:
        server = self.start("--no-compression")
        ws = self.offer("permessage-deflate; client_max_window_bits", server=server)
        self.assertIsNone(ws.extension)
        ws.send(WS_TEXT, b"compressed, but never agreed", rsv=0x40)
        ws.expect_close(1002)


class WebSocketLivenessTest(WebSocketTests):
    """The keepalive (pings, 1011) and backpressure (a bounded queue per client, 1008)."""

    server_args = ("--ping-interval", "0.3", "--ping-timeout", "0.3")

    def test_a_ping_each_interval_and_no_pong_closes_with_1011(self) -> None:
        ws = self.connect()
        opened = time.monotonic()
        _, _, opcode, payload = ws.recv_frame()
        self.assertEqual(opcode, WS_PING)
        self.assertGreater(time.monotonic() - opened, 0.2)
        ws.send(WS_PONG, payload)
        _, _, opcode, payload = ws.recv_frame()
        self.assertEqual(opcode, WS_PING)  # the next ping, an interval later
        ws.send(WS_PONG, payload + b"?")  # a pong, but not this ping's: no answer
        self.assertEqual(ws.recv_frame()[2:], (WS_CLOSE, b"\x03\xf3no pong"))  # 1011, a timeout later
        self.assertLess(time.monotonic() - opened, 2.5)
        ws.send(WS_CLOSE, b"\x03\xf3")
        ws.assert_closed()

    def test_a_half_open_connection_is_noticed_and_freed(self) -> None:
        # A client that vanished without a FIN or RST (a laptop closed, a NAT
        # that forgot the connection) looks exactly like one that sends
        # nothing and reads nothing: without pings it would be held forever.
        ws = self.connect("/echo?half-open")
        number = self.server.wait_for_log(r"#(\d+) GET /echo\?half-open: a WebSocket").group(1)
        self.server.wait_for_log(rf"#{number} sent no pong within 0.3 s: closing \(1011\)", timeout=3)
        # It does not answer the close either: dropped a CLOSE_TIMEOUT (2 s) later.
        self.server.wait_for_log(rf"#{number} closed \(1011\), no answer: dropped after", timeout=4)
        with self.assertRaises((ConnectionResetError, AssertionError)):  # a reset, or its frames then the end
            while True:
                ws.recv_frame()


class WebSocketBackpressureTest(WebSocketTests):
    """A client that stops reading: a bounded queue (WRITE_LIMIT), then 1008; or, on /echo, no more read from it."""

    server_args = ()

    def test_a_client_that_stops_reading_is_closed_and_the_room_keeps_its_pace(self) -> None:
        slow = self.connect("/chat", receive_buffer=4096)  # reads nothing, until it is closed
        fast = self.connect("/chat")
        sender = self.connect("/chat")
        message = b"m" * 65_000
        before = process_memory(self.server.process.pid)
        started = time.monotonic()
        closed = False
        for _ in range(300):  # 20 MB: more than the kernel's buffers and WRITE_LIMIT hold
            sender.send(WS_BINARY, message, key=b"\x00\x00\x00\x00")
            self.assertEqual(fast.recv_message(), (WS_BINARY, message))
            self.assertEqual(sender.recv_message(), (WS_BINARY, message))
            if not closed and "is too slow" in self.server.log():
                # It gets everything queued before it, then the close (within
                # CLOSE_TIMEOUT, after which it would be dropped).
                self.assertEqual(slow.expect_close(1008), b"too slow to read its messages")
                closed = True
        self.assertTrue(closed, self.server.log())
        self.assertLess(time.monotonic() - started, 10.0)
        self.server.wait_for_log(r"#\d+ is too slow: \d+ bytes unsent, closing it \(1008\)")
        self.assertLess(process_memory(self.server.process.pid) - before, 32 * MIB)
        fast.close()

    def test_echo_stops_reading_from_a_client_that_does_not_read(self) -> None:
        # Backpressure: the server reads no more from a client than it can
        # send back, so such a client fills the kernel's buffers, then waits.
        ws = self.connect()
        ws.sock.setblocking(False)
        before = process_memory(self.server.process.pid)
        frame = ws_frame(WS_BINARY, bytes(60_000), key=b"\x00\x00\x00\x00")
        unsent = memoryview(frame)
        sent = 0
        stalled_since = time.monotonic()
        while sent < 256 * MIB and time.monotonic() - stalled_since < 0.5:
            try:
                count = ws.sock.send(unsent)
            except BlockingIOError:
                select.select([], [ws.sock], [], 0.05)
                continue
            sent += count
            unsent = unsent[count:] or memoryview(frame)
            stalled_since = time.monotonic()
        self.assertLess(sent, 64 * MIB)  # the kernel's buffers, both ways, and little more
        self.assertLess(process_memory(self.server.process.pid) - before, 16 * MIB)
        ws.sock.setblocking(True)
        self.assertEqual(ws.recv_message(), (WS_BINARY, bytes(60_000)))  # still served, at its own pace


class WebSocketShutdownTest(WebSocketTests):
    """SIGINT or SIGTERM: no new connection, a close (1001) to every client, then exit 0."""

    server_args = ("--max-message", str(16 * MIB), "--timeout", "30")

    @classmethod
    def setUpClass(cls) -> None:
        pass  # each test stops its own server

    def test_every_client_gets_1001_and_the_server_exits_0(self) -> None:
        server = self.start(*self.server_args)
        clients = [self.connect("/echo", server=server), self.connect("/chat", server=server)]
        clients[1].send(WS_TEXT, b"before the stop")
        self.assertEqual(clients[1].recv_message(), (WS_TEXT, b"before the stop"))
        stopped = time.monotonic()
        server.process.send_signal(signal.SIGINT)
        for ws in clients:
            self.assertEqual(ws.expect_close(1001), b"the server is stopping")
        with self.assertRaises(ConnectionRefusedError):
            socket.create_connection((server.host, server.port), timeout=5).close()
        self.assertEqual(server.process.wait(STOP_TIMEOUT), 0, server.log())
        self.assertLess(time.monotonic() - stopped, 2.0)
        server.wait_for_log(r"#2 closed \(1001\), and the client answered, after 1 message\(s\)")
        self.assertNotIn("Traceback", server.log())

    def test_nothing_queued_is_lost_at_a_stop(self) -> None:
        server = self.start(*self.server_args)
        ws = self.connect(server=server, receive_buffer=16384)  # a slow link: most of the echo waits in the server
        message = bytes(range(256)) * (8 * MIB // 256)
        ws.send(WS_BINARY, message, key=b"\x00\x00\x00\x00")
        select.select([ws.sock], [], [], 5)  # the echo has begun
        server.process.send_signal(signal.SIGTERM)
        self.assertEqual(ws.recv_frame(), (True, 0, WS_BINARY, message))  # whole, then the close
        ws.expect_close(1001)
        self.assertEqual(server.process.wait(STOP_TIMEOUT), 0, server.log())

    def test_silent_clients_do_not_hold_up_a_stop(self) -> None:
        # One connected and sent nothing (a browser opens spare connections),
        # one does not answer the close: neither waits for --timeout (30 s).
        server = self.start(*self.server_args)
        idle = server.connect()
        self.addCleanup(idle.close)
        silent = self.connect(server=server)
        server.wait_until_accepted()
        stopped = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        self.assertEqual(silent.recv_frame()[2:], (WS_CLOSE, b"\x03\xe9the server is stopping"))  # unanswered
        self.assertEqual(server.process.wait(STOP_TIMEOUT), 0, server.log())
        self.assertLess(time.monotonic() - stopped, 4.0)
        self.assertEqual(read_until_closed(idle, 1)[0], b"")


class WebSocketPeerTest(WebSocketTests):
    """The websockets library, a strict client, against /echo and /chat, compression on and off."""

    server_args = ("--ping-interval", "0.2", "--ping-timeout", "1")

    def test_the_websockets_client_echoes_and_chats(self) -> None:
        client = require_peer("websockets.sync.client")
        exceptions = require_peer("websockets.exceptions")
        uri = f"ws://{self.server.host}:{self.server.port}"
        for compression in (None, "deflate"):
            with self.subTest(compression=compression):
                with client.connect(uri + "/echo", compression=compression, open_timeout=5, close_timeout=5) as ws:
                    agreed = ws.response.headers.get("Sec-WebSocket-Extensions")
                    self.assertEqual(agreed and agreed.split(";")[0], compression and "permessage-deflate")
                    for message in ("hello", "ünïcode ✓", b"\x00\xff" * 1000, "x" * 500_000, b"", ""):
                        ws.send(message)
                        self.assertEqual(ws.recv(timeout=5), message)
                    ws.send(["frag", "ment", "ed"])  # three frames: a text message in fragments
                    self.assertEqual(ws.recv(timeout=5), "fragmented")
                    self.assertTrue(ws.ping(b"are you there").wait(5))
                    with self.assertRaises(TimeoutError):  # idle a while: the server's pings, answered
                        ws.recv(timeout=0.7)
                    ws.send("still open")
                    self.assertEqual(ws.recv(timeout=5), "still open")
                self.assertEqual((ws.close_code, ws.close_reason), (1000, ""))
                with client.connect(uri + "/chat", compression=compression) as a:
                    with client.connect(uri + "/chat", compression=compression) as b:
                        a.send("from a")
                        self.assertEqual((a.recv(timeout=5), b.recv(timeout=5)), ("from a", "from a"))
                        b.send(b"from b")
                        self.assertEqual((a.recv(timeout=5), b.recv(timeout=5)), (b"from b", b"from b"))
                with client.connect(uri + "/echo", compression=compression, max_size=None) as ws:
                    ws.send(b"x" * (MIB + 1))  # over the server's --max-message
                    with self.assertRaises(exceptions.ConnectionClosedError):
                        ws.recv(timeout=5)
                self.assertEqual(ws.close_code, 1009)


def require_program(name: str) -> str:
    """The path of a program a test drives (chromium), or skip the test; TEST_REQUIRE_PEERS=1 fails it instead."""
    path = shutil.which(name)
    if path is None:
        if os.environ.get("TEST_REQUIRE_PEERS"):
            raise AssertionError(f"{name} is not installed, and TEST_REQUIRE_PEERS=1 says it must be")
        raise unittest.SkipTest(f"{name} is not installed (apt-get install chromium chromium-driver): skipped")
    return path


class WebDriver:
    """ChromeDriver, through the W3C WebDriver protocol (JSON over HTTP): just what two chat pages need."""

    ELEMENT = "element-6066-11e4-a52e-4f735466cecf"  # the key the protocol names an element by

    def __init__(self, port: int) -> None:
        self.url = f"http://127.0.0.1:{port}"
        self.session = ""

    def call(self, method: str, path: str, body: dict | None = None) -> Any:
        data = json.dumps(body if body is not None else {}).encode() if method == "POST" else None
        url = f"{self.url}/session/{self.session}{path}" if self.session else self.url + path
        request = urllib.request.Request(url, data, {"Content-Type": "application/json"}, method=method)
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.load(response)["value"]

    def text(self, selector: str) -> str:
        element = self.call("POST", "/element", {"using": "css selector", "value": selector})[self.ELEMENT]
        return self.call("GET", f"/element/{element}/text")

    def type(self, selector: str, text: str) -> None:
        element = self.call("POST", "/element", {"using": "css selector", "value": selector})[self.ELEMENT]
        self.call("POST", f"/element/{element}/value", {"text": text})

    def wait_for_text(self, selector: str, expected: str, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while expected not in self.text(selector):
            if time.monotonic() > deadline:
                raise AssertionError(f"{selector} never showed {expected!r}: {self.text(selector)!r}")
            time.sleep(0.05)


class WebSocketBrowserTest(WebSocketTests):
    """A real browser: Debian's Chromium, headless, with the chat page open in two tabs."""

    server_args = ()

    def test_a_message_typed_in_one_tab_appears_in_the_other(self) -> None:
        chromium = require_program("chromium")
        chromedriver = require_program("chromedriver")
        profile = tempfile.mkdtemp(prefix="chromium-")
        self.addCleanup(shutil.rmtree, profile, ignore_errors=True)
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        driver_process = subprocess.Popen(
            [chromedriver, f"--port={port}"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.addCleanup(lambda: (os.killpg(driver_process.pid, signal.SIGKILL), driver_process.wait()))
        driver = WebDriver(port)
        wait_for(lambda: self.driver_ready(driver), timeout=10, message="chromedriver did not start")
        options = {
            "binary": chromium,
            "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
            ],
        }  # fmt: skip
        capabilities = {"capabilities": {"alwaysMatch": {"goog:chromeOptions": options}}}
        driver.session = driver.call("POST", "/session", capabilities)["sessionId"]
        self.addCleanup(driver.call, "DELETE", "")  # quits the browser
        page = f"http://{self.server.host}:{self.server.port}/"
        driver.call("POST", "/url", {"url": page})
        first = driver.call("GET", "/window")
        second = driver.call("POST", "/window/new", {"type": "tab"})["handle"]
        driver.call("POST", "/window", {"handle": second})
        driver.call("POST", "/url", {"url": page})
        driver.wait_for_text("#state", "Connected")
        driver.call("POST", "/window", {"handle": first})
        driver.wait_for_text("#state", "Connected")
        driver.type("#text", "Hello from the first tab\ue007")  # U+E007: the Enter key, which submits the form
        driver.wait_for_text("#messages", "Hello from the first tab")  # back from /chat, to the sender too
        driver.call("POST", "/window", {"handle": second})
        driver.wait_for_text("#messages", "Hello from the first tab")
        driver.type("#text", "<b>and back</b>\ue007")
        driver.call("POST", "/window", {"handle": first})
        driver.wait_for_text("#messages", "<b>and back</b>")  # shown as text, not as HTML
        self.server.wait_for_log(r"#\d+ GET /chat: a WebSocket \(permessage-deflate\)")  # Chromium compresses

    @staticmethod
    def driver_ready(driver: WebDriver) -> bool:
        try:
            return bool(driver.call("GET", "/status")["ready"])
        except OSError:
            return False


class ClientTest(unittest.TestCase):
    server: Server

    @classmethod
    def setUpClass(cls) -> None:
        cls.server = Server("threaded_server.py", ("--delay", "0", "--quiet"), cls.addClassCleanup)

    def client(self, *args: str) -> subprocess.CompletedProcess:
        return run_script("client.py", *args)

    def test_one_request_prints_the_reply(self) -> None:
        result = self.client(str(self.server.port), "hello")
        self.assertEqual((result.returncode, result.stdout, result.stderr), (0, "!olleh\n", ""))

    def test_a_message_with_its_own_delimiter_is_sent_as_is(self) -> None:
        self.assertEqual(self.client(str(self.server.port), "ab!cd").stdout, "!ba\n")

    def test_connection_refused_is_one_line_and_exit_1(self) -> None:
        with socket.create_server(("127.0.0.1", 0)) as probe:
            free_port = probe.getsockname()[1]  # closed again below: nobody listens there
        result = self.client(str(free_port))
        self.assertEqual(result.returncode, 1)
        self.assertEqual(result.stderr, f"connection refused by 127.0.0.1:{free_port}: is the server running?\n")

    def test_no_reply_in_time_is_one_line_and_exit_1(self) -> None:
        with socket.create_server(("127.0.0.1", 0)) as silent:  # accepts (the kernel does), never answers
            result = self.client(str(silent.getsockname()[1]), "--timeout", "0.3")
        self.assertEqual(result.returncode, 1)
        self.assertIn("no reply from 127.0.0.1", result.stderr)
        self.assertNotIn("Traceback", result.stderr)

    def test_a_wrong_reply_is_exit_1(self) -> None:
        wrong = SingleReplyServer(b"!wrong")
        self.addCleanup(wrong.close)
        result = self.client(str(wrong.port), "right")
        self.assertEqual(result.returncode, 1)
        self.assertIn("wrong reply", result.stderr)

    def test_load_mode_prints_a_summary(self) -> None:
        result = self.client(str(self.server.port), "--clients", "20", "--requests", "200", "--size", "100")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertRegex(result.stdout, r"^200 ok, 0 failed in [\d.]+ s: \d+ requests/s\n")
        self.assertRegex(result.stdout, r"latency ms: p50 [\d.]+, p90 [\d.]+, p99 [\d.]+, max [\d.]+")

    def test_load_mode_counts_failures_and_exits_1(self) -> None:
        wrong = SingleReplyServer(b"!nope")
        self.addCleanup(wrong.close)
        result = self.client(str(wrong.port), "--clients", "1", "--requests", "1")
        self.assertEqual(result.returncode, 1)
        self.assertIn("0 ok, 1 failed", result.stdout)
        self.assertIn("failed: 1 x wrong reply", result.stdout)

    def test_load_mode_reports_refusals_and_timeouts(self) -> None:
        with socket.create_server(("127.0.0.1", 0)) as probe:
            free_port = probe.getsockname()[1]
        refused = self.client(str(free_port), "--clients", "2", "--requests", "3")
        self.assertEqual(refused.returncode, 1)
        self.assertIn("0 ok, 3 failed", refused.stdout)
        self.assertIn("failed: 3 x Connection refused", refused.stdout)
        with socket.create_server(("127.0.0.1", 0)) as silent:  # accepts (the kernel does), never answers
            port = str(silent.getsockname()[1])
            timed_out = self.client(port, "--clients", "2", "--requests", "2", "--timeout", "0.3")
        self.assertEqual(timed_out.returncode, 1)
        self.assertIn("failed: 2 x no reply within 0.3 s", timed_out.stdout)

    def test_importing_has_no_side_effects(self) -> None:
        result = run_script("-c", "import client")
        self.assertEqual((result.returncode, result.stdout, result.stderr), (0, "", ""))

    @unittest.skipIf(sys.platform == "win32", "no open-file limit to set")
    def test_more_clients_than_open_files_is_one_line_and_exit_1(self) -> None:
        # A hard limit of 1024, common in containers: client.py cannot raise it.
        code = (
            "import resource, runpy; resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 1024));"
            " runpy.run_path('client.py', run_name='__main__')"
        )
        result = run_script("-c", code, str(self.server.port), "--clients", "3000")
        self.assertEqual(result.returncode, 1)
        self.assertEqual(result.stderr.count("\n"), 1, result.stderr)
        self.assertIn("(1024)", result.stderr)
        self.assertIn("ulimit -n", result.stderr)


# A small, quick bench.py run: two approaches, two rounds, little of everything.
SMALL_BENCH = (
    "bench.py", "--scripts", "sync_server.py", "asyncio_server.py", "--rounds", "2", "--requests", "200",
    "--burst", "4", "--burst-delay", "0.1", "--cpu-requests", "20", "--cpu-burst", "2", "--cpu-burst-seconds", "0.02",
)  # fmt: skip


def has_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


class BenchTest(unittest.TestCase):
    def test_bench_prints_its_tables(self) -> None:
        result = run_script(*SMALL_BENCH, timeout=90)
        self.assertEqual(result.returncode, 0, result.stderr)
        lines = result.stdout.splitlines()
        self.assertRegex(lines[0], r"^Python 3\.\d+\.\d+, .*, \d+ cores$")
        self.assertEqual(lines[1], "command: python " + " ".join(SMALL_BENCH))
        self.assertIn("(median of 2 alternating rounds)", result.stdout)
        self.assertRegex(result.stdout, r"\| sync \| [\d,]+ \| [\d.]+x \| (-|[\d.]+x) \| n=4: [\d.]+ s / 0\.4 s \|")
        self.assertRegex(result.stdout, r"\| asyncio \| [\d,]+ \| [\d.]+x \| (-|[\d.]+x) \| n=4: [\d.]+ s / 0\.1 s \|")
        self.assertRegex(result.stdout, r"\| sync \| [\d,]+ \| \d+% \| [\d.]+ s \| [\d.]+ s \|")

    def test_load_program_measures_requests_per_second(self) -> None:
        with tempfile.TemporaryDirectory() as directory:
            program = Path(directory, "load")
            # Prints what rload prints, for the run its arguments ask for.
            program.write_text(
                f"#!{sys.executable}\nimport sys\n"
                "print(f'total={sys.argv[4]} ok={sys.argv[4]} err=0 mismatch=0 unfinished=0 rps=12345.6')\n"
            )
            program.chmod(0o755)
            result = run_script(*SMALL_BENCH[:3], "--rounds", "1", *SMALL_BENCH[6:], "--load", str(program), timeout=60)
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertRegex(result.stdout, r"\| sync \| 12,346 \| 1\.00x \| ")
        missing = run_script("bench.py", "--load", "/no/such/rload", timeout=30)
        self.assertEqual(missing.returncode, 2)
        self.assertIn("--load: no program '/no/such/rload'", missing.stderr)
        self.assertNotIn("Traceback", missing.stderr)

    def test_the_websocket_section_prints_its_table(self) -> None:
        small = ("--rounds", "1", "--ws-seconds", "0.2", "--ws-idle", "20", "--ws-compressed", "10")
        result = run_script("bench.py", "--websocket", *small, "--ws-broadcast", "10", timeout=60)
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertRegex(
            result.stdout, r"\| echo: messages/s, 100 connections, 64-byte text \| websocket_server\.py \| [\d,]+ \|"
        )
        self.assertRegex(result.stdout, r"\| websocket_server\.py, masking a byte at a time \| [\d,]+ \|")
        self.assertRegex(
            result.stdout, r"\| idle: memory per connection, 20 open \| websocket_server\.py \| -?[\d.]+ KiB \|"
        )
        self.assertRegex(
            result.stdout, r"\| broadcast: one /chat message reaching 10 clients \| websocket_server\.py \| [\d.]+ s \|"
        )
        self.assertRegex(result.stdout, r"\| 65,536 bytes \| [\d.]+ us \| [\d.]+ us \| \d+x \|")

    @unittest.skipIf(has_matplotlib(), "matplotlib is installed here")
    def test_plot_without_matplotlib_is_one_line(self) -> None:
        result = run_script("bench.py", "--plot", tempfile.gettempdir(), timeout=30)
        self.assertEqual(result.returncode, 2)
        self.assertEqual(result.stderr.count("\n"), 1, result.stderr)
        self.assertIn("pip install matplotlib", result.stderr)


class HelpTextTest(unittest.TestCase):
    def test_no_option_states_its_default_twice(self) -> None:
        # argparse appends "(default: X)" to a help text that already names
        # its default, as bench.py's --scripts did: "(default: all) (default: None)".
        for script in (*SERVER_SCRIPTS, "client.py", "bench.py"):
            with self.subTest(script=script):
                result = run_script(script, "--help")
                self.assertEqual(result.returncode, 0, result.stderr)
                self.assertNotRegex(" ".join(result.stdout.split()), r"\(default: [^)]*\) \(default:")


class SingleReplyServer:
    """A broken server in a thread: answers its first client with a fixed reply."""

    def __init__(self, reply: bytes) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.thread = threading.Thread(target=self.serve, args=(reply,))
        self.thread.start()

    def serve(self, reply: bytes) -> None:
        self.listener.settimeout(10)
        try:
            conn, _ = self.listener.accept()
        except OSError:
            return
        with conn:
            conn.recv(65536)
            conn.sendall(reply)

    def close(self) -> None:
        self.listener.close()
        self.thread.join()


# Every server script: each stands alone, so the skeleton they share is copied
# into each (CONTRACT.md section 1, STYLE.md section 2).
SERVER_SCRIPTS = (
    "sync_server.py",
    "threaded_server.py",
    "pool_server.py",
    "forking_server.py",
    "prefork_server.py",
    "selectors_server.py",
    "asyncio_server.py",
    "asyncio_protocol_server.py",
    "socketserver_variants.py",
    "http_static.py",
    "wsgi_app.py",
    "websocket_server.py",
)
# Names each script defines its own way: they are the approach itself.
APPROACH = {"serve", "make_server"}
# Where a script's copy of a shared definition differs on purpose, and why.
# Copies declared with the same reason must match each other.
DIFFERENCES = {
    "main": {
        "forking_server.py": "says so and exits without os.fork(); no logging module (see Log)",
        "prefork_server.py": "says so and exits without os.fork(); logs carry the worker's pid",
        "asyncio_server.py": "serve() runs in an event loop",
        "asyncio_protocol_server.py": "serve() runs in an event loop",
        "websocket_server.py": "serve() runs in an event loop",
        "socketserver_variants.py": "socketserver builds and runs the server",
        "http_static.py": "checks --directory first; http.server runs the server",
        "wsgi_app.py": "wsgiref runs the server",
    },
    "parse_args": {
        "pool_server.py": "adds --min-workers, --max-workers and --idle-timeout",
        "forking_server.py": "adds --max-children",
        "prefork_server.py": "adds --workers",
        "socketserver_variants.py": "adds --variant",
        "asyncio_server.py": "adds --cpu-workers",
        "asyncio_protocol_server.py": "adds --cpu-workers",
        "http_static.py": "HTTP: --directory, and --timeout is the idle time",
        "wsgi_app.py": "HTTP: no --delay or --max-request",
        "websocket_server.py": "WebSocket: --max-message, --ping-interval, --allow-origin, ...",
    },
    "seconds": {
        "http_static.py": "a socket timeout of 0 would make it non-blocking: > 0",
        "wsgi_app.py": "a socket timeout of 0 would make it non-blocking: > 0",
    },
    "stop_signals": {
        "asyncio_server.py": "the loop's own signal handling",
        "asyncio_protocol_server.py": "the loop's own signal handling",
        "websocket_server.py": "the loop's own signal handling",
    },
    "stop_on_signals": {"wsgi_app.py": "its own server stops with a flag, not socketserver's shutdown()"},
    "open_listener": {"forking_server.py": "no idna codec for an ASCII host: less for each fork() to copy"},
    "accept_client": {
        "sync_server.py": "finishes lingering closes while it waits (Lingering)",
        "forking_server.py": "reaps children, and waits at --max-children",
        "prefork_server.py": "finishes lingering closes while it waits; a worker that loses the race gets EAGAIN",
    },
    **{
        name: {"asyncio_server.py": "coroutines on streams", "websocket_server.py": "coroutines on streams"}
        for name in ("write_response", "close_gracefully")
    },
    "handle_client": {
        "asyncio_server.py": "coroutines on streams",
        "websocket_server.py": "an HTTP request, then the WebSocket it opens",
    },
    "read_request": {"asyncio_server.py": "coroutines on streams", "websocket_server.py": "an HTTP request head"},
    "handle_request": {
        "asyncio_server.py": "coroutines on streams",
        "websocket_server.py": "routes, and the WebSocket handshake",
    },
}


def top_level_definitions(script: str) -> dict[str, str]:
    """Each function, class and CONSTANT defined at the top of a script, by name: its source."""
    source = (HERE / script).read_text()
    definitions = {}
    for node in ast.parse(source).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            definitions[node.name] = ast.get_source_segment(source, node) or ""
        elif isinstance(node, ast.Assign) and len(node.targets) == 1:
            target = node.targets[0]
            if isinstance(target, ast.Name) and target.id.isupper():
                definitions[target.id] = ast.get_source_segment(source, node) or ""
    return definitions


class SharedSkeletonTest(unittest.TestCase):
    """The repetition between scripts is deliberate; drift between the copies is not.

    A fix made to one copy of a shared function must reach all of them. Every
    name defined in two or more scripts (functions, classes, constants) has one
    version, character for character, in every script not declared in
    DIFFERENCES, where each difference is given with its reason.
    """

    def test_shared_definitions_are_identical_wherever_they_appear(self) -> None:
        copies: dict[str, dict[str, str]] = {}
        for script in SERVER_SCRIPTS:
            for name, source in top_level_definitions(script).items():
                copies.setdefault(name, {})[script] = source
        drifted = []
        for name, versions in sorted(copies.items()):
            if len(versions) < 2 or name in APPROACH:
                continue
            declared = DIFFERENCES.get(name, {})
            groups: dict[str, dict[str, str]] = {}  # why a group differs ("" for none): script -> source
            for script, source in versions.items():
                groups.setdefault(declared.get(script, ""), {})[script] = source
            for why, group in groups.items():
                if len(set(group.values())) > 1:
                    by_version: dict[str, list[str]] = {}
                    for script, source in group.items():
                        by_version.setdefault(source, []).append(script)
                    versions_named = " | ".join(", ".join(scripts) for scripts in by_version.values())
                    drifted.append(f"{name}: the copies differ: {versions_named}" + (f" ({why})" if why else ""))
                elif why and group and "" in groups and set(group.values()) <= set(groups[""].values()):
                    drifted.append(f"{name}: declared different in {', '.join(group)}, but it is not: drop the entry")
        if drifted:
            self.fail("\n".join(["shared definitions drifted (make the copies one, or declare why not):", *drifted]))

    def test_every_declared_difference_exists(self) -> None:
        for name, scripts in DIFFERENCES.items():
            for script in scripts:
                with self.subTest(name=name, script=script):
                    self.assertIn(name, top_level_definitions(script))


# Every server that speaks the reverse protocol, with the options that make it one.
REVERSE_SERVERS = (
    ("sync_server.py",),
    ("threaded_server.py",),
    ("pool_server.py",),
    ("forking_server.py",),
    ("prefork_server.py",),
    ("selectors_server.py",),
    ("asyncio_server.py",),
    ("asyncio_protocol_server.py",),
    ("socketserver_variants.py", "--variant", "sync"),
    ("socketserver_variants.py", "--variant", "threading"),
    ("socketserver_variants.py", "--variant", "forking"),
)


def session_cpu_seconds(session: int) -> float:
    """CPU time used by every process of a session, and by its children already reaped (Linux /proc)."""
    ticks = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()  # after "pid (command)"
        except (OSError, IndexError):
            continue  # gone meanwhile
        if int(fields[3]) == session:  # fields[3] is the session id: field 6 of stat
            ticks += sum(int(value) for value in fields[11:15])  # utime, stime, cutime, cstime
    return ticks / os.sysconf("SC_CLK_TCK")


@unittest.skipUnless(Path("/proc/self/stat").exists(), "reads CPU time from /proc")
class CpuWorkTest(unittest.TestCase):
    """--cpu S spends S of CPU time per request, wherever the approach computes."""

    def test_cpu_option_spends_that_much_cpu_time(self) -> None:
        cpu, requests = 0.05, 4
        for command in (
            ("sync_server.py",),  # the blocking skeleton, shared by six scripts (SharedSkeletonTest)
            ("selectors_server.py",),
            ("asyncio_server.py",),
            ("asyncio_server.py", "--cpu-workers", "2"),  # in worker processes
            ("asyncio_protocol_server.py",),
            ("asyncio_protocol_server.py", "--cpu-workers", "2"),
            ("forking_server.py",),  # in children, counted once they are reaped
            ("prefork_server.py", "--workers", "2"),
        ):
            with self.subTest(" ".join(command)):
                server = Server(command[0], (*command[1:], "--delay", "0", "--cpu", str(cpu)), self.addCleanup)
                self.assertEqual(server.request(b"warm-up!"), b"!pu-mraw")  # starts a pool's workers
                before = session_cpu_seconds(server.process.pid)
                for _ in range(requests):
                    self.assertEqual(server.request(b"compute!"), b"!etupmoc")
                expected = cpu * requests
                # /proc counts whole clock ticks (10 ms), per process and per
                # field: spread over 2 workers, 0.2 s once read as 0.18 s.
                at_least = expected - 0.04
                deadline = time.monotonic() + 3  # reaped children count only once reaped: poll
                while (spent := session_cpu_seconds(server.process.pid) - before) < at_least:
                    self.assertLess(time.monotonic(), deadline, f"{command[0]} spent {spent:.2f} s of CPU")
                    time.sleep(0.05)
                self.assertLess(spent, expected + 0.3, "far more CPU than --cpu asks")
                self.assertEqual(server.stop(), 0, server.log())

    def test_a_worker_process_that_dies_is_replaced(self) -> None:
        # Killed by the OOM killer, or crashed in C code: ProcessPoolExecutor
        # then refuses every piece of work, for good, unless replaced.
        for script in ("asyncio_server.py", "asyncio_protocol_server.py"):
            with self.subTest(script):
                server = Server(script, ("--delay", "0", "--cpu", "0.5", "--cpu-workers", "1"), self.addCleanup)
                with concurrent.futures.ThreadPoolExecutor(1) as pool:
                    reply = pool.submit(server.request, b"lost and done again!")
                    os.kill(a_grandchild(server.process.pid), signal.SIGKILL)  # the worker
                    self.assertEqual(reply.result(), b"!niaga enod dna tsol", server.log())
                self.assertEqual(server.request(b"next!"), b"!txen")
                server.wait_for_log(r"the --cpu worker processes failed \(.+\): starting new ones")
                self.assertEqual(server.stop(), 0, server.log())


def a_grandchild(pid: int, timeout: float = 5.0) -> int:
    """The first grandchild of pid to appear: a pool's worker, forked by multiprocessing's fork server."""
    deadline = time.monotonic() + timeout
    while not (found := [grandchild for child in children_of(pid) for grandchild in children_of(child)]):
        if time.monotonic() > deadline:
            raise AssertionError(f"no grandchild of {pid} within {timeout} s")
        time.sleep(0.02)
    return found[0]


def slow_link_unavailable() -> str:
    """Why this machine cannot make a slow link, or "" when it can."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return "making a network namespace needs root"
    for tool in ("ip", "tc"):
        if shutil.which(tool) is None:
            return f"no {tool} command (iproute2)"
    return ""


class SlowLinkTest(unittest.TestCase):
    """Section 2's graceful close over a 100 Mbit/s link, where loopback hides the loss.

    Loopback moves a megabyte in a millisecond, so a reply is read before an
    RST can destroy it. Here a network namespace of the test's own, with a
    rate-limited loopback, holds both ends: no traffic leaves it, and it is
    deleted at the end. Without the lingering close, every reverse server
    lost half of the reply below, at 100 Mbit/s as at 20.
    """

    @classmethod
    def setUpClass(cls) -> None:
        reason = slow_link_unavailable()
        if reason:
            print(f"\nSlowLinkTest skipped: {reason}", file=sys.stderr)
            raise unittest.SkipTest(reason)
        cls.namespace = f"slowlink-{os.getpid()}-{time.monotonic_ns() % 1_000_000}"
        subprocess.run(["ip", "netns", "add", cls.namespace], check=True, timeout=10)
        cls.addClassCleanup(subprocess.run, ["ip", "netns", "del", cls.namespace], timeout=10)
        cls.prefix = ("ip", "netns", "exec", cls.namespace)
        # tbf drops packets larger than its burst, hence the Ethernet MTU.
        for command in (
            ("ip", "link", "set", "lo", "mtu", "1500", "up"),
            ("tc", "qdisc", "add", "dev", "lo", "root", "tbf", "rate", "100mbit", "burst", "64kb", "latency", "500ms"),
        ):
            subprocess.run([*cls.prefix, *command], check=True, timeout=10)

    def start(self, script: str, *args: str) -> Server:
        return Server(script, args, self.addCleanup, prefix=self.prefix)

    def call_inside(self, function: str, *args: object) -> object:
        """Call a function of this file from inside the namespace; return its result."""
        code = f"import json, test_all; print(json.dumps(test_all.{function}(*{args!r})))"
        result = run_script("-c", code, timeout=30, prefix=self.prefix)
        self.assertEqual(result.returncode, 0, result.stderr)
        return json.loads(result.stdout)

    def test_a_large_reply_survives_bytes_sent_while_reading(self) -> None:
        # Measured before the lingering close: 320 to 520 KB of this reply, then a reset.
        for command in REVERSE_SERVERS:
            with self.subTest(" ".join(command)):
                server = self.start(*command, "--delay", "0", "--timeout", "5")
                length, intact, ending = self.call_inside("exchange_summary", server.port, 1_000_001, 100_000)
                self.assertEqual((length, intact, ending), (1_000_001, True, "end of stream"), server.log())
                self.assertEqual(server.stop(), 0, server.log())

    def test_a_client_still_uploading_reads_the_refusal(self) -> None:
        site = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, site)
        for command, path, status in (
            (("http_static.py", "--directory", site), "/", 501),
            (("wsgi_app.py",), "/reverse", 413),
        ):
            with self.subTest(command[0]):
                server = self.start(*command, "--timeout", "5")
                self.assertEqual(self.call_inside("post", "127.0.0.1", server.port, path, 1_500_000), status)
                self.assertEqual(server.stop(), 0, server.log())


def pids_cgroup_parent() -> Path | None:
    """Where a test can make a cgroup that limits its tasks (pids.max), or None."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return None
    v1 = Path("/sys/fs/cgroup/pids")
    if (v1 / "cgroup.procs").exists():
        return v1
    v2 = Path("/sys/fs/cgroup")
    try:
        return v2 if "pids" in (v2 / "cgroup.subtree_control").read_text().split() else None
    except OSError:
        return None


class TaskLimit:
    """A cgroup of the test's own: pids.max caps the tasks in it, processes and threads alike.

    It is how a container engine (docker --pids-limit) or systemd (TasksMax)
    caps a service; ulimit -u does not bind root. The command prefix puts
    the server in it before the interpreter starts.
    """

    numbers = itertools.count(1)

    def __init__(self, parent: Path, limit: int, add_cleanup: Callable) -> None:
        self.path = parent / f"test_all-{os.getpid()}-{next(self.numbers)}"
        self.path.mkdir()
        add_cleanup(self.remove)  # after the server's own clean-up, which kills it
        self.set(limit)
        self.prefix = ("sh", "-c", 'echo $$ > "$0/cgroup.procs" && exec "$@"', str(self.path))

    def set(self, limit: int) -> None:
        (self.path / "pids.max").write_text(str(limit))

    def tasks(self) -> int:
        return int((self.path / "pids.current").read_text())

    def wait_for_tasks(self, count: int, timeout: float = 5.0) -> None:
        wait_for(lambda: self.tasks() == count, timeout, f"{self.tasks()} tasks, not {count}, after {timeout} s")

    def remove(self) -> None:
        for pid in (self.path / "cgroup.procs").read_text().split():
            try:
                os.kill(int(pid), signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.wait_for_tasks(0)
        self.path.rmdir()


class TaskLimitTest(unittest.TestCase):
    """Every server at a limit on tasks: "can't start new thread", and fork() failing with EAGAIN.

    In a container or a systemd service a burst of clients meets the limit on
    tasks long before memory runs out. Without care, the thread-per-client
    servers printed a traceback per client and one more at shutdown, the pool
    died, and forking, prefork and wsgi_app died too, prefork leaving its
    workers to serve on, orphaned.
    """

    @classmethod
    def setUpClass(cls) -> None:
        cls.parent = pids_cgroup_parent()
        if cls.parent is None:
            reason = "needs root and a pids cgroup controller"
            print(f"\nTaskLimitTest skipped: {reason}", file=sys.stderr)
            raise unittest.SkipTest(reason)

    def start(self, limit: int, script: str, *args: str) -> tuple[Server, TaskLimit]:
        assert self.parent is not None
        limit_ = TaskLimit(self.parent, limit, self.addCleanup)
        return Server(script, args, self.addCleanup, prefix=limit_.prefix), limit_

    def test_a_client_with_no_thread_or_process_for_it_is_closed_and_the_server_goes_on(self) -> None:
        for command, words in (
            (("threaded_server.py",), "no thread for a new client: closed"),
            (("socketserver_variants.py", "--variant", "threading"), "no thread for it .*: closed"),
            (("socketserver_variants.py", "--variant", "forking"), "no process for it .*: closed"),
        ):
            with self.subTest(" ".join(command)):
                # The server and two more tasks: two clients at a time.
                server, limit = self.start(3, *command, "--delay", "0.5", "--timeout", "5")
                replies = send_at_once(server, 5)
                answered = sum(reply == (b"client %d!" % index)[::-1] for index, reply in replies.items())
                self.assertEqual(answered, 2, replies)
                server.wait_for_log(words)
                limit.wait_for_tasks(1)  # once the threads have ended, or the children been reaped
                run_clients(server, 2)
                self.assertEqual(server.stop(), 0, server.log())

    def test_a_stop_with_no_task_left_for_it_still_lets_the_clients_finish(self) -> None:
        # Stopping a socketserver takes a thread (shutdown() from the one in
        # serve_forever() would wait for itself): here none can start.
        for command in (
            ("socketserver_variants.py", "--variant", "threading"),
            ("socketserver_variants.py", "--variant", "forking"),
        ):
            with self.subTest(" ".join(command)):
                server, limit = self.start(3, *command, "--delay", "1", "--timeout", "5")
                with concurrent.futures.ThreadPoolExecutor(1) as pool:
                    clients = pool.submit(send_at_once, server, 2)
                    limit.wait_for_tasks(3)  # a thread or a child for each client: the limit
                    status = server.stop()
                    self.assertEqual(clients.result(), {0: b"!0 tneilc", 1: b"!1 tneilc"}, server.log())
                self.assertEqual(status, 0, server.log())

    def test_forking_waits_for_a_child_to_exit_when_it_cannot_fork(self) -> None:
        # As at --max-children: the limit is lower than the server's own.
        server, _ = self.start(3, "forking_server.py", "--delay", "0.3", "--timeout", "5")
        run_clients(server, 5)
        server.wait_for_log(r"#\d+ no process for it yet \(.+\): waiting for a child to exit")
        self.assertEqual(server.stop(), 0, server.log())

    def test_the_pool_makes_clients_wait_when_it_cannot_grow(self) -> None:
        # The contract: when every worker is busy new clients wait, none is
        # dropped. Room for two workers, not eight.
        server, _ = self.start(3, "pool_server.py", "--delay", "0.3", "--min-workers", "1", "--max-workers", "8")
        run_clients(server, 6)
        server.wait_for_log(r"pool cannot grow past 2 workers")
        self.assertEqual(server.stop(), 0, server.log())

    def test_too_few_tasks_for_the_workers_is_a_one_line_error(self) -> None:
        for tasks, command in (
            (3, ("pool_server.py", "--min-workers", "4")),
            (3, ("wsgi_app.py", "--threads", "4")),
            (3, ("prefork_server.py", "--workers", "4")),
            # multiprocessing starts a process of its own with the pool: none here.
            (1, ("asyncio_server.py", "--cpu-workers", "2")),
            (1, ("asyncio_protocol_server.py", "--cpu-workers", "2")),
        ):
            with self.subTest(" ".join(command)):
                assert self.parent is not None
                limit = TaskLimit(self.parent, tasks, self.addCleanup)
                result = run_script(command[0], "0", *command[1:], prefix=limit.prefix)
                self.assertEqual(result.returncode, 1, result.stderr)
                self.assertRegex(result.stderr, r"^cannot start [^:\n]+: [^\n]+\n$")
                limit.wait_for_tasks(0)  # no worker outlives its parent

    def test_cpu_work_with_no_process_for_it_closes_the_client_until_there_is_one(self) -> None:
        for script in ("asyncio_server.py", "asyncio_protocol_server.py"):
            with self.subTest(script):
                server, limit = self.start(30, script, "--delay", "0", "--cpu", "0.01", "--cpu-workers", "1")
                limit.set(limit.tasks())  # no worker process can start now
                self.assertEqual(server.request(b"no room!"), b"")
                server.wait_for_log(r"#1 the --cpu work could not run \(.+\): closed")
                limit.set(30)
                self.assertEqual(server.request(b"room again!"), b"!niaga moor")
                self.assertEqual(server.stop(), 0, server.log())

    def test_prefork_replaces_a_worker_when_the_limit_allows_again(self) -> None:
        server, limit = self.start(3, "prefork_server.py", "--workers", "2", "--delay", "0")
        server.wait_for_log("started 2 workers")
        workers = children_of(server.process.pid)
        limit.set(1)
        os.kill(next(iter(workers)), signal.SIGTERM)
        server.wait_for_log("cannot start a worker")
        self.assertEqual(server.request(b"still served!"), b"!devres llits")  # by the other worker
        limit.set(3)
        wait_for(lambda: limit.tasks() == 3, 5, "no new worker once the limit allows one")
        self.assertEqual(server.stop(), 0, server.log())

    def test_http_static_closes_a_connection_it_has_no_thread_for(self) -> None:
        site = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, site)
        Path(site, "a.txt").write_text("hello")
        server, limit = self.start(3, "http_static.py", "--directory", site)  # two connections at a time
        connections = [http.client.HTTPConnection(server.host, server.port, timeout=5) for _ in range(3)]
        for conn in connections[:2]:  # keep-alive: each holds its thread
            conn.request("GET", "/a.txt")
            self.assertEqual(conn.getresponse().read(), b"hello")
        with self.assertRaises((http.client.RemoteDisconnected, ConnectionError)):
            connections[2].request("GET", "/a.txt")
            connections[2].getresponse()
        server.wait_for_log("no thread for a new connection")
        connections[0].close()
        wait_for(lambda: self.fetch(server) == b"hello", 5, "not served once a connection closed")
        # Two idle connections hold both threads again: stopping needs one more.
        limit.wait_for_tasks(2)  # the server, and the thread of the connection still open
        connections[2] = http.client.HTTPConnection(server.host, server.port, timeout=5)
        connections[2].request("GET", "/a.txt")
        self.assertEqual(connections[2].getresponse().read(), b"hello")
        self.assertEqual(server.stop(), 0, server.log())
        for conn in connections:
            conn.close()

    @staticmethod
    def fetch(server: Server) -> bytes:
        conn = http.client.HTTPConnection(server.host, server.port, timeout=5)
        try:
            conn.request("GET", "/a.txt")
            return conn.getresponse().read()
        except (http.client.HTTPException, ConnectionError):
            return b""
        finally:
            conn.close()


@unittest.skipUnless(hasattr(os, "fork"), "needs the resource module's RLIMIT_NOFILE (Unix)")
class OpenFileLimitTest(unittest.TestCase):
    """More clients at once than the server may open files: accept() fails with EMFILE.

    The connection stays queued, so the listener stays readable: a loop that
    only logs the error and selects again spins. selectors_server.py logged
    26,000 lines a second, asyncio 4,096 tracebacks at each try (CPython
    gh-151615), and socketserver spun silently on a core.
    """

    LIMIT = 40  # descriptors: the server's own, and room for about 30 clients
    PREFIX = (
        sys.executable,
        "-c",
        f"import os, resource, sys; resource.setrlimit(resource.RLIMIT_NOFILE, ({LIMIT}, {LIMIT})); "
        "os.execv(sys.argv[1], sys.argv[1:])",
    )

    def test_clients_beyond_the_limit_wait_and_the_log_stays_short(self) -> None:
        for command in (
            ("selectors_server.py",),
            ("asyncio_server.py",),
            ("asyncio_protocol_server.py",),
            ("socketserver_variants.py", "--variant", "threading"),
            ("threaded_server.py",),
        ):
            with self.subTest(" ".join(command)):
                server = Server(command[0], (*command[1:], "--delay", "0.5"), self.addCleanup, prefix=self.PREFIX)
                # asyncio tries again each second, and each try costs it 4,096
                # failed accept() calls (gh-151615): in debug mode, with the
                # suite's other processes running, some clients waited over 10 s.
                run_clients(server, 2 * self.LIMIT, timeout=30)
                failures = server.log().count("accept failed")
                self.assertGreaterEqual(failures, 1, "the limit was never reached: no test")
                self.assertLess(failures, 100, "accept() retried in a busy loop")
                self.assertEqual(server.stop(), 0, server.log())


# The base classes hold tests but name no script: only their subclasses run them.
del (
    CommandLineTests,
    HttpServerTests,
    ReverseProtocolTests,
    ConcurrentServerTests,
    ForkingServerTests,
    EventLoopServerTests,
    WebSocketTests,
)


def run_in_parallel(workers: int) -> int:
    """Run the test classes spread over child processes at once, then report as unittest does.

    Most of the time a test waits (for a server to start, a delay, a time-out),
    so a few at once fit on two cores; each child is an ordinary run of this
    file on some of the classes. The report is one unittest summary, which is
    what CI reads.
    """
    loader = unittest.defaultTestLoader
    classes = [name for name, value in globals().items() if isinstance(value, type) and loader.getTestCaseNames(value)]
    started = time.monotonic()
    children = [
        subprocess.Popen(
            [sys.executable, __file__, *classes[index::workers]],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for index in range(workers)
    ]
    totals: dict[str, int] = {}
    ran = 0
    for child in children:
        output, _ = child.communicate()
        details, _, summary = output.rpartition("\n" + "-" * 70 + "\n")
        details = details.strip("\n.")  # the progress dots, unless something failed
        if details:
            print(details, file=sys.stderr)
        match = re.search(r"^Ran (\d+) tests?", summary, re.MULTILINE)
        if not match or child.returncode not in (0, 1):
            print(output, file=sys.stderr)  # a crash: show all of it
            totals["errors"] = totals.get("errors", 0) + 1
        ran += int(match.group(1)) if match else 0
        for kind, count in re.findall(r"(\w+(?: \w+)?)=(\d+)", summary):
            totals[kind] = totals.get(kind, 0) + int(count)
    failed = totals.get("failures", 0) + totals.get("errors", 0) + totals.get("unexpected successes", 0)
    counts = ", ".join(f"{kind}={count}" for kind, count in totals.items())
    print("-" * 70, f"Ran {ran} tests in {time.monotonic() - started:.3f}s", "", sep="\n", file=sys.stderr)
    print(("FAILED" if failed else "OK") + (f" ({counts})" if counts else ""), file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    workers = int(os.environ.get("TEST_WORKERS", "3"))
    if len(sys.argv) == 1 and workers > 1:
        sys.exit(run_in_parallel(workers))
    unittest.main()
