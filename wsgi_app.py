#!/usr/bin/env python3
"""A WSGI application, served by wsgiref: the split between server and application.

WSGI (PEP 3333) is the contract between a Python web application and the
server that runs it: the server parses HTTP and calls app(environ,
start_response) once per request; the application returns the body. Because
the application knows nothing of sockets, the same `app` below runs unchanged
under any WSGI server:

    python wsgi_app.py 8000                 wsgiref (stdlib), a thread per connection
    gunicorn -w 4 wsgi_app:app              4 worker processes: every core
    waitress-serve --port=8000 wsgi_app:app a thread pool, on Windows too

That is the way to scale: keep the application, change the server. wsgiref is
the reference implementation, for development: HTTP/1.0 (a connection per
request), no pipelining, no protection against slow clients. gunicorn or
waitress, with nginx in front for the internet, are what production uses.

Routes: GET / says hello; POST /reverse answers with the request body reversed
(at most 1 MiB, exactly Content-Length bytes read).

Try it:  python wsgi_app.py 8000
         curl -d 'hello' http://127.0.0.1:8000/reverse     # olleh
"""

from __future__ import annotations

import argparse
import itertools
import logging
import math
import signal
import socket
import socketserver
import sys
import threading
import time
from typing import Any, Callable, Iterable, Tuple
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

MAX_BODY = 1024 * 1024  # POST /reverse reads no more than this
BACKLOG = max(socket.SOMAXCONN, 4096)
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
# After a response, how long and how much a client may go on sending before the
# server closes anyway (see close_gracefully()). Apache lingers 2 s per read.
LINGER_SECONDS = 2.0
LINGER_BYTES = 16 * 1024 * 1024
CHUNK_SIZE = 64 * 1024  # one recv() per chunk while discarding

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
    if not declared.isdigit():  # "-1", "1e3", " 5": not a length
        return text("400 Bad Request", "Content-Length must be a whole number\n")
    length = int(declared)
    if length > MAX_BODY:
        # Checked before reading a byte: the limit protects memory only if
        # the body is never read into it.
        return text("413 Content Too Large", f"at most {MAX_BODY} bytes\n")
    body = read_body(environ["wsgi.input"], length)
    if len(body) < length:
        return text("400 Bad Request", "the body is shorter than Content-Length\n")
    return "200 OK", [("Content-Type", "application/octet-stream")], body[::-1]


def read_body(stream: Any, length: int) -> bytes:
    # wsgi.input may return less than asked (PEP 3333 allows it); reading past
    # CONTENT_LENGTH could block forever on a keep-alive connection.
    chunks = []
    remaining = length
    while remaining > 0:
        chunk = stream.read(min(remaining, 64 * 1024))
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
    except OSError as exc:
        print(f"cannot listen on {format_address(args.host, args.port)}: {reason(exc)}", file=sys.stderr)
        return 1
    # Leaving the with-block calls server_close(): it closes the listener and
    # joins the connection threads, so responses in progress finish.
    with server:
        stop_on_signals(server)
        print(f"Listening on http://{format_address(*server.server_address[:2])}/", flush=True)
        server.serve_forever()
    log.info("stopped")
    return 0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("port", type=port_number, help="TCP port; 0 lets the OS pick a free one")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on; 0.0.0.0 or :: exposes the server")
    parser.add_argument("--timeout", type=seconds, default=10.0, help="seconds a client has to send each read")
    parser.add_argument("-q", "--quiet", action="store_true", help="no per-request log lines")
    return parser.parse_args(argv)


def port_number(text: str) -> int:
    port = int(text)
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port must be 0..65535, not {port}")
    return port


def seconds(text: str) -> float:
    value = float(text)
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a number of seconds > 0, not {text!r}")
    return value


def make_server(args: argparse.Namespace) -> ThreadingWSGIServer:
    family, _, _, _, address = socket.getaddrinfo(args.host, args.port, flags=socket.AI_PASSIVE)[0]
    server = ThreadingWSGIServer(address[:2], family, args.timeout)
    server.set_app(app)
    return server


class ThreadingWSGIServer(socketserver.ThreadingMixIn, WSGIServer):
    """wsgiref's server with a thread per connection, IPv6 and a real backlog."""

    request_queue_size = BACKLOG  # socketserver's default is 5
    daemon_threads = False  # joined by server_close(): responses in progress finish

    def __init__(self, address: tuple[str, int], family: socket.AddressFamily, timeout: float) -> None:
        self.address_family = family  # read by TCPServer.__init__ to make the socket
        self.request_timeout = timeout
        self.numbers = itertools.count(1)
        super().__init__(address, RequestHandler)

    def server_bind(self) -> None:
        # WSGIServer.server_bind() goes through HTTPServer's, which looks up
        # socket.getfqdn(host): a reverse DNS query that can take seconds.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]
        self.setup_environ()


class RequestHandler(WSGIRequestHandler):
    server: ThreadingWSGIServer

    def setup(self) -> None:
        # Applied to the socket by StreamRequestHandler: a client that stops
        # sending mid-request is dropped instead of holding its thread forever.
        self.timeout = self.server.request_timeout
        self.number = next(self.server.numbers)
        super().setup()

    def finish(self) -> None:
        super().finish()  # sends what is still buffered
        # A response went out (wsgiref answers every request line it reads,
        # and always closes): the client may still be sending a body that the
        # app refused to read (411, 413, 400).
        if getattr(self, "raw_requestline", b""):
            close_gracefully(self.connection, self.server.request_timeout)

    def log_message(self, format: str, *args: Any) -> None:
        log.info("#%d " + format, self.number, *args)  # formatted only if logged


def format_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def reason(exc: OSError) -> str:
    # create_server() appends the address to strerror; the caller names it already.
    return exc.strerror.split(" (while attempting")[0] if exc.strerror else str(exc)


def stop_on_signals(server: socketserver.BaseServer) -> None:
    """Make SIGINT and SIGTERM end serve_forever()."""

    def stop(signum: int, frame: Any) -> None:
        # This handler runs in the thread that is inside serve_forever(), and
        # shutdown() waits for serve_forever() to return: called here, it
        # would wait for itself forever. A helper thread calls it instead.
        threading.Thread(target=server.shutdown).start()

    for signum in STOP_SIGNALS:
        signal.signal(signum, stop)


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
