#!/usr/bin/env python3
"""Pre-fork TCP server: worker processes forked up front share one listening socket.

gunicorn's model (and Apache's prefork, and nginx's workers). The parent binds
and listens, then forks --workers processes (default: one per CPU), each a
copy of the sync server's loop, all accepting on the same socket. n clients
that each need d seconds take ceil(n / workers) * d seconds, on every core at
once: no GIL between processes, and no fork per client as in
forking_server.py. The parent only supervises: a worker that dies is replaced,
and SIGINT or SIGTERM stops every worker gracefully (each finishes its client).

Why a shared accept() is safe: the kernel hands each queued connection to
exactly one accept() call; the losers get EAGAIN from their non-blocking
socket and go back to waiting. What it does cost is the thundering herd: every
idle worker's select() wakes for each new connection, and all but one wake
for nothing. With a few workers per core that is a few wasted microseconds
per connection, which is why gunicorn's sync worker works this way too; big
servers avoid it with a blocking accept() (Linux wakes one waiter),
EPOLLEXCLUSIVE, or SO_REUSEPORT (a listening socket per worker).

Log lines carry the worker's pid; #N counts the clients of each worker.
fork() exists on Unix only: on Windows this script says so and exits.

Computing clients (--cpu) get every core: each worker is a process with a GIL
of its own, so --workers at the number of cores computes that many requests at
once, without forking_server.py's fork per client.

The approach is serve(); the rest is the skeleton the servers share.

Standard library only; CPython 3.8 to 3.15.

Try it:  python prefork_server.py 8000 --workers 4
         python client.py 8000 --clients 8     # ~10 s: two rounds of four
"""

from __future__ import annotations

import argparse
import errno
import itertools
import logging
import math
import os
import selectors
import signal
import socket
import sys
import time
from typing import Callable, NoReturn

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
# After the reply, how long and how much a client may go on sending before the
# server closes anyway (see close_gracefully()): 2 s in all, enough for a client
# that reads its reply, and soon enough to free the thread or process. (nginx
# waits up to 5 s between reads, 30 s in all.)
LINGER_SECONDS = 2.0
LINGER_BYTES = 16 * 1024 * 1024
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
# What --help says the protocol is (the docstring tells the rest).
PROTOCOL = (
    "The protocol: a client sends bytes up to and including a '!'; --delay seconds\n"
    "later the server sends them back reversed, and closes."
)
# A bound on processes started up front (--workers): a typing slip of a few
# zeros must not fork the machine to its knees before the first error.
MAX_PROCESSES = 1024

log = logging.getLogger("prefork_server")


class ClientError(Exception):
    """The client broke the protocol or a limit; the message says how."""


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not hasattr(os, "fork"):
        print("prefork_server.py needs os.fork(), which this platform lacks: try threaded_server.py", file=sys.stderr)
        return 1
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO,
        format="%(asctime)s [%(process)d] %(message)s",
    )
    try:
        listener = open_listener(args.host, args.port)
    except (OSError, UnicodeError) as exc:
        print(f"cannot listen on {format_address(args.host, args.port)}: {reason(exc)}", file=sys.stderr)
        return 1
    # The stop-signal socket closes with the listener: under python -X dev an
    # unclosed socket is a ResourceWarning at exit.
    with listener, stop_signals(listener) as signals:
        print(f"Listening on {format_address(*listener.getsockname()[:2])}", flush=True)
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
        "--workers", type=positive_int, default=os.cpu_count() or 1, help=f"worker processes, up to {MAX_PROCESSES}"
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="no per-client log lines")
    args = parser.parse_args(argv)
    if args.workers > MAX_PROCESSES:
        parser.error(f"--workers: at most {MAX_PROCESSES} processes, not {args.workers}")
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
    if not (math.isfinite(value) and 0 <= value <= MAX_SECONDS):
        raise argparse.ArgumentTypeError(f"expected a number of seconds from 0 to {MAX_SECONDS:g}, not {text!r}")
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
    """Bind and listen, IPv4 or IPv6 as the host says.

    create_server() turns on SO_REUSEADDR, so a restart can bind again at once
    instead of failing with 'Address already in use' while the last run's
    connections sit in TIME_WAIT.
    """
    family, _, _, _, address = socket.getaddrinfo(host, port, flags=socket.AI_PASSIVE)[0]
    return socket.create_server(address[:2], family=family, backlog=BACKLOG)


def format_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def reason(exc: OSError | UnicodeError) -> str:
    if isinstance(exc, UnicodeError):  # the idna codec refused the host: an empty label, one of 64 letters
        return f"not a host name ({exc})"
    # create_server() appends the address to strerror; the caller names it already.
    return exc.strerror.split(" (while attempting")[0] if exc.strerror else str(exc)


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
    """Refuse new connections from now on, in every process that holds the listener.

    close() frees this process's descriptor only (forked children hold their
    own), and cannot be done while the accept loop may still be selecting on
    it. On Linux, shutdown() takes the socket itself out of the LISTEN state:
    a connect is refused (ECONNREFUSED) at once, one queued but not yet
    accepted gets a reset, and accept() fails with EINVAL. A load balancer
    moves on from a refusal at once, where a connection left in the queue
    would wait out its time-out. Other systems refuse the call (ENOTCONN); there
    the listener stops when the server closes it, a moment later.
    """
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
    """Start the workers, replace any that dies, and stop them all on SIGINT or SIGTERM."""
    # SIGCHLD is ignored by default. A handler, even one that does nothing,
    # makes it arrive on the signal socket too, so the parent learns at once
    # that a worker has died.
    signal.signal(signal.SIGCHLD, lambda signum, frame: None)
    listener.setblocking(False)  # a worker that loses the race for a client must not block
    # The workers' lifeline: a socket pair whose first end only the parent
    # keeps. However the parent dies (SIGKILL, the OOM killer, a crash), the
    # kernel closes that end, and each worker reads the end of a stream on the
    # other: it stops accepting and exits, within the bounds of the client it
    # serves. Without it, orphaned workers served on with no one to stop them.
    # (gunicorn's workers compare os.getppid() with their parent's pid at
    # every wake-up; a socket needs no wake-up to be noticed.)
    lifeline = socket.socketpair()
    with lifeline[0], lifeline[1]:
        workers: set[int] = set()
        try:
            for _ in range(args.workers):
                workers.add(start_worker(listener, signals, lifeline, args))
        except OSError as exc:  # fork() failed, as in the loop below
            stop_workers(workers)
            raise SystemExit(f"cannot start {args.workers} workers: {exc.strerror or exc}") from None
        log.info("started %d workers", len(workers))
        while True:
            # Blocks until a signal arrives (a byte each, its number), or for a
            # second while a worker is missing.
            signals.settimeout(None if len(workers) == args.workers else 1.0)
            try:
                received = signals.recv(4096)
            except socket.timeout:
                received = b""
            if any(signum in received for signum in STOP_SIGNALS):
                break
            for pid, status in reap_workers(workers):
                log.warning("worker %d %s: starting another", pid, describe(status))
            try:
                while len(workers) < args.workers:
                    workers.add(start_worker(listener, signals, lifeline, args))
            except OSError as exc:
                # fork() failed: EAGAIN at a limit on processes (ulimit -u, a
                # cgroup's pids.max, systemd's TasksMax), or ENOMEM. The parent
                # must not die of it: its workers would serve on, orphaned, with
                # no one to stop them. It serves with fewer, and tries again.
                running = f"{len(workers)} of {args.workers} running"
                log.warning("cannot start a worker (%s): %s", exc.strerror or exc, running)
        stop_workers(workers)


def stop_workers(workers: set[int]) -> None:
    # Ctrl+C reaches the workers directly (they share the terminal's process
    # group); a SIGTERM sent to the parent alone is passed on here.
    for pid in workers:
        os.kill(pid, signal.SIGTERM)
    while workers:
        reap_workers(workers, block=True)


def start_worker(
    listener: socket.socket,
    signals: socket.socket,
    lifeline: tuple[socket.socket, socket.socket],
    args: argparse.Namespace,
) -> int:
    # A new worker runs with the parent's handlers until it has set up its
    # own: a SIGTERM in that moment would be lost (and would stop the shared
    # listener, the parent's job), and the worker would serve on forever.
    # Blocked across fork(), the signal waits instead, and arrives when the
    # worker unblocks it, ready.
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        pid = os.fork()
        if pid == 0:
            run_worker(listener, signals, lifeline, args)
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
    return pid


def let_go_of_the_parents_self_pipe() -> None:
    """In a forked child: no longer wake the parent at a signal, and close the child's copy of its self-pipe.

    asyncio, once anything in the process has imported it, does the first
    itself in every forked child (3.12+). set_wakeup_fd() then no longer
    names the descriptor, and os.close() of its -1 failed every child: the
    copy stays open instead, until the child exits, and nothing writes to it.
    """
    inherited = signal.set_wakeup_fd(-1)
    if inherited != -1:
        os.close(inherited)


def run_worker(
    listener: socket.socket,
    parent_signals: socket.socket,
    lifeline: tuple[socket.socket, socket.socket],
    args: argparse.Namespace,
) -> NoReturn:
    """The worker: the sync server's loop on the shared socket, until a stop signal or the parent's end."""
    parent_signals.close()
    parents_end, parent_gone = lifeline
    parents_end.close()  # or the worker would keep its own lifeline alive
    let_go_of_the_parents_self_pipe()
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    # A self-pipe of the worker's own. It leaves the listener alone: the parent
    # stops it for all (a worker sent SIGTERM alone must not stop the others).
    signals = stop_signals(None)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
    numbers = itertools.count(1)
    lingering = Lingering(listener, signals, parent_gone)
    try:
        while (conn := accept_client(listener, signals, lingering)) is not None:
            handle_client(conn, next(numbers), args, lingering.add)
        lingering.finish()
    except Exception:
        log.exception("worker failed")
        os._exit(1)
    # os._exit(), not sys.exit(): the worker must not run the parent's clean-up
    # on its way out (the with-blocks up the stack, atexit handlers).
    os._exit(0)


def reap_workers(workers: set[int], block: bool = False) -> list[tuple[int, int]]:
    """Collect the workers that have exited: (pid, wait status) for each."""
    exited = []
    while workers:
        pid, status = os.waitpid(-1, 0 if block else os.WNOHANG)
        if pid == 0:  # none has exited yet
            break
        workers.discard(pid)
        exited.append((pid, status))
        block = False
    return exited


def describe(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"was killed by signal {os.WTERMSIG(status)}"
    return f"exited with status {os.WEXITSTATUS(status)}"


def accept_client(listener: socket.socket, signals: socket.socket, lingering: Lingering) -> socket.socket | None:
    """Wait for the next client, finishing lingering closes meanwhile; None once a stop signal has come."""
    while True:
        if lingering.wait() != [listener]:  # a stop signal, or the parent has gone (see serve())
            return None
        try:
            conn, _ = listener.accept()
            return conn
        except BlockingIOError:  # another worker took this client first
            continue
        except OSError as exc:
            if exc.errno == errno.EINVAL:  # the listener is shut down (stop_listening()): stop
                return None
            # Out of file descriptors (EMFILE), or a client that gave up while
            # queued: the server carries on. The pause keeps a full fd table
            # from turning this loop into a busy spin.
            log.warning("accept failed: %s", exc)
            time.sleep(0.1)


class Lingering:
    """Answered connections, shut down for sending, waiting for their client to close.

    close_gracefully() waits for the client in place. A server that serves one
    client at a time then waits a client's round trip on every connection: at
    50 clients in flight that halved the sync server's throughput (17,700 to
    7,900 requests/s), because it used to accept the next client while the last
    one read its reply. So the accept loop does that waiting instead. One
    selector (epoll; select() fails past descriptor 1023) watches the listener,
    the stop signals and every lingering connection, and the next client is
    served while earlier ones close, within close_gracefully()'s bounds.
    """

    def __init__(self, *watched: socket.socket) -> None:
        # The sockets whose readiness ends a wait(): the listener, the stop
        # signals, and in a prefork worker the lifeline to its parent.
        self.watched = watched
        self.selector = selectors.DefaultSelector()
        for sock in watched:
            self.selector.register(sock, selectors.EVENT_READ)
        # connection -> [deadline, bytes discarded]. They come in time order and
        # linger equally long, so the first to expire is always the first here.
        self.waiting: dict[socket.socket, list[float]] = {}

    def add(self, conn: socket.socket, timeout: float) -> None:
        """close_gracefully(), finished later by wait(): the same arguments, the same bounds."""
        try:
            conn.shutdown(socket.SHUT_WR)
        except OSError:  # the client has gone already
            conn.close()
            return
        conn.setblocking(False)
        self.selector.register(conn, selectors.EVENT_READ)
        self.waiting[conn] = [time.monotonic() + min(LINGER_SECONDS, timeout), 0]

    def wait(self) -> list[socket.socket]:
        """Finish lingering closes until a watched socket is ready; return those that are."""
        while True:
            timeout = None
            if self.waiting:
                first_deadline = next(iter(self.waiting.values()))[0]
                timeout = max(0.0, first_deadline - time.monotonic())
            ready = [key.fileobj for key, _ in self.selector.select(timeout)]
            for conn in ready:
                if conn in self.waiting:
                    self.discard(conn)  # type: ignore[arg-type]
            self.expire()
            ours = [sock for sock in self.watched if sock in ready]
            if ours:
                return ours

    def discard(self, conn: socket.socket) -> None:
        try:
            chunk = conn.recv(CHUNK_SIZE)
        except BlockingIOError:  # a spurious wake-up
            return
        except OSError:  # a reset: the client has what it will get
            chunk = b""
        self.waiting[conn][1] += len(chunk)
        if not chunk or self.waiting[conn][1] >= LINGER_BYTES:  # closed by the client, or too much
            self.close(conn)

    def expire(self) -> None:
        now = time.monotonic()
        while self.waiting:
            conn, (deadline, _) = next(iter(self.waiting.items()))
            if deadline > now:
                return
            self.close(conn)

    def close(self, conn: socket.socket) -> None:
        self.selector.unregister(conn)
        del self.waiting[conn]
        conn.close()

    def finish(self) -> None:
        """At shutdown: no more clients, but the lingering closes still finish, within their bounds."""
        for sock in self.watched:
            self.selector.unregister(sock)
        while self.waiting:
            first_deadline = next(iter(self.waiting.values()))[0]
            for key, _ in self.selector.select(max(0.0, first_deadline - time.monotonic())):
                self.discard(key.fileobj)  # type: ignore[arg-type]
            self.expire()
        self.selector.close()


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
