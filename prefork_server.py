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
EPOLLEXCLUSIVE, or SO_REUSEPORT (a listening socket per worker: --reuseport).

Deploys that drop no client, gunicorn's and nginx's mechanisms:

- SIGHUP replaces the workers one by one: a new worker starts, then an old
  one is told to finish its client and exit, until every worker is new; at
  no moment do fewer than --workers accept. A worker is a fork of the parent
  and runs the code the parent loaded, so a reload gives fresh processes (the
  memory a leak held), not new code. (gunicorn's reload brings new code too,
  unless --preload: its workers import the application after the fork.)
- SIGUSR2 upgrades in place: the parent runs the script from disk again
  (sys.executable and sys.argv) and hands it the listening socket the way
  systemd does (socket activation, see open_listener()). The new copy prints
  its own ready line and starts its workers; once it says it is ready, the old
  parent stops as at SIGTERM, except that the socket goes on listening: no
  connection is refused, and none waits longer than it would have. A new
  copy that fails to start (a syntax error, a bad option) leaves the old one
  serving, with one log line that says why. nginx's binary upgrade and
  gunicorn's USR2 start the new master the same way, and then leave both
  serving until the operator stops the old one (nginx: WINCH, then QUIT;
  gunicorn: TERM): a window in which to check the new code and roll back by
  signalling the old master. Here the old one stops by itself as soon as the
  new one is ready: a deploy is one signal, a rollback another upgrade.
  Under systemd, restart the service instead: systemd follows its main
  process, which an upgrade replaces, and a socket unit keeps the clients
  waiting in its queue across the restart. What a new copy does not get:
  interpreter options (python -X dev; PYTHON* variables do carry over). The
  sockets become its own once it has said it is ready: a stop before that
  leaves them listening for the old one, and a stop after it refuses new
  connections at once, as before the upgrade (left listening, as systemd's
  are, they would hold a client that connects during the stop until the last
  process exits, and then reset it).
- --max-requests N: a worker exits after N clients and another takes its
  place, gunicorn's guard against memory that leaks. The worker tells the
  parent first, so its replacement accepts while it finishes its closes.
- --reuseport: each worker accepts on a listening socket of its own
  (SO_REUSEPORT, Linux), and the kernel spreads new connections across them
  by a hash of their addresses and ports, with no thundering herd. The load
  spreads evenly: of 2,000 quick requests to 4 workers, the busiest worker
  served 26% and the least busy 24%, against 31% and 19% on a shared socket,
  where the worker that happens to be running wins the race. But a connection
  is hashed to its worker when it arrives, busy or not: while one silent
  client held a worker, the requests hashed to it waited until its --timeout
  (2 s) freed it, and the slowest took 1.8 s instead of 5 ms (bench.py
  --reuseport: 2 cores, 3.11, a loaded machine). Pick the shared socket when
  requests differ in length or clients can be slow, as in front of a sync
  worker (gunicorn shares one); --reuseport when requests are short and
  alike, when many workers would all wake for each connection, or when an
  even spread across CPUs matters. Its trap, at a reload: see
  open_reuseport_sockets().

Log lines carry the worker's pid; #N counts the clients of each worker.
fork() exists on Unix only: on Windows this script says so and exits.

Computing clients (--cpu) get every core: each worker is a process with a GIL
of its own, so --workers at the number of cores computes that many requests at
once, without forking_server.py's fork per client.

The approach is serve(); the rest is the skeleton the servers share.

Standard library only; CPython 3.8 to 3.15.

Try it:  python prefork_server.py 8000 --workers 4
         python client.py 8000 --clients 8     # ~10 s: two rounds of four
         kill -HUP PID; kill -USR2 PID         # the parent's pid: new workers; new code
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import itertools
import logging
import math
import os
import selectors
import signal
import socket
import sys
import tempfile
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
# A bound on processes started up front (--workers): a typing slip of a few
# zeros must not fork the machine to its knees before the first error.
MAX_PROCESSES = 1024
# The parent's deploy signals: SIGHUP replaces the workers, SIGUSR2 upgrades
# (Windows has neither; main() says there that this script needs fork()).
DEPLOY_SIGNALS = tuple(getattr(signal, name) for name in ("SIGHUP", "SIGUSR2") if hasattr(signal, name))
# How long an upgrade's new copy may take to say it is ready (Upgrade).
UPGRADE_TIMEOUT = 30.0
# How many --reuseport sockets an upgrade hands over beside the listener.
REUSEPORT_FDS = "PREFORK_REUSEPORT_FDS"
# Set by an upgrade when the sockets it hands over are the server's own, not
# systemd's: the new copy shuts them down at its stop (Supervisor.stop_listening()).
OWN_SOCKETS = "PREFORK_OWN_SOCKETS"

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
        wake_on_deploy_signals()
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
        "--workers", type=positive_int, default=os.cpu_count() or 1, help=f"worker processes, up to {MAX_PROCESSES}"
    )
    parser.add_argument(
        "--reuseport", action="store_true", help="a listening socket per worker (SO_REUSEPORT), not one shared; Linux"
    )
    parser.add_argument(
        "--max-requests", type=positive_int, help="a worker exits after this many clients, and another takes its place"
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="no per-client log lines")
    args = parser.parse_args(argv)
    if args.workers > MAX_PROCESSES:
        parser.error(f"--workers: at most {MAX_PROCESSES} processes, not {args.workers}")
    if args.reuseport and not sys.platform.startswith("linux"):  # elsewhere it does not spread connections
        parser.error("--reuseport: needs Linux")
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


def wake_on_deploy_signals() -> None:
    """SIGHUP, SIGUSR2 and SIGCHLD arrive on the signal socket too (see stop_signals()), for serve() to act on.

    Before the ready line: a SIGHUP sent as soon as the server says it is up
    must not end it (the default action). SIGCHLD is ignored by default; a
    handler, even one that does nothing, makes the parent learn at once that a
    worker has exited.
    """
    for signum in (*DEPLOY_SIGNALS, signal.SIGCHLD):
        signal.signal(signum, lambda signum, frame: None)


def serve(listener: socket.socket, signals: socket.socket, args: argparse.Namespace) -> None:
    """Keep --workers workers accepting until a stop signal, or an upgrade's new copy, ends this server."""
    try:
        listeners = slot_sockets(listener, args)
    except (OSError, ValueError) as exc:
        raise SystemExit(f"cannot open the --reuseport sockets: {exc}") from None
    supervisor = Supervisor(listeners, signals, args)
    try:
        supervisor.run()
    finally:
        supervisor.close()


def slot_sockets(listener: socket.socket, args: argparse.Namespace) -> list[socket.socket]:
    """The listening socket of each worker slot: the listener in every one, or with --reuseport one each."""
    inherited = inherited_reuseport_sockets(listener)
    if args.reuseport:
        return open_reuseport_sockets(listener, args.workers, inherited)
    for sock in inherited:  # an upgrade from --reuseport to a shared socket
        sock.close()
    return [listener] * args.workers


class Worker:
    """A worker process, as its parent sees it."""

    def __init__(self, pid: int, slot: int, generation: int) -> None:
        self.pid = pid
        self.slot = slot  # the listening socket it accepts on: Supervisor.listeners[slot]
        self.generation = generation  # the reload it was started for (each SIGHUP is one more)
        self.retiring = False  # told to stop (a reload), or stopping of itself (--max-requests)


class Supervisor:
    """The parent: --workers workers accepting at every moment, whatever the signals ask of them.

    Its events, a method each: a worker has exited (reap), a worker has served
    --max-requests clients (read_notices), SIGHUP (reload), SIGUSR2
    (start_upgrade), the new copy is ready (hand_over), a stop signal. Every
    worker accepts on one listening socket, its slot's: the shared listener in
    every slot, or with --reuseport a socket per slot. The parent holds every
    slot's socket for the server's whole life, so that a worker's replacement
    inherits the queue its predecessor left (see open_reuseport_sockets()).
    """

    def __init__(self, listeners: list[socket.socket], signals: socket.socket, args: argparse.Namespace) -> None:
        self.listeners = listeners
        self.signals = signals
        self.args = args
        # Set by hand_over(): from then on the sockets are the new copy's, and
        # a stop signal must not shut them down under its workers.
        self.handed_over = False
        # Whether a stop shuts the sockets down (stop_listening()'s exception:
        # not systemd's). An upgrade's new copy is handed them as systemd would
        # hand them, and takes them for its own once it has said it is ready.
        self.owns_sockets = not isinstance(listeners[0], PassedSocket)
        self.upgraded = os.environ.pop(OWN_SOCKETS, None) == "1"
        self.stopping = False  # set by the stop signals' handler, wherever the loop is
        for signum in STOP_SIGNALS:
            signal.signal(signum, self.stop_listening)
        for sock in listeners:
            sock.setblocking(False)  # a worker that loses the race for a client must not block
        # The workers' lifeline: a socket pair whose first end only the parent
        # keeps. However the parent dies (SIGKILL, the OOM killer, a crash), the
        # kernel closes that end, and each worker reads the end of a stream on
        # the other: it stops accepting and exits, within the bounds of the
        # client it serves. Without it, orphaned workers served on with no one
        # to stop them. (gunicorn's workers compare os.getppid() with their
        # parent's pid at every wake-up; a socket needs no wake-up to be
        # noticed.) The other way, a worker's notices: its pid and a newline
        # when it has served --max-requests clients.
        self.lifeline = socket.socketpair()
        self.lifeline[0].setblocking(False)
        self.notices = b""
        self.selector = selectors.DefaultSelector()
        self.selector.register(signals, selectors.EVENT_READ)
        self.selector.register(self.lifeline[0], selectors.EVENT_READ)
        self.workers: dict[int, Worker] = {}
        self.generation = 0
        self.upgrade: Upgrade | None = None

    def stop_listening(self, signum: int, frame: object) -> None:
        """The stop signals' handler: every socket refuses new connections at once (see stop_signals())."""
        self.stopping = True
        if not self.handed_over:
            for sock in unique(self.listeners):
                if self.owns_sockets:
                    with contextlib.suppress(OSError):  # as in stop_listening()
                        sock.shutdown(socket.SHUT_RD)
                else:
                    stop_listening(sock)

    def run(self) -> None:
        try:
            self.fill()
        except OSError as exc:  # fork() failed, as in fill() later
            self.stop()
            raise SystemExit(f"cannot start {self.args.workers} workers: {exc.strerror or exc}") from None
        log.info("started %d workers", len(self.workers))
        notify_ready()
        # The old copy hands over as soon as it reads that (or has died): a
        # stop from here on is the server's stop.
        self.owns_sockets = self.owns_sockets or self.upgraded
        while not self.stopping:
            received = self.wait()
            if self.stopping:
                break
            if signal.SIGHUP in received:
                self.generation += 1
                log.info("reload: replacing the workers one by one")
            if signal.SIGUSR2 in received:
                self.start_upgrade()
            self.reap()
            if self.upgrade is not None and self.upgrade.ready and self.hand_over():
                break
            if not all(listening(sock) for sock in unique(self.listeners)):
                # Shut down by another process that holds it (a new copy
                # stopped before it was ready): workers that fail at once,
                # replaced at once, would spin.
                log.warning("a listening socket was shut down by another process: stopping")
                break
            try:
                self.fill()
            except OSError as exc:
                # fork() failed: EAGAIN at a limit on processes (ulimit -u, a
                # cgroup's pids.max, systemd's TasksMax), or ENOMEM. The parent
                # must not die of it: its workers would serve on, orphaned, with
                # no one to stop them. It serves with fewer, and tries again.
                running = f"{len(self.accepting())} of {self.args.workers} running"
                log.warning("cannot start a worker (%s): %s", exc.strerror or exc, running)
        self.stop()

    def wait(self) -> bytes:
        """Block until something happens; return the signals that came (a byte each, its number).

        For a second at most while a slot lacks its worker or a reload is
        under way (fork() may have failed), and no later than an upgrade's
        deadline.
        """
        timeout = None
        if len(self.accepting()) < len(self.listeners) or self.outdated():
            timeout = 1.0
        if self.upgrade is not None:
            timeout = min(timeout or math.inf, max(0.0, self.upgrade.deadline - time.monotonic()))
        ready = [key.fileobj for key, _ in self.selector.select(timeout)]
        if self.upgrade is not None:
            if self.upgrade.notify in ready:
                self.upgrade.read_notify()
            elif time.monotonic() >= self.upgrade.deadline:
                log.warning("upgrade failed: %s", self.upgrade.give_up())
                self.end_upgrade()
        return self.signals.recv(4096) if self.signals in ready else b""

    def accepting(self) -> list[Worker]:
        return [worker for worker in self.workers.values() if not worker.retiring]

    def outdated(self) -> list[Worker]:
        """The workers a reload still has to replace."""
        return [worker for worker in self.accepting() if worker.generation < self.generation]

    def fill(self) -> None:
        """Give each slot an accepting worker; then replace each outdated one: the new one first, then the old stops.

        So a reload never has fewer than --workers accepting. A forked worker
        accepts at once: it holds its slot's listening socket from fork() on,
        and connections wait in that socket's queue until it calls accept().
        """
        for slot in range(len(self.listeners)):
            if not any(worker.slot == slot for worker in self.accepting()):
                self.start_worker(slot)
        outdated = self.outdated()
        for old in outdated:
            new = self.start_worker(old.slot)
            self.retire(old)
            log.info("worker %d replaces worker %d", new.pid, old.pid)
        if outdated and not self.outdated():
            log.info("reload: all %d workers replaced", len(self.listeners))

    def start_worker(self, slot: int) -> Worker:
        pid = start_worker(self.listeners[slot], self.signals, self.lifeline, self.args)
        worker = self.workers[pid] = Worker(pid, slot, self.generation)
        return worker

    def retire(self, worker: Worker) -> None:
        """Tell a worker to finish its client and exit."""
        worker.retiring = True
        try:
            os.kill(worker.pid, signal.SIGTERM)
        except ProcessLookupError:  # exited already; reap() will see it
            pass

    def read_notices(self) -> None:
        try:
            self.notices += self.lifeline[0].recv(4096)
        except BlockingIOError:
            return
        *lines, self.notices = self.notices.split(b"\n")
        for line in lines:
            worker = self.workers.get(int(line))
            if worker is not None and not worker.retiring:
                worker.retiring = True  # fill() starts its replacement
                log.info("worker %d has served --max-requests clients: replacing it", worker.pid)

    def reap(self) -> None:
        exited = exited_children()
        # After waitpid(), not before: a worker's notice comes before its exit,
        # so a worker collected here has had its say, and is no worker lost.
        self.read_notices()
        for pid, status in exited:
            if self.upgrade is not None and pid == self.upgrade.pid:
                log.warning("upgrade failed: the new copy %s before it was ready: still serving", describe(status))
                self.end_upgrade()
                continue
            worker = self.workers.pop(pid, None)
            if worker is None:  # a new copy that was given up on
                continue
            if worker.retiring:
                log.info("worker %d %s", pid, describe(status))
            else:
                log.warning("worker %d %s: starting another", pid, describe(status))

    def start_upgrade(self) -> None:
        if self.upgrade is not None:
            log.warning("upgrade: %d is starting already: SIGUSR2 ignored", self.upgrade.pid)
            return
        try:
            self.upgrade = Upgrade(unique(self.listeners), self.owns_sockets)
        except OSError as exc:
            log.warning("upgrade failed: cannot start a new copy (%s): still serving", exc.strerror or exc)
            return
        self.selector.register(self.upgrade.notify, selectors.EVENT_READ)
        log.info("upgrade: started a new copy of %s, %d; waiting for it to be ready", sys.argv[0], self.upgrade.pid)

    def end_upgrade(self) -> None:
        assert self.upgrade is not None
        self.selector.unregister(self.upgrade.notify)
        self.upgrade.close()
        self.upgrade = None

    def hand_over(self) -> bool:
        """The new copy is ready: this server stops as at SIGTERM, but its sockets listen on, the new copy's now.

        False if a stop signal came first: its handler may have shut the
        sockets down already, and the stop is for the new copy too.
        """
        assert self.upgrade is not None
        self.handed_over = True  # from here on, the handler leaves the sockets alone
        if self.stopping:
            self.handed_over = False
            return False
        log.info("upgrade: %d is ready: this server stops, leaving the sockets to it", self.upgrade.pid)
        self.end_upgrade()
        return True

    def stop(self) -> None:
        """Stop every worker (each finishes its client), and kill a new copy not yet ready; wait for them all."""
        if not self.handed_over:  # the handler may have run while the sockets were the new copy's
            self.stop_listening(signal.SIGTERM, None)
        # Ctrl+C reaches the workers directly (they share the terminal's process
        # group); a SIGTERM sent to the parent alone is passed on here.
        for worker in self.workers.values():
            self.retire(worker)
        waiting = set(self.workers)
        if self.upgrade is not None:
            # Killed, as at the upgrade's time-out (Upgrade.give_up()): its
            # workers finish their clients and exit at their lifeline's end, as
            # at a stop. A SIGTERM would be waited for, and a new copy that
            # hangs before its READY=1 (an import that blocks) held this stop
            # for as long as it hung.
            os.kill(self.upgrade.pid, signal.SIGKILL)
            waiting.add(self.upgrade.pid)
        while waiting:
            exited = exited_children(block=True)
            if not exited:  # no child left at all
                break
            for pid, _ in exited:
                waiting.discard(pid)
        self.workers.clear()
        if self.upgrade is not None:
            self.end_upgrade()

    def close(self) -> None:
        """Close this process's sockets; the listener is main()'s to close."""
        for sock in unique(self.listeners)[1:]:
            sock.close()
        self.lifeline[0].close()
        self.lifeline[1].close()
        self.selector.close()


def unique(sockets: list[socket.socket]) -> list[socket.socket]:
    """Each socket once, in their order: the shared listener is in every slot."""
    return list(dict.fromkeys(sockets))


def listening(listener: socket.socket) -> bool:
    """Whether the socket listens still (Linux's SO_ACCEPTCONN; elsewhere, as long as it is open)."""
    try:
        return bool(listener.getsockopt(socket.SOL_SOCKET, getattr(socket, "SO_ACCEPTCONN", 30)))
    except OSError:  # closed, or no such option here
        return listener.fileno() >= 0


def open_reuseport_sockets(listener: socket.socket, count: int, inherited: list[socket.socket]) -> list[socket.socket]:
    """count sockets listening on the listener's address, the listener first, each with SO_REUSEPORT.

    The kernel spreads new connections across them by a hash of the
    connection's addresses and ports. Each joins the group as it listens; each
    queue is its own: a connection hashed to one socket waits for that socket's
    worker, even when the others are idle. The trap is at a socket's end.
    When a socket of the group closes, Linux resets the connections in its
    queue (unless net.ipv4.tcp_migrate_req is on, 5.14 and later); and while it
    is open with no one accepting, it still takes its share of new ones. So a
    worker that opened its own socket cannot stop (at a reload, at
    --max-requests) without losing the clients queued behind it: tried here,
    a new socket for each new worker, the old one's closed when it stopped,
    three reloads under a load of 50 in flight reset 91 of 1,500 requests, and
    stranded 300 more until their 10 s time-out (other workers, forked while
    it was open, held copies of it). Accepting until the queue is empty before
    closing leaves a window all the same. So the parent opens them all and
    keeps them for the server's life: a worker accepts on its slot's socket,
    and its replacement takes over the same socket, queue and all. An upgrade
    hands every one of them to the new copy (Upgrade), for the same reason.

    SO_REUSEPORT set on the listener after listen() still counts: Linux puts it
    in the group when the next socket binds. Every socket of a group must
    belong to the same user: another user cannot bind the port to steal a share.
    """
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sockets = [listener, *inherited[: count - 1]]
    for extra in inherited[count - 1 :]:  # fewer workers than before the upgrade
        extra.close()  # (what its queue holds is reset: the one case left)
    while len(sockets) < count:
        sock = socket.socket(listener.family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if listener.family == socket.AF_INET6:  # "::" serves IPv4 too, or not, as the listener does
                v6only = listener.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY)
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, v6only)
            sock.bind(listener.getsockname())
            sock.listen(BACKLOG)
        except OSError:
            sock.close()
            for opened in sockets[1:]:
                opened.close()
            raise
        sockets.append(sock)
    return sockets


def inherited_reuseport_sockets(listener: socket.socket) -> list[socket.socket]:
    """The --reuseport sockets an upgrade handed over beside the listener (Upgrade), on descriptors 4 and up."""
    count = int(os.environ.pop(REUSEPORT_FDS, "0"))
    sockets = []
    for fd in range(LISTEN_FDS_START + 1, LISTEN_FDS_START + 1 + count):
        sock = PassedSocket(fileno=fd)  # as the listener: see stop_listening()
        sock.set_inheritable(False)  # as the listener: see passed_listener()
        sockets.append(sock)
        if sock.getsockname() != listener.getsockname():
            for inherited in sockets:
                inherited.close()
            raise OSError(f"descriptor {fd} is not a socket on the listener's address")
    return sockets


class Upgrade:
    """A new copy of the server, started from the script on disk (SIGUSR2), serving on this one's sockets.

    It is handed the listening sockets as systemd hands them to a server it
    starts (socket activation): the listener on descriptor 3, LISTEN_FDS=1,
    LISTEN_PID its pid; the --reuseport sockets follow on 4 and up, their
    number in PREFORK_REUSEPORT_FDS (nginx passes its sockets the same way, in
    a variable it names NGINX), and PREFORK_OWN_SOCKETS says whether they are
    the server's own or systemd's (Supervisor). It tells this server that it
    is up, its workers started, the way a Type=notify service tells systemd:
    "READY=1" in a datagram to the socket NOTIFY_SOCKET names. Until then this server serves
    as before; if the new copy exits first, or takes longer than
    UPGRADE_TIMEOUT, this one logs why and serves on.
    """

    def __init__(self, sockets: list[socket.socket], own: bool) -> None:
        # A directory only this user can enter: no other user can say READY.
        self.directory = tempfile.mkdtemp(prefix="prefork-")
        self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            self.notify.bind(os.path.join(self.directory, "notify"))
            self.pid = start_process(lambda: exec_new_copy(sockets, own, self.notify.getsockname()))
        except OSError:
            self.close()
            raise
        self.deadline = time.monotonic() + UPGRADE_TIMEOUT
        self.ready = False

    def read_notify(self) -> None:
        message = self.notify.recv(4096)
        if b"READY=1" in message.split(b"\n"):
            self.ready = True

    def give_up(self) -> str:
        """Kill a new copy that takes too long; say so (its workers, if any, exit as at their parent's death)."""
        try:
            os.kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        return f"the new copy {self.pid} was not ready within {UPGRADE_TIMEOUT:g} s: killed; still serving"

    def close(self) -> None:
        self.notify.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(self.directory, "notify"))
        os.rmdir(self.directory)


def exec_new_copy(sockets: list[socket.socket], own: bool, notify_socket: str) -> NoReturn:
    """In a forked child: run the script from disk again, on the sockets given, as Upgrade says."""
    try:
        import fcntl  # Unix only, as fork() is

        # dup2() onto 3 closes what held 3, perhaps a socket still to be
        # moved: so each moves above the range first.
        above = LISTEN_FDS_START + len(sockets)
        moved = [fcntl.fcntl(sock.fileno(), fcntl.F_DUPFD_CLOEXEC, above) for sock in sockets]
        for number, fd in enumerate(moved, LISTEN_FDS_START):
            os.dup2(fd, number)  # inheritable, unlike every descriptor Python opens (PEP 446)
        environment = dict(os.environ, LISTEN_FDS="1", LISTEN_PID=str(os.getpid()), NOTIFY_SOCKET=notify_socket)
        environment[REUSEPORT_FDS] = str(len(sockets) - 1)
        environment[OWN_SOCKETS] = "1" if own else "0"
        # exec() keeps the signal mask, and fork() blocked these.
        for signum in (*STOP_SIGNALS, *DEPLOY_SIGNALS):
            signal.signal(signum, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, (*STOP_SIGNALS, *DEPLOY_SIGNALS))
        os.execve(sys.executable, [sys.executable, *sys.argv], environment)
    except OSError as exc:
        print(f"cannot start {sys.executable}: {exc.strerror or exc}", file=sys.stderr, flush=True)
    finally:
        os._exit(127)


def notify_ready() -> None:
    """Say "READY=1" to whoever started this server and asked (NOTIFY_SOCKET): an upgrade, or systemd's Type=notify."""
    address = os.environ.pop("NOTIFY_SOCKET", "")
    if not address:
        return
    if address.startswith("@"):  # Linux's abstract namespace, as systemd writes it
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.connect(address)
            sock.sendall(b"READY=1")
    except OSError as exc:
        log.warning("cannot say READY=1 to NOTIFY_SOCKET %s: %s", address, exc.strerror or exc)


def start_process(child: Callable[[], NoReturn]) -> int:
    """os.fork(), the child running child(); the signals the parent acts on held off across it.

    A new process runs with the parent's handlers until it has set up its
    own: a SIGTERM in that moment would be lost (and would stop the shared
    listener, the parent's job), and a SIGHUP sent to the whole process group
    would come to the parent twice (through the child's copy of its signal
    socket). Blocked across fork(), a signal waits instead, and arrives when
    the child unblocks it, ready.
    """
    held = (*STOP_SIGNALS, *DEPLOY_SIGNALS)
    signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        pid = os.fork()
        if pid == 0:
            child()
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, held)
    return pid


def start_worker(
    listener: socket.socket,
    signals: socket.socket,
    lifeline: tuple[socket.socket, socket.socket],
    args: argparse.Namespace,
) -> int:
    return start_process(lambda: run_worker(listener, signals, lifeline, args))


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
    """The worker: the sync server's loop on its slot's socket, until a stop, --max-requests or the parent's end."""
    parent_signals.close()
    parents_end, own_end = lifeline
    parents_end.close()  # or the worker would keep its own lifeline alive
    let_go_of_the_parents_self_pipe()
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    # A self-pipe of the worker's own. It leaves the listener alone: the parent
    # stops it for all (a worker sent SIGTERM alone must not stop the others).
    signals = stop_signals(None)
    # A reload or an upgrade sent to the whole process group is the parent's
    # to carry out; their default action would end the worker mid-reply.
    for signum in DEPLOY_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, (*STOP_SIGNALS, *DEPLOY_SIGNALS))
    numbers = itertools.count(1)
    lingering = Lingering(listener, signals, own_end)
    try:
        while (conn := accept_client(listener, signals, lingering)) is not None:
            number = next(numbers)
            handle_client(conn, number, args, lingering.add)
            if number == args.max_requests:
                # Said before the lingering closes finish, which may take
                # LINGER_SECONDS: the replacement accepts meanwhile.
                tell_the_parent(own_end)
                break
        lingering.finish()
    except Exception:
        log.exception("worker failed")
        os._exit(1)
    # os._exit(), not sys.exit(): the worker must not run the parent's clean-up
    # on its way out (the with-blocks up the stack, atexit handlers).
    os._exit(0)


def tell_the_parent(own_end: socket.socket) -> None:
    """This worker has served --max-requests clients and stops accepting: its pid, a line on the lifeline."""
    try:
        own_end.sendall(b"%d\n" % os.getpid())
    except OSError:  # the parent has gone: nothing to replace this worker
        pass


def exited_children(block: bool = False) -> list[tuple[int, int]]:
    """Collect the children that have exited, (pid, wait status) each; with block, wait for one first."""
    exited = []
    while True:
        try:
            pid, status = os.waitpid(-1, 0 if block else os.WNOHANG)
        except ChildProcessError:  # no child left
            break
        if pid == 0:  # none has exited yet
            break
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
