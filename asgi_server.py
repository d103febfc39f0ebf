#!/usr/bin/env python3
"""An ASGI server: HTTP/1.1 keep-alive on asyncio protocols, running any ASGI 3 application.

WSGI (wsgi_app.py) is a call: the server calls app(environ, start_response)
and the application returns the body, holding a thread until it has. ASGI is
a coroutine and two channels: the server awaits app(scope, receive, send),
the application awaits receive() for the request's body (and later for
http.disconnect) and send() for the response's start and its pieces. Because
each of those is an await, one thread serves thousands of requests that
wait, a response can stream for as long as it likes (server-sent events
below), and the server can tell the application that its client has gone.
FastAPI, Starlette, Litestar and Django's async views are ASGI applications;
uvicorn, hypercorn and granian are ASGI servers. This is one, in one file.

Why the protocol layer and not streams (asyncio_server.py): an HTTP
connection is a state machine anyway (a head, a body, a response, the next
head), and data_received() hands each chunk straight to it, with no
StreamReader copying it in and out, no coroutine per connection and no
future per read; only the application runs as a task, one per request, as
in uvicorn. asyncio_protocol_server.py shows the same change of layer on
the toy protocol.

What a persistent connection asks of a server, and where this one does it:
  HttpConnection.data_received()  several requests in one read: the bytes after a
                                  request head belong to the body or to the next
                                  request, and wait in a buffer (pipelining)
  ChunkedBody                     a body in chunks, parsed strictly, cut anywhere
  RequestCycle.receive()          http.request with more_body, then http.disconnect
  RequestCycle.send()             the response's head and body; chunked when the
                                  application gives no length
  pause_reading()                 the body the application has not taken is
                                  bounded: past it the kernel holds the rest
  HttpConnection.drain()          send() waits while the client does not read
  Deadlines                       --keep-alive between requests, --timeout for a
                                  head, a body, a write
  Lifespan                        the application's startup and shutdown

What each part is in uvicorn (protocols/http/h11_impl.py and lifespan/on.py):
  HttpConnection   H11Protocol: one per connection
  RequestCycle     RequestResponseCycle: one per request, beside it
  parse_head()     h11's parser (or httptools', in C)
  Deadlines        the keep-alive timer (call_later), uvicorn has no body timeout
  Lifespan         LifespanOn

Where the time goes: a profile (cProfile) of the demo's GET / under wrk, 50
keep-alive connections, CPython 3.11, on a loaded 2-core machine: 138 us of
busy time a request, of which 37% the send() and recv() system calls (on
loopback, send() delivers to the client inside the call), 29% this file
(parsing the head, the scope, the response head), 20% asyncio (the request's
task, its steps, call_soon), 4% the application, and the rest built-ins
called from all of these. A head is parsed with one search for its end, one
regular expression for the request line and one for all its header lines;
Date is formatted once a second; the response's head and body leave in one
write. bench.py --asgi measures the whole (BENCHMARKS.md), on GET /: about
4x uvicorn with h11, pure Python against pure Python, and 0.9x to 1.5x
uvicorn with httptools, its parser in C.

WebSockets are out of scope here: a request with Upgrade: websocket is an
ordinary HTTP request to the application (the demo answers it as any other).
websocket_server.py shows that protocol. Pick uvicorn (or hypercorn,
granian) for anything real: HTTP/2 (hypercorn), WebSockets, TLS, worker
processes and reloading, uvloop and httptools' C parser, proxy headers, and
years of production hardening. Pick this to read how an ASGI server works,
or to serve a small application with no dependency at all.

The demo application (asgi_server:app, so that `uvicorn asgi_server:app`
serves it too): GET / says hello; POST /reverse answers the body reversed (1
MiB at most); GET /events streams server-sent events, one a second, until
the client leaves or ?count=N have gone.

The approach is HttpConnection and RequestCycle; the rest is the skeleton the
servers share, and strict HTTP.

Standard library only; CPython 3.8 to 3.15.

Try it:  python asgi_server.py 8000
         curl -N http://127.0.0.1:8000/events?count=3
         python asgi_server.py 8000 --app main:app     # your FastAPI app, from main.py
"""

from __future__ import annotations

import argparse
import asyncio
import email.utils
import errno
import gc
import http
import importlib
import itertools
import logging
import math
import os
import re
import signal
import socket
import sys
import time
import urllib.parse
from typing import Any, Awaitable, Callable, MutableMapping

# Connections the kernel completes and queues while the loop is busy. listen()
# with no argument asks for at most 128, and a burst beyond the queue is left
# to SYN retries: a client stalls 1 s, then 3 s, then 7 s. The kernel caps the
# number at net.core.somaxconn (4096 on Linux since 5.4).
BACKLOG = max(socket.SOMAXCONN, 4096)
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
# Socket activation: the first descriptor systemd passes (sd_listen_fds(3)).
LISTEN_FDS_START = 3
MAX_SECONDS = 24 * 60 * 60.0  # the most any option in seconds takes (see seconds())
MIN_SECONDS = 0.001  # the least, but for 0 where it means none (see seconds())
# After a response, how long and how much a client may go on sending before the
# server closes anyway (see close_gracefully()): 2 s in all, enough for a client
# that reads its reply, and soon enough to free the thread or process. (nginx
# waits up to 5 s between reads, 30 s in all.)
LINGER_SECONDS = 2.0
LINGER_BYTES = 16 * 1024 * 1024
# Allocations between two passes of the cycle collector (the default is 700).
# Every connection alive is a task, a transport, buffers and futures, and each
# tenth pass reaches the older generations and walks all of them: with 10,000
# clients at once, again and again. 10,000 clients with --delay 1 took 2.9 to
# 3.4 s at the default, 2.4 to 2.5 s at this threshold, the same as with no
# collector at all. Reference counting still frees ordinary garbage at once;
# only reference cycles wait a little longer.
GC_THRESHOLD = 10_000

# Request heads by RFC 9112, and no further: a request line of visible ASCII,
# header lines of a token, a colon and visible characters, each ending in CRLF.
# A bare CR or LF, obs-fold and NUL match neither. One quantifier a line: a
# line of spaces that fails must fail in one pass, not in one per space.
TOKEN = rb"[-!#$%&'*+.^_`|~0-9A-Za-z]+"  # RFC 9110 5.6.2: a method, a header name
REQUEST_LINE = re.compile(rb"(%s) ([!-~]+) HTTP/([0-9])\.([0-9])\r\n" % TOKEN)
HEADER_LINE = re.compile(rb"(%s):([\t !-~\x80-\xff]*)\r\n" % TOKEN)
MAX_HEADERS = 100
# All the header lines of a head checked by one match, in C: a regular
# expression per line would cost a Python call each. The value's character
# class has no CR, so the match never backtracks across lines. The same check
# applies to the headers an application sends: nothing it puts in a header
# can start a line of its own (response splitting).
HEADER_BLOCK = re.compile(rb"(?:%s:[\t !-~\x80-\xff]*\r\n)*" % TOKEN)
MAX_HEAD = 64 * 1024  # a request line and its headers; more gets 431
# A chunk's size line: hex digits (16 at most: no overflow, and nothing near
# --max-body needs more), then extensions, ignored but bounded and visible.
CHUNK_LINE = re.compile(rb"([0-9A-Fa-f]{1,16})(?:;[\t !-~\x80-\xff]*)?\r\n")
MAX_CHUNK_LINE = 4096  # and a trailer line
MAX_TRAILER = 16 * 1024
MAX_BODY = 1024 * 1024  # the default --max-body
# The body read but not yet taken by the application, per request: past it the
# transport stops reading and the kernel holds the rest (TCP flow control
# then slows the client). The next requests of a pipeline wait in the same way
# once MAX_HEAD of them is buffered. uvicorn's bound is the same 64 KiB.
UNREAD_LIMIT = 64 * 1024
SERVER_HEADER = b"server: asgi_server.py\r\n"
STATUS_PHRASES = {status.value: status.phrase.encode() for status in http.HTTPStatus}
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
DISCONNECT = {"type": "http.disconnect"}
ASGI_VERSION = {"version": "3.0", "spec_version": "2.4"}

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Application = Callable[[Scope, Receive, Send], Awaitable[None]]

log = logging.getLogger("asgi_server")


# The demo application. It knows nothing of sockets, so any ASGI server runs it:
# uvicorn asgi_server:app. Nothing below runs on import.


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    """The demo: GET / says hello, POST /reverse reverses the body, GET /events streams."""
    if scope["type"] == "lifespan":
        await lifespan(receive, send)
        return
    if scope["type"] != "http":  # a WebSocket, from a server that speaks it: refused
        return
    route = ROUTES.get(scope["path"])
    method = scope["method"]
    if route is None:
        await respond(send, 404, b"not found\n")
    elif method in route or (method == "HEAD" and "GET" in route):
        await route["GET" if method == "HEAD" else method](scope, receive, send)
    else:
        allowed = ", ".join(sorted({*route, "HEAD"} if "GET" in route else route))
        await respond(send, 405, f"use {allowed.replace(', ', ' or ')}\n".encode(), [(b"allow", allowed.encode())])


async def lifespan(receive: Receive, send: Send) -> None:
    """What an application does at the server's start and stop: open a pool, close it."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def respond(send: Send, status: int, body: bytes, headers: list | None = None) -> None:
    start = [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": status, "headers": start + (headers or [])})
    await send({"type": "http.response.body", "body": body})


async def hello(scope: Scope, receive: Receive, send: Send) -> None:
    await respond(send, 200, b"Hello world!")


async def reverse(scope: Scope, receive: Receive, send: Send) -> None:
    """The request body, reversed: read in pieces as they come, at most MAX_BODY bytes."""
    body = bytearray()
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":  # the client has gone: nobody to answer
            return
        body += message.get("body", b"")
        if len(body) > MAX_BODY:  # refused before the rest is read: the limit protects memory
            await respond(send, 413, b"at most %d bytes\n" % MAX_BODY)
            return
        if not message.get("more_body", False):
            break
    body.reverse()
    start = [(b"content-type", b"application/octet-stream"), (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": 200, "headers": start})
    await send({"type": "http.response.body", "body": bytes(body)})


async def events(scope: Scope, receive: Receive, send: Send) -> None:
    """Server-sent events: one a second, until ?count=N have gone or the client leaves.

    The response has no length, so the server sends it chunked (HTTP/1.1),
    and a browser's EventSource reads each event as it arrives. While it
    streams, the application listens for http.disconnect: that is how it
    learns that the client has gone (or that the server is stopping), instead
    of writing to nobody until an error.
    """
    query = urllib.parse.parse_qs(scope["query_string"].decode("latin-1"))
    count_text = query.get("count", ["-1"])[-1]
    # ASCII digits only: str.isdigit() takes '²', and lstrip("-") took '--5', both of which int() refuses.
    if len(count_text) > 9 or re.fullmatch(r"-?[0-9]+", count_text) is None:
        await respond(send, 400, b"count must be a whole number\n")
        return
    count = int(count_text)
    headers = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    if scope["method"] == "HEAD":
        await send({"type": "http.response.body"})
        return
    await receive()  # the (empty) request body
    gone = asyncio.ensure_future(receive())  # completes with http.disconnect
    try:
        number = 0
        while number != count:
            number += 1
            event = f"id: {number}\ndata: event {number} at {time.strftime('%H:%M:%S')}\n\n"
            await send({"type": "http.response.body", "body": event.encode(), "more_body": True})
            if number != count:
                await asyncio.wait({gone}, timeout=1.0)
            if gone.done():
                break
        await send({"type": "http.response.body"})
    finally:
        gone.cancel()


ROUTES: dict[str, dict[str, Application]] = {
    "/": {"GET": hello},
    "/reverse": {"POST": reverse},
    "/events": {"GET": events},
}


# The server.


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO,
        format="%(asctime)s %(message)s",
    )
    try:
        application = load_application(args.app) if args.app else app
    except LookupError as exc:
        print(exc, file=sys.stderr)
        return 1
    try:
        listener = open_listener(args.host, args.port)
    except (OSError, UnicodeError) as exc:
        print(f"cannot listen on {format_address(args.host, args.port)}: {reason(exc)}", file=sys.stderr)
        return 1
    with listener:
        status = asyncio.run(serve(listener, application, args))
    if status:
        return status
    log.info("stopped")
    ignore_stop_signals()  # a stop signal now would kill the interpreter as it shuts down
    return status


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        epilog=__doc__.split("\n", 1)[1].strip(),
        formatter_class=HelpFormatter,
    )
    parser.add_argument("port", type=port_number, help="TCP port; 0 lets the OS pick a free one")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on; 0.0.0.0 or :: exposes the server")
    parser.add_argument(
        "--app",
        type=application_name,
        help="the ASGI application to serve, as MODULE:ATTRIBUTE, imported from the current directory;"
        " without it, the demo",
    )
    parser.add_argument(
        "--timeout",
        type=positive_seconds,
        default=10.0,
        help="seconds a request head may take to arrive, and each wait for its body or for the client to read;"
        " and the stop's bound",
    )
    parser.add_argument(
        "--keep-alive", type=positive_seconds, default=5.0, help="seconds an idle connection is kept open"
    )
    parser.add_argument("--max-body", type=positive_int, default=MAX_BODY, help="largest request body in bytes")
    parser.add_argument("--root-path", help="the path the application is mounted at, behind a proxy")
    parser.add_argument("-q", "--quiet", action="store_true", help="no per-request log lines")
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


def application_name(text: str) -> str:
    module, colon, attribute = text.partition(":")
    if not (module and colon and attribute):
        raise argparse.ArgumentTypeError(f"expected MODULE:ATTRIBUTE, as main:app, not {text!r}")
    return text


def load_application(name: str) -> Application:
    """Import MODULE:ATTRIBUTE from the current directory, as uvicorn does; LookupError in one line if it cannot."""
    module_name, _, attribute = name.partition(":")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # `python asgi_server.py` puts this script's directory there, not yours
    try:
        target: Any = importlib.import_module(module_name)
    except Exception as exc:  # any error of the module's own code too: a SyntaxError, a failed import inside
        raise LookupError(f"cannot import {module_name}: {type(exc).__name__}: {exc}") from None
    for part in attribute.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise LookupError(f"cannot serve {name}: {module_name} has no attribute {attribute!r}") from None
    if not callable(target):
        raise LookupError(f"cannot serve {name}: it is a {type(target).__name__}, not an ASGI application")
    return target


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


async def serve(listener: socket.socket, application: Application, args: argparse.Namespace) -> int:
    """Start the application, serve it until SIGINT or SIGTERM, stop it; the exit status."""
    raise_open_file_limit()
    gc.set_threshold(GC_THRESHOLD)
    stop = stop_signals(listener)
    log_accept_errors_briefly(listener)
    service = Service(application, args)
    lifespan = Lifespan(application, service.state)
    # The application starts before the ready line: whoever waits for that line
    # (a test, systemd, a deploy script) may send requests at once.
    failure = await lifespan.startup(stop)
    if failure is not None:
        print(f"the application failed to start: {failure}", file=sys.stderr)
        return 1
    if stop.is_set():  # a stop signal during the startup: never ready, so no ready line
        await lifespan.shutdown(args.timeout)
        return 0
    numbers = itertools.count(1)

    def on_connect() -> HttpConnection:
        return HttpConnection(next(numbers), service)

    loop = asyncio.get_running_loop()
    # create_server() calls listen() again, with a queue of 100 unless told.
    server = await loop.create_server(on_connect, sock=listener, backlog=BACKLOG)
    # Only now, with the signal handlers in place: a Ctrl+C that comes right
    # after the ready line must stop the server cleanly, not with a traceback.
    print_ready_line(f"Listening on http://{format_address(*listener.getsockname()[:2])}/")
    await stop.wait()
    stop_accepting(listener)
    # Connections accepted a moment ago get their transport and protocol in a
    # task of asyncio's own: let those finish (never the application's tasks,
    # which may run for as long as it likes).
    accepting = [task for task in asyncio.all_tasks() if "_accept_connection" in repr(task.get_coro())]
    if accepting:
        await asyncio.wait(accepting, timeout=1.0)
    server.close()
    await service.stop()
    await lifespan.shutdown(args.timeout)
    return 0


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


class Lifespan:
    """The application's lifespan (asgiref's specs/lifespan.rst): its startup, and its shutdown after the last request.

    The application runs once more as a task of its own, with a scope of type
    "lifespan", and hears of the start and of the stop through receive(). An
    application that raises at once does not support lifespan (many do not):
    it is served anyway, as uvicorn's --lifespan auto does.
    """

    def __init__(self, application: Application, state: dict[str, Any]) -> None:
        loop = asyncio.get_running_loop()
        self.application = application
        self.state = state
        self.started: asyncio.Future[str | None] = loop.create_future()  # None, or why it failed
        self.stopping = asyncio.Event()
        self.stopped: asyncio.Future[None] = loop.create_future()
        self.asked_to_start = False
        self.task: asyncio.Task[None] | None = None

    async def startup(self, stop: asyncio.Event) -> str | None:
        """Start the application: None once it has, or why it failed (a stop signal meanwhile ends the wait)."""
        self.task = asyncio.ensure_future(self.run())
        stopped = asyncio.ensure_future(stop.wait())
        await asyncio.wait({self.started, stopped}, return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()
        return self.started.result() if self.started.done() else None

    async def run(self) -> None:
        scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"}, "state": self.state}
        try:
            await self.application(scope, self.receive, self.send)
        except Exception as exc:
            if self.started.done():
                log.error("Exception in 'lifespan' protocol", exc_info=exc)
            else:
                log.info("the application does not support lifespan (%r): served without it", exc)
        finally:  # an application that returns has nothing more to do at the start or at the stop
            self.resolve(self.started, None)
            self.resolve(self.stopped, None)

    async def receive(self) -> Message:
        if not self.asked_to_start:
            self.asked_to_start = True
            return {"type": "lifespan.startup"}
        await self.stopping.wait()
        return {"type": "lifespan.shutdown"}

    async def send(self, message: Message) -> None:
        kind = message["type"]
        if kind == "lifespan.startup.complete":
            self.resolve(self.started, None)
        elif kind == "lifespan.startup.failed":
            # Starlette sends the traceback as the message: its last line says what failed.
            lines = [line for line in str(message.get("message", "")).splitlines() if line.strip()]
            self.resolve(self.started, lines[-1].strip() if lines else "lifespan.startup.failed")
        elif kind == "lifespan.shutdown.failed":
            log.error("the application failed to shut down: %s", message.get("message", ""))
            self.resolve(self.stopped, None)
        elif kind == "lifespan.shutdown.complete":
            self.resolve(self.stopped, None)
        else:
            raise RuntimeError(f"unexpected ASGI message {kind!r} in the lifespan")

    @staticmethod
    def resolve(future: asyncio.Future[Any], value: Any) -> None:
        if not future.done():
            future.set_result(value)

    async def shutdown(self, timeout: float) -> None:
        """Tell the application the server stops, and wait for it (--timeout at most)."""
        self.stopping.set()
        if self.task is None:
            return
        if not self.started.done():  # still starting (a stop signal came first): it never will now
            self.task.cancel()
            await asyncio.wait({self.task})
            return
        try:
            await asyncio.wait_for(asyncio.shield(self.stopped), timeout)
        except asyncio.TimeoutError:
            log.warning("the application did not shut down within %g s", timeout)
        if not self.task.done():
            self.task.cancel()
            await asyncio.wait({self.task})


class ClientDisconnected(OSError):
    """What send() raises once the client has gone (ASGI 2.4: an OSError); the application may let it out."""


class Service:
    """What every connection shares: the application, the options, the timers, the open connections."""

    def __init__(self, application: Application, args: argparse.Namespace) -> None:
        self.application = application
        self.args = args
        self.loop = asyncio.get_running_loop()
        self.deadlines = Deadlines()
        self.state: dict[str, Any] = {}  # the lifespan's state, copied into each request's scope
        self.connections: set[HttpConnection] = set()
        self.tasks: set[asyncio.Task[None]] = set()  # the requests' tasks, running the application
        self.none_open = asyncio.Event()
        self.none_open.set()
        self.stopping = False
        self.access_log = log.isEnabledFor(logging.INFO)
        self.second = -1
        self.default_headers = b""
        self.unflushed: list[RequestCycle] = []  # responses whose head waits for its body (see flush_head())

    def headers_now(self) -> bytes:
        """The Date and Server headers, made once a second: formatdate() costs more than a whole parse."""
        now = int(time.time())
        if now != self.second:
            self.second = now
            date = email.utils.formatdate(now, usegmt=True).encode()
            self.default_headers = b"date: %s\r\n%s" % (date, SERVER_HEADER)
        return self.default_headers

    def flush_head_soon(self, cycle: RequestCycle) -> None:
        """cycle.flush_head() in the loop's next round: one call_soon() for all the heads of this round."""
        if not self.unflushed:
            self.loop.call_soon(self.flush_heads)
        self.unflushed.append(cycle)

    def flush_heads(self) -> None:
        unflushed, self.unflushed = self.unflushed, []
        for cycle in unflushed:
            cycle.flush_head()

    def opened(self, connection: HttpConnection) -> None:
        self.connections.add(connection)
        self.none_open.clear()

    def closed(self, connection: HttpConnection) -> None:
        self.connections.discard(connection)
        if not self.connections:
            self.none_open.set()

    async def stop(self) -> None:
        """Close idle connections, let the requests in progress finish, for --timeout at most.

        A request is finished when its connection is closed and its task has
        returned: an application may go on after its response (Starlette's
        background tasks run then). Past the bound, connections are cut and
        tasks cancelled.
        """
        self.stopping = True
        for connection in list(self.connections):
            connection.stop()
        finished = asyncio.ensure_future(self.finished())
        done, _ = await asyncio.wait({finished}, timeout=self.args.timeout)
        if not done:
            finished.cancel()
            for connection in list(self.connections):
                connection.abort("still busy at the stop's bound (--timeout): closed")
            tasks = list(self.tasks)
            for task in tasks:
                task.cancel()
            if tasks:
                await asyncio.wait(tasks, timeout=1.0)

    async def finished(self) -> None:
        await self.none_open.wait()
        while self.tasks:
            await asyncio.wait(list(self.tasks))


class Refusal(Exception):
    """A request the server answers itself, with this status, and then closes the connection."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


class Request:
    """A parsed request head: what the scope is made of, and how the body is framed."""

    __slots__ = ("method", "target", "version", "headers", "length", "chunked", "keep_alive", "expects_continue")

    def __init__(self, method: str, target: bytes, version: str, headers: list[tuple[bytes, bytes]]) -> None:
        self.method = method
        self.target = target
        self.version = version
        self.headers = headers
        self.length = 0  # of the body, when not chunked
        self.chunked = False
        self.keep_alive = True
        self.expects_continue = False


def parse_head(data: bytes, end: int, max_body: int) -> Request:
    """The request whose head is data[:end + 4] (end: where its blank line starts), or a Refusal.

    One regular expression for the request line and one for all the header
    lines, run in C; Python then only splits what they have checked.
    """
    line_end = data.find(b"\r\n", 0, end + 2)
    line = REQUEST_LINE.fullmatch(data, 0, line_end + 2)
    if line is None:  # also HTTP/0.9, whose answer would have no status line to carry an error
        raise Refusal(400, "Bad request line")
    method, target, major, minor = line.groups()
    if major != b"1":
        raise Refusal(505, "HTTP version not supported")
    if line_end == end:
        fields: list[bytes] = []
    elif HEADER_BLOCK.fullmatch(data, line_end + 2, end + 2) is None:  # obs-fold, a bare CR or LF, NUL
        raise Refusal(400, "Bad header line")
    else:
        fields = data[line_end + 2 : end].split(b"\r\n")
        if len(fields) > MAX_HEADERS:
            raise Refusal(431, "Too many headers")
    headers = []
    hosts = lengths = encodings = 0
    length = codings = connection = expect = b""
    for field in fields:
        name, _, value = field.partition(b":")
        name = name.lower()
        value = value.strip(b" \t")
        headers.append((name, value))
        # The headers that say where this request ends and the next begins
        # (RFC 9112 6, 9.3; 3.2 for Host).
        if name == b"host":
            hosts += 1
        elif name == b"content-length":
            lengths += 1
            length = length + b"," + value if lengths > 1 else value
        elif name == b"transfer-encoding":
            # Counted, as the lengths are: an empty value is no coding at all,
            # but the header is there, and a proxy may frame by it.
            encodings += 1
            codings = codings + b"," + value if encodings > 1 else value
        elif name == b"connection":
            connection = connection + b"," + value if connection else value
        elif name == b"expect":
            expect = value.lower()
    http10 = minor == b"0"
    request = Request(method.decode("ascii"), target, "1.0" if http10 else "1.1", headers)
    if hosts > 1 or not (hosts or http10):
        raise Refusal(400, "An HTTP/1.1 request needs one Host header")
    if encodings:
        # Past one coding it is not even chunked (501); with Content-Length,
        # or from HTTP/1.0, the framing is ambiguous, and that connection must
        # close (400).
        listed = [coding.strip().lower() for coding in codings.split(b",")]
        if lengths or http10 or listed[-1] != b"chunked":
            raise Refusal(400, "Transfer-Encoding with Content-Length, from HTTP/1.0, or not chunked")
        if len(listed) > 1:
            raise Refusal(501, "Transfer codings other than chunked are not supported")
        request.chunked = True
    elif lengths:
        # '5, 5' and two headers that say 5 are one length (RFC 9110 8.6); 5 and 6 are an attack.
        values = {value.strip() for value in length.split(b",")}
        value = values.pop()
        if values or not value.isdigit():
            raise Refusal(400, "Bad or conflicting Content-Length")
        # Counted before int() sees them: 3.11 and later refuse 4,300 digits (ValueError).
        digits = value.lstrip(b"0") or b"0"
        if len(digits) > 18 or int(digits) > max_body:
            raise Refusal(413, "Content Too Large")
        request.length = int(digits)
    if connection:
        # A list of tokens: 'keep-alive, close' closes.
        options = {option.strip() for option in connection.lower().split(b",")}
        request.keep_alive = b"close" not in options and (not http10 or b"keep-alive" in options)
    elif http10:
        request.keep_alive = False
    request.expects_continue = expect == b"100-continue" and not http10
    return request


class ChunkedBody:
    """A body in chunks (RFC 9112 7.1), parsed strictly, from pieces cut anywhere.

    feed() takes whatever the connection read and returns the body's bytes in
    it, and what comes after the body (the next request). Sizes are hex with
    no sign, space or overflow; each chunk ends in CRLF; extensions and
    trailers are read, bounded and dropped. Anything else is a Refusal: a
    parser more lenient than the one in front of it (a proxy) reads a
    different request boundary, and that is request smuggling.
    """

    def __init__(self, max_body: int) -> None:
        self.max_body = max_body
        self.received = 0
        self.pending = b""  # a size line, a CRLF or the trailer, not yet whole
        self.left = 0  # bytes of the current chunk's data still to come
        self.state = "size"  # size, data, crlf, trailer, done
        self.trailer = 0  # bytes of trailer lines so far

    def feed(self, data: bytes) -> tuple[list[bytes], bytes]:
        pieces = []
        if self.pending:
            data = self.pending + data
            self.pending = b""
        position = 0
        while position < len(data) and self.state != "done":
            if self.state == "data":
                piece = data[position : position + self.left]
                pieces.append(piece)
                position += len(piece)
                self.left -= len(piece)
                if not self.left:
                    self.state = "crlf"
            elif self.state == "crlf":
                if len(data) - position < 2:
                    break
                if data[position : position + 2] != b"\r\n":
                    raise Refusal(400, "a chunk without its CRLF")
                position += 2
                self.state = "size"
            else:
                end = data.find(b"\r\n", position)
                if end < 0:
                    if len(data) - position > MAX_CHUNK_LINE:
                        raise Refusal(400, "a chunk size line or trailer too long")
                    break
                if self.state == "size":
                    line = CHUNK_LINE.fullmatch(data, position, end + 2)
                    if line is None or end - position > MAX_CHUNK_LINE:
                        raise Refusal(400, "Bad chunk size line")
                    self.left = int(line.group(1), 16)
                    self.received += self.left
                    if self.received > self.max_body:
                        raise Refusal(413, "Content Too Large")
                    self.state = "data" if self.left else "trailer"
                elif end == position:  # the blank line after the trailer: the end of the body
                    self.state = "done"
                else:
                    self.trailer += end + 2 - position
                    if HEADER_LINE.fullmatch(data, position, end + 2) is None or self.trailer > MAX_TRAILER:
                        raise Refusal(400, "Bad trailer")
                position = end + 2
        if self.state != "done":
            self.pending = data[position:]
            return pieces, b""
        return pieces, data[position:]

    @property
    def done(self) -> bool:
        return self.state == "done"


class HttpConnection(asyncio.Protocol):
    """One persistent connection, from connection_made() to its close: heads, bodies, responses, one after another.

    Its states: "idle" between requests (--keep-alive), "head" while a head
    arrives (--timeout from its first byte), "busy" while a request runs (a
    RequestCycle, and its task), "lingering" after the last response (see
    linger()), "closed". Bytes that arrive while busy are the body's, then
    the next request's: they wait in self.buffer, so that a pipeline of
    requests in one read is answered in order, one after the other.
    """

    def __init__(self, number: int, service: Service) -> None:
        self.number = number
        self.service = service
        self.args = service.args
        self.deadlines = service.deadlines
        self.loop = service.loop
        self.transport: asyncio.Transport = None  # type: ignore[assignment]  # until connection_made()
        self.state = "idle"
        self.buffer = bytearray()  # what was read and not yet parsed: a head in part, the next requests
        self.scanned = 0  # where in the buffer to look for the end of a head next (what came before has no end)
        self.cycle: RequestCycle | None = None
        self.chunked: ChunkedBody | None = None
        self.body_left = 0  # of a Content-Length body still to read
        self.reading_paused = False
        self.writing_paused = False
        self.drained: asyncio.Future[None] | None = None
        self.client_done = False  # the client has sent its end of stream
        self.discarded = 0
        self.client: tuple[str, int] | None = None
        self.server: tuple[str, int] | None = None

    # Events, as the loop reports them.

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        # Counted open from here, not when the loop makes the protocol: one
        # it cannot make a transport for calls neither this nor connection_lost().
        self.service.opened(self)
        peer = transport.get_extra_info("peername")
        local = transport.get_extra_info("sockname")
        self.client = (peer[0], peer[1]) if isinstance(peer, tuple) else None
        self.server = (local[0], local[1]) if isinstance(local, tuple) else None
        if self.service.stopping:  # accepted as the stop came: nothing will be read
            self.close()
            return
        self.deadlines.set(self, self.args.keep_alive, self.idle_too_long)

    def data_received(self, data: bytes) -> None:
        if self.state == "busy":
            self.take(data)
        elif self.state in ("idle", "head"):
            if self.buffer:
                self.buffer += data
                self.read_head()
                return
            # The common case, a whole head in one read, goes without a copy into the buffer.
            end = data.find(b"\r\n\r\n")
            if end < 0 or end + 4 > MAX_HEAD:
                self.buffer += data
                self.read_head()
            else:
                if end + 4 < len(data):
                    self.buffer += data[end + 4 :]
                self.begin(data, end)
        elif self.state == "lingering":  # after the last response: dropped, and bounded
            self.discarded += len(data)
            if self.discarded >= LINGER_BYTES:
                self.close()

    def eof_received(self) -> bool:
        self.client_done = True
        if self.state == "busy" and not self.cycle_body_done():
            # The body will never be whole: the application hears that the client has gone.
            self.log_info("disconnected before the whole body was sent")
            return False
        if self.state == "head":
            self.log_info("disconnected before a complete request")
        # A client may half-close once it has sent its requests (nc -N does):
        # True keeps the transport open for the responses still owed.
        return self.state == "busy"

    def connection_lost(self, exc: Exception | None) -> None:
        self.state = "closed"
        self.deadlines.clear(self)
        self.deadlines.clear((self, "write"))
        self.service.closed(self)
        if self.cycle is not None:
            self.cycle.client_gone()
        if self.drained is not None and not self.drained.done():
            self.drained.set_result(None)

    def pause_writing(self) -> None:
        self.writing_paused = True

    def resume_writing(self) -> None:
        self.writing_paused = False
        self.deadlines.clear((self, "write"))
        if self.drained is not None and not self.drained.done():
            self.drained.set_result(None)

    # Reading requests.

    def read_head(self) -> None:
        """Look for the end of a head in the buffer; begin its request when it is whole."""
        buffer = self.buffer
        end = buffer.find(b"\r\n\r\n", self.scanned)
        if end < 0 or end + 4 > MAX_HEAD:
            head_request = buffer.startswith(b"HEAD ")  # whose answer has no body, even an error
            if len(buffer) > MAX_HEAD:
                if 0 <= buffer.find(b"\r\n", 0, MAX_HEAD) < MAX_HEAD:
                    self.refuse(Refusal(431, "Request head too large"), head_request)
                else:
                    self.refuse(Refusal(414, "Request line too long"), head_request)
                return
            # A line that ends in a bare LF never ends a head here: answer
            # now, rather than wait for a CRLF that h11 or a proxy, reading
            # LF as an end of line, would not wait for. (Only the new bytes
            # are looked at, as below.)
            start = max(1, self.scanned)
            if buffer.count(b"\n", start) != buffer.count(b"\r\n", start - 1) or buffer[:1] == b"\n":
                self.refuse(Refusal(400, "A line ends in a bare LF"), head_request)
                return
            # Search only the new bytes next time: rescanning would make a
            # head trickled a byte at a time cost O(n^2).
            self.scanned = max(0, len(buffer) - 3)
            if self.state == "idle" and buffer:
                # One deadline for the whole head, from its first byte: a
                # client that trickles a byte at a time does not extend it.
                self.state = "head"
                self.deadlines.set(self, self.args.timeout, self.head_too_slow)
            if self.client_done:
                self.close()
            return
        head = bytes(buffer[: end + 4])
        del buffer[: end + 4]  # from the front of a bytearray: no copy of the rest
        self.scanned = 0
        self.begin(head, end)

    def begin(self, data: bytes, end: int) -> None:
        """A whole head is in data[:end + 4]: parse it, and run its request."""
        self.deadlines.clear(self)
        try:
            request = parse_head(data, end, self.args.max_body)
        except Refusal as refusal:
            self.refuse(refusal, head_request=data.startswith(b"HEAD "))
            return
        self.state = "busy"
        cycle = RequestCycle(self, request)
        self.cycle = cycle
        if request.chunked:
            self.chunked = ChunkedBody(self.args.max_body)
        else:
            self.chunked = None
            self.body_left = request.length
            cycle.more_body = request.length > 0
        if self.buffer and cycle.more_body:  # the body's first bytes, perhaps the next requests
            data = bytes(self.buffer)
            self.buffer.clear()
            self.take(data)
            if self.state != "busy":  # refused meanwhile
                return
        elif self.buffer:
            self.regulate_reading()
        task = self.loop.create_task(cycle.run())
        cycle.task = task
        self.service.tasks.add(task)
        task.add_done_callback(self.service.tasks.discard)

    def take(self, data: bytes) -> None:
        """Bytes that arrived while a request runs: its body's first, then the next requests'."""
        cycle = self.cycle
        assert cycle is not None
        if not self.cycle_body_done():
            if self.chunked is not None:
                try:
                    pieces, rest = self.chunked.feed(data)
                except Refusal as refusal:
                    cycle.client_gone()
                    if cycle.response_complete:  # answered before the body came: the answer must not be reset
                        self.log_info(f"closed: {refusal.detail}")
                        self.linger()
                    elif cycle.response_started:  # too late for a status of our own, and the answer is cut anyway
                        self.log_info(f"closed: {refusal.detail}")
                        self.close()
                    else:
                        self.refuse(refusal, head_request=cycle.request.method == "HEAD")
                    return
                done = self.chunked.done
            else:
                if len(data) > self.body_left:
                    pieces, rest = [data[: self.body_left]], data[self.body_left :]
                else:
                    pieces, rest = [data], b""
                self.body_left -= len(pieces[0])
                done = not self.body_left
            cycle.body_arrived(pieces, done)
            if rest:
                self.buffer += rest
            if done and cycle.response_complete:  # the application answered before the body had come
                self.end_cycle()
                return
        else:
            self.buffer += data
        self.regulate_reading()

    def cycle_body_done(self) -> bool:
        if self.chunked is not None:
            return self.chunked.done
        return not self.body_left

    def regulate_reading(self) -> None:
        """Read while the unread body and the waiting requests are small; let the kernel hold the rest."""
        cycle = self.cycle
        full = len(self.buffer) > MAX_HEAD or (cycle is not None and cycle.unread > UNREAD_LIMIT)
        if full != self.reading_paused and self.state != "closed":
            self.reading_paused = full
            if full:
                self.transport.pause_reading()
            else:
                self.transport.resume_reading()

    # Writing responses.

    async def drain(self) -> None:
        """Wait while the transport holds more than its high-water mark: the client is not reading."""
        if self.drained is None or self.drained.done():
            self.drained = self.loop.create_future()
        self.deadlines.set((self, "write"), self.args.timeout, self.write_too_slow)
        await self.drained

    def response_done(self, cycle: RequestCycle) -> None:
        """The application has sent its whole response: on to the next request, or close."""
        if self.service.access_log:
            request = cycle.request
            target = request.target.decode("ascii")
            log.info('#%d "%s %s HTTP/%s" %d', self.number, request.method, target, request.version, cycle.status)
        if self.cycle is not cycle or self.state != "busy":
            return
        if not cycle.keep_alive:
            self.linger()
        elif self.cycle_body_done():
            self.end_cycle()
        else:  # the body is still coming: read and dropped (bounded by --max-body), then the next request
            self.regulate_reading()
            # Nobody waits for it now but this connection: without a
            # deadline, a client that never sends it would hold it forever.
            self.deadlines.set(self, self.args.timeout, self.body_too_slow)

    def end_cycle(self) -> None:
        """The response is sent and the body read: the next request, if it has come, else idle."""
        self.cycle = None
        self.chunked = None
        self.state = "idle"
        if self.service.stopping:
            self.linger()
            return
        if self.reading_paused:
            self.regulate_reading()
        if self.buffer:
            self.read_head()
        elif self.client_done:
            self.close()
        else:
            self.deadlines.set(self, self.args.keep_alive, self.idle_too_long)

    def refuse(self, refusal: Refusal, head_request: bool = False) -> None:
        """Answer a request the server will not run (its framing, its size) with an error, and close."""
        self.log_info(f"refused: {refusal.status} {refusal.detail}")
        body = f"{refusal.detail}\n".encode()
        self.transport.write(own_response(refusal.status, body, self.service, head_request))
        self.linger()

    # Closing.

    def linger(self) -> None:
        """FIN after the last response, then discard what the client sends until it closes.

        close() with unread input makes the kernel send RST, not FIN, and an
        RST makes the client's kernel throw away whatever of the response it
        holds unread (a client still uploading a body the server refused, or
        a pipeline behind a Connection: close). So the connection lingers,
        cut off after LINGER_SECONDS (never beyond --timeout) or LINGER_BYTES.
        """
        if self.state in ("lingering", "closed"):
            return
        self.state = "lingering"
        self.buffer.clear()
        if self.client_done:
            self.close()
            return
        try:
            self.transport.write_eof()  # after what is still buffered
        except OSError:  # the client had gone (a reset came back)
            self.close()
            return
        if self.reading_paused:
            self.reading_paused = False
            self.transport.resume_reading()
        self.deadlines.set(self, min(LINGER_SECONDS, self.args.timeout), self.close)

    def close(self) -> None:
        if self.state == "closed":
            return
        self.state = "closed"
        self.deadlines.clear(self)
        if self.cycle is not None:  # nothing more may be written: send() raises from now on
            self.cycle.client_gone()
        self.transport.close()  # connection_lost() follows, once the buffer is sent
        self.send_the_rest(math.inf)

    def send_the_rest(self, unsent_before: float) -> None:
        """After close(): --timeout at a time for the client to read what the transport still holds, then cut off.

        A response larger than the kernel takes, sent in one send(), waits in
        the transport's buffer, and the transport closes only once that is
        sent: for a client that reads nothing, never (the connection and its
        buffer were held until the stop). A client on a slow link that reads
        all along would lose the end of its response at a fixed bound: it
        gets --timeout more each time it has read some.
        """
        unsent = self.transport.get_write_buffer_size()
        if not unsent:  # connection_lost() is on its way
            return
        if unsent >= unsent_before:
            self.write_too_slow()
        else:
            self.deadlines.set(self, self.args.timeout, lambda: self.send_the_rest(unsent))

    def abort(self, outcome: str) -> None:
        self.log_info(outcome)
        self.state = "closed"
        if self.cycle is not None:
            self.cycle.client_gone()
        self.transport.abort()

    def stop(self) -> None:
        """The server stops: idle now, or once the response in progress is done (with Connection: close).

        A head begun but without its whole request line is idle too: a
        client that sends a byte now and then would hold the stop for
        --timeout. One whose request line has come is served, as in
        http_static.py.
        """
        if self.state == "idle" or (self.state == "head" and b"\n" not in self.buffer):
            self.close()
        elif self.cycle is not None:
            self.cycle.keep_alive = False
            self.cycle.wake()  # an application listening for http.disconnect hears it: a stream ends
            if self.cycle.response_complete:
                # Answered before its body came (HEAD /): the rest of that
                # body, read only to be dropped, held the stop for --timeout.
                self.linger()

    def idle_too_long(self) -> None:
        self.close()

    def head_too_slow(self) -> None:
        self.log_info("sent no complete request in time: closed")
        self.close()

    def body_too_slow(self) -> None:
        self.log_info("sent no whole body in time: closed")
        self.close()

    def write_too_slow(self) -> None:
        self.abort("did not read its response in time: closed")

    def log_info(self, message: str) -> None:
        if self.service.access_log:
            log.info("#%d %s", self.number, message)


class RequestCycle:
    """One request on a connection: its scope, its body as it arrives, its response as the application sends it."""

    def __init__(self, connection: HttpConnection, request: Request) -> None:
        self.connection = connection
        self.request = request
        self.task: asyncio.Task[None] | None = None
        self.body: list[bytes] = []  # arrived, not yet taken by the application
        self.unread = 0
        self.more_body = True  # more of the body is still to arrive
        self.request_done = False  # the application has had the whole body
        self.waiters: list[asyncio.Future[None]] = []  # receive() calls waiting: often one, at times more
        self.disconnected = False
        self.keep_alive = request.keep_alive and not connection.service.stopping
        self.expects_continue = request.expects_continue
        self.response_started = False
        self.response_complete = False
        self.status = 0
        self.head: bytes | None = None  # the response head, sent with the first piece of the body
        self.send_body = request.method != "HEAD"
        self.chunked = False
        self.length_left = -1  # of the response body, when the application gave a length
        raw_path, _, query = request.target.partition(b"?")
        root_path = connection.args.root_path or ""
        path = raw_path.decode("ascii")
        if b"%" in raw_path:  # unquote() costs more than the rest of the scope
            path = urllib.parse.unquote(path)
        self.scope = {
            "type": "http",
            "asgi": ASGI_VERSION,
            "http_version": request.version,
            "method": request.method,
            "scheme": "http",
            "path": root_path + path,
            "raw_path": root_path.encode() + raw_path,
            "query_string": query,
            "root_path": root_path,
            "headers": request.headers,
            "client": connection.client,
            "server": connection.server,
            "state": connection.service.state.copy(),
        }

    async def run(self) -> None:
        """The application, for this request: its errors are logged, and answered if the response has not started."""
        try:
            await self.connection.service.application(self.scope, self.receive, self.send)
        except asyncio.CancelledError:  # the stop's bound
            raise
        except Exception as exc:
            if isinstance(exc, ClientDisconnected) and self.disconnected:
                self.connection.log_info("disconnected before the whole response was sent")
            else:
                log.error("Exception in ASGI application", exc_info=exc)
            if not self.response_started and not self.disconnected:
                self.send_500()
            elif not self.response_complete:
                self.connection.close()
        else:
            if not self.response_started and not self.disconnected:
                log.error("ASGI callable returned without starting response.")
                self.send_500()
            elif not self.response_complete and not self.disconnected:
                if self.connection.service.stopping and self.length_left < 0:
                    # A stream (no length) that ended at the stop's http.disconnect:
                    # its end, as the client can tell it (the last chunk, or the close).
                    self.write(b"0\r\n\r\n" if self.chunked else b"")
                    self.complete()
                else:
                    log.error("ASGI callable returned without completing response.")
                    self.connection.close()

    # receive()

    async def receive(self) -> Message:
        if self.expects_continue and not self.response_started and not self.disconnected and self.more_body:
            # The client waits for this before it sends the body (curl past 1 KiB):
            # only now, so a body the application refuses unread is never sent.
            self.expects_continue = False
            self.connection.transport.write(CONTINUE)
        if not self.request_done:
            # (A stop wakes this too: the body of a request in progress is still its to read.)
            while not self.body and self.more_body and not (self.disconnected or self.response_complete):
                await self.wait(for_body=True)
            if not (self.disconnected or self.response_complete):
                body = self.body[0] if len(self.body) == 1 else b"".join(self.body)
                self.body.clear()
                self.unread = 0
                self.request_done = not self.more_body
                if self.connection.reading_paused:
                    self.connection.regulate_reading()
                return {"type": "http.request", "body": body, "more_body": self.more_body}
        # The whole body is taken: the next message is the end of the request,
        # when the client goes, the response is complete or the server stops.
        if not (self.disconnected or self.response_complete or self.connection.service.stopping):
            await self.wait(for_body=False)
        return DISCONNECT

    async def wait(self, for_body: bool) -> None:
        """Until wake(): for a body, --timeout at most; for the end of the request, as long as it takes.

        Each call waits on a future of its own: an application may call
        receive() from two tasks at once (one listens for http.disconnect
        while another polls with a time-out, as Starlette's
        request.is_disconnected() does), and with one future shared, the
        second call replaced the first's, which then never heard that the
        client had gone or that the server was stopping.
        """
        waiter = self.connection.loop.create_future()
        self.waiters.append(waiter)
        if for_body:
            self.connection.deadlines.set(waiter, self.connection.args.timeout, self.body_too_slow)
        try:
            await waiter
        finally:
            self.waiters.remove(waiter)
            if for_body:
                self.connection.deadlines.clear(waiter)

    def wake(self) -> None:
        for waiter in self.waiters:
            if not waiter.done():
                waiter.set_result(None)

    def body_arrived(self, pieces: list[bytes], done: bool) -> None:
        self.more_body = not done
        if not self.response_complete:  # else nobody will read it: dropped
            for piece in pieces:
                if piece:
                    self.body.append(piece)
                    self.unread += len(piece)
        self.wake()

    def body_too_slow(self) -> None:
        self.connection.log_info("sent no body in time: closed")
        self.client_gone()
        self.connection.close()

    def client_gone(self) -> None:
        self.disconnected = True
        self.wake()

    # send()

    async def send(self, message: Message) -> None:
        connection = self.connection
        if connection.writing_paused and not self.disconnected:
            await connection.drain()
        if self.disconnected:
            raise ClientDisconnected(errno.ECONNRESET, "the client has disconnected")
        kind = message["type"]
        if not self.response_started:
            if kind != "http.response.start":
                raise RuntimeError(f"expected ASGI message 'http.response.start', not {kind!r}")
            self.start_response(message)
        elif not self.response_complete:
            if kind != "http.response.body":
                raise RuntimeError(f"expected ASGI message 'http.response.body', not {kind!r}")
            self.write_body(message.get("body", b""), message.get("more_body", False))
        else:
            raise RuntimeError(f"ASGI message {kind!r} after the response was complete")

    def start_response(self, message: Message) -> None:
        """Make the head; it waits for the first piece of the body, to go out in the same write.

        But no longer than the application's next await: a stream whose first
        event comes late (server-sent events, a long poll) must show its head
        at once, or the client cannot tell it has been answered (see flush_head()).
        """
        status = message["status"]
        # Not 1xx: those are interim (RFC 9110 15.2), and a client that reads
        # one waits on for the final response, which would never come.
        if type(status) is not int or not 200 <= status <= 999:
            raise RuntimeError(f"a response's status is a number from 200 to 999, not {status!r}")
        lines = []
        length = -1
        for name, value in message.get("headers", ()):
            lowered = name.lower()
            if lowered == b"content-length":
                if not value.isdigit() or length >= 0:
                    raise RuntimeError(f"a bad or second Content-Length: {value!r}")
                length = int(value)
            elif lowered == b"connection":
                if b"close" in value.lower():
                    self.keep_alive = False
                continue  # the server says whether the connection persists
            elif lowered == b"transfer-encoding":
                continue  # so does it how the body is framed
            lines.append(b"%s: %s\r\n" % (name, value))
        block = b"".join(lines)
        # One match for them all, and a count: a CRLF inside a value would
        # make two valid lines of one, and start a header of the client's
        # choosing (response splitting).
        if HEADER_BLOCK.fullmatch(block) is None or block.count(b"\r\n") != len(lines):
            raise RuntimeError(f"a response header is not a token and visible characters: {block[:200]!r}")
        self.response_started = True
        self.status = status
        request = self.request
        if status in (204, 304):  # never a body (RFC 9110 6.4.1)
            self.send_body = False
        elif length >= 0:
            self.length_left = length
        elif request.version == "1.0":
            self.keep_alive = False  # the end of the connection is the end of the body
        else:
            self.chunked = self.send_body
            block += b"transfer-encoding: chunked\r\n"
        if self.expects_continue and self.more_body:
            # The final status instead of 100 Continue, before the whole body:
            # the client may send the body or not, and nobody can tell where
            # the next request would begin. So the connection ends, and the
            # head says so, as RFC 9110 10.1.1 asks: too late once it is sent.
            self.keep_alive = False
        if not self.keep_alive:
            block += b"connection: close\r\n"
        elif request.version == "1.0":
            block += b"connection: keep-alive\r\n"
        phrase = STATUS_PHRASES.get(status, b"")
        self.head = b"HTTP/1.1 %d %s\r\n%s%s\r\n" % (status, phrase, self.connection.service.headers_now(), block)
        self.connection.service.flush_head_soon(self)

    def flush_head(self) -> None:
        """The head alone, if the application went on to await something else before sending the body."""
        if self.head is not None and not self.disconnected:
            self.write(b"")

    def write_body(self, body: bytes, more: bool) -> None:
        if not self.send_body:  # HEAD, 204, 304: the application's body is dropped
            body = b""
        elif self.length_left >= 0:
            if len(body) > self.length_left:
                raise RuntimeError("the response body is longer than its Content-Length")
            self.length_left -= len(body)
            if not more and self.length_left:
                self.write(body)
                raise RuntimeError("the response body is shorter than its Content-Length")
        elif self.chunked:
            if body:
                body = b"%x\r\n%s\r\n" % (len(body), body)
            if not more:
                body += b"0\r\n\r\n"
        if body or self.head is not None:
            self.write(body)
        if not more:
            self.complete()

    def write(self, data: bytes) -> None:
        if self.head is not None:
            data = self.head + data
            self.head = None
        self.connection.transport.write(data)

    def complete(self) -> None:
        self.response_complete = True
        self.body.clear()
        self.unread = 0
        self.wake()  # receive() waiting for the end of the request returns http.disconnect
        self.connection.response_done(self)

    def send_500(self) -> None:
        self.status = 500
        self.response_started = True
        self.keep_alive = False
        self.head = None
        body = b"Internal Server Error"
        head_request = self.request.method == "HEAD"
        self.connection.transport.write(own_response(500, body, self.connection.service, head_request))
        self.complete()


def own_response(status: int, body: bytes, service: Service, head_request: bool = False) -> bytes:
    """A whole response of the server's own (a refusal, a 500), after which the connection closes."""
    head = b"HTTP/1.1 %d %s\r\n%s" % (status, STATUS_PHRASES[status], service.headers_now())
    head += b"content-type: text/plain; charset=utf-8\r\nconnection: close\r\n"
    return head + b"content-length: %d\r\n\r\n%s" % (len(body), b"" if head_request else body)


if __name__ == "__main__":
    sys.exit(main())
