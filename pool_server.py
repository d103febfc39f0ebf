#!/usr/bin/env python3
"""Thread-pool TCP server: threads made once and reused, bounded in number.

The blog post left this one as "TODO: implement me". A pool keeps --min-workers
threads alive between clients, so a client does not pay for a thread's
start-up; under load it grows up to --max-workers, and a thread beyond the
minimum that sits idle for --idle-timeout seconds exits. n clients that each
need d seconds take ceil(n / max_workers) * d seconds.

The bound is the point. The threaded server starts a thread for whatever
arrives; this one takes a free worker *before* it accepts a connection, so when
all workers are busy new clients wait in the kernel's listen queue
(backpressure): none is dropped, and the server's memory does not grow with
the crowd. Pick it when the load can spike and each request holds something
scarce (a database connection, memory); it is how most thread-based servers
(Java's, gunicorn's gthread worker, waitress) work.

Computing clients (--cpu) meet the GIL here as in threaded_server.py: one
thread runs Python code at a time, so the pool computes on one core, and each
client waits for the whole wave its worker is in.

On a free-threaded build (3.13t, 3.14t: PEP 703 and 779) there is no GIL, and
computing threads run on every core. On two quiet cores, 3.13t against 3.13
in alternating rounds: 1.97x the requests/s computing (92% of both cores),
the last of a burst of 8 computing clients answered at 0.40 s against 0.80 s,
and 2.74x the requests/s waiting, where a thread per client waited at 0.77x:
a thread's start and end cost 3 times as much there, and a new thread
allocates from empty heaps (BENCHMARKS.md). The pool's state is guarded
by its lock, as such a build needs; the one read without it
(WorkerPool.work()) is a hint that retire() checks again under the lock.

The approach is serve() and WorkerPool; the rest is the skeleton the servers
share.

Standard library only; CPython 3.8 to 3.15.

Try it:  python pool_server.py 8000 --max-workers 4
         python client.py 8000 --clients 8     # ~10 s: two rounds of four
"""

from __future__ import annotations

import argparse
import errno
import itertools
import logging
import math
import os
import queue
import select
import signal
import socket
import sys
import threading
import time
from typing import Any, Callable

DELIMITER = b"!"
# One recv() per chunk. The seed read 4 bytes at a time: a system call per 4
# bytes, and a rescan of the whole buffer after each, O(n^2) for n bytes.
CHUNK_SIZE = 64 * 1024
# Connections the kernel completes and queues while the loop is busy. listen()
# with no argument asks for at most 128, and a burst beyond the queue is left
# to SYN retries: a client stalls 1 s, then 3 s, then 7 s. The kernel caps the
# number at net.core.somaxconn (4096 on Linux since 5.4).
BACKLOG = max(socket.SOMAXCONN, 4096)
MAX_REQUEST = 1024 * 1024  # the default bound on what one client can make us hold
MAX_SECONDS = 24 * 60 * 60.0  # the most any option in seconds takes (see seconds())
MIN_SECONDS = 0.001  # the least, but for 0 where it means none (see seconds())
# After the reply, how long and how much a client may go on sending before the
# server closes anyway (see close_gracefully()): 2 s in all, enough for a client
# that reads its reply, and soon enough to free the thread or process. (nginx
# waits up to 5 s between reads, 30 s in all.)
LINGER_SECONDS = 2.0
LINGER_BYTES = 16 * 1024 * 1024
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
# Socket activation: the first descriptor systemd passes (sd_listen_fds(3)).
LISTEN_FDS_START = 3
# What --help says the protocol is (the docstring tells the rest).
PROTOCOL = (
    "The protocol: a client sends bytes up to and including a '!'; --delay seconds\n"
    "later the server sends them back reversed, and closes."
)
MIN_WORKERS = 4  # the default --min-workers
# A bound on --max-workers: each thread reserves a stack (8 MiB of address
# space on Linux), and a pool this large is a threaded server in disguise.
MAX_THREADS = 10_000

log = logging.getLogger("pool_server")


class ClientError(Exception):
    """The client broke the protocol or a limit; the message says how."""


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO,
        format="%(asctime)s %(message)s",
    )
    try:
        listener = open_listener(args.host, args.port)
    except (OSError, UnicodeError) as exc:
        print(f"cannot listen on {format_address(args.host, args.port)}: {reason(exc)}", file=sys.stderr)
        return 1
    # The stop-signal socket closes with the listener: under python -X dev an
    # unclosed socket is a ResourceWarning at exit.
    with listener, stop_signals(listener) as signals:
        print_ready_line(f"Listening on {format_address(*listener.getsockname()[:2])}")
        serve(listener, signals, args)
        # Before the signal socket closes, or a signal would write to a closed
        # socket (an error on stderr); and before the interpreter shuts down.
        ignore_stop_signals()
    log.info("stopped")
    return 0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=f"{__doc__.splitlines()[0]}\n\n{PROTOCOL}",
        epilog=__doc__.split("\n", 1)[1].strip(),
        formatter_class=HelpFormatter,
    )
    parser.add_argument("port", type=port_number, help="TCP port; 0 lets the OS pick a free one")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on; 0.0.0.0 or :: exposes the server")
    parser.add_argument("--delay", type=seconds, default=5.0, help="simulated work per request, in seconds")
    parser.add_argument(
        "--cpu", type=seconds, default=0.0, help="CPU time spent computing per request (holding the GIL), in seconds"
    )
    parser.add_argument(
        "--timeout", type=positive_seconds, default=10.0, help="seconds to send a request, and again to read the reply"
    )
    parser.add_argument(
        "--max-request", type=positive_int, default=MAX_REQUEST, help="largest request in bytes, '!' included"
    )
    parser.add_argument(
        "--min-workers",
        type=positive_int,
        help=f"threads that never exit; {MIN_WORKERS}, or --max-workers if that is lower",
    )
    parser.add_argument(
        "--max-workers",
        type=positive_int,
        default=32,
        help=f"most threads at once, up to {MAX_THREADS}; more clients wait",
    )
    parser.add_argument("--idle-timeout", type=seconds, default=30.0, help="seconds before an idle extra thread exits")
    parser.add_argument("-q", "--quiet", action="store_true", help="no per-client log lines")
    args = parser.parse_args(argv)
    if args.max_workers > MAX_THREADS:
        parser.error(f"--max-workers: at most {MAX_THREADS} threads, not {args.max_workers}")
    if args.min_workers is None:
        args.min_workers = min(MIN_WORKERS, args.max_workers)  # --max-workers 2 alone means a pool of 1 to 2
    elif args.min_workers > args.max_workers:
        parser.error("--min-workers cannot exceed --max-workers")
    return args


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """--help as the docstring has it: its paragraphs as written, and each default where it says something."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.default is False:  # "(default: None)" tells a reader nothing
            return action.help
        return super()._get_help_string(action)


def port_number(text: str) -> int:
    port = int(text)
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port must be 0..65535, not {port}")
    return port


def seconds(text: str) -> float:
    value = float(text)
    # Past about 292 years (threading.TIMEOUT_MAX) a socket timeout or a lock
    # raises OverflowError, once per client; nan and inf compare false with
    # every deadline. A day is beyond any honest use of these options.
    # Below a millisecond, a deadline passes before a client can meet it:
    # --timeout 1e-320 was accepted, and then no request was ever answered.
    if value != 0 and not (math.isfinite(value) and MIN_SECONDS <= value <= MAX_SECONDS):
        raise argparse.ArgumentTypeError(
            f"expected 0 or a number of seconds from {MIN_SECONDS:g} to {MAX_SECONDS:g}, not {text!r}"
        )
    return value


def positive_seconds(text: str) -> float:
    value = seconds(text)
    if value == 0:  # every client would time out before its first byte
        raise argparse.ArgumentTypeError(f"expected a number of seconds above 0, not {text!r}")
    return value


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, not {value}")
    return value


def open_listener(host: str, port: int) -> socket.socket:
    """The listening socket: the one systemd passed, if it did (passed_listener()); else bind and listen.

    create_server() turns on SO_REUSEADDR, so a restart can bind again at once
    instead of failing with 'Address already in use' while the last run's
    connections sit in TIME_WAIT.
    """
    listener = passed_listener()
    if listener is not None:
        return listener
    family, _, _, _, address = socket.getaddrinfo(host, port, flags=socket.AI_PASSIVE)[0]
    # '::' takes IPv4 clients too (dual-stack), as in python -m http.server
    # --bind ::. create_server() would make an IPv6 socket IPv6-only.
    dualstack = family == socket.AF_INET6 and socket.has_dualstack_ipv6()
    return socket.create_server(address[:2], family=family, backlog=BACKLOG, dualstack_ipv6=dualstack)


def passed_listener() -> PassedSocket | None:
    """The listening socket systemd passed (socket activation), or None when it passed none.

    systemd binds the port itself, from a .socket unit, and starts the server
    with the socket as descriptor 3, LISTEN_FDS=1 and LISTEN_PID set to the
    server's pid (sd_listen_fds(3); systemd-socket-activate does the same by
    hand). The port is then bound before the server runs: clients that connect
    while it restarts wait in the socket's queue instead of being refused, and
    port 80 needs no privilege. PORT and --host no longer matter.

    The variables are unset in either case: a process this one starts must
    not take them for its own. LISTEN_PID naming another process means they
    were meant for an ancestor that left them set: they are ignored.
    """
    pid = os.environ.pop("LISTEN_PID", None)
    count = os.environ.pop("LISTEN_FDS", None)
    os.environ.pop("LISTEN_FDNAMES", None)
    if pid != str(os.getpid()) or count in (None, "0"):
        return None
    if count != "1":
        raise SystemExit(f"socket activation passed {count} descriptors (LISTEN_FDS); this server serves one socket")
    try:
        listener = PassedSocket(fileno=LISTEN_FDS_START)
    except OSError as exc:  # not a socket (ENOTSOCK), or not open (EBADF)
        raise SystemExit(f"socket activation: descriptor {LISTEN_FDS_START} is not a socket ({exc.strerror})") from None
    listens = listener.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
    if listener.family not in (socket.AF_INET, socket.AF_INET6) or listener.type != socket.SOCK_STREAM or not listens:
        listener.detach()  # it stays systemd's: no close() here
        raise SystemExit(f"socket activation: descriptor {LISTEN_FDS_START} is not a listening TCP socket")
    # Passed across exec(), it is inheritable; a socket Python makes is not
    # (PEP 446), and a program this one starts must not hold the port.
    listener.set_inheritable(False)
    return listener


class PassedSocket(socket.socket):
    """A listening socket this process was given (passed_listener()), not one it made: see stop_listening()."""


def format_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def reason(exc: OSError | UnicodeError) -> str:
    if isinstance(exc, UnicodeError):  # the idna codec refused the host: an empty label, one of 64 letters
        return f"not a host name ({exc})"
    # create_server() appends the address to strerror; the caller names it already.
    return exc.strerror.split(" (while attempting")[0] if exc.strerror else str(exc)


def print_ready_line(line: str) -> None:
    """Print the ready line to stdout, flushed: what a supervisor, a script or a test waits for.

    A stdout that cannot take it (a pipe whose reader has gone, a full disk)
    ends the server before it serves anyone: one line on stderr, exit 1, as
    for an address in use. Nobody would learn that it listens.
    """
    try:
        print(line, flush=True)
    except OSError as exc:
        # The line stays in stdout's buffer, and the interpreter's last flush
        # at exit would fail again, with a traceback: give it /dev/null.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        raise SystemExit(f"cannot write the ready line to stdout: {exc.strerror or exc}") from None


def stop_signals(listener: socket.socket | None) -> socket.socket:
    """Return a socket that becomes readable when SIGINT or SIGTERM arrives; stop the listener then.

    A blocking accept() cannot also wait for a signal, and a handler that raises
    an exception could cut a request in half. So signal.set_wakeup_fd() has the
    C-level handler write the signal number to a socket pair, which the accept
    loop watches beside the listener: the self-pipe trick, as asyncio does it.
    It works whichever thread the kernel delivers the signal to. The Python
    handler runs in the main thread, between two bytecodes of whatever that
    thread was doing (on the sync server, a client's request), so it does only
    what needs no lock and cannot fail: it stops the listener, and from that
    moment a new connection is refused instead of waiting in the queue while
    the clients in progress finish (stop_listening()).
    """
    receiver, sender = socket.socketpair()
    sender.setblocking(False)
    signal.set_wakeup_fd(sender.detach())  # detach(): the fd must outlive this function

    def stop(signum: int, frame: object) -> None:
        if listener is not None:
            stop_listening(listener)

    for signum in STOP_SIGNALS:
        signal.signal(signum, stop)
    return receiver


def stop_listening(listener: socket.socket) -> None:
    """Refuse new connections from now on, in every process that holds the listener; but not on systemd's socket.

    close() frees this process's descriptor only (forked children hold their
    own), and cannot be done while the accept loop may still be selecting on
    it. On Linux, shutdown() takes the socket itself out of the LISTEN state:
    a connect is refused (ECONNREFUSED) at once, one queued but not yet
    accepted gets a reset, and accept() fails with EINVAL. A load balancer
    moves on from a refusal at once, where a connection left in the queue
    would wait out its time-out. Other systems refuse the call (ENOTCONN); there
    the listener stops when the server closes it, a moment later.

    A socket systemd passed (passed_listener()) is the one exception: there,
    refusing at once gives way. The socket is systemd's, which keeps it open
    across restarts, and a shutdown() would stop it for systemd too: every
    client refused from then on, until the .socket unit itself restarts, and
    those queued reset. Left listening, it holds the clients that connect
    while the service restarts in its queue, and the next start serves them.
    The server only stops accepting, and closes its own copy.
    """
    if isinstance(listener, PassedSocket):
        return
    try:
        listener.shutdown(socket.SHUT_RD)
    except OSError:  # not Linux, or closed already
        pass


def ignore_stop_signals() -> None:
    """Ignore SIGINT and SIGTERM from now on.

    main() calls this once the server has stopped. As the interpreter shuts
    down, it puts each Python handler back to the default action, and a stop
    signal in that moment killed the process with exit status 143 instead of
    0. Stop signals come in pairs: GNU timeout sends its SIGTERM twice, and an
    impatient user presses Ctrl+C again. (Not sooner: a signal already caught
    but not yet handled would then be reported as "ignored due to race
    condition", with a traceback.)
    """
    for signum in STOP_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)


def serve(listener: socket.socket, signals: socket.socket, args: argparse.Namespace) -> None:
    """Hand each client to a pooled worker thread until SIGINT or SIGTERM."""
    try:
        pool = WorkerPool(args.min_workers, args.max_workers, args.idle_timeout)
    except RuntimeError as exc:  # a pids limit below --min-workers: see WorkerPool.submit
        raise SystemExit(f"cannot start {args.min_workers} worker threads: {exc}") from None
    numbers = itertools.count(1)
    # Wait for a free worker first, then accept: while every worker is busy the
    # kernel holds new clients in its queue. Accepting first would pile them up
    # in our memory instead, each with its own timeout running.
    while pool.wait_for_free_worker() and (conn := accept_client(listener, signals)) is not None:
        pool.submit(handle_client, conn, next(numbers), args)
    pool.shutdown()


class WorkerPool:
    """Threads that take jobs from a queue, between min_workers and max_workers of them."""

    def __init__(self, min_workers: int, max_workers: int, idle_timeout: float) -> None:
        self.min_workers = min_workers
        self.idle_timeout = idle_timeout
        self.jobs: queue.SimpleQueue = queue.SimpleQueue()
        self.free = threading.Semaphore(max_workers)  # one per job the pool can take now
        self.lock = threading.Lock()  # guards workers and idle
        self.workers: set[threading.Thread] = set()
        # Workers waiting for a job that no submit() has claimed yet; below 0,
        # jobs waiting for a worker because the pool could not grow (submit).
        self.idle = 0
        try:
            with self.lock:
                for _ in range(min_workers):
                    self.start_worker()
                    self.idle += 1
        except RuntimeError:
            self.shutdown()  # the workers already started
            raise

    def wait_for_free_worker(self) -> bool:
        # Blocking here is safe for shutdown: a busy worker finishes within
        # delay + timeout, and the stop signal is seen as soon as one does.
        return self.free.acquire()

    def submit(self, function: Callable[..., None], *args: Any) -> None:
        """Run function(*args) on an idle worker, or on a new one if none is idle."""
        with self.lock:
            if self.idle > 0:
                self.idle -= 1  # claim an idle worker, so two jobs never count on one
            else:
                try:
                    self.start_worker()  # the semaphore guarantees there is room for it
                    log.info("pool grew to %d workers", len(self.workers))
                except RuntimeError as exc:
                    # "can't start new thread": the process or its container
                    # hit a limit on tasks (ulimit -u, a cgroup's pids.max,
                    # systemd's TasksMax), or on memory for a thread's stack.
                    # The job waits for the next worker to finish instead, as
                    # a client waits when the pool is at --max-workers.
                    self.idle -= 1
                    log.warning("pool cannot grow past %d workers (%s): the client waits", len(self.workers), exc)
        self.jobs.put((function, args))

    def start_worker(self) -> None:
        thread = threading.Thread(target=self.work)
        thread.start()  # before it is recorded: a thread that failed to start cannot be joined
        self.workers.add(thread)

    def work(self) -> None:
        while True:
            # Only a worker above the minimum may time out. The others wait
            # with no time-out at all: with --idle-timeout 0, get(timeout=0)
            # returned at once, and every worker of an idle pool spun on a
            # core. Which workers are the extra ones does not matter; retire()
            # decides, under the lock.
            timeout = self.idle_timeout if len(self.workers) > self.min_workers else None
            try:
                job = self.jobs.get(timeout=timeout)
            except queue.Empty:
                if self.retire():
                    return
                continue
            if job is None:  # shutdown()
                return
            function, args = job
            try:
                function(*args)
            except Exception:  # a bug in one request must not cost the pool a worker
                log.exception("request failed")
            with self.lock:
                self.idle += 1
            self.free.release()

    def retire(self) -> bool:
        """After idle_timeout without work: exit if the pool is above its minimum."""
        with self.lock:
            # idle <= 0 means a submit() has claimed this worker and its job
            # is on the way: stay for it.
            if self.idle <= 0 or len(self.workers) <= self.min_workers:
                return False
            self.idle -= 1
            self.workers.discard(threading.current_thread())
            log.info("pool shrank to %d workers", len(self.workers))
            return True

    def shutdown(self) -> None:
        """Let every job already submitted finish, then stop the workers."""
        with self.lock:
            workers = list(self.workers)
        for _ in workers:
            self.jobs.put(None)  # after the jobs already queued: first in, first out
        for thread in workers:
            thread.join()


def accept_client(listener: socket.socket, signals: socket.socket) -> socket.socket | None:
    """Wait for the next client; None once a stop signal has come."""
    while True:
        # select() handles only fds below FD_SETSIZE (1024); these two are
        # opened first, so they qualify however many clients are connected.
        readable, _, _ = select.select([listener, signals], [], [])
        if signals in readable:
            return None
        try:
            conn, _ = listener.accept()
            return conn
        except OSError as exc:
            if exc.errno == errno.EINVAL:  # the listener is shut down (stop_listening()): stop
                return None
            # Out of file descriptors (EMFILE), or a client that gave up while
            # queued: the server carries on. The pause keeps a full fd table
            # from turning this loop into a busy spin.
            log.warning("accept failed: %s", exc)
            time.sleep(0.1)


def handle_client(
    conn: socket.socket,
    number: int,
    args: argparse.Namespace,
    close: Callable[[socket.socket, float], None] | None = None,
) -> None:
    """Serve one connection: read the request, do the work, reply, close (close_gracefully() unless told)."""
    started = time.monotonic()
    try:
        request = read_request(conn, started + args.timeout, args.max_request)
        reply = handle_request(request, args.delay, args.cpu)
        write_response(conn, reply, args.timeout)
    except ClientError as exc:
        conn.close()
        log.info("#%d %s", number, exc)
        return
    except BaseException:  # a bug, or an exit: still no descriptor left open
        conn.close()
        raise
    # The closer owns the connection from here, so no with-block around it: the
    # sync server's closer finishes later, in its accept loop, and a dup() to
    # outlive a with-block cost it 4 system calls and 15% of its throughput.
    (close or close_gracefully)(conn, args.timeout)
    log.info("#%d answered %d bytes in %.3f s", number, len(reply), time.monotonic() - started)


def read_request(conn: socket.socket, deadline: float, limit: int) -> bytearray:
    """Read up to and including the first DELIMITER; what follows is ignored.

    The deadline is fixed when the client connects: a timeout per recv() would
    let a client that trickles one byte at a time hold the connection forever.
    """
    request = bytearray()
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise ClientError("sent no complete request in time: closed")
        conn.settimeout(remaining)
        try:
            # Never ask for more than the limit allows: memory stays bounded.
            chunk = conn.recv(min(CHUNK_SIZE, limit - len(request)))
        except socket.timeout:
            raise ClientError("sent no complete request in time: closed") from None
        except OSError:  # reset, or any other failure of this one connection
            chunk = b""
        if not chunk:
            raise ClientError("disconnected before a complete request")
        # Search only the new chunk: rescanning the whole buffer each time would
        # make a large request cost O(n^2).
        end = chunk.find(DELIMITER)
        if end >= 0:
            request += chunk[: end + 1]
            return request
        request += chunk
        if len(request) >= limit:
            raise ClientError(f"sent {len(request)} bytes without {DELIMITER.decode()}: too large, closed")


def handle_request(request: bytearray, delay: float, cpu: float) -> bytearray:
    """The simulated work (computing, then waiting), and the answer: the request reversed."""
    if cpu:
        compute(cpu)
    # Not even sleep(0) when there is no work: it is a system call that gives
    # up the CPU, and at --delay 0 it cost the sync server two-thirds of its
    # throughput (10,000 requests/s instead of 29,000 on 2 cores).
    if delay:
        time.sleep(delay)
    request.reverse()  # in place: no second copy of a large request
    return request


def compute(seconds: float) -> None:
    """Spend this many seconds of the thread's CPU time in pure-Python work.

    Like real handler code (parsing, templates, business rules), the loop holds
    the GIL while it runs; hashlib or zlib on a large buffer would release it
    and hide what the GIL does. The clock is the thread's CPU time, not the
    wall: a thread that waits for the GIL, or for a core, is not working.
    """
    deadline = time.thread_time() + seconds
    while time.thread_time() < deadline:
        total = 0
        for number in range(1000):  # about 50 us between two looks at the clock
            total += number * number


def write_response(conn: socket.socket, reply: bytearray, timeout: float) -> None:
    # Since Python 3.5 a timeout bounds the whole sendall(), not each send(), so
    # a client that never reads holds the connection for at most this long.
    conn.settimeout(timeout)
    try:
        conn.sendall(reply)
    except socket.timeout:
        raise ClientError("did not read the reply in time: closed") from None
    except OSError:
        raise ClientError("disconnected before the whole reply was sent") from None


def close_gracefully(conn: socket.socket, timeout: float) -> None:
    """Close so that the client receives the whole reply, then the end of the stream.

    close() with unread input makes the kernel send RST, not FIN, and an RST
    makes the client's kernel throw away whatever of the reply it holds
    unread: over a 20 Mbit/s link, a 1 MB reply arrived cut to 360-540 KB. A
    client still sending when the server has answered (bytes after the '!', a
    request body the server refused) leaves such input. So: shut down our
    sending side (FIN after the reply), read and discard until the client
    closes, then close. A client that reads and closes costs one round trip;
    one that never closes, or keeps sending, is cut off after LINGER_SECONDS
    (never beyond --timeout) or LINGER_BYTES.
    """
    try:
        conn.shutdown(socket.SHUT_WR)
        deadline = time.monotonic() + min(LINGER_SECONDS, timeout)
        discarded = 0
        while discarded < LINGER_BYTES:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            conn.settimeout(remaining)
            chunk = conn.recv(CHUNK_SIZE)
            if not chunk:  # the client has closed: nothing can be lost now
                break
            discarded += len(chunk)
    except OSError:  # a time-out, a reset: the client has what it will get
        pass
    conn.close()


if __name__ == "__main__":
    sys.exit(main())
