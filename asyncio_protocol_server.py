#!/usr/bin/env python3
"""asyncio one layer down: transports and protocols, callbacks instead of a coroutine per connection.

asyncio_server.py uses streams, asyncio's top layer: a coroutine per client
reads like the sync server, and under it StreamReader and StreamWriter turn
the loop's callbacks into awaits. This script talks to the layer beneath, the
one uvicorn and aiohttp are built on: the loop calls a Protocol object's
methods as events happen (connection_made, data_received, eof_received,
connection_lost), and the protocol writes through its transport.

What the streams layer costs, and this one saves: per client a task and its
coroutine frames, a StreamReader with a buffer of its own (every chunk is
copied into it, then out again), a StreamWriter, and a future for every await,
each resumed through the loop. Here a chunk goes from the transport straight to
data_received(), and a timer calls a method. With --delay 0 that is about a
third more requests per second.

What callbacks cost the reader: the story of one connection is no longer a
function read top to bottom, but a state machine (reading, working, writing,
lingering) spread over methods, as in selectors_server.py; a timeout is a timer
you start and cancel yourself, and an exception in a callback does not unwind
anything for you.

What each part would be in asyncio_server.py:
  ReverseProtocol                the task running handle_client(), its reader and writer
  data_received()                await reader.read() in read_request()
  pause_reading()                the StreamReader's limit: the kernel holds what comes next
  Deadlines.set()                within() and asyncio.sleep()
  transport.write()              writer.write()
  resume_writing()               await writer.drain() returning
  transport.write_eof()          writer.write_eof()

Computing clients (--cpu) stop the loop here too, unless --cpu-workers hands
the work to a process pool: run_in_executor() returns a future, and its done
callback takes the connection on.

The approach is serve() and ReverseProtocol; the rest is the skeleton the
servers share.

Standard library only; CPython 3.8 to 3.15.

Try it:  python asyncio_protocol_server.py 8000
         python client.py 8000 --clients 1000    # ~5 s, one thread
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import errno
import gc
import itertools
import logging
import math
import multiprocessing
import multiprocessing.connection
import os
import signal
import socket
import sys
import threading
import time
from typing import Any, Callable

DELIMITER = b"!"
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
# A bound on --cpu-workers: a typing slip of a few zeros must not fork the
# machine to its knees before the first error.
MAX_PROCESSES = 1024
# Allocations between two passes of the cycle collector (the default is 700).
# Every connection alive is a task, a transport, buffers and futures, and each
# tenth pass reaches the older generations and walks all of them: with 10,000
# clients at once, again and again. 10,000 clients with --delay 1 took 2.9 to
# 3.4 s at the default, 2.4 to 2.5 s at this threshold, the same as with no
# collector at all. Reference counting still frees ordinary garbage at once;
# only reference cycles wait a little longer.
GC_THRESHOLD = 10_000

log = logging.getLogger("asyncio_protocol_server")


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
    with listener:
        asyncio.run(serve(listener, args))
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
    parser.add_argument("--delay", type=seconds, default=5.0, help="simulated work per request, in seconds")
    parser.add_argument(
        "--cpu", type=seconds, default=0.0, help="CPU time spent computing per request (holding the GIL), in seconds"
    )
    parser.add_argument(
        "--cpu-workers",
        type=count,
        default=0,
        help=f"processes that do the --cpu work, up to {MAX_PROCESSES}; 0: the event loop does it",
    )
    parser.add_argument(
        "--timeout", type=positive_seconds, default=10.0, help="seconds to send a request, and again to read the reply"
    )
    parser.add_argument(
        "--max-request", type=positive_int, default=MAX_REQUEST, help="largest request in bytes, '!' included"
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="no per-client log lines")
    args = parser.parse_args(argv)
    if args.cpu_workers > MAX_PROCESSES:
        parser.error(f"--cpu-workers: at most {MAX_PROCESSES} processes, not {args.cpu_workers}")
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


def count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, not {value}")
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


async def serve(listener: socket.socket, args: argparse.Namespace) -> None:
    """Serve every client from one event loop until SIGINT or SIGTERM."""
    raise_open_file_limit()
    gc.set_threshold(GC_THRESHOLD)
    stop = stop_signals(listener)
    log_accept_errors_briefly(listener)
    numbers = itertools.count(1)
    try:
        workers = Workers(args.cpu_workers) if args.cpu_workers else None
    except OSError as exc:  # a limit on tasks: multiprocessing starts a process of its own at once
        raise SystemExit(f"cannot start the --cpu worker processes: {exc.strerror or exc}") from None
    connections = OpenConnections()
    deadlines = Deadlines()

    def on_connect() -> ReverseProtocol:
        return ReverseProtocol(next(numbers), args, workers, connections, deadlines)

    loop = asyncio.get_running_loop()
    # create_server() calls listen() again, with a queue of 100 unless told.
    server = await loop.create_server(on_connect, sock=listener, backlog=BACKLOG)
    # Only now, with the signal handlers in place: a Ctrl+C that comes right
    # after the ready line must stop the server cleanly, not with a traceback.
    print_ready_line(f"Listening on {format_address(*listener.getsockname()[:2])}")
    await stop.wait()
    stop_accepting(listener)
    # Connections accepted a moment ago get their transport and protocol in a
    # task of asyncio's own: let those finish, then wait for every connection.
    while pending := asyncio.all_tasks() - {asyncio.current_task()}:
        await asyncio.wait(pending)
    server.close()
    await connections.none.wait()
    if workers is not None:
        workers.shutdown()


class WorkFailed(Exception):
    """The --cpu work could not be run (see Workers); the message says why."""


def stop_accepting(listener: socket.socket) -> None:
    """Refuse new connections at once (stop_listening()), and have the loop accept no more.

    server.close() would do both, but the loop may have accepted connections
    a moment ago whose transports it makes in tasks of its own, and a closed
    server refuses them (Server._attach()): their sockets were left for the
    garbage collector to close, with no reply, and with a traceback in the log
    on Python 3.15 (a closed server's _detach()). So the server is closed only
    once those tasks are done.
    """
    stop_listening(listener)
    try:
        asyncio.get_running_loop().remove_reader(listener)
    except NotImplementedError:  # Windows' proactor loop: server.close() does it
        pass


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


def listening(listener: socket.socket) -> bool:
    """Whether the socket listens still (Linux's SO_ACCEPTCONN; elsewhere, as long as it is open)."""
    try:
        return bool(listener.getsockopt(socket.SOL_SOCKET, getattr(socket, "SO_ACCEPTCONN", 30)))
    except OSError:  # closed, or no such option here
        return listener.fileno() >= 0


def log_accept_errors_briefly(listener: socket.socket) -> None:
    """Report asyncio's failed accept() in one line, at most once a second; after a stop, not at all.

    At the open-file limit (EMFILE) asyncio stops accepting for a second, as
    it should, but first it tries accept() again as many times as the backlog
    (4,096 here) and logs each failure with its traceback (CPython gh-151615,
    fixed in 2026): 19,000 tracebacks in 3 s, measured, which fills a disk.
    And a listener that a stop signal has shut down (stop_signals()) reads as
    ready, and accept() on it fails with EINVAL, until the loop gets to the
    stop and leaves the listener alone (stop_accepting()). Each EMFILE
    failure also leaves a timer to accept again a second later, which the
    stop does not cancel: one that goes off once the stop has closed the
    listener fails on its descriptor, -1 (ValueError), with a traceback.
    """
    loop = asyncio.get_running_loop()
    last = -math.inf

    def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        nonlocal last
        exc = context.get("exception")
        if isinstance(exc, OSError) and exc.errno == errno.EINVAL and not listening(listener):
            return  # the stop, on its way
        if isinstance(exc, ValueError) and listener.fileno() < 0 and "_start_serving" in context.get("message", ""):
            return  # a second too late: the stop has closed the listener
        if context.get("message") != "socket.accept() out of system resource":
            loop.default_exception_handler(context)
        elif loop.time() - last >= 1.0:
            last = loop.time()
            log.warning("accept failed: %s; trying again in 1 s", exc)

    loop.set_exception_handler(handler)


class Workers:
    """The --cpu worker processes: a process pool, replaced when it breaks.

    When a worker process dies (the OOM killer, a crash in C code, a kill),
    ProcessPoolExecutor marks the whole pool broken: the work in progress
    fails with BrokenProcessPool, and so does every later submit(), for good.
    Every request after that failed, each with a traceback, until a restart.
    Here the first request to meet a broken pool replaces it, and each piece
    of work that was lost runs once more, on the new pool.

    The other way round, when this server dies (SIGKILL, the OOM killer), its
    workers must not live on: nothing would ever stop them, nor the forkserver
    and resource tracker that multiprocessing keeps beside them (seen alive
    long after the server). So each worker gets the receiving end of a pipe,
    its lifeline, whose sending end only this process holds (see
    prepare_worker()).
    """

    def __init__(self, count: int) -> None:
        self.count = count
        self.lifeline, self.sender = multiprocessing.Pipe(duplex=False)
        try:
            self.pool = process_pool(count, self.lifeline)
        except BaseException:
            self.close_lifeline()
            raise
        self.retired: list[concurrent.futures.Executor] = []  # replaced pools

    def run(self, function: Callable[[float], None], argument: float) -> asyncio.Future[None]:
        """Run function(argument) in a worker: a future, failed with WorkFailed if it could not be run."""
        loop = asyncio.get_running_loop()
        outcome: asyncio.Future[None] = loop.create_future()

        def attempt(retries: int) -> None:
            pool = self.pool
            try:
                done = loop.run_in_executor(pool, function, argument)
            except Exception as exc:  # broken already, or no process could be started
                failed(pool, exc, retries)
                return
            done.add_done_callback(lambda done: finished(done, pool, retries))

        def finished(done: asyncio.Future[None], pool: concurrent.futures.Executor, retries: int) -> None:
            exc = done.exception()
            if exc is None:
                outcome.set_result(None)
            elif isinstance(exc, concurrent.futures.BrokenExecutor):
                failed(pool, exc, retries)
            else:
                outcome.set_exception(exc)  # a bug in the function: its traceback is worth seeing

        def failed(pool: concurrent.futures.Executor, exc: Exception, retries: int) -> None:
            if pool is self.pool:  # the first to see it broken replaces it
                log.warning("the --cpu worker processes failed (%s): starting new ones", exc)
                # A broken pool has shut itself down already: its thread failed
                # the work and ended the workers. shutdown() would only drop its
                # queues now, and leave their last references to that thread,
                # which ends a moment later. On the free-threaded build an object
                # let go by another thread than the one that made it is freed by
                # its maker, this thread, at its next check (biased reference
                # counting): once that was inside multiprocessing's resource
                # tracker, registering the new pool's semaphores, and the old
                # ones' finalizers re-entered it ("ResourceTracker called
                # reentrantly", five times).
                if not isinstance(exc, concurrent.futures.BrokenExecutor):
                    pool.shutdown(wait=False)  # the loop must not wait for work still running there
                # Kept until shutdown(), which frees it here, at a known point:
                # on 3.8 a pool collected before its own thread had ended also
                # made that thread write to a closed pipe.
                self.retired.append(pool)
                try:
                    self.pool = process_pool(self.count, self.lifeline)
                except OSError as error:  # none can start (a limit on tasks): the next request tries again
                    exc, retries = error, 0
            if retries:
                attempt(retries - 1)
            else:
                outcome.set_exception(WorkFailed(f"the --cpu work could not run ({exc}): closed"))

        attempt(1)
        return outcome

    def shutdown(self) -> None:
        for pool in (*self.retired, self.pool):
            pool.shutdown()  # every computation has finished: the workers exit
        self.close_lifeline()

    def close_lifeline(self) -> None:
        self.lifeline.close()
        self.sender.close()


def process_pool(
    workers: int, lifeline: multiprocessing.connection.Connection
) -> concurrent.futures.ProcessPoolExecutor:
    """Worker processes for the --cpu work, started the safe way.

    fork() copies only the thread that calls it. A lock that another thread
    held at that instant (the executor's own management thread counts) stays
    locked forever in the child: a pool that forked its workers from this
    server hung on its first request in 2 of 3 tries. 'forkserver' forks them
    from a small server process that runs no threads, which is why Python 3.14
    made it Linux's default; where it does not exist (Windows), 'spawn' starts
    each from a fresh interpreter. Either way the worker imports this file as
    a module, which is why importing it has no side effects.
    """
    method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
    context = multiprocessing.get_context(method)
    return concurrent.futures.ProcessPoolExecutor(
        workers, mp_context=context, initializer=prepare_worker, initargs=(lifeline,)
    )


def prepare_worker(lifeline: multiprocessing.connection.Connection) -> None:
    """Set up a --cpu worker process: deaf to stop signals, and gone when the server is.

    Ctrl+C reaches the whole process group, workers included. The server
    decides: it lets the work in progress finish, then closes the pool. And
    when the server dies, the kernel closes its end of the lifeline: a thread
    here, blocked reading the other end, reads the end of the stream and ends
    the process, within a few milliseconds even while it computes (the GIL
    changes hands every 5 ms). Polling os.getppid(), as gunicorn's workers do,
    would not do here: a worker's parent is the forkserver, which outlives it.
    """
    ignore_stop_signals()

    def exit_when_the_server_has_gone() -> None:
        try:
            lifeline.recv_bytes()  # nothing is ever sent: this returns only at the end
        except (EOFError, OSError):
            pass
        os._exit(0)

    threading.Thread(target=exit_when_the_server_has_gone, daemon=True).start()


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


def stop_signals(listener: socket.socket) -> asyncio.Event:
    """Return an event that is set when SIGINT or SIGTERM arrives; stop the listener at once.

    loop.add_signal_handler() would run the stop inside the loop, when the
    loop gets to it: after the computation in progress (--cpu, in the loop),
    a second or more, while the listener went on queueing new clients, which
    the loop then accepted and served (12 of 12 that came 0.1 s after the
    signal, and the stop took 14 s). A Python handler runs in the main thread
    between two bytecodes of whatever it runs, a computation in the loop
    included, and it does two things that take no lock: it stops the listener
    (stop_listening()), and it hands the rest to the loop with
    call_soon_threadsafe(), whose byte on the loop's self-pipe also wakes a
    loop asleep in select(). That is the self-pipe the loop's own signal
    handling would use, and the way asyncio itself works on Windows, which has
    no add_signal_handler().
    """
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def handler(signum: int, frame: object) -> None:
        stop_listening(listener)
        if not loop.is_closed():  # not a signal after serve(), before main() ignores them
            loop.call_soon_threadsafe(stop.set)

    for signum in STOP_SIGNALS:
        signal.signal(signum, handler)
    return stop


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


class Deadlines:
    """loop.call_later() for waits of equal length: one loop timer per length, not one per wait.

    Every client gets the same --timeout to send its request, the same --delay,
    the same linger. Waits of one length end in the order they began, so a dict
    per length (dicts keep their insertion order) is a queue already sorted by
    deadline, and one loop timer watching its first entry serves them all.
    Starting a wait is a dict insert and ending one a delete, both O(1). With
    call_later(), each would push a TimerHandle onto the loop's heap, O(log n)
    comparisons run in Python, and a cancelled one would stay there until the
    loop cleans the heap. At 50 clients in flight on Python 3.8, the timers
    cost the protocol server 13% of its throughput and the streams server 19%
    (measured with none at all), and this takes back about half of that.
    (libev's manual gives the same trick for equal timeouts: a list, and one
    timer.)
    """

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.queues: dict[float, dict[object, tuple[float, Callable[[], object]]]] = {}  # length: {key: ...}, in order
        self.timers: dict[float, asyncio.TimerHandle] = {}  # length: the loop timer for its first deadline
        self.length: dict[object, float] = {}  # key: the length it waits, one wait per key at a time

    def set(self, key: object, seconds: float, callback: Callable[[], object]) -> None:
        """callback() in this many seconds, instead of any wait key had."""
        self.clear(key)
        deadline = self.loop.time() + seconds
        self.queues.setdefault(seconds, {})[key] = (deadline, callback)
        self.length[key] = seconds
        if seconds not in self.timers:
            self.timers[seconds] = self.loop.call_at(deadline, self.expire, seconds)

    def clear(self, key: object) -> None:
        seconds = self.length.pop(key, None)
        if seconds is not None:
            del self.queues[seconds][key]

    def expire(self, seconds: float) -> None:
        del self.timers[seconds]
        queue = self.queues[seconds]
        now = self.loop.time()
        while queue:
            key, (deadline, callback) = next(iter(queue.items()))
            if deadline > now:  # the first still waiting: the timer moves to it
                # A callback above may have started a wait of this very length
                # (a --delay as long as the linger), and with it a timer for
                # its own, later deadline: one timer a length, at the first.
                superseded = self.timers.pop(seconds, None)
                if superseded is not None:
                    superseded.cancel()
                self.timers[seconds] = self.loop.call_at(deadline, self.expire, seconds)
                return
            self.clear(key)
            try:
                callback()
            except Exception as exc:  # a bug: reported as a failed callback is, and the rest still expire
                self.loop.call_exception_handler({"message": "a deadline's callback failed", "exception": exc})


class OpenConnections:
    """The connections that have a transport, and an event set while there are none: what shutdown waits for."""

    def __init__(self) -> None:
        self.open: set[ReverseProtocol] = set()
        self.none = asyncio.Event()
        self.none.set()

    def add(self, connection: ReverseProtocol) -> None:
        self.open.add(connection)
        self.none.clear()

    def discard(self, connection: ReverseProtocol) -> None:
        self.open.discard(connection)
        if not self.open:
            self.none.set()


class ReverseProtocol(asyncio.Protocol):
    """One client, from connection_made() to close(): reading, working, writing, lingering."""

    def __init__(
        self,
        number: int,
        args: argparse.Namespace,
        workers: Workers | None,
        connections: OpenConnections,
        deadlines: Deadlines,
    ) -> None:
        self.number = number
        self.args = args
        self.workers = workers
        self.connections = connections
        self.deadlines = deadlines
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport = None  # type: ignore[assignment]  # until connection_made()
        self.started = time.monotonic()
        self.state = "reading"
        self.request = bytearray()
        self.discarded = 0
        self.paused = False
        self.client_done = False  # the client has sent its end of stream

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        # Counted open from here, not when the loop makes the protocol: it
        # makes the protocol first, then the transport, and one it cannot make
        # calls neither connection_made() nor connection_lost(). After a stop
        # in the middle of a burst, the closed server refused the transports of
        # the last connections accepted (Server._attach()), and shutdown waited
        # for those protocols forever.
        self.connections.add(self)
        # One deadline for the whole request, fixed at connect: a client that
        # trickles a byte at a time does not extend it.
        self.set_timer(self.args.timeout)

    def set_timer(self, seconds: float) -> None:
        """The one wait that counts in the current state; on_timer() when it runs out."""
        self.deadlines.set(self, seconds, self.on_timer)

    def data_received(self, data: bytes) -> None:
        if self.state != "reading":  # after the '!': ignored, and bounded
            self.discarded += len(data)
            if self.discarded < LINGER_BYTES:
                return
            if self.state == "lingering":
                self.close(self.answered())
            elif not self.paused:  # still working or writing: let the kernel hold the rest
                self.transport.pause_reading()
                self.paused = True
            return
        # Search only the new chunk: rescanning the whole request each time
        # would make a large request cost O(n^2).
        end = data.find(DELIMITER)
        # The transport reads up to 256 KiB at a time: keep no more than the
        # limit, so memory stays bounded whatever arrives, and a request that
        # ends past the limit is refused whether its '!' came in this chunk or not.
        room = self.args.max_request - len(self.request)
        if 0 <= end < room:
            self.request += data[: end + 1]
            self.work()
            return
        self.request += data[:room]
        if len(self.request) >= self.args.max_request:
            self.close(f"sent {len(self.request)} bytes without {DELIMITER.decode()}: too large, closed")

    def work(self) -> None:
        """The simulated work: computing, then waiting, then the reply."""
        self.state = "working"
        self.deadlines.clear(self)
        if self.args.delay or self.workers is not None:
            # The reply will wait: what the client sends meanwhile is not ours
            # to read yet, and the kernel holds it, as it would hold a stream's
            # unread bytes. (Each pause and resume is a system call, so not
            # when the reply goes out in this very callback.)
            self.transport.pause_reading()
            self.paused = True
        if self.args.cpu and self.workers is None:
            compute(self.args.cpu)  # in the loop: every other client waits, accepting included
        elif self.args.cpu:
            # In a worker process: the loop goes on serving meanwhile.
            self.workers.run(compute, self.args.cpu).add_done_callback(self.computed)
            return
        self.wait()

    def computed(self, done: asyncio.Future[None]) -> None:
        if self.state != "working":  # the client went away meanwhile
            return
        exc = done.exception()
        if isinstance(exc, WorkFailed):
            self.close(str(exc))
        elif exc is not None:
            raise exc  # a bug: the loop reports it with its traceback
        else:
            self.wait()

    def wait(self) -> None:
        # Not even call_soon() when there is no delay: it costs a trip round the loop.
        if self.args.delay:
            self.set_timer(self.args.delay)  # then on_timer() replies
        else:
            self.reply()

    def reply(self) -> None:
        self.request.reverse()  # in place: no second copy of a large request
        self.state = "writing"
        self.transport.write(self.request)
        if not self.transport.get_write_buffer_size():
            self.close_gracefully()  # the kernel took it all at once
            return
        # The rest goes as the client reads. With the high-water mark at zero,
        # the transport calls pause_writing() now and resume_writing() once the
        # kernel has it all (the default marks would say so at 16 KiB left).
        self.transport.set_write_buffer_limits(high=0)
        self.set_timer(self.args.timeout)

    def resume_writing(self) -> None:
        # Not from inside this callback: the transport calls it from its own
        # write handler, which goes on to finish a close() begun meanwhile, and
        # would then report the connection lost twice (an error in the log).
        if self.state == "writing":
            self.loop.call_soon(self.close_gracefully)

    def close_gracefully(self) -> None:
        """FIN after the reply, then discard what the client sends until it closes.

        close() with unread input makes the kernel send RST, not FIN, and an
        RST makes the client's kernel throw away whatever of the reply it
        holds unread: over a 20 Mbit/s link, a 1 MB reply arrived cut to
        360-540 KB. So the connection lingers, a state like the others, cut
        off after LINGER_SECONDS (never beyond --timeout) or LINGER_BYTES.
        """
        if self.state != "writing":  # closed meanwhile
            return
        self.state = "lingering"
        try:
            self.transport.write_eof()  # shutdown(SHUT_WR): the buffer is empty
        except OSError:  # the client had gone (a reset came back): it has what it will get
            self.close(self.answered())
            return
        if self.client_done:  # it half-closed earlier: nothing more will come
            self.close(self.answered())
            return
        if self.paused:
            self.transport.resume_reading()
        self.set_timer(min(LINGER_SECONDS, self.args.timeout))

    def eof_received(self) -> bool:
        if self.state == "lingering":
            self.close(self.answered())  # the client has closed: nothing can be lost now
        elif self.state == "reading":
            self.close("disconnected before a complete request")
        # A client may half-close once it has sent its request (nc -N does):
        # True keeps the transport open for the reply. Otherwise, False lets
        # the transport close itself, as close() asked, with no second look
        # at its registration.
        self.client_done = True
        return self.state in ("working", "writing")

    def connection_lost(self, exc: Exception | None) -> None:
        # A reset, or the end of a close(). Either way the transport is gone.
        if self.state == "lingering":
            self.close(self.answered())
        elif self.state == "writing":
            self.close("disconnected before the whole reply was sent")
        elif self.state != "closed":
            self.close("disconnected before a complete request")

    def on_timer(self) -> None:
        if self.state == "working":  # the delay is over
            self.reply()
        elif self.state == "reading":
            self.close("sent no complete request in time: closed")
        elif self.state == "writing":
            self.transport.abort()  # drop what the client never read
            self.close("did not read the reply in time: closed")
        elif self.state == "lingering":  # the client had its reply, and its time to close
            self.close(self.answered())

    def answered(self) -> str:
        return f"answered {len(self.request)} bytes in {time.monotonic() - self.started:.3f} s"

    def close(self, outcome: str) -> None:
        if self.state == "closed":
            return
        self.state = "closed"
        self.deadlines.clear(self)
        self.transport.close()
        self.connections.discard(self)
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
