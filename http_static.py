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
- text as UTF-8 (charset=utf-8 on text/*: without it, browsers guess);
- a listing with sizes, modification times, a sort and the parent folder;
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

Concurrency: gunicorn's gthread design. A connection between two requests
waits in one selector (epoll), with no thread of its own; a small pool of
threads waits in that selector too, and a connection with a request ready
wakes one of them (EPOLLONESHOT hands each event to exactly one thread),
which reads the request, answers it, and puts the connection back in the
selector. gthread has one thread wait and hand each ready connection to the
pool; here the pool's threads wait themselves, which saves a hand-off per
request (a first version that handed connections over served, on 3.13t at 20
connections, half of what a thread per connection did: a loaded 2-core
machine, 3 alternating rounds). Where there is no epoll, the threads take
turns at a selectors selector.

Against a thread per connection (ThreadingHTTPServer, this script's earlier
design): a browser opens several connections and keeps them idle, and each
held a thread; with 20 busy connections, 20 runnable threads handed the GIL
to one another at every system call (measured once at 0.6x the blog post's
one-client-at-a-time server, CPython 3.11, where one connection did 1.0x).
Here the threads follow the requests in progress: 2,000 idle connections
cost 2,000 sockets and the pool. A request head that trickles in waits in
the selector too, holding no thread. The price: two system calls more per
request (epoll_wait() and epoll_ctl(): 5-20% more CPU per request on 3.11,
less on 3.13t), and a thread busy with one client serves nobody else
meanwhile: for --timeout at most while a head past 64 KiB or a body comes
in, and for a whole download while a large file goes to a slow reader
(--timeout bounds each send, not the download). So a thread about to send a
large file lends its place: it starts another to wait in the selector, and
exits after its download if the pool has more than it needs then
(sending()). Downloads cost a thread each, as with a thread per connection,
up to MAX_SENDING_THREADS at once; small files and idle connections still
cost none. Without that, four clients reading a 300 MB file 64 KiB every
50 ms held a request for a small file past 30 s, with 4 threads.

The pool's size (--threads): with the GIL, one thread runs Python at a time,
and each thread more is one more to hand the GIL to, at every system call,
and a request makes a dozen. 2 leave room for one waiting on a disk or a
full socket buffer: on 3.11 at 50 connections, 1 thread served 12,400-13,200
requests/s, 2 threads 8,000-8,500, 4 threads 6,700-6,900 (3.8 and 3.13 the
same way). One thread alone would be fastest, and stuck whenever it waits.
Without the GIL (the free-threaded 3.13t) the threads run on every core at
once: 4 per core keep each core busy while a thread waits in a system call
or on a lock of the interpreter's (on 3.13t at 20 connections on 2 cores, 8
threads served 1.05-1.15x what 4 did).

It is NOT a production server: no HTTP/2, no compression, a few threads that
a few slow clients can hold (see above), and a strict parser is still not a
hardened one: it has been fuzzed against h11, not attacked for years as
nginx has. For the internet, put the files behind nginx, Caddy or a CDN; use
this for local development and trusted networks.

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

The approach is StaticServer and Poller; the rest is the skeleton the servers
share, and strict HTTP.

Standard library only; CPython 3.8 to 3.15.

Try it:  python http_static.py 8000 --directory site/
         curl -i http://127.0.0.1:8000/
"""

from __future__ import annotations

import argparse
import contextlib
import email.utils
import errno
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
import select
import selectors
import signal
import socket
import socketserver
import ssl
import stat
import sys
import threading
import time
import urllib.parse
from typing import Any, BinaryIO, Iterator

BACKLOG = max(socket.SOMAXCONN, 4096)  # a browser opens several connections at once
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
# Socket activation: the first descriptor systemd passes (sd_listen_fds(3)).
LISTEN_FDS_START = 3
MAX_SECONDS = 24 * 60 * 60.0  # the most any option in seconds takes (see seconds())
MIN_SECONDS = 0.001  # the least, but for 0 where it means none (see seconds())
SMALL_BODY = 64 * 1024  # bodies up to this size go out with the headers, in one send()
# A request head waits for its end in the selector up to this size (see
# RequestBuffer); past it, the rest is read in a pool thread.
HEAD_IN_SELECTOR = 64 * 1024
ACCEPTS_AT_ONCE = 64  # per wake-up of the loop: a burst of thousands is taken in slices, between other work
# The pool's size (see the module's docstring): with the GIL, two threads,
# one to cover another that waits on a disk or a slow client; without it,
# four per core.
POOL_WITH_GIL = 2
POOL_PER_CORE = 4
POOL_WAIT = 1.0  # seconds a pool thread waits in the selector before it looks whether the pool is stopping
# Threads started beside the pool, at most, while large files go out (see
# StaticServer.sending()): each download beyond these holds a pool thread.
MAX_SENDING_THREADS = 256
MAX_DATES = 1024  # HTTP dates kept formatted (see StaticHandler.date_time_string())
FIRST_HTTP_DATE = -62_135_596_800  # 0001-01-01 00:00:00 UTC: no HTTP date spells an earlier second
# After a response, how long and how much a client may go on sending before the
# server closes anyway (see close_gracefully()): 2 s in all, enough for a client
# that reads its reply, and soon enough to free the thread or process. (nginx
# waits up to 5 s between reads, 30 s in all.)
LINGER_SECONDS = 2.0
LINGER_BYTES = 16 * 1024 * 1024
CHUNK_SIZE = 64 * 1024  # one recv() per chunk while discarding
# The unit is case-insensitive (RFC 9110 14.1): "Bytes=0-1" is a range too.
# [0-9], not \d, which matches other scripts' digits as well.
SINGLE_RANGE = re.compile(r"bytes=([0-9]*)-([0-9]*)", re.IGNORECASE)
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
# The listing's look: a table that reads at a glance, in the page itself (one request, no file to serve).
LISTING_STYLE = (
    "<style>body{font-family:system-ui,sans-serif;margin:1em 2em}table{border-collapse:collapse}"
    "th,td{padding:.2em 2em .2em 0;text-align:left;white-space:nowrap}.size{text-align:right}"
    "th a{color:inherit}th[aria-sort] a{text-decoration:none}tbody tr:hover{background:#eef}</style>"
)
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
        except EncryptedKey:
            key = args.tls_key or args.tls_cert
            print(
                f"the private key in {key} is encrypted: decrypt it once with"
                f" openssl pkey -in {key} -out plain-key.pem, keep that file private, and pass --tls-key plain-key.pem",
                file=sys.stderr,
            )
            return 1
        except ssl.SSLError:  # before OSError: it is one
            print(f"not a PEM certificate with its private key: {files}", file=sys.stderr)
            return 1
        except OSError as exc:
            print(f"cannot read {files}: {exc.strerror or exc}", file=sys.stderr)
            return 1
    raise_open_file_limit()  # a socket per connection, idle ones included
    try:
        server = make_server(args, tls)
    except (OSError, UnicodeError) as exc:
        print(f"cannot listen on {format_address(args.host, args.port)}: {reason(exc)}", file=sys.stderr)
        return 1
    # Leaving the with-block calls server_close(): it closes the listener and
    # stops the pool once the responses in progress have finished.
    with server:
        try:
            server.start_pool()
        except RuntimeError as exc:  # "can't start new thread": a limit on tasks (ulimit -u, a cgroup's pids.max)
            print(f"cannot start {server.pool_size} threads: {exc}", file=sys.stderr)
            return 1
        stop_on_signals(server)
        scheme = "https" if tls else "http"
        print_ready_line(f"Listening on {scheme}://{format_address(*server.server_address[:2])}/")
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
    parser.add_argument(
        "--threads",
        type=pool_threads,
        default=0,
        help="threads that serve requests (0: 2 with the GIL, 4 per core without it)",
    )
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


def pool_threads(text: str) -> int:
    count = int(text)
    if not 0 <= count <= 1000:
        raise argparse.ArgumentTypeError(f"threads must be 0..1000, not {count}")
    return count


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


class EncryptedKey(Exception):
    """The private key has a pass phrase, which this server will not ask for."""


def tls_context(cert: str, key: str | None) -> ssl.SSLContext:
    # The server side of the library's defaults: TLS 1.2 and up, no weak ciphers.
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    # Without a password callback, OpenSSL asks for an encrypted key's pass
    # phrase on the terminal ("Enter PEM pass phrase:", twice), which a
    # service has not got, then fails with "Invalid argument". The callback
    # is called only for an encrypted key, and its exception comes out of
    # load_cert_chain() as it is.
    context.load_cert_chain(cert, key, password=refuse_pass_phrase)
    return context


def refuse_pass_phrase() -> bytes:
    raise EncryptedKey


def make_server(args: argparse.Namespace, tls: ssl.SSLContext | None) -> StaticServer:
    directory = os.path.realpath(args.directory)
    handler = functools.partial(StaticHandler, directory=directory)
    listener = open_listener(args.host, args.port)
    return StaticServer(
        listener.getsockname()[:2], handler, args.timeout, args.dotfiles, args.cors, tls, args.threads, listener
    )


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


class Poller:
    """One selector that every pool thread waits in at once; each event goes to one of them.

    Linux's epoll does this itself: with EPOLLONESHOT a socket is disarmed as
    its event is reported, so exactly one waiting thread gets it, and it stays
    quiet until arm() again. No thread hands a connection to another, and
    none waits on a lock to select. Elsewhere (kqueue, poll, select) the
    threads take turns: one waits in a selectors selector, under a lock, and
    takes the socket of an event out before it lets the next thread in.
    """

    def __init__(self) -> None:
        self.epoll = select.epoll() if hasattr(select, "epoll") else None
        self.selector = selectors.DefaultSelector() if self.epoll is None else None
        self.turn = threading.Lock()  # without epoll: the thread whose turn it is to select
        self.owners: dict[int, Any] = {}  # descriptor -> what waits on it
        self.closing = False
        # Readable for good once close() writes to it: it wakes every thread.
        self.wakeup, self.wakeup_sender = socket.socketpair()
        self.wakeup.setblocking(False)
        self.wakeup_sender.setblocking(False)
        if self.epoll is not None:
            self.epoll.register(self.wakeup.fileno(), select.EPOLLIN)  # not one-shot
        else:
            assert self.selector is not None
            self.selector.register(self.wakeup, selectors.EVENT_READ)

    def arm(self, sock: socket.socket, owner: Any, events: int = selectors.EVENT_READ) -> None:
        """Report sock's next event (once) to one waiting thread, as owner."""
        fd = sock.fileno()
        if self.epoll is not None:
            mask = (select.EPOLLIN if events & selectors.EVENT_READ else select.EPOLLOUT) | select.EPOLLONESHOT
            if fd in self.owners:
                self.epoll.modify(fd, mask)
            else:
                self.owners[fd] = owner
                self.epoll.register(fd, mask)
            return
        assert self.selector is not None
        self.owners[fd] = owner
        self.selector.register(fd, events)
        # select() and poll() read their list once per call: the thread
        # waiting now must start again to see this socket.
        self.wake()

    def remove(self, sock: socket.socket) -> None:
        """Forget sock, before it is closed (its number may then name another socket)."""
        fd = sock.fileno()
        if self.owners.pop(fd, None) is None:
            return
        try:
            if self.epoll is not None:
                self.epoll.unregister(fd)
            else:
                assert self.selector is not None
                self.selector.unregister(fd)
        except (KeyError, OSError):  # disarmed without epoll: not in the selector
            pass

    def wait(self, timeout: float) -> list[Any]:
        """The owners of the sockets that have had an event, each reported to this thread alone."""
        if self.closing:
            return []
        if self.epoll is not None:
            # One event at a time: a thread that took several would serve them
            # one after another while the other threads waited.
            return [self.owners.get(fd) for fd, _ in self.epoll.poll(timeout, 1)]
        assert self.selector is not None
        with self.turn:
            for key, _ in self.selector.select(timeout):
                if key.fileobj is self.wakeup:
                    if not self.closing:
                        self.clear_wakeup()
                    continue
                self.selector.unregister(key.fd)  # one-shot, by hand
                return [self.owners.get(key.fd)]
        return []

    def wake(self) -> None:
        try:
            self.wakeup_sender.send(b"\0")
        except OSError:  # its buffer is full: a wake-up is there already
            pass

    def clear_wakeup(self) -> None:
        try:
            while self.wakeup.recv(4096):
                pass
        except OSError:  # BlockingIOError: empty
            pass

    def close(self) -> None:
        """Wake every waiting thread, for good."""
        self.closing = True
        self.wake()

    def release(self) -> None:
        """Free the selector, once no thread waits in it."""
        if self.epoll is not None:
            self.epoll.close()
        else:
            assert self.selector is not None
            self.selector.close()
        self.wakeup.close()
        self.wakeup_sender.close()


class Dates(threading.local):
    """HTTP dates by the second, each pool thread its own (StaticHandler.date_time_string()).

    One dict for all the threads was slower than none on the free-threaded
    build: a thread reads a string another thread made, whose reference
    count that thread alone had touched, under the dict's lock, and every
    response read two. On 3.13t at 20 connections, 9,300 requests/s against
    18,000 with a dict per thread.
    """

    def __init__(self) -> None:
        self.by_second: dict[int, str] = {}


class StaticServer(http.server.HTTPServer):
    """HTTPServer with IPv6 and a real backlog, served by a pool of threads that wait in one selector.

    Every connection between two requests waits in the selector (waiting).
    The pool's threads wait in it too, all at once; a connection with input
    wakes one of them, which reads the request and answers it, then puts
    the connection back in the selector (park()) or closes it. Only the
    connections with a request in hand are busy in a thread. The main thread
    keeps the time: it closes connections idle past --timeout, and stops.
    """

    request_queue_size = BACKLOG  # socketserver's default is 5

    def __init__(
        self,
        address: tuple[str, int],
        handler: Any,
        timeout: float = 10.0,
        dotfiles: bool = False,
        cors: bool = False,
        tls: ssl.SSLContext | None = None,
        threads: int = 0,
        listener: socket.socket | None = None,
    ) -> None:
        super().__init__(address, handler, bind_and_activate=listener is None)
        if listener is not None:  # open_listener()'s: IPv6, dual-stack, systemd's socket
            self.socket.close()
            self.socket = listener
            self.server_name, self.server_port = self.server_address[:2]
        self.idle_timeout = timeout
        self.dotfiles = dotfiles
        self.cors = cors
        self.tls = tls  # accept() wraps each connection; the handshake is the pool's (StaticHandler.shake_hands)
        self.numbers = itertools.count(1)
        self.dates = Dates()
        self.pool_size = threads or default_threads()
        self.pool: list[threading.Thread] = []
        self.downloads = 0  # large files going out now, each lending its thread's place (sending())
        self.poller = Poller()
        self.socket.setblocking(False)  # accept() until the queue is empty, never waiting
        # Who owns a connection: a connection in `waiting` belongs to the
        # selector, and the thread that takes it out (claim()) serves it;
        # nothing else closes it, so its descriptor cannot be reused while an
        # event for it is on its way to a thread. The time-out and the stop
        # only shut its reading side down, which wakes a thread to close it.
        self.lock = threading.Lock()
        self.waiting: dict[StaticHandler, None] = {}
        self.busy: set[StaticHandler] = set()
        self.listening = True  # the listener is in the selector, and will be again after each accept()
        self.stopping = False
        self.stop_requested = False  # set by a stop signal (stop_on_signals())
        # Set by shutdown(), from another thread, and by the pool thread that
        # finds the listener shut down by a stop signal (accept_one()).
        self.shutdown_requested = threading.Event()
        self.serving = threading.Event()  # cleared while serve_forever() runs
        self.serving.set()

    def start_pool(self) -> None:
        """Start the pool's threads, which serve from then on; RuntimeError if the system has no room for them."""
        if not self.pool:
            self.poller.arm(self.socket, self.socket)
        while len(self.pool) < self.pool_size:
            self.start_thread()

    def start_thread(self) -> None:
        thread = threading.Thread(target=self.work, name=f"pool-{len(self.pool) + 1}")
        with self.lock:  # in the pool before it runs: it may serve, and leave (surplus()), at once
            self.pool.append(thread)
        try:
            thread.start()
        except RuntimeError:  # no room for another thread
            with self.lock:
                self.pool.remove(thread)
            raise

    @contextlib.contextmanager
    def sending(self) -> Iterator[None]:
        """Around a large file's download: another thread waits in the selector meanwhile.

        A download to a slow reader holds its thread for as long as it lasts,
        and as many of them as the pool has threads would leave no thread to
        accept or serve. The thread lends its place: while it sends, the pool
        has a thread more; after, the pool's surplus exits (surplus()).
        """
        with self.lock:
            self.downloads += 1
            lend = len(self.pool) < self.pool_size + min(self.downloads, MAX_SENDING_THREADS) and not self.stopping
        if lend:
            try:
                self.start_thread()
            except RuntimeError:  # no room for a thread: this download holds a pool thread, as without
                pass
        try:
            yield
        finally:
            with self.lock:
                self.downloads -= 1

    def surplus(self) -> bool:
        """True, for the calling thread to exit, when the pool has more threads than it needs now."""
        if len(self.pool) <= self.pool_size + min(self.downloads, MAX_SENDING_THREADS):
            return False  # the common case, read without the lock: a stale answer only delays an exit
        with self.lock:
            if len(self.pool) <= self.pool_size + min(self.downloads, MAX_SENDING_THREADS):
                return False
            self.pool.remove(threading.current_thread())
            return True

    def serve_forever(self, poll_interval: float = 0.5) -> None:
        """Keep the time while the pool serves: close idle connections, and return at a stop."""
        self.start_pool()
        self.serving.clear()
        # Deadlines are checked by a sweep of the waiting connections, a few
        # times per --timeout: a heap ordered by deadline would gain an entry
        # per request (thousands a second), each kept until its deadline.
        # Not below 10 ms: a --timeout of a millisecond would wake this
        # thread thousands of times a second, for one more millisecond of
        # precision.
        interval = min(poll_interval, max(0.01, self.idle_timeout / 4))
        try:
            # A signal does not end this wait: its handler runs in this thread
            # when the wait is interrupted, then the wait goes on. The pool
            # thread that finds the listener shut down ends it (accept_one()):
            # a stop took 0.5 s, now some milliseconds.
            while not self.shutdown_requested.wait(interval):
                if self.stop_requested:  # see stop_on_signals()
                    raise StopServing
                self.close_expired()
            if self.stop_requested:
                raise StopServing
        finally:
            self.serving.set()

    def work(self) -> None:
        """A pool thread: wait in the selector, serve the connection that wakes it, again."""
        while not self.poller.closing:
            for owner in self.poller.wait(POOL_WAIT):
                if owner is self.socket:
                    self.accept()
                elif self.claim(owner):
                    self.serve(owner)
                    if self.surplus():  # a download lent this thread's place (sending())
                        return

    def claim(self, handler: StaticHandler) -> bool:
        """Take a connection out of `waiting`; False if it is not there (the wake-up, or one already closed)."""
        with self.lock:
            if handler not in self.waiting:
                return False
            del self.waiting[handler]
            self.busy.add(handler)
        return True

    def serve(self, handler: StaticHandler) -> None:
        try:
            keep = handler.serve() and self.park(handler)
        except Exception:  # a bug: its traceback, and the thread serves on
            self.handle_error(handler.request, handler.client_address)
            keep = False
        if not keep:
            handler.close()

    def accept(self) -> None:
        try:
            for _ in range(ACCEPTS_AT_ONCE):
                if not self.accept_one():
                    break
        finally:
            if self.listening:
                self.poller.arm(self.socket, self.socket)

    def accept_one(self) -> bool:
        """Accept a connection and put it in the selector; False when there is none to accept now."""
        if self.stop_requested or self.stopping:
            # systemd's socket still listens after a stop (stop_listening()):
            # whoever waits in its queue is the next start's to serve.
            self.listening = False
            self.shutdown_requested.set()  # serve_forever() returns
            return False
        try:
            conn, address = self.socket.accept()
        except (BlockingIOError, InterruptedError):  # none left in the queue
            return False
        except OSError as exc:
            # EINVAL: the listener is shut down (stop_listening()), maybe a
            # moment before the signal's handler has said so.
            if exc.errno == errno.EINVAL or self.stop_requested or self.stopping:
                self.listening = False
                self.shutdown_requested.set()  # serve_forever() returns
                return False
            # EMFILE, or a client that gave up while queued. At the open-file
            # limit the connection stays queued, and the listener readable:
            # selecting again at once would spin on a core, silently. This
            # thread pauses before it listens again; the others serve on.
            log.warning("accept failed: %s", exc)
            time.sleep(0.1)
            return False
        try:
            if self.tls is not None:
                # Wrapped here, its handshake left to the pool and the
                # selector: done in accept(), one slow or hostile client would
                # stall every other. That is what Python 3.14's own
                # http.server.HTTPSServer does: it wraps the listener, and
                # handshakes inside accept(); a client that connects and sends
                # nothing stalls every other for good (seen on 3.14.10).
                conn.getpeername()  # ENOTCONN for a client that reset while queued: no one to serve
                conn = self.tls.wrap_socket(conn, server_side=True, do_handshake_on_connect=False)
            handler = self.RequestHandlerClass(conn, address, self)  # setup(): OSError after a reset
        except OSError:
            conn.close()
            return True
        with self.lock:
            self.busy.add(handler)
        self.serve_later(handler)
        return True

    def serve_later(self, handler: StaticHandler) -> None:
        try:
            keep = self.park(handler)
        except Exception:
            self.handle_error(handler.request, handler.client_address)
            keep = False
        if not keep:
            handler.close()

    def park(self, handler: StaticHandler) -> bool:
        """Put a connection in the selector until it sends more; False if it must close (the stop)."""
        with self.lock:
            self.busy.discard(handler)
            if self.stopping and not handler.reader.request_begun():
                return False
            self.waiting[handler] = None
        self.poller.arm(handler.connection, handler, handler.awaiting)
        return True

    def forget(self, handler: StaticHandler) -> None:
        """A connection has been closed."""
        with self.lock:
            self.busy.discard(handler)

    def close_expired(self) -> None:
        """Wake the waiting connections whose request has not come within --timeout: their thread closes them."""
        now = time.monotonic()
        with self.lock:
            for handler in self.waiting:
                if handler.reader.deadline <= now and not handler.expired:
                    handler.expired = True
                    end_reading(handler.connection)

    def shutdown(self) -> None:
        """Stop serve_forever() from another thread, and wait for it to return (socketserver's promise)."""
        self.shutdown_requested.set()
        self.serving.wait()

    def server_close(self) -> None:
        """Close the idle connections at once, let the requests begun finish, then stop the pool.

        A browser keeps spare connections open; without this, the stop waits
        for each to time out (--timeout). A request that arrives in the same
        instant is lost, as with nginx: clients retry a request that fails on
        a reused keep-alive connection. A connection whose request line has
        come, but not yet the rest of its request, is not idle: it is served,
        with Connection: close.

        A response in progress goes on, for --timeout at most. Each send()
        has --timeout, but a client that reads a little now and then (a large
        file over a slow link, or on purpose) resets it with every read, and
        held the stop for as long as its download lasted. Past the bound its
        connection is shut down, and that client gets part of the file: the
        one case where a response is cut.
        """
        if not hasattr(self, "poller"):  # TCPServer.__init__() could not listen, and closes its socket this way
            super().server_close()
            return
        with self.lock:
            self.stopping = True
            self.listening = False
            for handler in self.waiting:
                if not handler.reader.request_begun():
                    # Its thread closes it, reading nothing: a TLS read of the
                    # shut-down side failed, and the client got an alert
                    # (decode_error) instead of close_notify.
                    handler.expired = True
                    end_reading(handler.connection)
        deadline = time.monotonic() + self.idle_timeout
        woken = False
        while self.waiting or self.busy:
            if time.monotonic() >= deadline:
                if woken:  # a second past the bound, and still there: left to the end of the process
                    break
                with self.lock:
                    for handler in (*self.waiting, *self.busy):
                        wake(handler.connection)
                woken = True
                deadline = time.monotonic() + 1.0
            self.close_expired()
            time.sleep(0.01)  # a poll: the pool's threads are closing them
        self.poller.close()
        with self.lock:
            pool = list(self.pool)  # a thread started after this sees the poller closed, and ends
        for thread in pool:
            thread.join()
        self.poller.remove(self.socket)
        self.poller.release()
        super().server_close()  # the listener

    def server_bind(self) -> None:
        # HTTPServer.server_bind() looks up socket.getfqdn(host), a reverse DNS
        # query that can take seconds on a badly configured network, for a
        # name this server never uses. Skip it.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]


def default_threads() -> int:
    """The pool's size when --threads is not given (see the module's docstring)."""
    if getattr(sys, "_is_gil_enabled", lambda: True)():
        return POOL_WITH_GIL
    # The cores this process may run on (taskset, a container's cpuset), not
    # the machine's: a 2-core container on a 64-core host would start 256
    # threads. No GIL means 3.13 or later, which has process_cpu_count().
    return POOL_PER_CORE * (os.process_cpu_count() or 1)  # type: ignore[attr-defined]


def end_reading(conn: socket.socket) -> None:
    """Shut a waiting connection's reading side down: the selector reports it, and the thread it wakes closes it.

    Its writing side stays open, so that a TLS connection can still send
    close_notify.
    """
    try:
        socket.socket.shutdown(conn, socket.SHUT_RD)  # the socket's own: SSLSocket's drops the session
    except OSError:  # closed already
        pass


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


class RequestBuffer:
    """What a client has sent that no request has read yet: a connection's rfile.

    A connection waits in the selector between requests, so its reads must
    not wait: a pool thread takes in what has arrived (receive()) and serves
    a request only once its head is all there (request_ready()). A client
    that sends its request a byte at a time (slowloris) then holds no thread:
    it waits in the selector, under the deadline of its request. Past
    HEAD_IN_SELECTOR bytes without the end of the head, and for a body, the
    rest is read in the pool thread, still under that deadline: each request
    must arrive within --timeout of start(), whatever the pace of its bytes.
    The head is searched only in the new bytes: a head of n bytes costs O(n).
    """

    def __init__(self, conn: socket.socket, timeout: float) -> None:
        self.conn = conn
        self.timeout = timeout
        self.tls = isinstance(conn, ssl.SSLSocket)
        self.buffer = bytearray()
        self.ended = False  # the client has closed its side
        self.start()

    def start(self) -> None:
        """A new request may come: it has --timeout from now, idle time included."""
        self.deadline = time.monotonic() + self.timeout
        self.searched = 0  # the head's end is not in buffer[:searched]
        self.line_checked = False  # the request line has come, and may be valid

    def receive(self) -> None:
        """Take in what has arrived, without waiting for more (the selector has seen some)."""
        if not self.tls:
            self.take(self.conn.recv(CHUNK_SIZE))
            return
        # A readable TLS socket may hold part of a record, which decrypts to
        # nothing yet; and a record read may leave bytes decrypted inside
        # the SSL object (pending()), where the selector cannot see them.
        # So: read without waiting until TLS has nothing more.
        self.conn.settimeout(0)
        try:
            while len(self.buffer) < HEAD_IN_SELECTOR and not self.ended:
                self.take(self.conn.recv(CHUNK_SIZE))
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            pass
        finally:
            self.conn.settimeout(self.timeout)

    def take(self, chunk: bytes) -> None:
        if chunk:
            self.buffer += chunk
        else:
            self.ended = True

    def has_more(self) -> bool:
        """Whether TLS holds bytes the selector cannot see (pending())."""
        return self.tls and self.conn.pending() > 0

    def request_begun(self) -> bool:
        """Whether a request line has come: from then on the connection is not idle (the stop serves it)."""
        return self.buffer.find(b"\n") >= 0

    def request_ready(self) -> bool:
        """Whether the buffer holds a whole request head, or enough to refuse it, or the end of the stream."""
        if self.ended or len(self.buffer) >= HEAD_IN_SELECTOR:
            return True
        if self.buffer.find(b"\n\r\n", self.searched) >= 0 or self.buffer.find(b"\n\n", self.searched) >= 0:
            return True
        if not self.line_checked:
            end = self.buffer.find(b"\n", self.searched)
            if end >= 0:
                if REQUEST_LINE.fullmatch(self.buffer, 0, end + 1) is None:
                    return True  # a bad request line: its 400 goes out now
                self.line_checked = True
        self.searched = max(0, len(self.buffer) - 2)  # the end may straddle the next bytes
        return False

    def readline(self, limit: int = -1) -> bytes:
        searched = 0
        while True:
            end = self.buffer.find(b"\n", searched, limit if limit >= 0 else len(self.buffer))
            if end >= 0:
                return self.pop(end + 1)
            if 0 <= limit <= len(self.buffer):
                return self.pop(limit)
            searched = len(self.buffer)
            if not self.fill():
                return self.pop(len(self.buffer))

    def read(self, size: int) -> bytes:
        while len(self.buffer) < size and self.fill():
            pass
        return self.pop(min(size, len(self.buffer)))

    def pop(self, count: int) -> bytes:
        data = bytes(self.buffer[:count])
        del self.buffer[:count]  # from the front of a bytearray: no copy of the rest
        return data

    def fill(self) -> bool:
        """Wait for more bytes, until the request's deadline; False at the end of the stream."""
        if self.ended:
            return False
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise socket.timeout("timed out")
        self.conn.settimeout(remaining)
        try:
            self.take(self.conn.recv(CHUNK_SIZE))
        finally:
            self.conn.settimeout(self.timeout)  # the bound of each write that follows
        return not self.ended

    def close(self) -> None:
        """StreamRequestHandler.finish() closes its rfile; the socket is closed by its owner."""


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

    def __init__(self, request: Any, client_address: Any, server: StaticServer, directory: str | None = None) -> None:
        # BaseRequestHandler.__init__() serves the connection to its end
        # (setup(), handle(), finish()), holding a thread all along. Here the
        # server calls serve() each time the connection has input, and
        # close() at its end.
        self.directory = os.fspath(directory) if directory is not None else os.getcwd()
        self.request = request
        self.client_address = client_address
        self.server = server
        self.setup()

    def setup(self) -> None:
        # StreamRequestHandler applies self.timeout to the socket: the bound
        # of each send(), and of each wait for a request's later bytes.
        self.timeout = self.server.idle_timeout
        self.number = next(self.server.numbers)
        self.responded = False
        self.close_connection = False
        self.awaiting = selectors.EVENT_READ  # what the selector waits for (a TLS handshake may need EVENT_WRITE)
        self.expired = False  # no request within --timeout, or idle at the stop: its reading side is shut down
        self.handshaken = self.tls = False
        if not isinstance(self.request, ssl.SSLSocket):
            self.handshaken = True
        super().setup()
        self.rfile.close()  # socketserver's, whose reads wait
        self.reader = self.rfile = RequestBuffer(self.connection, self.server.idle_timeout)

    def serve(self) -> bool:
        """Answer what the client has sent; True to wait in the selector for more, False to close.

        Requests that came together (pipelined) are answered in turn. A
        request still coming, or the next one, waits in the selector.
        """
        if self.expired:
            if not self.server.stopping:
                self.log_message("no request within --timeout (%gs): closed", self.timeout)
            return False
        try:
            if not self.handshaken:
                done = self.shake_hands()
                if done is not True:
                    return done is None
            self.reader.receive()
            while self.reader.request_ready():
                self.handle_one_request()
                if self.close_connection:
                    return False
                if self.server.stopping:
                    # The response just sent was the last. The client may
                    # have sent its next request already (pipelining): left
                    # unread, close() would reset the connection, and the
                    # reset destroys the end of that response in the
                    # client's buffers (a client reading 8 MB got 5.3 MB,
                    # then ECONNRESET). Then close() lingers. Otherwise it
                    # closes at once: the linger would hold up the stop 2 s.
                    self.responded = bool(self.reader.buffer) or has_input(self.connection)
                    return False
                self.drop_request()
                self.reader.start()  # idle, then sending: --timeout for both together
                self.responded = False  # answered in full: closed idle, nothing is owed a linger
                if self.reader.has_more():
                    self.reader.receive()
            return True
        except (ConnectionError, ssl.SSLError) as exc:
            # A reset or a broken pipe: the client went away, as a browser
            # does when a tab closes mid-download. No error, and no traceback
            # (socketserver's handle_error() prints one, and -q cannot stop it).
            if self.server.stopping:
                log.info("#%d closed at shutdown", self.number)
            else:
                log.info("#%d went away: %s", self.number, exc.strerror or exc)
            self.responded = False  # nobody to linger for
            return False

    def drop_request(self) -> None:
        """Let go of the request just answered, in the thread that read it.

        On the free-threaded build an object's reference count is cheap for
        the thread that made it and dear for the others: a thread that drops
        the last reference to another's object queues it, under a lock, for
        its owner to free. The next request on this connection may be served
        by any pool thread, and each attribute it replaced (the headers and
        the strings in them, the path, the request line) went that way: on
        3.13t at 20 connections, the threads spent more time queueing than
        serving (perf: _Py_brc_queue_object and _Py_brc_merge_refcounts).
        """
        self.raw_requestline = self.requestline = self.request_version = self.command = self.path = None
        self.headers = None
        self.content_length = 0
        self.__dict__.pop("_headers_buffer", None)  # send_header() makes a new one

    def shake_hands(self) -> bool | None:
        """One step of the TLS handshake, without waiting: True when done, None for more input, False if it failed.

        A client still in its handshake has asked for nothing: it waits in
        the selector, idle, and the stop closes it at once. Done in one go, a
        client that never sent its ClientHello held a thread for --timeout.
        """
        self.connection.settimeout(0)
        try:
            self.connection.do_handshake()
        except ssl.SSLWantReadError:
            self.awaiting = selectors.EVENT_READ
            return None
        except ssl.SSLWantWriteError:  # the socket's buffer is full: the client reads slowly
            self.awaiting = selectors.EVENT_WRITE
            return None
        except (OSError, ValueError) as exc:  # ssl.SSLError, a reset
            if not self.server.stopping:
                log.info("#%d TLS handshake failed: %s", self.number, exc)
            return False
        finally:
            self.connection.settimeout(self.timeout)
        self.handshaken = self.tls = True
        self.awaiting = selectors.EVENT_READ
        return True

    def close(self) -> None:
        """The end of the connection: what socketserver does after handle()."""
        # Out of the selector first: once closed, its number may name the
        # next connection accepted, in another thread, at once.
        self.server.poller.remove(self.connection)
        try:
            self.finish()
        finally:
            self.server.shutdown_request(self.request)
            self.server.forget(self)

    def parse_request(self) -> bool:
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
                with self.server.sending():
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
        # Opened first and asked what it is after, through the descriptor:
        # one fstat() where an isdir() and an fstat() before each read made
        # two stat calls, and what is served is what was checked.
        opened = self.open_file(path)
        if opened is None and os.path.isdir(path) or opened is not None and stat.S_ISDIR(opened[1].st_mode):
            url_path = urllib.parse.urlsplit(self.path).path
            if not url_path.endswith("/"):
                self.redirect_to_directory()
                return None
            for index in ("index.html", "index.htm"):
                # Checked as if asked for by name: an index that links out of
                # the directory, or to a dotfile, is no index.
                index_path = self.translate_path(url_path + index)
                if index_path is None:
                    continue
                opened = self.open_file(index_path)
                # One that cannot be opened (no permission) is still the
                # folder's page, as in http.server: a 404, never the
                # listing it is there to hide.
                if opened is not None and opened[0] is not None or opened is None and os.path.isfile(index_path):
                    path = index_path
                    break
            else:
                listing = self.list_directory(path)  # sends its own headers, Content-Length included
                return None if listing is None else (listing, 0, len(listing.getbuffer()))
        if opened is None or opened[0] is None:  # gone, unreadable, a FIFO, a device
            self.send_error(404, "File not found")
            return None
        file, info = opened
        try:
            return self.send_file_headers(file, info, path)
        except BaseException:
            file.close()
            raise

    def open_file(self, path: str) -> tuple[BinaryIO | None, os.stat_result] | None:
        """A regular file opened for reading and its fstat(); (None, fstat()) for anything else; None if unopenable."""
        try:
            # O_NONBLOCK: open() on a FIFO (a named pipe in the folder) would
            # wait for a writer for good, holding the thread, and the stop.
            # O_NOFOLLOW, and folders below this one opened one by one: see
            # open_beneath().
            fd = self.open_inside(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOFOLLOW", 0))
        except OSError:
            return None
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):  # a folder (open() would raise, and leave fd open), a FIFO, a device
                os.close(fd)
                return None, info
            # Unbuffered: do_GET() reads a small file whole or sends a large
            # one with sendfile(). A buffered reader would only add system
            # calls, an isatty() and an lseek(), and with many connections
            # each is a trip through the GIL: 20 keep-alive connections went
            # from 0.64x to 0.78x the seed's requests/s on 3.8 without them.
            return open(fd, "rb", buffering=0), info
        except BaseException:
            os.close(fd)
            raise

    def open_inside(self, path: str, flags: int) -> int:
        """os.open() of path, translate_path()'s, each folder below the served one opened without following a link."""
        relative = path[len(self.directory) :].lstrip(os.sep)
        if os.sep in relative and os.open in os.supports_dir_fd:  # dir_fd: Unix
            return open_beneath(self.directory, relative, flags)
        return os.open(path, flags)  # no folder below this one on the way (or no dir_fd here)

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
        try:
            real = os.path.realpath(candidate)
        except OSError:
            # A link removed between realpath()'s lstat() and its readlink()
            # (a deploy, a build): 3.8 to 3.12 raise FileNotFoundError, a
            # traceback and no response; 3.13 goes on.
            return None
        if real != self.directory and not real.startswith(os.path.join(self.directory, "")):
            return None
        if not self.server.dotfiles and (self.is_hidden(candidate) or self.is_hidden(real)):
            return None
        # realpath() drops a trailing slash: '/notes.txt/' must not name a file.
        if candidate.endswith(os.sep) and not os.path.isdir(real):
            return None
        return real

    def is_hidden(self, path: str) -> bool:
        """Whether path (absolute) leaves the directory, or passes through a name that starts with '.' below it."""
        inside = os.path.join(self.directory, "")
        if path == self.directory:
            return False
        if not path.startswith(inside):  # a link in a listing that points out: not shown
            return True
        return any(part.startswith(".") for part in path[len(inside) :].split(os.sep))

    def list_directory(self, path: str) -> io.BytesIO | None:  # type: ignore[override]
        """http.server's listing as a table: size, modification time, a sort, and the parent folder.

        Without the dotfiles unless --dotfiles. ?sort=size puts the largest
        first, ?sort=mtime the newest, anything else sorts by name, as
        nginx's autoindex and Caddy's browse do. Every name is escaped in the
        page and percent-encoded in its link.
        """
        try:
            if os.listdir in os.supports_fd:
                # Listed through a descriptor, opened as a file is: by its
                # path, listdir() followed a link swapped in for the folder
                # since translate_path()'s check, and listed one outside.
                # The served folder's own path is trusted (open_beneath()).
                nofollow = getattr(os, "O_NOFOLLOW", 0) if path != self.directory else 0
                fd = self.open_inside(path, os.O_RDONLY | os.O_DIRECTORY | nofollow)
                try:
                    names = os.listdir(fd)
                finally:
                    os.close(fd)
            else:
                names = os.listdir(path)
        except OSError:
            self.send_error(404, "No permission to list directory")
            return None
        if not self.server.dotfiles:  # neither '.env' nor a link to it
            visible = []
            for name in names:
                try:
                    real = os.path.realpath(os.path.join(path, name))
                except OSError:  # a link removed meanwhile: see translate_path()
                    continue
                if not name.startswith(".") and not self.is_hidden(real):
                    visible.append(name)
            names = visible
        entries = []
        for name in names:
            full = os.path.join(path, name)
            try:
                info = os.stat(full)  # through a link: what it names
            except OSError:  # a dangling link, or gone meanwhile: listed without size or time
                info = None
            entries.append((name, full, info))
        parts = urllib.parse.urlsplit(self.path)
        order = urllib.parse.parse_qs(parts.query).get("sort", ["name"])[0]
        entries.sort(key=lambda entry: entry[0].lower())
        if order == "size":
            entries.sort(key=lambda entry: -file_size(entry[2]))  # stable: equal sizes stay by name
        elif order == "mtime":
            entries.sort(key=lambda entry: -(entry[2].st_mtime if entry[2] else 0))
        else:
            order = "name"
        # The directory, without the query or a fragment (as Python 3.14
        # shows it), decoded as translate_path() decoded it to find it.
        shown = parts.path
        try:
            shown = urllib.parse.unquote(shown, errors="surrogatepass")
        except UnicodeDecodeError:
            shown = urllib.parse.unquote(shown)
        title = f"Directory listing for {html.escape(shown, quote=False)}"
        encoding = sys.getfilesystemencoding()
        lines = ["<!DOCTYPE HTML>", '<html lang="en">', "<head>", f'<meta charset="{encoding}">']
        lines += ['<meta name="viewport" content="width=device-width">', f"<title>{title}</title>", LISTING_STYLE]
        lines += ["</head>", "<body>", f"<h1>{title}</h1>", "<hr>", "<table>", "<thead><tr>"]
        for key, label in (("name", "Name"), ("size", "Size"), ("mtime", "Modified")):
            current = ' aria-sort="descending"' if key == order and key != "name" else ""
            current = ' aria-sort="ascending"' if key == order == "name" else current
            lines.append(f'<th class="{key}"{current}><a href="?sort={key}">{label}</a></th>')
        lines += ["</tr></thead>", "<tbody>"]
        if shown != "/":
            lines.append('<tr><td class="name"><a href="../">../</a></td><td class="size"></td><td></td></tr>')
        for name, full, info in entries:
            is_dir = info is not None and stat.S_ISDIR(info.st_mode)
            link = name + "/" if is_dir else name
            shown_name = name + "@" if os.path.islink(full) else link  # a link to a folder: @, but links with /
            href = urllib.parse.quote(link, errors="surrogatepass")
            size = "" if info is None or is_dir else human_size(info.st_size)
            when = "" if info is None else listed_time(info.st_mtime)
            lines.append(
                f'<tr><td class="name"><a href="{href}">{html.escape(shown_name, quote=False)}</a></td>'
                f'<td class="size">{size}</td><td class="mtime">{when}</td></tr>'
            )
        lines += ["</tbody>", "</table>", "<hr>", "</body>", "</html>", ""]
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

    def send_file_headers(self, file: BinaryIO, stat: os.stat_result, path: str) -> tuple[BinaryIO, int, int] | None:
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
        # RFC 9110 8.8.2.1: a time in the future (a wrong clock, a file
        # unpacked from an archive) goes out as the response's own date,
        # taken before Date is. And none before year 1: on tmpfs a file may
        # be dated year 0 or 10000, which no HTTP date spells, and
        # formatdate() raised, a traceback and no response.
        modified = min(max(int(stat.st_mtime), FIRST_HTTP_DATE), int(time.time()))
        self.send_response(200 if span is None else 206)
        self.send_header("Content-Type", self.guess_type(path))
        self.send_header("Content-Length", str(length))
        self.send_header("Last-Modified", self.date_time_string(modified))
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
            count = at_most(last, size)
            if count == 0:
                raise RangeNotSatisfiable
            return size - count, count
        if last != "" and number_key(last) < number_key(first):
            return None  # invalid: ignore the header
        start = at_most(first, size)
        if start >= size:
            raise RangeNotSatisfiable
        end = size - 1 if last == "" else min(at_most(last, size), size - 1)
        return start, end - start + 1

    def guess_type(self, path: str) -> str:  # type: ignore[override]
        """http.server's guess, with charset=utf-8 on text types.

        Without a charset a browser decodes text/plain and text/css by its
        locale's legacy encoding (windows-1252 here): a UTF-8 file's "Grüße"
        shows as "GrÃ¼ÃŸe". UTF-8 is what editors write today, and what
        Caddy and Go's file server declare. The price: a file in another
        encoding is now shown as UTF-8, and the header wins over an HTML
        page's own <meta charset>; save such a file as UTF-8.
        """
        guess = super().guess_type(path)
        if guess.startswith("text/") and "charset=" not in guess:
            return guess + "; charset=utf-8"
        return guess

    def date_time_string(self, timestamp: float | None = None) -> str:
        """http.server's, formatted once a second: a response has two (Date, Last-Modified), each some 20 calls."""
        second = int(time.time() if timestamp is None else timestamp)
        dates = self.server.dates.by_second
        text = dates.get(second)
        if text is None:
            if len(dates) >= MAX_DATES:  # bounded: mostly the files' times, which vary
                dates.clear()
            text = dates[second] = email.utils.formatdate(second, usegmt=True)
        return text

    def log_message(self, format: str, *args: Any) -> None:
        # Formatted only if logged: --quiet costs nothing.
        log.info("#%d %s " + format, self.number, self.client_address[0], *args)


def open_beneath(directory: str, relative: str, flags: int) -> int:
    """openat() of relative, a path below directory with its links resolved, following no link.

    translate_path() resolves the links in a path and checks where it leads;
    open() then walked the path again. A file, or a folder on the way,
    swapped in between for a link out of the served directory led it to a
    file outside: a user who may write in the folder could have the server
    read out what only its own user may read (a rename loop got 25 outside
    files in 8,700 requests). The path has no links left, so a link met now
    was swapped in: each step is taken from the folder before it, with
    O_NOFOLLOW, and a link fails it (ELOOP, or ENOTDIR in place of a folder:
    404). (Linux's openat2() with RESOLVE_BENEATH does this in one call;
    Python has none.)

    The first step, like a file at the top of the folder (open_inside()), is
    opened by its path with O_NOFOLLOW, which is as safe: the folders on
    that path are the served one and those above it, which whoever may swap
    owns what is served anyway. A descriptor of the served folder, kept from
    the start, held on to the folder it was: a rebuild that deletes the
    folder and makes it again (make clean html, rm -rf dist) left every file
    below a sub-folder 404 until a restart. And every openat() from one
    shared descriptor changes its reference count in the kernel: on 3.13t at
    20 connections, 8% of the requests.
    """
    *folders, name = relative.split(os.sep)
    # O_PATH (Linux): a folder opened only to open what it holds needs the
    # right to pass through it (x), as open() by path does; O_RDONLY needs
    # the right to list it (r) too, and a folder of mode 0311 served nothing.
    # With O_PATH, O_NOFOLLOW opens a link itself: O_DIRECTORY refuses it.
    through = getattr(os, "O_PATH", os.O_RDONLY) | os.O_DIRECTORY | os.O_NOFOLLOW
    fd = os.open(os.path.join(directory, folders[0]), through)
    try:
        for folder in folders[1:]:
            inner = os.open(folder, through, dir_fd=fd)
            os.close(fd)
            fd = inner
        return os.open(name or os.curdir, flags, dir_fd=fd)  # '': the folder itself
    finally:
        os.close(fd)


def file_size(info: os.stat_result | None) -> int:
    """What ?sort=size orders by: a file's size; a folder, or a name that could not be read, after every file."""
    if info is None or not stat.S_ISREG(info.st_mode):
        return -1
    return info.st_size


def listed_time(mtime: float) -> str:
    """A listing's Modified column: local time to the minute; blank for a time localtime() cannot convert.

    tmpfs keeps any 64-bit second, and localtime() fails past year 2**31
    (EOVERFLOW): one such file made its whole folder a traceback.
    """
    try:
        return time.strftime("%Y-%m-%d %H:%M", time.localtime(mtime))
    except (OverflowError, OSError, ValueError):
        return ""


def human_size(size: float) -> str:
    """10 B, 256.0 KiB, 8.0 MiB: as ls -lh shows sizes, in powers of 1024."""
    if size < 1024:
        return f"{size:.0f} B"
    units = ["KiB", "MiB", "GiB", "TiB"]
    size /= 1024
    while size >= 1024 and len(units) > 1:
        size /= 1024
        units.pop(0)
    return f"{size:.1f} {units[0]}"


def number_key(digits: str) -> tuple[int, str]:
    """What orders decimal numbers as int() would, without int(): (digit count, digits), leading zeros dropped."""
    digits = digits.lstrip("0")
    return len(digits), digits


def at_most(digits: str, limit: int) -> int:
    """The number the digits spell, or limit if that is smaller.

    A range may name any position, "bytes=0-" followed by 5,000 nines
    included, and RFC 9110 makes it valid (the whole file, 206). int() of
    such a number costs quadratic time, and Python 3.11 and later refuse it
    (ValueError past 4,300 digits): a traceback and no response. A number
    with more digits than the limit is past it, whatever its value.
    """
    if number_key(digits) > number_key(str(limit)):
        return limit
    return int(digits or "0")


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
