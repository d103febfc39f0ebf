#!/usr/bin/env python3
"""The standard library's socketserver: the same servers in a few lines each.

socketserver (Lib/socketserver.py) has the accept loop, the threading and
forking strategies and the shutdown plumbing built in; an application writes
only a handler class, and a mix-in picks the concurrency:

  --variant sync       TCPServer: one client at a time, like sync_server.py
  --variant threading  ThreadingMixIn: a thread per client, like threaded_server.py
  --variant forking    ForkingMixIn: a process per client, like forking_server.py
  --variant stream     threads again, but a long-lived session: each line the
                       client sends is answered at once with the line reversed

What it leaves to you is what this file adds: socketserver listens with a queue
of 5 (request_queue_size), so a burst of clients stalls on SYN retries; it has
no timeouts, so an idle client ties up a thread or a process forever; and
shutdown() must be called from another thread than the one running
serve_forever(), or it waits for itself forever. serve_forever() also polls
every 0.5 s, which bounds how fast it notices shutdown() and reaps children.

With computing clients (--cpu) each variant does what its model does: sync one
at a time, threading on one core because of the GIL, forking on every core.

The approach is make_server(); the rest is the skeleton the servers share.

Standard library only; CPython 3.8 to 3.15.

Try it:  python socketserver_variants.py 8000 --variant threading
         python client.py 8000 --clients 10             # ~5 s
         python socketserver_variants.py 8001 --variant stream
         python client.py 8001 --stream                 # type lines; Ctrl+D ends
"""

from __future__ import annotations

import argparse
import itertools
import logging
import math
import os
import signal
import socket
import socketserver
import sys
import threading
import time
import weakref
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
# What --help says the protocols are (the docstring tells the rest).
PROTOCOL = (
    "The protocol: a client sends bytes up to and including a '!'; --delay seconds\n"
    "later the server sends them back reversed, and closes. The stream variant\n"
    "answers each line at once, reversed, until the client closes."
)
VARIANTS = ("sync", "threading", "forking", "stream")

log = logging.getLogger("socketserver_variants")


class ClientError(Exception):
    """The client broke the protocol or a limit; the message says how."""


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO,
        format="%(asctime)s %(message)s",
    )
    if args.variant == "forking" and not hasattr(os, "fork"):
        print("--variant forking needs os.fork(), which this platform lacks: try --variant threading", file=sys.stderr)
        return 1
    try:
        server = make_server(args)
    except (OSError, UnicodeError) as exc:
        print(f"cannot listen on {format_address(args.host, args.port)}: {reason(exc)}", file=sys.stderr)
        return 1
    # Leaving the with-block calls server_close(): it closes the listener, then
    # joins the handler threads (threading, stream) or waits for the children
    # (forking), so clients in progress get their whole reply.
    with server:
        stop_on_signals(server)
        print_ready_line(f"Listening on {format_address(*server.server_address[:2])} ({args.variant})")
        try:
            server.serve_forever()
        except StopServing:  # see stop_on_signals()
            pass
    log.info("stopped")
    ignore_stop_signals()  # a stop signal now would kill the interpreter as it shuts down
    return 0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=f"{__doc__.splitlines()[0]}\n\n{PROTOCOL}",
        epilog=__doc__.split("\n", 1)[1].strip(),
        formatter_class=HelpFormatter,
    )
    parser.add_argument("port", type=port_number, help="TCP port; 0 lets the OS pick a free one")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on; 0.0.0.0 or :: exposes the server")
    parser.add_argument(
        "--delay", type=seconds, default=5.0, help="simulated work per request, in seconds (stream: none)"
    )
    parser.add_argument(
        "--cpu",
        type=seconds,
        default=0.0,
        help="CPU time spent computing per request (holding the GIL), in seconds (stream: none)",
    )
    parser.add_argument(
        "--timeout", type=positive_seconds, default=10.0, help="seconds to send a request, and again to read the reply"
    )
    parser.add_argument(
        "--max-request", type=positive_int, default=MAX_REQUEST, help="largest request (stream: line) in bytes"
    )
    parser.add_argument("--variant", choices=VARIANTS, default="threading", help="which socketserver class serves")
    parser.add_argument("-q", "--quiet", action="store_true", help="no per-client log lines")
    return parser.parse_args(argv)


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


def make_server(args: argparse.Namespace) -> socketserver.TCPServer:
    """Bind and listen with the socketserver class the variant names."""
    server_class = {
        "sync": ReverseServer,
        "threading": ThreadingReverseServer,
        "forking": ForkingReverseServer,
        "stream": ThreadingReverseServer,
    }[args.variant]
    handler_class = LineHandler if args.variant == "stream" else ReverseHandler
    return server_class(open_listener(args.host, args.port), handler_class, args)


class ReverseServer(socketserver.TCPServer):
    """TCPServer with the defaults a real server needs.

    Its listener is open_listener()'s, with SO_REUSEADDR (a restart binds again
    at once) and a queue of BACKLOG: TCPServer's own listens with 5
    (request_queue_size), and a burst stalls on SYN retries.
    """

    def __init__(self, listener: socket.socket, handler_class: type, args: argparse.Namespace) -> None:
        self.args = args
        self.numbers = itertools.count(1)
        self.stop_requested = False
        # TCPServer makes a socket of its own, to bind; this server serves on
        # open_listener()'s, bound and listening already (perhaps systemd's).
        super().__init__(listener.getsockname()[:2], handler_class, bind_and_activate=False)
        self.socket.close()
        self.socket = listener

    def service_actions(self) -> None:
        if self.stop_requested:  # see stop_on_signals()
            raise StopServing

    def get_request(self) -> tuple[socket.socket, Any]:
        if self.stop_requested:  # systemd's listener still listens: the next start serves who waits there
            raise StopServing
        try:
            conn, address = self.socket.accept()
        except OSError as exc:
            if self.stop_requested:  # the listener is shut down (stop_on_signals())
                raise StopServing from None
            # EMFILE, or a client that gave up while queued. socketserver drops
            # the error and selects again, and at the open-file limit the
            # listener is readable at once: a core spent on nothing, silently.
            # The pause keeps a full fd table from turning this into a busy spin.
            log.warning("accept failed: %s", exc)
            time.sleep(0.1)
            raise
        # Number the client here, in the accepting process: with ForkingMixIn
        # the handler runs in a child, where a counter would never advance.
        return conn, (next(self.numbers), address)


class ThreadingReverseServer(socketserver.ThreadingMixIn, ReverseServer):
    # Non-daemon threads, joined by server_close(): a client in progress at
    # shutdown gets its whole reply.
    daemon_threads = False

    def __init__(self, *args: Any) -> None:
        self.threads: weakref.WeakSet[threading.Thread] = weakref.WeakSet()
        super().__init__(*args)

    def process_request(self, request: Any, client_address: Any) -> None:
        """Serve the client on a thread of its own; close it if no thread can start.

        ThreadingMixIn's version records the thread before starting it. When
        the start fails ("can't start new thread": a limit on tasks, such as
        ulimit -u, a cgroup's pids.max or systemd's TasksMax, or no memory for
        a stack), socketserver prints the traceback, and server_close() later
        fails on that thread ("cannot join thread before it is started")
        without waiting for the others.
        """
        thread = threading.Thread(target=self.process_request_thread, args=(request, client_address))
        thread.daemon = self.daemon_threads
        try:
            thread.start()
        except RuntimeError as exc:
            log.warning("#%d no thread for it (%s): closed", client_address[0], exc)
            self.shutdown_request(request)
            return
        self.threads.add(thread)  # weakly: a thread that has ended leaves the set

    def server_close(self) -> None:
        super().server_close()
        for thread in list(self.threads):
            thread.join()


if hasattr(socketserver, "ForkingMixIn"):  # absent on Windows

    class ForkingReverseServer(socketserver.ForkingMixIn, ReverseServer):
        # ForkingMixIn reaps finished children each time serve_forever() polls
        # (every 0.5 s), even with no new client, and server_close() waits for
        # the rest. At max_children (40) it waits for one before going on.

        def service_actions(self) -> None:
            socketserver.ForkingMixIn.service_actions(self)  # reaps the children; calls no other
            ReverseServer.service_actions(self)

        def finish_request(self, request: Any, client_address: Any) -> None:
            # ForkingMixIn calls this in the child only. The child inherits the
            # listener, and socketserver leaves it open there: after a stop it
            # kept connections queued, unanswered, until the last child exited.
            self.socket.close()
            super().finish_request(request, client_address)

        def process_request(self, request: Any, client_address: Any) -> None:
            # The stop signals blocked across fork(), and left blocked in the
            # child, which serves its one client whatever comes: unblocked, a
            # SIGTERM that reached a child before it had closed its copy of the
            # listener ran the parent's handler there, and shut the listener
            # down for the whole server.
            signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
            try:
                super().process_request(request, client_address)  # returns in the parent only
            except OSError as exc:
                # fork() failed: EAGAIN at a limit on processes (ulimit -u, a
                # cgroup's pids.max), ENOMEM. socketserver would print the
                # traceback and go on; the client is closed.
                log.warning("#%d no process for it (%s): closed", client_address[0], exc.strerror or exc)
                self.shutdown_request(request)
            finally:
                signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)


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


class StopServing(Exception):
    """Raised inside serve_forever() once a stop signal has come (see stop_on_signals())."""


def stop_on_signals(server: socketserver.BaseServer) -> None:
    """Make SIGINT and SIGTERM refuse new connections at once, and end serve_forever() soon after.

    A Python signal handler runs in the main thread, between two bytecodes of
    whatever that thread was doing, here serve_forever() or, in the sync and
    forking variants, a client's request. So the handler must take no lock and
    start no thread: shutdown() would wait for serve_forever() to return, in
    this very thread, forever; and a thread started here to call it deadlocked
    on Python 3.8 when the signal landed inside the main thread's own
    Thread.start(), which holds a lock of threading's that start() takes
    again. Nor may it raise: an exception could land between accepting a
    client and serving it. It does two things that need none of that: it stops
    the listener (stop_listening()), and sets a flag that the server turns into
    StopServing at a safe point, in get_request() or service_actions(), which
    serve_forever() calls between two clients and at least every 0.5 s.
    """

    def stop(signum: int, frame: Any) -> None:
        stop_listening(server.socket)  # type: ignore[attr-defined]
        server.stop_requested = True  # type: ignore[attr-defined]

    for signum in STOP_SIGNALS:
        signal.signal(signum, stop)


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


class ReverseHandler(socketserver.BaseRequestHandler):
    """The reverse protocol: one request per connection."""

    def handle(self) -> None:
        number, _ = self.client_address
        handle_client(self.request, number, self.server.args)  # type: ignore[attr-defined]


class LineHandler(socketserver.BaseRequestHandler):
    """The stream variant: each line is answered at once, reversed, until the client closes.

    A session lasts as long as its client likes, so two bounds that a
    one-request protocol gets for free must be set by hand. Each line must
    arrive within --timeout of the one before it, however it trickles in
    (read_line()). And after a stop signal the session ends as soon as the line
    in progress is answered: shutdown waits at most --timeout for a session,
    where joining the thread of a client that sent a line a second waited for
    as long as that client talked.
    """

    def handle(self) -> None:
        number, _ = self.client_address
        server: ReverseServer = self.server  # type: ignore[assignment]
        conn: socket.socket = self.request
        received = bytearray()  # read, not yet answered: never more than --max-request bytes
        lines = 0
        try:
            while not server.stop_requested and (line := read_line(conn, received, server.args)) is not None:
                line.reverse()
                write_response(conn, line[1:] + b"\n", server.args.timeout)  # the newline stays at the end
                lines += 1
        except ClientError as exc:
            conn.close()
            log.info("#%d %s", number, exc)
            return
        close_gracefully(conn, server.args.timeout)
        log.info("#%d closed after %d lines", number, lines)


def read_line(conn: socket.socket, received: bytearray, args: argparse.Namespace) -> bytearray | None:
    """The next line, newline included: from what was received already, then from conn; None at the end.

    As read_request() does for a request: one deadline for the whole line, and
    a search of the new bytes only. A last line without a newline is not
    answered.
    """
    deadline = time.monotonic() + args.timeout
    searched = 0
    while True:
        end = received.find(b"\n", searched)
        if end >= 0:
            line = received[: end + 1]
            del received[: end + 1]
            return line
        if len(received) >= args.max_request:
            raise ClientError(f"sent a line longer than {args.max_request} bytes: closed")
        searched = len(received)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise ClientError(f"sent no line for {args.timeout:g} s: closed")
        conn.settimeout(remaining)
        try:
            chunk = conn.recv(min(CHUNK_SIZE, args.max_request - len(received)))
        except socket.timeout:
            raise ClientError(f"sent no line for {args.timeout:g} s: closed") from None
        except OSError:  # reset, or any other failure of this one connection
            chunk = b""
        if not chunk:
            return None
        received += chunk


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
