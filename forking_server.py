#!/usr/bin/env python3
"""Process-per-connection TCP server: os.fork() for every client.

Each accepted connection is served by a child process, a copy of the server
made by fork(). Children share nothing but what they inherit, so a crash or a
leak in one cannot touch the others, and they run on every core at once: no
GIL between them. The price is the fork itself (a few hundred microseconds,
more as the parent's memory grows), a process per client, and the parent's
duty to reap each child that exits, or it lingers as a zombie. The blog
post's version reaped only when the next client connected, so an idle server
kept its zombies; here the accept loop reaps whenever it wakes, and wakes at
least twice a second. --max-children bounds the processes: at the limit the
parent waits for one to exit before it accepts again.

This is the classic Unix server (inetd, early Apache, the forking mode of
Python's socketserver). fork() exists on Unix only: on Windows this script
says so and exits.

Computing clients (--cpu) are where processes pay off: no GIL between them, so
clients compute on every core at once, and each fork's cost is small next to
the work.

The approach is serve(); the rest is the skeleton the servers share.

Standard library only; CPython 3.8 to 3.15.

Try it:  python forking_server.py 8000
         python client.py 8000 --clients 10    # ~5 s: ten processes at once
"""

from __future__ import annotations

import argparse
import errno
import itertools
import math
import os
import select
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
REAP_INTERVAL = 0.5  # seconds: the longest an exited child stays a zombie


class Log:
    """The part of logging's interface this server uses, in logging's format, without logging.

    os.fork() runs every hook that os.register_at_fork() holds. Importing
    logging registers two (the parent takes and releases logging's lock around
    each fork, the child re-creates every handler's lock), and threading, which
    logging imports, a third in the child. Each runs Python code in a process
    whose pages are all shared copy-on-write, so each page it writes costs a
    fault and a 4 KiB copy. Once per client, that was a quarter of this server's
    throughput: without logging it went from 0.60x to 0.79x the seed's on
    Python 3.13, and from 0.75x to 0.88x on 3.11. (On 3.8 argparse imports
    threading anyway: 0.55x to 0.65x.) So this server writes its lines itself.
    """

    def __init__(self) -> None:
        self.quiet = False

    def info(self, message: str, *args: object) -> None:
        if not self.quiet:
            self.write(message % args)

    def warning(self, message: str, *args: object) -> None:
        self.write(message % args)

    def exception(self, message: str, *args: object) -> None:
        import traceback  # only on a bug: never paid for on the way

        self.write(message % args + "\n" + traceback.format_exc().rstrip())

    def write(self, line: str) -> None:
        now = time.time()
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(now))
        # One write() per line, flushed at once: lines from parent and children
        # interleave whole, and no line is left in a buffer that a fork() copies.
        sys.stderr.write(f"{stamp},{int(now * 1000) % 1000:03d} {line}\n")
        sys.stderr.flush()


log = Log()


class ClientError(Exception):
    """The client broke the protocol or a limit; the message says how."""


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not hasattr(os, "fork"):
        print("forking_server.py needs os.fork(), which this platform lacks: try threaded_server.py", file=sys.stderr)
        return 1
    log.quiet = args.quiet
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
        "--max-children", type=positive_int, default=64, help="most children at once; more clients wait"
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="no per-client log lines")
    return parser.parse_args(argv)


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """--help as the docstring has it, told the terminal's width so that argparse need not import shutil.

    What the parent has loaded, every fork() pays for: the kernel copies the
    parent's memory mappings and page tables for each child, and tears them
    down when it exits. argparse asks shutil for the width of the terminal
    (on Python 3.9 and later, when it makes its first formatter), and shutil
    loads zlib, bz2 and lzma: 6 shared libraries, 30 memory mappings. Without
    them and the idna codec (open_listener()), this server went from 0.84x to
    0.92x the seed's requests/s on Python 3.13. (3.8's argparse imports shutil
    whatever it is told.)
    """

    def __init__(self, prog: str) -> None:
        try:
            columns = os.get_terminal_size().columns
        except OSError:  # not a terminal
            columns = 80
        super().__init__(prog, width=columns - 2)  # shutil's width, less argparse's margin

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
    # getaddrinfo() encodes a str host with the idna codec, and importing that
    # loads unicodedata: 5 more memory mappings in the parent, which every
    # fork() copies (see HelpFormatter). An ASCII host needs no codec.
    name = host.encode() if host.isascii() else host
    family, _, _, _, address = socket.getaddrinfo(name, port, flags=socket.AI_PASSIVE)[0]
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
    """Fork a child process for each client until SIGINT or SIGTERM."""
    children: set[int] = set()
    numbers = itertools.count(1)
    while (conn := accept_client(listener, signals, children, args.max_children)) is not None:
        number = next(numbers)
        pid = fork(children, number)
        if pid is None:
            conn.close()
            continue
        if pid == 0:
            serve_in_child(listener, signals, conn, number, args)
        children.add(pid)
        conn.close()  # the child has its own copy; keeping ours would hold the connection open
    if children:
        log.info("waiting for %d children", len(children))
    while children:
        reap_children(children, block=True)


def fork(children: set[int], number: int) -> int | None:
    """os.fork(), waiting for a child to exit while there are too many; None if none is left to wait for.

    The stop signals are blocked across fork(), and stay blocked in the child,
    which finishes its one client whatever comes (the timeouts bound it): a
    signal sent to it waits, pending, until it exits. Unblocked, a SIGTERM
    that reached a child in the instant before it had let go of the parent's
    self-pipe and listener ran the parent's handlers there: the self-pipe
    told the parent to stop, and one signal to one child stopped the server.
    """
    while True:
        signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        try:
            pid = os.fork()
        except OSError as exc:
            # EAGAIN at a limit on processes (ulimit -u, a cgroup's pids.max,
            # systemd's TasksMax), or ENOMEM: a lower --max-children, in
            # effect, and met the same way. Without children of its own to
            # wait for, the server cannot make room: the client is closed.
            signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
            reason = exc.strerror or exc
            if not children:
                log.warning("#%d no process for it (%s): closed", number, reason)
                return None
            log.warning("#%d no process for it yet (%s): waiting for a child to exit", number, reason)
            reap_children(children, block=True)
            continue
        if pid:  # the parent, and signals as before
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


def serve_in_child(
    listener: socket.socket, signals: socket.socket, conn: socket.socket, number: int, args: argparse.Namespace
) -> NoReturn:
    """Serve one client in the forked child, then exit: never return to the loop."""
    listener.close()
    signals.close()
    # Ctrl+C signals the whole process group, children included. The parent
    # decides when to stop, and a child always finishes its one client, which
    # the timeouts bound; so a child must ignore both stop signals, and it
    # does: they stay blocked here (see fork()). Setting SIG_IGN instead would
    # cost 110 us per client: signal.signal() converts to and from enums in
    # Python, and in a fresh child each object it touches is a page fault.
    let_go_of_the_parents_self_pipe()
    try:
        handle_client(conn, number, args)
    except Exception:
        log.exception("#%d failed", number)
        os._exit(1)
    # os._exit(), not sys.exit(): the child must not run the parent's clean-up
    # on its way out (the with-blocks up the stack, atexit handlers).
    os._exit(0)


def reap_children(children: set[int], block: bool = False) -> None:
    """Collect the exit status of finished children, so none stays a zombie."""
    while children:
        pid, _ = os.waitpid(-1, 0 if block else os.WNOHANG)
        if pid == 0:  # none has exited yet
            return
        children.discard(pid)
        block = False


def accept_client(
    listener: socket.socket, signals: socket.socket, children: set[int], max_children: int
) -> socket.socket | None:
    """Wait for the next client, reaping children meanwhile; None once a stop signal has come."""
    while True:
        if len(children) >= max_children:
            reap_children(children, block=True)  # at the limit: wait for one to exit
            continue
        reap_children(children)
        # select() handles only fds below FD_SETSIZE (1024); these two are
        # opened first, so they qualify however many clients are connected.
        # The timeout bounds how long an exited child waits to be reaped when
        # no client comes. A SIGCHLD handler would wake the loop the moment a
        # child exits, but it runs Python code in the parent once per child:
        # 5-10% of the throughput, measured, for promptness nobody sees.
        readable, _, _ = select.select([listener, signals], [], [], REAP_INTERVAL)
        if not readable:
            continue
        if signals in readable:
            received = signals.recv(4096)  # a byte per signal: its number
            if any(signum in received for signum in STOP_SIGNALS):
                return None
            continue
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
