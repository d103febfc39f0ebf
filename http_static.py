#!/usr/bin/env python3
"""Static files over HTTP/1.1: python -m http.server, made fit for daily use.

http.server (Lib/http/server.py) parses requests, lists directories and maps
paths to files; this script keeps all that and fixes what `python -m
http.server` gets wrong for real use:

- keep-alive (HTTP/1.1) without 40 ms stalls: headers and small bodies leave
  in one send(), and Nagle's algorithm is off;
- large files go out with socket.sendfile(), from the page cache to the
  socket without passing through Python (zero copy), falling back to send()
  where the platform has no sendfile;
- single byte ranges (206, 416), so video seeking and resumed downloads work;
- modern types: .wasm as application/wasm (WebAssembly.instantiateStreaming
  refuses anything else), .js and .mjs as text/javascript;
- nothing outside --directory is reachable, whatever the path encodes (..,
  %2e%2e, %2f, backslashes, NUL bytes, symlinks), and no open redirect
  (CVE-2021-28861) on any Python version;
- dotfiles stay private: .env, .git/config and any other path with a segment
  that starts with "." get 404 and are left out of listings (--dotfiles
  serves them), however the path is encoded, and through symlinks too;
- fresh after every edit: Cache-Control: no-cache makes the browser ask each
  time, and an ETag of the file's size and nanosecond mtime answers 304 when
  nothing changed (Last-Modified alone has one-second resolution, and without
  Cache-Control browsers guess a freshness and reuse stale scripts);
- --cors for a page on another origin (a dev server on another port);
- --tls-cert and --tls-key for HTTPS, as Python 3.14's http.server has, on
  every Python from 3.8;
- requests are read by RFC 9112, strictly (StrictRequest): obs-fold, a bare
  CR or LF, NUL, conflicting lengths, Transfer-Encoding with Content-Length
  and HTTP/1.1 without Host get 400 and a close, where http.server's parser
  let through what request smuggling and header injection are made of; a body
  on a GET is dropped, never read as the next request;
- each request must arrive within --timeout (idle time before it included,
  and a trickle of bytes does not extend it); shutdown closes idle
  connections (and TLS handshakes) at once and gives responses in progress
  --timeout to finish; a client that goes away is no error; and the server
  never does a reverse DNS lookup at start.

Concurrency: a thread per connection (ThreadingHTTPServer). It is NOT a
production server: no HTTP/2, no compression, a thread per keep-alive
connection (a few hundred idle browsers hold a few hundred threads), and a
strict parser is still not a hardened one: it has been fuzzed against h11, not
attacked for years as nginx has. For the internet, put the files behind nginx,
Caddy or a CDN; use this for local development and trusted networks.

HTTPS for local use, such as a phone on the LAN that needs a secure context
(service workers, the camera): make a self-signed certificate that names this
machine's LAN address, and listen on the LAN (--host 0.0.0.0),

    ip=$(hostname -I | cut -d' ' -f1)     # Linux; on macOS: ip=$(ipconfig getifaddr en0)
    openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj /CN=localhost \\
        -addext "subjectAltName=DNS:localhost,IP:127.0.0.1,IP:$ip" -keyout key.pem -out cert.pem
    python http_static.py 8443 --host 0.0.0.0 --tls-cert cert.pem --tls-key key.pem

and open https://that-address:8443/ on the phone. A browser warns about it,
rightly: no authority it trusts vouches that this certificate belongs to this
host, so it cannot tell your server from an impostor. Accept it once for your
own machine, or make a locally trusted one with a tool such as mkcert.

The approach is StaticHandler; the rest is the skeleton the servers share, and
strict HTTP.

Standard library only; CPython 3.8 to 3.15.

Try it:  python http_static.py 8000 --directory site/
         curl -i http://127.0.0.1:8000/
"""

from __future__ import annotations

import argparse
import email.utils
import functools
import html
import http.server
import io
import itertools
import logging
import math
import os
import posixpath
import re
import signal
import socket
import socketserver
import ssl
import stat
import sys
import threading
import time
import urllib.parse
import weakref
from typing import Any, BinaryIO

BACKLOG = max(socket.SOMAXCONN, 4096)  # a browser opens several connections at once
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
MAX_SECONDS = 24 * 60 * 60.0  # the most any option in seconds takes (see seconds())
SMALL_BODY = 64 * 1024  # bodies up to this size go out with the headers, in one send()
# After a response, how long and how much a client may go on sending before the
# server closes anyway (see close_gracefully()): 2 s in all, enough for a client
# that reads its reply, and soon enough to free the thread or process. (nginx
# waits up to 5 s between reads, 30 s in all.)
LINGER_SECONDS = 2.0
LINGER_BYTES = 16 * 1024 * 1024
CHUNK_SIZE = 64 * 1024  # one recv() per chunk while discarding
# At most 18 digits, a billion gigabytes: past that the header is ignored, and
# int() never meets a 5,000-digit number (Python 3.11 and later refuse such a
# conversion with ValueError: a traceback and no response, before this bound).
SINGLE_RANGE = re.compile(r"bytes=(\d{0,18})-(\d{0,18})")
# Request heads by RFC 9112, and no further: a request line of visible ASCII,
# header lines of a token, a colon and visible characters, each ending in CRLF.
# A bare CR or LF, obs-fold and NUL match neither. One quantifier a line: a
# line of spaces that fails must fail in one pass, not in one per space.
TOKEN = rb"[-!#$%&'*+.^_`|~0-9A-Za-z]+"  # RFC 9110 5.6.2: a method, a header name
REQUEST_LINE = re.compile(rb"(%s) ([!-~]+) HTTP/([0-9])\.([0-9])\r\n" % TOKEN)
HEADER_LINE = re.compile(rb"(%s):([\t !-~\x80-\xff]*)\r\n" % TOKEN)
MAX_LINE = 65536  # http.server's bounds: the bytes of one line, and the header lines of a request
MAX_HEADERS = 100
# What --cors echoes of Access-Control-Request-Headers: header names, and commas.
TOKEN_LIST = re.compile(r"[-!#$%&'*+.^_`|~0-9A-Za-z]+(?:[\t ]*,[\t ]*[-!#$%&'*+.^_`|~0-9A-Za-z]+)*")
MODERN_TYPES = {
    ".wasm": "application/wasm",
    ".js": "text/javascript",  # what RFC 9239 says; older Pythons say application/javascript
    ".mjs": "text/javascript",
    ".json": "application/json",
    ".svg": "image/svg+xml",
    ".webp": "image/webp",
    ".avif": "image/avif",
    ".woff2": "font/woff2",
}

log = logging.getLogger("http_static")


class RangeNotSatisfiable(Exception):
    """The Range header asks only for bytes past the end of the file: 416."""


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO,
        format="%(asctime)s %(message)s",
    )
    if not os.path.isdir(args.directory):
        print(f"not a directory: {args.directory}", file=sys.stderr)
        return 1
    tls = None
    if args.tls_cert:
        files = " and ".join(name for name in (args.tls_cert, args.tls_key) if name)
        try:
            tls = tls_context(args.tls_cert, args.tls_key)
        except ssl.SSLError:  # before OSError: it is one
            print(f"not a PEM certificate with its private key: {files}", file=sys.stderr)
            return 1
        except OSError as exc:
            print(f"cannot read {files}: {exc.strerror or exc}", file=sys.stderr)
            return 1
    try:
        server = make_server(args, tls)
    except (OSError, UnicodeError) as exc:
        print(f"cannot listen on {format_address(args.host, args.port)}: {reason(exc)}", file=sys.stderr)
        return 1
    # Leaving the with-block calls server_close(): it closes the listener and
    # joins the connection threads, so responses in progress finish.
    with server:
        stop_on_signals(server)
        scheme = "https" if tls else "http"
        print(f"Listening on {scheme}://{format_address(*server.server_address[:2])}/", flush=True)
        try:
            server.serve_forever()
        except StopServing:  # see stop_on_signals()
            pass
    log.info("stopped")
    ignore_stop_signals()  # a stop signal now would kill the interpreter as it shuts down
    return 0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        epilog=__doc__.split("\n", 1)[1].strip(),
        formatter_class=HelpFormatter,
    )
    parser.add_argument(
        "port",
        type=port_number,
        nargs="?",
        default=8000,
        help="TCP port, as python -m http.server has it; 0 lets the OS pick",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on; 0.0.0.0 or :: exposes the server")
    parser.add_argument("--directory", default=os.curdir, help="the folder to serve")
    parser.add_argument(
        "--timeout",
        type=positive_seconds,
        default=10.0,
        help="seconds each request may take to arrive, idle time before it included",
    )
    parser.add_argument("--dotfiles", action="store_true", help="serve and list names that start with .")
    parser.add_argument("--cors", action="store_true", help="let pages from any origin fetch these files (CORS)")
    parser.add_argument("--tls-cert", metavar="FILE", help="serve HTTPS with this PEM certificate (chain)")
    parser.add_argument("--tls-key", metavar="FILE", help="its private key, if not in the certificate file")
    parser.add_argument("-q", "--quiet", action="store_true", help="no per-request log lines")
    args = parser.parse_args(argv)
    if args.tls_key and not args.tls_cert:
        parser.error("--tls-key needs --tls-cert")
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


def tls_context(cert: str, key: str | None) -> ssl.SSLContext:
    # The server side of the library's defaults: TLS 1.2 and up, no weak ciphers.
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context


def make_server(args: argparse.Namespace, tls: ssl.SSLContext | None) -> StaticServer:
    family, _, _, _, address = socket.getaddrinfo(args.host, args.port, flags=socket.AI_PASSIVE)[0]
    directory = os.path.realpath(args.directory)
    handler = functools.partial(StaticHandler, directory=directory)
    return StaticServer(address[:2], handler, family, args.timeout, args.dotfiles, args.cors, tls)


class StaticServer(http.server.ThreadingHTTPServer):
    """ThreadingHTTPServer with IPv6, a real backlog, and threads that finish their work."""

    request_queue_size = BACKLOG  # socketserver's default is 5
    # ThreadingHTTPServer makes daemon threads, which die mid-response when the
    # process exits. Non-daemon threads are joined by server_close() instead.
    daemon_threads = False

    def __init__(
        self,
        address: tuple[str, int],
        handler: Any,
        family: socket.AddressFamily = socket.AF_INET,
        timeout: float = 10.0,
        dotfiles: bool = False,
        cors: bool = False,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.address_family = family  # read by TCPServer.__init__ to make the socket
        self.idle_timeout = timeout
        self.dotfiles = dotfiles
        self.cors = cors
        self.numbers = itertools.count(1)
        self.connections: set[socket.socket] = set()  # every connection a thread serves
        self.waiting: set[socket.socket] = set()  # those between two requests (or in a TLS handshake)
        self.waiting_lock = threading.Lock()
        self.threads: weakref.WeakSet[threading.Thread] = weakref.WeakSet()  # see process_request()
        self.stopping = False
        self.stop_requested = False
        self.tls = tls  # get_request() wraps each connection; the handshake is its thread's (StaticHandler.setup)
        super().__init__(address, handler)

    def get_request(self) -> tuple[Any, Any]:
        try:
            conn, address = super().get_request()
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
        if self.tls is None:
            return conn, address
        # Wrapped here, its handshake left to the connection's own thread: done
        # in accept(), one slow or hostile client would stall every other.
        # That is what Python 3.14's own http.server.HTTPSServer does: it wraps
        # the listener, and handshakes inside accept(), in the accepting
        # thread; a client that connects and sends nothing stalls every other
        # for good (seen on 3.14.10). So this script keeps its own TLS, on every
        # Python. A listener wrapped whole also raised inside accept() for a
        # client that had reset while queued, and was met as the open-file
        # limit is: a log line and a pause of 0.1 s for every such client, so
        # that a stream of them stopped all HTTPS.
        try:
            conn.getpeername()  # ENOTCONN for a client that reset while queued: no one to serve
            return self.tls.wrap_socket(conn, server_side=True, do_handshake_on_connect=False), address
        except OSError:
            conn.close()
            raise  # socketserver drops it, and accepts the next

    def process_request(self, request: Any, client_address: Any) -> None:
        """Serve the connection on a thread of its own; close it if no thread can start.

        ThreadingMixIn's version records the thread before starting it. When
        the start fails ("can't start new thread": a limit on tasks, such as
        ulimit -u, a cgroup's pids.max or systemd's TasksMax, or no memory for
        a stack), socketserver prints the traceback, and server_close() later
        fails on that thread ("cannot join thread before it is started")
        without waiting for the others.
        """
        thread = threading.Thread(target=self.process_request_thread, args=(request, client_address))
        thread.daemon = self.daemon_threads
        with self.waiting_lock:
            self.connections.add(request)
        try:
            thread.start()
        except RuntimeError as exc:
            log.warning("no thread for a new connection (%s): closed", exc)
            self.shutdown_request(request)
            return
        self.threads.add(thread)  # weakly: a thread that has ended leaves the set

    def shutdown_request(self, request: Any) -> None:
        with self.waiting_lock:
            self.connections.discard(request)
        super().shutdown_request(request)

    def server_close(self) -> None:
        """Close the idle keep-alive connections at once, then join the threads.

        A browser keeps spare connections open; without this, shutdown waits
        for each to time out (--timeout) before its thread ends. Shutting a
        socket down wakes the thread blocked reading it, which sees the end of
        the stream and finishes. A request that arrives in the same instant is
        lost, as with nginx: clients retry a request that fails on a reused
        keep-alive connection.

        A response in progress goes on, for --timeout at most. Each send()
        has --timeout, but a client that reads a little now and then (a large
        file over a slow link, or on purpose) resets it with every read, and
        held the stop for as long as its download lasted. Past the bound its
        connection is shut down too, and that client gets part of the file:
        the one case where a response is cut.
        """
        with self.waiting_lock:
            self.stopping = True
            for conn in self.waiting:
                wake(conn)
        super().server_close()
        deadline = time.monotonic() + self.idle_timeout
        for thread in list(self.threads):
            thread.join(max(0.0, deadline - time.monotonic()))
        with self.waiting_lock:
            for conn in self.connections:
                wake(conn)
        for thread in list(self.threads):
            thread.join()

    def service_actions(self) -> None:
        if self.stop_requested:  # see stop_on_signals()
            raise StopServing

    def server_bind(self) -> None:
        # HTTPServer.server_bind() looks up socket.getfqdn(host), a reverse DNS
        # query that can take seconds on a badly configured network, for a
        # name this server never uses. Skip it.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]


def wake(conn: socket.socket) -> None:
    """Shut a connection down, which wakes the thread blocked on it (its recv() ends, its send() fails)."""
    try:
        # The socket's own shutdown(): SSLSocket's drops the TLS session first,
        # under the feet of the thread that is using it.
        socket.socket.shutdown(conn, socket.SHUT_RDWR)
    except OSError:  # closed already
        pass


def format_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def reason(exc: OSError | UnicodeError) -> str:
    if isinstance(exc, UnicodeError):  # the idna codec refused the host: an empty label, one of 64 letters
        return f"not a host name ({exc})"
    # create_server() appends the address to strerror; the caller names it already.
    return exc.strerror.split(" (while attempting")[0] if exc.strerror else str(exc)


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
            raise socket.timeout("timed out")
        # settimeout() is a system call (an ioctl) that releases the GIL, and
        # with 20 connections each release is a chance to switch threads: done
        # for every recv(), it cost 10% of the requests/s. Only a request
        # that comes in pieces pays it.
        self.conn.settimeout(remaining)
        try:
            return self.conn.recv_into(buffer)
        finally:
            self.conn.settimeout(self.timeout)  # the bound of each write that follows


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


class StaticHandler(StrictRequest, http.server.SimpleHTTPRequestHandler):
    """SimpleHTTPRequestHandler with keep-alive, sendfile, ranges and a locked door."""

    protocol_version = "HTTP/1.1"  # keep-alive; every response must then say its length
    # http.server writes unbuffered by default (wbufsize = 0): the status
    # line and headers in one send(), the body in another. With Nagle's
    # algorithm on, the kernel holds a second small write until the first is
    # acknowledged, and the client delays that ACK by up to 40 ms hoping to
    # piggyback it: keep-alive requests stall. So: a buffer, which sends
    # headers and a small body together, and TCP_NODELAY for the large files,
    # whose headers go ahead of sendfile().
    wbufsize = SMALL_BODY
    disable_nagle_algorithm = True
    extensions_map = {**http.server.SimpleHTTPRequestHandler.extensions_map, **MODERN_TYPES}
    server: StaticServer

    def setup(self) -> None:
        # StreamRequestHandler applies self.timeout to the socket: a connection
        # idle this long between requests is closed, so a browser's spare
        # connections cannot hold threads forever.
        self.timeout = self.server.idle_timeout
        self.number = next(self.server.numbers)
        self.responded = False
        super().setup()
        self.rfile.close()  # socketserver's, whose reads the socket's timeout bounds one by one
        self.reader = RequestReader(self.connection, self.server.idle_timeout)
        self.rfile = io.BufferedReader(self.reader)
        self.tls = self.tls_failed = False
        if isinstance(self.connection, ssl.SSLSocket):
            # A client still in its handshake has asked for nothing yet: it
            # is idle, and shutdown closes it at once. (Left out, one that
            # never sent its ClientHello held the stop for --timeout.)
            self.tls_failed = not self.wait_idle()
            try:
                if not self.tls_failed:
                    self.connection.do_handshake()  # bounded by the socket's --timeout
                    self.tls = True
            except (OSError, ValueError) as exc:  # ssl.SSLError, a time-out, a reset
                if not self.server.stopping:
                    log.info("#%d TLS handshake failed: %s", self.number, exc)
                self.tls_failed = True
            with self.server.waiting_lock:
                self.server.waiting.discard(self.connection)

    def handle(self) -> None:
        if self.tls_failed:  # nothing to read on a connection whose handshake failed
            return
        try:
            super().handle()
        except (ConnectionError, ssl.SSLError) as exc:
            # A reset or a broken pipe: the client went away, as a browser
            # does when a tab closes mid-download. No error, and no traceback
            # (socketserver's handle_error() prints one, and -q cannot stop it).
            if self.server.stopping:
                log.info("#%d closed at shutdown", self.number)
            else:
                log.info("#%d went away: %s", self.number, exc.strerror or exc)
            self.responded = False  # nobody to linger for

    def wait_idle(self) -> bool:
        """Count this connection as idle, so that shutdown may close it; False if shutdown has begun."""
        with self.server.waiting_lock:
            if self.server.stopping:
                return False
            self.server.waiting.add(self.connection)
            return True

    def handle_one_request(self) -> None:
        if not self.wait_idle():
            # The response just sent was the last. The client may have sent
            # its next request already (pipelining): left unread, close()
            # would reset the connection, and the reset destroys the end of
            # that response in the client's buffers (a client reading 8 MB
            # got 5.3 MB, then ECONNRESET). Then finish() closes gracefully.
            # Otherwise at once: a browser keeps an idle connection open, and
            # the linger would hold up shutdown for 2 s.
            self.close_connection = True
            self.responded = has_input(self.connection)
            return
        self.responded = False
        self.reader.start()  # idle, then sending: --timeout for both together
        super().handle_one_request()

    def parse_request(self) -> bool:
        # The request line has arrived: busy until the response is sent.
        with self.server.waiting_lock:
            self.server.waiting.discard(self.connection)
        if not super().parse_request():
            return False
        if self.content_length and hasattr(self, "do_" + self.command):
            # A file needs no body, but a GET may carry one, and left unread
            # it would be read as the next request. A small one is read and
            # dropped, so the connection stays open; a larger one is refused
            # unread (and then discarded within close_gracefully()'s bounds).
            # Methods this server lacks get their 501 unread the same way.
            if self.content_length > SMALL_BODY:
                return self.refuse(413, "A static file takes no request body")
            if self.expects_continue:
                self.wfile.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                self.wfile.flush()
            if len(self.rfile.read(self.content_length)) < self.content_length:
                self.close_connection = True  # gone mid-body: nobody to answer
                return False
        return True

    def send_response_only(self, code: int, message: str | None = None) -> None:
        self.responded = True  # every response passes here, errors included
        super().send_response_only(code, message)

    def end_headers(self) -> None:
        if self.server.cors:  # on every response, errors included: the page can read why
            self.send_header("Access-Control-Allow-Origin", "*")
        super().end_headers()

    def do_OPTIONS(self) -> None:
        """A CORS preflight: which methods and headers a page from another origin may use."""
        if not self.server.cors:
            self.send_error(501, f"Unsupported method ({self.command!r})")  # what http.server answers
            return
        self.send_response(204)  # no body, and so no Content-Length (RFC 9110)
        self.send_header("Access-Control-Allow-Methods", "GET, HEAD, OPTIONS")
        # Echoed only if it is what RFC 9110 says it is, a list of header
        # names: nothing from a request reaches a response header unchecked.
        requested = self.headers.get("Access-Control-Request-Headers", "")
        if TOKEN_LIST.fullmatch(requested):
            self.send_header("Access-Control-Allow-Headers", requested)
        self.send_header("Access-Control-Max-Age", "600")  # the browser may skip the preflight for 10 minutes
        self.end_headers()

    def finish(self) -> None:
        with self.server.waiting_lock:
            self.server.waiting.discard(self.connection)
        try:
            super().finish()  # sends what is still buffered
        except OSError:  # the client has gone: what was buffered is lost, and nothing more is owed
            self.rfile.close()  # socketserver closes it after wfile, which raised
            return
        if self.tls:
            send_close_notify(self.connection)
        # The server closes after a response (an error, Connection: close): the
        # client may still be sending a body nobody read. After an idle
        # time-out or the client's own close, there is nothing to wait for.
        if self.responded:
            close_gracefully(self.connection, self.server.idle_timeout)

    def do_GET(self) -> None:
        body = self.send_head()
        if body is None:
            return
        file, offset, length = body
        with file:
            if length <= SMALL_BODY:
                # Into wfile's buffer, after the headers: handle_one_request()
                # flushes both in one send(). For a small file, one system call
                # matters more than zero copy: with many connections, every
                # call is a trip through the GIL.
                if offset:  # a range: seek, or the system call is for nothing
                    file.seek(offset)
                data = file.read(length)
                self.wfile.write(data)
                sent = len(data)
            else:
                # Straight from the page cache to the socket: no read() into
                # Python and write() back out. socket.sendfile() falls back to
                # send() by itself where os.sendfile() does not exist.
                self.wfile.flush()  # the headers first
                sent = self.connection.sendfile(file, offset, length)
        if sent < length:
            # The file shrank after its size went out in Content-Length. The
            # client would wait for the rest, then take the next response's
            # first bytes for it; only the end of the connection tells it
            # that this body is short.
            log.warning("#%d %s: %d of %d bytes, the file shrank: closed", self.number, self.path, sent, length)
            self.close_connection = True

    def do_HEAD(self) -> None:
        body = self.send_head()
        if body is not None:
            body[0].close()

    def send_head(self) -> tuple[BinaryIO, int, int] | None:  # type: ignore[override]
        """Send the status line and headers; return (file, offset, length) for the body, or None."""
        path = self.translate_path(self.path)
        if path is None:
            self.send_error(404, "File not found")
            return None
        if os.path.isdir(path):
            url_path = urllib.parse.urlsplit(self.path).path
            if not url_path.endswith("/"):
                self.redirect_to_directory()
                return None
            for index in ("index.html", "index.htm"):
                # Checked as if asked for by name: an index that links out of
                # the directory, or to a dotfile, is no index.
                index_path = self.translate_path(url_path + index)
                if index_path is not None and os.path.isfile(index_path):
                    path = index_path
                    break
            else:
                listing = self.list_directory(path)  # sends its own headers, Content-Length included
                return None if listing is None else (listing, 0, len(listing.getbuffer()))
        try:
            # Unbuffered: do_GET() reads a small file whole or sends a large
            # one with sendfile(). A buffered reader would only add system
            # calls, an isatty() and an lseek(), and with many connections
            # each is a trip through the GIL: 20 keep-alive connections went
            # from 0.64x to 0.78x the seed's requests/s on 3.8 without them.
            # O_NONBLOCK: open() on a FIFO (a named pipe in the folder) would
            # wait for a writer for good, holding the thread, and the stop.
            file = open(os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0)), "rb", buffering=0)
        except OSError:
            self.send_error(404, "File not found")
            return None
        if not stat.S_ISREG(os.fstat(file.fileno()).st_mode):  # a FIFO, a device: no file to serve
            file.close()
            self.send_error(404, "File not found")
            return None
        try:
            return self.send_file_headers(file, path)
        except BaseException:
            file.close()
            raise

    def translate_path(self, path: str) -> str | None:  # type: ignore[override]
        """The file a URL path names, or None if it would lie outside the served directory.

        The stdlib's translate_path() already drops '..' and any segment that
        decodes to a separator ('%2f', and '\\' on Windows); on top of that,
        a NUL byte is refused (open() would raise ValueError, not OSError), and
        symlinks are resolved, so one that points out of the directory fails.
        Dotfiles are checked on both paths: the one asked for ('/.env', or
        '/.hidden' linked to a public file) and the one it resolves to (a
        public name linked to '.env').
        """
        candidate = super().translate_path(path)
        if "\0" in candidate:
            return None
        try:
            # '%ed%a0%80' decodes to a lone surrogate, which no file name can
            # hold: realpath() would raise UnicodeEncodeError, a traceback
            # and no response.
            os.fsencode(candidate)
        except UnicodeEncodeError:
            return None
        real = os.path.realpath(candidate)
        if real != self.directory and not real.startswith(os.path.join(self.directory, "")):
            return None
        if not self.server.dotfiles and (self.is_hidden(candidate) or self.is_hidden(real)):
            return None
        # realpath() drops a trailing slash: '/notes.txt/' must not name a file.
        if candidate.endswith(os.sep) and not os.path.isdir(real):
            return None
        return real

    def is_hidden(self, path: str) -> bool:
        relative = os.path.relpath(path, self.directory)
        return any(part.startswith(".") and part != os.curdir for part in relative.split(os.sep))

    def list_directory(self, path: str) -> io.BytesIO | None:  # type: ignore[override]
        """The listing http.server makes, without the dotfiles unless --dotfiles."""
        try:
            names = os.listdir(path)
        except OSError:
            self.send_error(404, "No permission to list directory")
            return None
        if not self.server.dotfiles:  # neither '.env' nor a link to it
            names = [name for name in names if not self.is_hidden(os.path.realpath(os.path.join(path, name)))]
            names = [name for name in names if not name.startswith(".")]
        names.sort(key=str.lower)
        # The directory, without the query or a fragment (as Python 3.14
        # shows it), decoded as translate_path() decoded it to find it.
        shown = self.path.split("#", 1)[0].split("?", 1)[0]
        try:
            shown = urllib.parse.unquote(shown, errors="surrogatepass")
        except UnicodeDecodeError:
            shown = urllib.parse.unquote(shown)
        title = f"Directory listing for {html.escape(shown, quote=False)}"
        encoding = sys.getfilesystemencoding()
        lines = ["<!DOCTYPE HTML>", '<html lang="en">', "<head>", f'<meta charset="{encoding}">']
        lines += [f"<title>{title}</title>", "</head>", "<body>", f"<h1>{title}</h1>", "<hr>", "<ul>"]
        for name in names:
            full = os.path.join(path, name)
            link = name + "/" if os.path.isdir(full) else name
            shown_name = name + "@" if os.path.islink(full) else link  # a link to a folder: @, but links with /
            href = urllib.parse.quote(link, errors="surrogatepass")
            lines.append(f'<li><a href="{href}">{html.escape(shown_name, quote=False)}</a></li>')
        lines += ["</ul>", "<hr>", "</body>", "</html>", ""]
        page = "\n".join(lines).encode(encoding, "surrogateescape")
        self.send_response(200)
        self.send_header("Content-Type", f"text/html; charset={encoding}")
        self.send_header("Content-Length", str(len(page)))
        self.send_header("Cache-Control", "no-cache")
        self.end_headers()
        return io.BytesIO(page)

    def redirect_to_directory(self) -> None:
        """'/docs' -> '/docs/', so that relative links in the listing resolve.

        The Location is built from the directory the server found, never from
        the path as the client spelled it. Echoing the request path, as the
        stdlib does, is the open redirect of CVE-2021-28861: '//evil.example/..'
        names this server's root, and comes back as '//evil.example/../', a
        protocol-relative URL to another host. The stdlib's fix (3.11) strips
        leading slashes, but a browser reads '\\' as '/' in an http(s) URL, so
        '/\\evil.example/%2e%2e' still escaped that way. Here the path is
        decoded and its dot segments collapsed exactly as translate_path() does,
        and each segment is percent-encoded whole ('\\' becomes %5C): the
        Location is '/' and plain segments, and can only name this host.
        """
        parts = urllib.parse.urlsplit(self.path)
        resolved = posixpath.normpath(urllib.parse.unquote(parts.path))
        segments = [segment for segment in resolved.split("/") if segment]
        path = "/" + "".join(urllib.parse.quote(segment, safe="") + "/" for segment in segments)
        location = urllib.parse.urlunsplit(("", "", path, parts.query, ""))
        self.send_response(301)
        self.send_header("Location", location)
        self.send_header("Content-Length", "0")  # Python 3.8 leaves it out: a keep-alive client would hang
        self.end_headers()

    def send_file_headers(self, file: BinaryIO, path: str) -> tuple[BinaryIO, int, int] | None:
        stat = os.fstat(file.fileno())
        size = stat.st_size
        # Size and mtime in nanoseconds: two saves in the same second differ.
        etag = f'"{size:x}-{stat.st_mtime_ns:x}"'
        if self.not_modified(etag, stat.st_mtime):
            file.close()
            self.send_response(304)
            self.send_header("ETag", etag)
            self.send_header("Cache-Control", "no-cache")
            self.end_headers()
            return None
        try:
            span = self.requested_range(size)
        except RangeNotSatisfiable:
            file.close()
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{size}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return None
        offset, length = (0, size) if span is None else span
        self.send_response(200 if span is None else 206)
        self.send_header("Content-Type", self.guess_type(path))
        self.send_header("Content-Length", str(length))
        self.send_header("Last-Modified", self.date_time_string(int(stat.st_mtime)))
        self.send_header("ETag", etag)
        # Keep a copy, but ask before every use: without this, a browser
        # reuses a cached script for a fraction of its age, edits unseen.
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Accept-Ranges", "bytes")
        if span is not None:
            self.send_header("Content-Range", f"bytes {offset}-{offset + length - 1}/{size}")
        self.end_headers()
        return file, offset, length

    def not_modified(self, etag: str, mtime: float) -> bool:
        """If-None-Match, which RFC 9110 says wins over If-Modified-Since; else that."""
        header = self.headers.get("If-None-Match")
        if header is None:
            return self.not_modified_since(mtime)
        # The weak comparison GET uses: W/"x" matches "x".
        tags = [tag.strip() for tag in header.split(",")]
        return "*" in tags or any(tag.replace("W/", "", 1) == etag for tag in tags)

    def not_modified_since(self, mtime: float) -> bool:
        """If-Modified-Since, as http.server does it."""
        header = self.headers.get("If-Modified-Since")
        if header is None:
            return False
        try:
            since = email.utils.parsedate_to_datetime(header)
        except (TypeError, ValueError, IndexError, OverflowError):
            return False
        if since is None or since.tzinfo is None:
            return False
        return int(mtime) <= since.timestamp()

    def requested_range(self, size: int) -> tuple[int, int] | None:
        """(offset, length) of the single byte range asked for, or None: send it all.

        Only 'bytes=a-b', 'bytes=a-' and 'bytes=-n' are honoured. Anything else
        (several ranges, other units, a conditional If-Range) is ignored, which
        RFC 9110 allows: the client simply gets the whole file with 200.
        """
        header = self.headers.get("Range")
        if header is None or "If-Range" in self.headers:
            return None
        match = SINGLE_RANGE.fullmatch(header.strip())
        if not match or match.group(1) == match.group(2) == "":
            return None
        first, last = match.groups()
        if first == "":  # the last n bytes
            count = int(last)
            if count == 0 or size == 0:
                raise RangeNotSatisfiable
            return max(0, size - count), min(count, size)
        start = int(first)
        if last != "" and int(last) < start:
            return None  # invalid: ignore the header
        if start >= size:
            raise RangeNotSatisfiable
        end = size - 1 if last == "" else min(int(last), size - 1)
        return start, end - start + 1

    def log_message(self, format: str, *args: Any) -> None:
        # Formatted only if logged: --quiet costs nothing.
        log.info("#%d %s " + format, self.number, self.client_address[0], *args)


def has_input(conn: socket.socket) -> bool:
    """Whether the client has sent bytes this server has not read yet (or has closed)."""
    timeout = conn.gettimeout()
    try:
        conn.settimeout(0)
        # The socket's own recv(): SSLSocket's takes no flags, and for this
        # question the bytes need not be decrypted.
        return socket.socket.recv(conn, 1, socket.MSG_PEEK) != b""  # b"": it has closed
    except OSError:  # BlockingIOError: nothing there
        return False
    finally:
        conn.settimeout(timeout)


def send_close_notify(conn: ssl.SSLSocket) -> None:
    """End the TLS session with close_notify before the TCP connection ends.

    SSLSocket.shutdown() and close() drop the session without it, and a
    strict client cannot tell that end from an attacker's cut: openssl
    s_client reports "unexpected eof while reading", and Python's ssl with
    suppress_ragged_eofs=False raises SSLEOFError. unwrap() sends it, then
    waits for the client's own close_notify, which many clients never send:
    non-blocking, it sends and does not wait (SSLWantReadError).
    """
    timeout = conn.gettimeout()
    try:
        conn.settimeout(0)
        conn.unwrap()
    except (OSError, ValueError):  # SSLWantReadError (the wait skipped), a reset, a closed socket
        pass
    finally:
        try:
            conn.settimeout(timeout)
        except OSError:
            pass


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
