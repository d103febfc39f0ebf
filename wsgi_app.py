#!/usr/bin/env python3
"""A WSGI application, served by wsgiref: the split between server and application.

WSGI (PEP 3333) is the contract between a Python web application and the
server that runs it: the server parses HTTP and calls app(environ,
start_response) once per request; the application returns the body. Because
the application knows nothing of sockets, the same `app` below runs unchanged
under any WSGI server:

    python wsgi_app.py 8000                 wsgiref (stdlib), on a pool of threads
    gunicorn -w 4 wsgi_app:app              4 worker processes: every core
    waitress-serve --listen=127.0.0.1:8000 wsgi_app:app
                                            a thread pool, on Windows too

That is the way to scale: keep the application, change the server. wsgiref is
the reference implementation, for development: HTTP/1.0 (a connection per
request), no pipelining, no chunked request bodies (411). This script adds what
a server owes its application: each request within --timeout, a strict reading
of the request (StrictRequest: what request smuggling is made of gets 400),
100 Continue, and a clean stop. gunicorn or waitress, with nginx in front for
the internet, are what production uses.

Routes: GET / says hello; POST /reverse answers with the request body reversed
(at most 1 MiB, exactly Content-Length bytes read): by characters if it is
UTF-8 text, by bytes otherwise.

The approach is app() and PooledWSGIServer; the rest is the skeleton the
servers share, and strict HTTP.

Standard library only; CPython 3.8 to 3.15.

Try it:  python wsgi_app.py 8000
         curl -d 'hello' http://127.0.0.1:8000/reverse     # olleh
"""

from __future__ import annotations

import argparse
import http.server
import io
import itertools
import logging
import math
import os
import re
import signal
import socket
import sys
import threading
import time
from typing import Any, BinaryIO, Callable, Iterable, Iterator, Tuple
from wsgiref.simple_server import ServerHandler, WSGIRequestHandler, WSGIServer

MAX_BODY = 1024 * 1024  # POST /reverse reads no more than this
BACKLOG = max(socket.SOMAXCONN, 4096)
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
# Socket activation: the first descriptor systemd passes (sd_listen_fds(3)).
LISTEN_FDS_START = 3
# A bound on --threads, all started up front: each reserves a stack (8 MiB of
# address space on Linux), and 10**12 of them had the server spin at start.
# And each must end at the stop: on free-threaded 3.13 a thread's exit costs
# more the more threads are alive, and 10,000 idle threads took 13 s to end,
# 2,000 took 1.4-2 s, 1,000 0.4 s (3.11: 10,000 in 0.6 s).
MAX_THREADS = 1_000
MAX_SECONDS = 24 * 60 * 60.0  # the most any option in seconds takes (see seconds())
MIN_SECONDS = 0.001  # the least, but for 0 where it means none (see seconds())
# After a response, how long and how much a client may go on sending before the
# server closes anyway (see close_gracefully()): 2 s in all, enough for a client
# that reads its reply, and soon enough to free the thread or process. (nginx
# waits up to 5 s between reads, 30 s in all.)
LINGER_SECONDS = 2.0
LINGER_BYTES = 16 * 1024 * 1024
CHUNK_SIZE = 64 * 1024  # one recv() per chunk while discarding

# Request heads by RFC 9112, and no further: a request line of visible ASCII,
# header lines of a token, a colon and visible characters, each ending in CRLF.
# A bare CR or LF, obs-fold and NUL match neither. One quantifier a line: a
# line of spaces that fails must fail in one pass, not in one per space.
TOKEN = rb"[-!#$%&'*+.^_`|~0-9A-Za-z]+"  # RFC 9110 5.6.2: a method, a header name
REQUEST_LINE = re.compile(rb"(%s) ([!-~]+) HTTP/([0-9])\.([0-9])\r\n" % TOKEN)
HEADER_LINE = re.compile(rb"(%s):([\t !-~\x80-\xff]*)\r\n" % TOKEN)
MAX_LINE = 65536  # http.server's bounds: the bytes of one line, and the header lines of a request
MAX_HEADERS = 100
# A route handler takes the environ and returns (status, extra headers, body);
# app() does the WSGI part, so every handler is a plain function to test.
Response = Tuple[str, list, bytes]

log = logging.getLogger("wsgi_app")


def app(environ: dict, start_response: Callable) -> Iterable[bytes]:
    """The WSGI application: find the route, check the method, call the handler."""
    methods = ROUTES.get(environ.get("PATH_INFO") or "/")
    method = environ["REQUEST_METHOD"]
    if methods is None:
        status, headers, body = text("404 Not Found", "not found\n")
    elif method in methods:
        status, headers, body = methods[method](environ)
    elif method == "HEAD" and "GET" in methods:
        status, headers, body = methods["GET"](environ)  # the body is dropped below
    else:
        allowed = sorted({*methods, "HEAD"} if "GET" in methods else methods)
        status, headers, body = text("405 Method Not Allowed", f"use {' or '.join(allowed)}\n")
        headers.append(("Allow", ", ".join(allowed)))
    # Content-Length always: the client knows where the body ends, and the
    # server need not close the connection to say so.
    start_response(status, [*headers, ("Content-Length", str(len(body)))])
    return [b"" if method == "HEAD" else body]


def text(status: str, body: str) -> Response:
    return status, [("Content-Type", "text/plain; charset=utf-8")], body.encode()


def hello(environ: dict) -> Response:
    return text("200 OK", "Hello world!")


def reverse(environ: dict) -> Response:
    """The request body, reversed. Reads exactly CONTENT_LENGTH bytes, never more."""
    declared = environ.get("CONTENT_LENGTH", "")
    if declared == "":
        # Without a length, the only end of the body is the end of the
        # connection; refuse rather than guess (chunked bodies are not WSGI's).
        return text("411 Length Required", "a Content-Length header is required\n")
    # isdigit() alone would take "\xb2" (a superscript two), which int() refuses.
    if not (declared.isascii() and declared.isdigit()):  # "-1", "1e3", " 5": not a length
        return text("400 Bad Request", "Content-Length must be a whole number\n")
    # Its digits counted before int() sees them: Python 3.11 and later refuse
    # to convert 4,300 digits or more (ValueError), leading zeros included.
    digits = declared.lstrip("0") or "0"
    if len(digits) > len(str(MAX_BODY)) or int(digits) > MAX_BODY:
        # Checked before reading a byte: the limit protects memory only if
        # the body is never read into it.
        return text("413 Content Too Large", f"at most {MAX_BODY} bytes\n")
    length = int(digits)
    try:
        body = read_body(environ["wsgi.input"], length)
    except socket.timeout:  # the server's deadline for the request (--timeout) passed before the body was whole
        return text("408 Request Timeout", "the body did not arrive in time\n")
    if len(body) < length:  # the client closed or reset first
        return text("400 Bad Request", "the body is shorter than Content-Length\n")
    return reversed_body(body)


def reversed_body(body: bytes) -> Response:
    """Text reversed by characters, anything else by bytes, each labelled as what it is.

    Reversed byte by byte, 'héllo' in UTF-8 comes back as invalid UTF-8: the
    two bytes of 'é' swap, and a browser or a terminal shows mojibake. So a
    body that decodes as UTF-8 (ASCII included) is reversed by code points and
    labelled as UTF-8 text; any other body is reversed by bytes, and labelled
    as bytes. (A code point is not always a character as the eye sees it: a
    letter and its combining accent, or an emoji made of several, come apart.)
    """
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return "200 OK", [("Content-Type", "application/octet-stream")], body[::-1]
    return "200 OK", [("Content-Type", "text/plain; charset=utf-8")], text[::-1].encode("utf-8")


def read_body(stream: Any, length: int) -> bytes:
    # wsgi.input may return less than asked (PEP 3333 allows it); reading past
    # CONTENT_LENGTH could block forever on a keep-alive connection.
    chunks = []
    remaining = length
    while remaining > 0:
        try:
            chunk = stream.read(min(remaining, 64 * 1024))
        except socket.timeout:  # the client is too slow: a status of its own (408), not a short body
            raise
        except OSError:  # the client went away: the body is short
            break
        if not chunk:
            break
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


ROUTES: dict[str, dict[str, Callable[[dict], Response]]] = {
    "/": {"GET": hello},
    "/reverse": {"POST": reverse},
}


# Everything below serves `app` with wsgiref; none of it runs on import.


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO,
        format="%(asctime)s %(message)s",
    )
    try:
        server = make_server(args)
    except (OSError, UnicodeError) as exc:
        print(f"cannot listen on {format_address(args.host, args.port)}: {reason(exc)}", file=sys.stderr)
        return 1
    # serve_forever() returns once its threads have finished the responses in
    # progress; leaving the with-block then closes the listener.
    with server:
        stop_on_signals(server)
        print_ready_line(f"Listening on http://{format_address(*server.server_address[:2])}/")
        try:
            server.serve_forever()
        except RuntimeError as exc:  # "can't start new thread"
            print(f"cannot start {args.threads} threads: {exc}", file=sys.stderr)
            return 1
    log.info("stopped")
    ignore_stop_signals()  # a stop signal now would kill the interpreter as it shuts down
    return 0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        epilog=__doc__.split("\n", 1)[1].strip(),
        formatter_class=HelpFormatter,
    )
    parser.add_argument("port", type=port_number, help="TCP port; 0 lets the OS pick a free one")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on; 0.0.0.0 or :: exposes the server")
    parser.add_argument(
        "--timeout",
        type=positive_seconds,
        default=10.0,
        help="seconds a request, body included, may take to arrive; and each write may wait",
    )
    # More threads serve more slow clients at once, but every busy thread costs
    # GIL hand-offs. 4 is waitress's default.
    parser.add_argument(
        "--threads",
        type=positive_int,
        default=4,
        help=f"requests served at once, up to {MAX_THREADS}; more clients wait",
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="no per-request log lines")
    args = parser.parse_args(argv)
    if args.threads > MAX_THREADS:
        parser.error(f"--threads: at most {MAX_THREADS} threads, not {args.threads}")
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


def make_server(args: argparse.Namespace) -> PooledWSGIServer:
    server = PooledWSGIServer(open_listener(args.host, args.port), args.timeout, args.threads)
    server.set_app(app)
    return server


class PooledWSGIServer(WSGIServer):
    """wsgiref's server on a fixed pool of threads, each accepting and serving its own clients.

    wsgiref speaks HTTP/1.0, so every request is a connection of its own, and
    what a connection costs the server is what a request costs. With a thread
    per connection (socketserver.ThreadingMixIn) each paid for starting and
    joining a thread. A pool fed by one accepting thread starts its threads
    once, but each connection still passes from one thread to another, and the
    GIL and a wake-up with it. So here no thread hands a connection over: each
    one accepts a connection, serves it, and accepts again. They take turns at
    accept(): one waits there, the idle others wait for it on a lock, at no
    cost (see accept_and_serve()). The bound is
    backpressure, as in pool_server.py: with every thread busy nobody accepts,
    and new clients queue in the kernel, not in memory. Against gunicorn's
    sync worker (wrk, 20 connections, GET /), the hand-off pool did 0.35x,
    0.40x and 0.32x on Python 3.8, 3.11 and 3.13; this pool, with buffered
    writes (RequestHandler), 0.63x, 0.79x and 0.54x. Fewer threads switch
    less: 2 did 0.71x to 0.85x, but two slow clients would hold them both.
    """

    def __init__(self, listener: socket.socket, timeout: float, threads: int) -> None:
        self.request_timeout = timeout
        self.threads = threads
        self.numbers = itertools.count(1)
        # A plain attribute, not an Event: a stop signal's handler sets it (see
        # stop_on_signals()), and Event.set() takes a lock.
        self.stop_requested = False
        self.finished = threading.Event()  # set when serve_forever() returns
        self.accepting = threading.Lock()  # held by the one thread that waits in accept()
        # TCPServer makes a socket of its own, to bind; this server serves on
        # open_listener()'s, bound and listening already (perhaps systemd's),
        # with a queue of BACKLOG where socketserver's is 5.
        super().__init__(listener.getsockname()[:2], RequestHandler, bind_and_activate=False)
        self.socket.close()
        self.socket = listener
        # What WSGIServer.server_bind() would set, but for HTTPServer's
        # socket.getfqdn(host): a reverse DNS query that can take seconds.
        self.server_name, self.server_port = self.server_address[:2]
        self.setup_environ()

    def serve_forever(self, poll_interval: float = 0.5) -> None:
        """Serve on self.threads threads until stop(); return when each has finished its client."""
        # The listener's timeout is how often the thread waiting in accept()
        # looks at self.stop_requested when shutdown() asks from another
        # thread: closing a socket does not wake a thread blocked on it. (A stop
        # signal wakes it at once: see stop_on_signals(). Accepted sockets
        # are still blocking ones.)
        self.socket.settimeout(poll_interval)
        self.finished.clear()
        workers: list[threading.Thread] = []
        try:
            for number in range(self.threads):
                thread = threading.Thread(target=self.accept_and_serve, name=f"wsgi-{number}")
                thread.start()
                workers.append(thread)
        except RuntimeError:
            # "can't start new thread": a limit on tasks (ulimit -u, a
            # cgroup's pids.max, systemd's TasksMax) or on memory. The
            # threads already started stop, and the caller hears of it.
            self.stop_requested = True
            raise
        finally:
            for thread in workers:
                # Never a join() without a time-out: the kernel hands a stop
                # signal to any thread of the process, and its Python handler
                # runs in the main thread only, the next time that thread runs
                # bytecode. Delivered to a pool thread, it waited for a join()
                # that waited for the handler's flag: the stop hung for good.
                while thread.is_alive():
                    thread.join(poll_interval)
            self.stop_requested = False  # as socketserver's: it can serve again
            self.finished.set()

    def accept_and_serve(self) -> None:
        while True:
            # One thread at a time waits in accept(), polling; the others sleep
            # on this lock, at no cost. When every thread polled, each woke
            # every poll_interval: 10,000 idle threads took 80% of a core (3.11).
            # And at the stop the listener's end woke them all at once, and
            # thousands of threads runnable together fought for the GIL so hard
            # that they left at about 18 a second. Through the lock they wake
            # one after another, and leave as fast: 10,000 in 0.6 s.
            with self.accepting:
                if self.stop_requested:
                    return
                accepted = self.accept_one()
            if accepted is None:
                continue
            request, client_address = accepted
            try:
                self.finish_request(request, client_address)
            except Exception:
                self.handle_error(request, client_address)
            finally:
                self.shutdown_request(request)

    def accept_one(self) -> tuple[socket.socket, Any] | None:
        """A new connection, or None if there was none within the poll interval, or an error."""
        try:
            return self.get_request()
        except socket.timeout:  # nobody came: the caller looks at self.stop_requested again
            return None
        except OSError as exc:
            if not self.stop_requested:  # else the listener is shut down (stop_on_signals())
                # Out of file descriptors (EMFILE), or a client that gave up
                # while queued: the server carries on. The pause keeps a full
                # fd table from turning this loop into a busy spin.
                log.warning("accept failed: %s", exc)
                time.sleep(0.1)
            return None

    def stop(self) -> None:
        """Make serve_forever() return, once each thread has finished its client; return at once."""
        self.stop_requested = True

    def shutdown(self) -> None:
        """Stop, and wait until serve_forever()'s threads have finished (socketserver's promise)."""
        # socketserver's own shutdown() waits for a flag that its own
        # serve_forever() sets, and would wait forever for this one. Joining
        # the threads instead would race with serve_forever() starting them
        # (a thread not yet started cannot be joined). As socketserver's
        # does, it waits forever if serve_forever() is never called.
        self.stop()
        self.finished.wait()


class RequestReader(io.RawIOBase):
    """What a client sends, under one deadline per request instead of one per recv().

    A socket's timeout bounds each recv(), and http.server reads a request a
    line at a time: a client that sent a byte every few seconds (slowloris)
    held its thread for as long as it liked, and four such clients held every
    thread of wsgi_app.py's pool. Here the request line, the headers and any
    body read through this reader must all arrive within --timeout of start().
    """

    def __init__(self, conn: socket.socket, timeout: float) -> None:
        self.conn = conn
        self.timeout = timeout
        self.deadline = time.monotonic() + timeout

    def start(self) -> None:
        """A new request may come: it has --timeout from now."""
        self.deadline = time.monotonic() + self.timeout

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        remaining = self.deadline - time.monotonic()
        if remaining > self.timeout - 0.01:
            # Right after start(), which is when most requests arrive whole:
            # the socket's own timeout ends within 10 ms of the deadline.
            return self.conn.recv_into(buffer)
        if remaining <= 0:
            return self.read_what_has_come(buffer)
        # settimeout() is a system call (an ioctl) that releases the GIL, and
        # with 20 connections each release is a chance to switch threads: done
        # for every recv(), it cost 10% of the requests/s. Only a request
        # that comes in pieces pays it.
        self.conn.settimeout(remaining)
        try:
            return self.conn.recv_into(buffer)
        finally:
            self.conn.settimeout(self.timeout)  # the bound of each write that follows

    def read_what_has_come(self, buffer: Any) -> int:
        """Past the deadline, what has arrived, and no wait for more.

        On a busy machine a thread can be held back past the deadline while
        the rest of the request waits in the socket, sent in time: refused
        unread, the client would pay for the server's delay (a 408, a
        close). The deadline bounds the client, not the server.
        """
        self.conn.settimeout(0)
        try:
            return self.conn.recv_into(buffer)
        except BlockingIOError:  # nothing more has come: now the client is late
            raise socket.timeout("timed out") from None
        finally:
            self.conn.settimeout(self.timeout)


class StrictRequest(http.server.BaseHTTPRequestHandler):
    """parse_request() by RFC 9112, strictly: a 400 and a close for anything else.

    http.server splits the request line on any whitespace and hands the header
    lines to the email package, which reads them its own way: a bare CR ends a
    header ('X: a\\rContent-Length: 5' is two), obs-fold continues one (echoed,
    '\\r\\n X-Injected: 1' is a header injected into the response), the first
    line it cannot parse ends the headers (the rest, Content-Length included,
    is ignored), and of two Content-Length headers the first wins. A proxy in
    front that reads the same bytes another way sees other requests than this
    server does, and a request hidden in another's body gets past it: request
    smuggling. So each line is matched whole, and the framing headers
    (Content-Length, Transfer-Encoding, Host, Connection) are checked as RFC
    9112 says. Each line is matched once and the headers built directly: 4 us
    for five headers where http.client.parse_headers() takes 12-17 us.
    """

    content_length = 0  # of the request's body, once parse_request() has accepted it
    expects_continue = False  # the client waits for 100 Continue before it sends the body

    def parse_request(self) -> bool:
        self.command = None  # read by send_error()
        self.request_version = "HTTP/1.0"  # so that a refusal has a status line (HTTP/0.9 has none)
        self.close_connection = True
        self.content_length = 0
        self.expects_continue = False
        if not self.raw_requestline.endswith(b"\n"):  # the end of the stream mid-line (a shorter one than MAX_LINE)
            return False  # the client went away, or the server is stopping: nobody to answer
        line = REQUEST_LINE.fullmatch(self.raw_requestline)
        if line is None:
            self.requestline = repr(self.raw_requestline.rstrip(b"\r\n"))[2:-1]  # logged: no control bytes
            if self.raw_requestline.startswith(b"HEAD "):
                self.command = "HEAD"  # the refusal has no body, which the client would read as the next response
            return self.refuse(400, "Bad request line")
        self.requestline = self.raw_requestline[:-2].decode("ascii")
        method, target, major, minor = line.groups()
        self.command, self.path = method.decode("ascii"), target.decode("ascii")
        if major != b"1":
            return self.refuse(505, "HTTP version not supported")
        self.request_version = "HTTP/1." + minor.decode("ascii")
        headers = self.MessageClass()
        for _ in range(MAX_HEADERS + 1):
            raw = self.rfile.readline(MAX_LINE + 1)
            if raw == b"\r\n":
                break
            if not raw.endswith(b"\n"):
                if len(raw) > MAX_LINE:
                    return self.refuse(431, "Header line too long")
                return False  # the client went away mid-request: nobody to answer
            field = HEADER_LINE.fullmatch(raw)
            if field is None:
                return self.refuse(400, "Bad header line")
            headers[field.group(1).decode("ascii")] = field.group(2).strip(b"\t ").decode("latin-1")
        else:
            return self.refuse(431, "Too many headers")
        return self.check_framing(headers, minor == b"0")

    def check_framing(self, headers: Any, http10: bool) -> bool:
        """The headers that say where this request ends and the next begins (RFC 9112 6, 9.3; 3.2 for Host)."""
        hosts = headers.get_all("Host", ())
        if len(hosts) > 1 or not (hosts or http10):
            return self.refuse(400, "An HTTP/1.1 request needs one Host header")
        if "Transfer-Encoding" in headers:
            # Neither server decodes chunked bodies. Past one coding it is
            # not even chunked (501); with Content-Length, or from HTTP/1.0,
            # the framing is ambiguous, and that connection must close (400).
            codings = [coding.strip().lower() for coding in ",".join(headers.get_all("Transfer-Encoding")).split(",")]
            if "Content-Length" in headers or http10 or codings[-1] != "chunked":
                return self.refuse(400, "Transfer-Encoding with Content-Length, from HTTP/1.0, or not chunked")
            if len(codings) > 1:
                return self.refuse(501, "Transfer codings other than chunked are not supported")
            return self.refuse(411, "Length Required: send the body with a Content-Length")
        lengths = headers.get_all("Content-Length")
        if lengths:
            # '5, 5' and two headers that say 5 are one length (RFC 9110 8.6); 5 and 6 are an attack.
            values = {value.strip() for value in ",".join(lengths).split(",")}
            value = values.pop()
            if values or not (value.isascii() and value.isdigit()):
                return self.refuse(400, "Bad or conflicting Content-Length")
            # Counted before int() sees them: 3.11 and later refuse 4,300 digits (ValueError).
            digits = value.lstrip("0") or "0"
            if len(digits) > 18:
                return self.refuse(413, "Content Too Large")
            self.content_length = int(digits)
            del headers["Content-Length"]  # one clean value for whoever reads it next (wsgiref)
            headers["Content-Length"] = str(self.content_length)
        # A list of tokens: 'keep-alive, close' closes.
        options = {option.strip().lower() for option in ",".join(headers.get_all("Connection", ())).split(",")}
        keep_alive = self.protocol_version >= "HTTP/1.1" and (not http10 or "keep-alive" in options)
        self.close_connection = "close" in options or not keep_alive
        self.expects_continue = not http10 and headers.get("Expect", "").lower() == "100-continue"
        self.headers = headers
        return True

    def refuse(self, code: int, message: str) -> bool:
        """Send an error response, which closes the connection; False, for parse_request() to return."""
        self.send_error(code, message)
        return False


class RequestHandler(StrictRequest, WSGIRequestHandler):
    server: PooledWSGIServer
    # socketserver's default, 0, writes each piece at once: wsgiref sends the
    # status line, Date, Server, the other headers and the body as five
    # sendall() calls. Each system call lets another thread take the GIL, and
    # the switches cost more than the calls: buffered, a response leaves in
    # one send() when wsgiref flushes it (after each piece of the body, so a
    # streamed response still streams), and GET / went from 0.45x to 0.65x
    # gunicorn's rate on 3.8.
    wbufsize = 64 * 1024

    def setup(self) -> None:
        # Applied to the socket by StreamRequestHandler: it bounds each write.
        self.timeout = self.server.request_timeout
        self.number = next(self.server.numbers)
        super().setup()
        # The request, its body included (wsgi.input), must arrive within
        # --timeout of the connection: see RequestReader.
        self.rfile.close()  # socketserver's, whose reads the socket's timeout bounds one by one
        self.rfile = io.BufferedReader(RequestReader(self.connection, self.server.request_timeout))

    def handle(self) -> None:
        try:
            self.handle_one_request()
        except socket.timeout:  # from the request line or the headers: wsgiref lets it out
            log.info("#%d sent no complete request in time: closed", self.number)
        except ConnectionError:  # a reset before the request was whole
            log.info("#%d disconnected before a complete request", self.number)

    def handle_one_request(self) -> None:
        """WSGIRequestHandler.handle(), with this module's wsgi.input and response handler."""
        self.raw_requestline = self.rfile.readline(MAX_LINE + 1)
        if len(self.raw_requestline) > MAX_LINE:
            self.requestline = self.request_version = self.command = ""
            self.send_error(414)
            return
        if not self.parse_request():  # the error response is sent
            return
        body = RequestBody(self.rfile, self.content_length, self.wfile if self.expects_continue else None)
        # multithread: wsgiref says False, that no other thread calls the
        # application at the same time (PEP 3333), and an application may
        # count on that to leave shared state unlocked. Here self.threads do.
        handler = ResponseHandler(body, self.wfile, self.get_stderr(), self.get_environ(), multithread=True)
        handler.request_handler = self  # what wsgiref's handler logs through
        handler.run(self.server.get_app())

    def finish(self) -> None:
        try:
            super().finish()  # sends what is still buffered
        except OSError:  # the client has gone: what was buffered is lost, and nothing more is owed
            self.rfile.close()  # socketserver closes it after wfile, which raised
            return
        if self.may_still_be_sending():
            close_gracefully(self.connection, self.server.request_timeout)

    def may_still_be_sending(self) -> bool:
        """After the response (wsgiref always closes): could the client still be sending?

        Yes if its request has a body, which the app may have refused unread
        (411, 413, 400), or if the request was refused before its headers were
        read (414, a malformed request line). A GET without a body has sent
        all it will: waiting for its close would cost every such request a
        round trip for nothing.
        """
        headers = getattr(self, "headers", None)
        if headers is None:  # refused, or no request at all
            return bool(getattr(self, "raw_requestline", b""))
        return headers.get("Content-Length", "0").strip() not in ("", "0") or "Transfer-Encoding" in headers

    def log_message(self, format: str, *args: Any) -> None:
        log.info("#%d " + format, self.number, *args)  # formatted only if logged


class RequestBody:
    """wsgi.input: the body, and no byte past it; 100 Continue before the first read, if the client waits for it.

    A client that sends 'Expect: 100-continue' (curl does, past 1 KiB) waits
    for that interim response before it sends the body, or for a second
    without it: wsgiref sends none. Sent at the first read, it is never sent
    for a body the application refuses unread (411, 413): the client gets the
    final status at once, and sends nothing. And reading past Content-Length
    would wait for bytes that never come (until --timeout).
    """

    def __init__(self, rfile: BinaryIO, length: int, continue_to: BinaryIO | None) -> None:
        self.rfile = rfile
        self.remaining = length
        self.continue_to = continue_to

    def read(self, size: int = -1) -> bytes:
        return self.take(self.rfile.read, size)

    def readline(self, size: int = -1) -> bytes:
        return self.take(self.rfile.readline, size)

    def readlines(self, hint: int = -1) -> list[bytes]:
        return list(iter(self.readline, b""))

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.readline, b"")

    def take(self, read: Callable[[int], bytes], size: int | None) -> bytes:
        if self.continue_to is not None:
            self.continue_to.write(b"HTTP/1.1 100 Continue\r\n\r\n")  # only to HTTP/1.1 clients
            self.continue_to.flush()
            self.continue_to = None
        if size is None or size < 0 or size > self.remaining:
            size = self.remaining
        data = read(size) if size else b""
        self.remaining -= len(data)
        return data


class ResponseHandler(ServerHandler):
    """wsgiref's handler, for which a client that does not read its response is no error.

    A write that waits --timeout for room in the socket's buffers raises
    socket.timeout, which wsgiref passes to handle_error(): a traceback, for a
    client that only stopped reading. (It lets resets and broken pipes go.)
    """

    request_handler: RequestHandler

    def handle_error(self) -> None:
        if not isinstance(sys.exc_info()[1], socket.timeout):
            super().handle_error()  # the application's own error: its traceback, and a 500
            return
        handler = self.request_handler
        log.info("#%d did not read its response within --timeout: closed", handler.number)
        # Shut down, so that what is still buffered fails at once: flushed,
        # it would wait --timeout once more.
        try:
            handler.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


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


def stop_on_signals(server: PooledWSGIServer) -> None:
    """Make SIGINT and SIGTERM refuse new connections at once, and end serve_forever() once each client is served.

    A Python signal handler runs in the main thread, between two bytecodes of
    whatever that thread was doing: here serve_forever(), which starts and
    joins the pool's threads. So the handler must take no lock: Event.set()
    takes one, which the main thread may hold in that very instant (in
    Event.clear() or join()), and a handler that waits for a lock its own
    thread holds waits forever. It sets a plain attribute that the threads
    read between two clients, and stops the listener (stop_listening()),
    which wakes the threads blocked in accept() at once.
    """

    def stop(signum: int, frame: Any) -> None:
        server.stop_requested = True  # first: a thread woken by the listener's end looks at it
        stop_listening(server.socket)

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
