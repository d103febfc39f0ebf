#!/usr/bin/env python3
"""A hand-written event loop on selectors: what asyncio does for you, in plain sight.

One thread, non-blocking sockets, and one selector (epoll on Linux, kqueue on
macOS) that says which sockets are ready. Each connection is a small state
machine (reading, working, writing) instead of a coroutine, and its buffers
and deadline live in a Connection object instead of a coroutine's locals. The
simulated work is a timer, never a sleep(): the loop sleeps only in select(),
for as long as the nearest timer allows, so ten thousand clients that each
wait d seconds are all answered after about d seconds, as with asyncio, and
often faster, because nothing here is more general than this protocol needs.

What each part would be in asyncio:
  selector.select(timeout)      the event loop's _run_once(), waiting for I/O
  Connection + its state        a coroutine's local variables and await point
  key.data (a method to call)   the Handle that call_soon() schedules
  the timer heap                loop.call_later(), also a heap of deadlines
  send() before waiting         transport.write(), which tries at once too
  timeouts checked on timers    asyncio.timeout() (3.11+), and within() in
                                asyncio_server.py: a deadline that ends the
                                wait, not a task per wait (asyncio.wait_for())

The cost: every step of the protocol is a callback, and a callback that blocks
or computes for long stops every client. Pick this to learn how event loops
work, or when a dependency-free, single-threaded loop is all a small daemon
needs; otherwise let asyncio (asyncio_server.py) do it.

Computing clients (--cpu) are an event loop's weak spot: the computation runs
inside a callback, and while it does, no other client is read, answered or
even accepted. The remedy is to hand it to other processes, as
asyncio_server.py does with --cpu-workers.

The approach is serve() and EventLoop; the rest is the skeleton the servers
share.

Standard library only; CPython 3.8 to 3.15.

Try it:  python selectors_server.py 8000
         python client.py 8000 --clients 1000    # ~5 s, one thread
"""

from __future__ import annotations

import argparse
import errno
import heapq
import itertools
import logging
import math
import os
import selectors
import signal
import socket
import sys
import time

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
ACCEPT_PAUSE = 0.1  # seconds without accepting after accept() fails (see EventLoop.accept)
LINGER_BYTES = 16 * 1024 * 1024
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
# Socket activation: the first descriptor systemd passes (sd_listen_fds(3)).
LISTEN_FDS_START = 3
# What --help says the protocol is (the docstring tells the rest).
PROTOCOL = (
    "The protocol: a client sends bytes up to and including a '!'; --delay seconds\n"
    "later the server sends them back reversed, and closes."
)

log = logging.getLogger("selectors_server")


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
    """Run the event loop until SIGINT or SIGTERM, then until every client is done."""
    raise_open_file_limit()
    EventLoop(listener, signals, args).run()


def raise_open_file_limit() -> None:
    """Let the process hold as many sockets as the hard limit allows.

    Every connected client holds a file descriptor, and the usual soft limit is
    1024: without this, client number 1,021 or so fails in accept() (EMFILE).
    """
    try:
        import resource  # Unix only; Windows has no such limit to raise
    except ImportError:
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError):  # macOS refuses an unlimited hard limit
        log.warning("open files limited to %d", soft)


class EventLoop:
    """The selector, the timers, and the connections between them."""

    def __init__(self, listener: socket.socket, signals: socket.socket, args: argparse.Namespace) -> None:
        self.listener = listener
        self.signals = signals
        self.args = args
        self.selector = selectors.DefaultSelector()
        self.timers: list[tuple[float, int, Connection | AcceptPause]] = []  # a heap: the nearest deadline first
        self.tiebreak = itertools.count()  # heap entries never compare two Connections
        self.numbers = itertools.count(1)
        self.open = 0  # connections not yet closed
        self.accepting = True
        self.paused = False  # the listener is out of the selector for ACCEPT_PAUSE seconds
        listener.setblocking(False)
        self.selector.register(listener, selectors.EVENT_READ, self.accept)
        self.selector.register(signals, selectors.EVENT_READ, self.stop)

    def run(self) -> None:
        while self.accepting or self.open:
            for key, _ in self.selector.select(self.wait_time()):
                key.data()  # the method to call when this socket is ready
            self.run_timers()
        self.selector.close()

    def stop(self) -> None:
        """SIGINT or SIGTERM: accept no more; run() returns when the last client is done."""
        self.selector.unregister(self.signals)
        if not self.paused:
            self.selector.unregister(self.listener)
        self.listener.close()
        self.accepting = False

    def accept(self) -> None:
        # Take every connection that is waiting, not just one: one wake-up of
        # the loop then serves a whole burst.
        while self.accepting:  # stop() may have come earlier in this batch of events
            try:
                sock, _ = self.listener.accept()
            except BlockingIOError:  # none left
                return
            except OSError as exc:  # EMFILE, or a client that gave up while queued
                if exc.errno == errno.EINVAL:  # shut down by a stop signal (stop_listening()): stop() is on its way
                    return
                # The connection stays queued, so the listener stays readable,
                # and select() would report it again at once: at the open-file
                # limit that was a busy loop, and 26,000 of these lines a
                # second. So the selector leaves it out for a moment, while
                # clients that finish free their descriptors.
                log.warning("accept failed: %s", exc)
                self.selector.unregister(self.listener)
                self.paused = True
                pause = AcceptPause(self)
                self.call_at(pause.deadline, pause)
                return
            sock.setblocking(False)
            self.open += 1
            Connection(self, sock, next(self.numbers)).start()

    def call_at(self, when: float, conn: Connection | AcceptPause) -> None:
        heapq.heappush(self.timers, (when, next(self.tiebreak), conn))
        # A superseded entry stays in the heap until it comes due, --timeout
        # seconds on, holding its closed Connection. When such entries
        # outnumber the live ones, rebuild the heap without them, as asyncio
        # does with cancelled timers: memory stays in proportion to the clients.
        if len(self.timers) > 2 * self.open + 100:
            self.timers = [entry for entry in self.timers if entry[0] == entry[2].deadline]
            heapq.heapify(self.timers)

    def wait_time(self) -> float | None:
        """How long select() may sleep: until the nearest timer, or for good without one."""
        if not self.timers:
            return None
        return max(0.0, self.timers[0][0] - time.monotonic())

    def run_timers(self) -> None:
        now = time.monotonic()
        while self.timers and self.timers[0][0] <= now:
            when, _, conn = heapq.heappop(self.timers)
            # A connection has one timer that counts at a time: entries left
            # over from an earlier state are skipped, not removed from the heap
            # (removal from the middle of a heap costs O(n)).
            if when == conn.deadline:
                conn.on_timer()


class AcceptPause:
    """A timer that puts the listener back in the selector, ACCEPT_PAUSE seconds after accept() failed."""

    def __init__(self, loop: EventLoop) -> None:
        self.loop = loop
        self.deadline = time.monotonic() + ACCEPT_PAUSE

    def on_timer(self) -> None:
        self.loop.paused = False
        if self.loop.accepting:  # not stopped meanwhile
            self.loop.selector.register(self.loop.listener, selectors.EVENT_READ, self.loop.accept)


class Connection:
    """One client, from accept to close: reading, working, writing, lingering."""

    def __init__(self, loop: EventLoop, sock: socket.socket, number: int) -> None:
        self.loop = loop
        self.sock = sock
        self.number = number
        self.started = time.monotonic()
        self.state = "reading"
        self.request = bytearray()
        self.reply = memoryview(b"")
        self.discarded = 0
        self.deadline = 0.0

    def start(self) -> None:
        # One deadline for the whole request, fixed at connect: a client that
        # trickles a byte at a time does not extend it.
        self.set_timer(self.started + self.loop.args.timeout)
        self.loop.selector.register(self.sock, selectors.EVENT_READ, self.on_readable)

    def set_timer(self, when: float) -> None:
        self.deadline = when
        self.loop.call_at(when, self)

    def on_readable(self) -> None:
        limit = self.loop.args.max_request
        try:
            # Never ask for more than the limit allows: memory stays bounded.
            chunk = self.sock.recv(min(CHUNK_SIZE, limit - len(self.request)))
        except BlockingIOError:  # a spurious wake-up: nothing to read after all
            return
        except OSError:  # reset, or any other failure of this one connection
            chunk = b""
        if not chunk:
            self.close("disconnected before a complete request")
            return
        # Search only the new chunk: rescanning the whole buffer each time would
        # make a large request cost O(n^2).
        end = chunk.find(DELIMITER)
        if end >= 0:
            self.request += chunk[: end + 1]
            self.loop.selector.unregister(self.sock)
            self.state = "working"
            # Computing runs here, in the loop: every other client waits for it.
            if self.loop.args.cpu:
                compute(self.loop.args.cpu)
            # Waiting is a timer: the loop serves everyone else meanwhile.
            self.set_timer(time.monotonic() + self.loop.args.delay)
            return
        self.request += chunk
        if len(self.request) >= limit:
            self.close(f"sent {len(self.request)} bytes without {DELIMITER.decode()}: too large, closed")

    def on_timer(self) -> None:
        if self.state == "working":
            self.request.reverse()  # in place: no second copy of a large request
            self.reply = memoryview(self.request)
            self.state = "writing"
            self.set_timer(time.monotonic() + self.loop.args.timeout)
            # Send at once: most replies fit in the kernel's buffer, and waiting
            # for select() to say so first would cost a trip round the loop.
            self.on_writable()
            if self.state == "writing":  # the rest goes when the client reads
                self.loop.selector.register(self.sock, selectors.EVENT_WRITE, self.on_writable)
        elif self.state == "reading":
            self.close("sent no complete request in time: closed")
        elif self.state == "writing":
            self.close("did not read the reply in time: closed")
        else:  # lingering: the client had its reply, and its time to close
            self.close(self.answered())

    def on_writable(self) -> None:
        try:
            sent = self.sock.send(self.reply)
        except BlockingIOError:  # the kernel's buffer is full: wait to be told
            return
        except OSError:
            self.close("disconnected before the whole reply was sent")
            return
        self.reply = self.reply[sent:]  # a view: no copy of what is left
        if not self.reply:
            self.close_gracefully()

    def close_gracefully(self) -> None:
        """Send FIN after the reply, then discard what the client sends until it closes.

        close() with unread input makes the kernel send RST, not FIN, and an
        RST makes the client's kernel throw away whatever of the reply it
        holds unread: over a 20 Mbit/s link, a 1 MB reply arrived cut to
        360-540 KB. So the connection lingers, a state like the others: the
        loop serves everyone else meanwhile, and a client that never closes,
        or keeps sending, is cut off after LINGER_SECONDS (never beyond
        --timeout) or LINGER_BYTES.
        """
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:  # the client has gone already
            self.close(self.answered())
            return
        try:
            self.loop.selector.modify(self.sock, selectors.EVENT_READ, self.on_lingering)
        except KeyError:  # never registered for writing: the first send() took it all
            self.loop.selector.register(self.sock, selectors.EVENT_READ, self.on_lingering)
        self.state = "lingering"
        self.set_timer(time.monotonic() + min(LINGER_SECONDS, self.loop.args.timeout))

    def on_lingering(self) -> None:
        try:
            chunk = self.sock.recv(CHUNK_SIZE)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        self.discarded += len(chunk)
        if not chunk or self.discarded >= LINGER_BYTES:  # closed by the client, or too much
            self.close(self.answered())

    def answered(self) -> str:
        return f"answered {len(self.request)} bytes in {time.monotonic() - self.started:.3f} s"

    def close(self, outcome: str) -> None:
        if self.state in ("reading", "writing", "lingering") and self.sock.fileno() >= 0:
            try:
                self.loop.selector.unregister(self.sock)
            except KeyError:  # writing, but never registered: the first send() took it all
                pass
        self.sock.close()
        self.state = "closed"
        self.deadline = 0.0  # leaves any pending timer of this connection stale
        self.loop.open -= 1
        log.info("#%d %s", self.number, outcome)


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


if __name__ == "__main__":
    sys.exit(main())
