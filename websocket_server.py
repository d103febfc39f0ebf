#!/usr/bin/env python3
"""WebSocket server: long-lived connections on one event loop, and a hub that broadcasts.

The blog post asked what happens when there are thousands of requests, "or if
each connection can last minutes or even hours (hello, WebSockets)?". The other
scripts answer the first half. A WebSocket (RFC 6455) starts as an HTTP request,
GET with `Upgrade: websocket`; the server answers 101 and from then on both
sides send messages whenever they like, over the same TCP connection, until one
of them sends a close. Here asyncio's streams run a coroutine per connection, as
in asyncio_server.py, and what changes is what a long life asks for:

- Memory per idle connection matters more than speed per request. Each
  costs a task, a transport, two stream objects and a WebSocket object
  (__slots__), and no timer task of its own (Deadlines): 6 KiB, measured with
  10,000 open (bench.py --websocket; the websockets library needs 14 KiB).
- TCP does not notice a peer that vanished (a laptop closed, a NAT that forgot
  the connection: a half-open connection) until it sends something: a ping
  every --ping-interval, and no pong within --ping-timeout, closes it (1011).
- A client that stops reading must not stall the others nor make the server
  buffer without bound. Broadcasting with `await drain()` per recipient would
  make the room go at the pace of its slowest member; writing without a bound
  would let that member's queue grow until the server runs out of memory. So
  each client's queue is bounded (WRITE_LIMIT), and past it that client alone
  is closed (1008), so that it knows it missed messages. (The websockets
  library has a "write limit" too: above it send() waits, and broadcast()
  skips that connection's copy.)
- A browser sends the user's cookies with the handshake, to any site, and the
  same-origin policy does not apply to WebSockets (CORS does not cover them).
  Any page the user visits could open ws://this-server/chat and read the
  replies as that user: cross-site WebSocket hijacking. The browser's Origin
  header, which a page cannot forge, says whose page asks; one that does not
  match Host is refused (403) unless --allow-origin names it. A client that
  sends no Origin is not a browser, so it has no victim's cookies to abuse.
- A stop is announced, not just done: every client gets a close with 1001
  ("going away"), and its answer, before the process exits.
- A room kept in a process's memory ends at that process: a second process,
  or a second machine behind a load balancer, splits it in two. With --redis
  the room lives in Redis pub/sub instead, and a process keeps only its own
  connections (Relay); Redis away, each process serves its own members.

What each part is in RFC 6455 (its section), and in the websockets library:
  read_request(), handle_request()  the opening handshake (4.2)    serve(), ServerProtocol.accept()
  origin_allowed()                  Origin (4.2.1, 10.2)            serve(origins=...)
  negotiate_deflate(), Deflate      permessage-deflate (RFC 7692)   compression="deflate"
  WebSocket.receive()               base framing (5.2)              the protocol's Frame.parse()
  unmask()                          masking (5.3)                   speedups.apply_mask (C)
  WebSocket.add_to_message()        fragments (5.4)                 the Assembler
  WebSocket.ping(), control()       ping and pong (5.5.2, 5.5.3)    ping_interval, ping_timeout
  --max-message                     (10.4)                          max_size
  WRITE_LIMIT                       -                               write_limit
  Hub.broadcast()                   -                               broadcast()
  WebSocket.start_closing()         the closing handshake (7)       close(), close_timeout
  Relay, read_reply()               - (Redis pub/sub, RESP)         - (redis.asyncio, broadcaster)

Routes: GET / is a chat page (open it in two tabs); /echo sends every message
back; /chat sends every message to every /chat client.

Compression costs memory, per connection: a zlib compressor with the 4 KiB
window (12 bits) and memLevel 5 this server asks for holds 38 KiB, and a
decompressor 11 KiB, or 39 KiB if the client keeps its full 32 KiB window
(it may, unless its offer lets the server limit it); at zlib's defaults (15
bits, memLevel 8) the pair would hold 300 KiB (tracemalloc). Each is made at
the first message that needs it, not at the handshake, so an idle connection
pays nothing. bench.py --websocket measures the whole: 1,000 connections after
one compressed message each hold 40 KiB more each than without compression.
--no-compression saves that, and deflate's CPU. A /chat member keeps no
compressor at all: each message is compressed once for the whole room
(Hub.broadcast()), not once per member.

Pick this script to read how WebSockets work, or for a small service with no
dependencies. Pick the websockets library (or a framework built on it) for
anything more: TLS (wss://) with ssl contexts, subprotocols, a client side,
authentication hooks, routing, proxies, C speedups, and years of production
hardening.

The approach is serve(), handle_client() and Hub; the rest is the skeleton the
servers share, and strict HTTP.

Standard library only; CPython 3.8 to 3.15.

Try it:  python websocket_server.py 8000
         then open http://127.0.0.1:8000/ in two browser tabs and chat
Across processes, with a redis-server on its default port:
         python websocket_server.py 8001 --redis redis://127.0.0.1:6379/
         python websocket_server.py 8002 --redis redis://127.0.0.1:6379/
         then open http://127.0.0.1:8001/ and http://127.0.0.1:8002/
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import codecs
import errno
import gc
import hashlib
import http
import itertools
import logging
import math
import os
import random
import re
import signal
import socket
import struct
import sys
import time
import urllib.parse
import zlib
from typing import Any, Awaitable, Callable, Coroutine, NamedTuple, TypeVar

# One recv() per chunk, and the most a frame's payload is unmasked at once.
CHUNK_SIZE = 64 * 1024
# Connections the kernel completes and queues while the loop is busy. listen()
# with no argument asks for at most 128, and a burst beyond the queue is left
# to SYN retries: a client stalls 1 s, then 3 s, then 7 s. The kernel caps the
# number at net.core.somaxconn (4096 on Linux since 5.4).
BACKLOG = max(socket.SOMAXCONN, 4096)
MAX_MESSAGE = 1024 * 1024  # the default bound on one message, after decompression (websockets: max_size)
LARGEST_MESSAGE = 1024 * 1024 * 1024  # --max-message above this would be memory, not a message
# The HTTP request head is read whole before anything is decided, so it is
# bounded: a client cannot make the server hold an endless header.
MAX_REQUEST_LINE = 8 * 1024
MAX_HEAD = 16 * 1024
MAX_HEADERS = 100
# After the last frame, how long and how much a client may go on sending before
# the server closes anyway (see close_gracefully()): 2 s in all, enough for a
# client that reads its reply, and soon enough to free the connection. (nginx
# waits up to 5 s between reads, 30 s in all.)
LINGER_SECONDS = 2.0
LINGER_BYTES = 16 * 1024 * 1024
# How long a client has to answer the server's close frame before the
# connection is dropped (websockets: close_timeout, 10 s); at a stop, never
# longer than --timeout, the stop's bound.
CLOSE_TIMEOUT = 2.0
# Unsent bytes a client may have queued before it counts as too slow (see
# WebSocket.send()). Memory per client stays below this plus one message.
WRITE_LIMIT = 1024 * 1024
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
# Socket activation: the first descriptor systemd passes (sd_listen_fds(3)).
LISTEN_FDS_START = 3
# --redis (see Relay): the waits between two attempts to reach Redis double
# from the first to the last; messages this process has published that Redis
# has not read yet, above which the members' reads wait, and above which Redis
# counts as lost; and what a reply may hold (an array: a pub/sub message).
FIRST_RETRY = 0.1
LAST_RETRY = 5.0
PUBLISH_LIMIT = 1024 * 1024
PUBLISH_LIMIT_HARD = 16 * 1024 * 1024
MAX_REPLY_ITEMS = 3
RESP_NUMBER = re.compile(rb"-?[0-9]{1,18}")
MAX_SECONDS = 24 * 60 * 60.0  # the most any option in seconds takes (see seconds())
MIN_SECONDS = 0.001  # the least, but for 0 where it means none (see seconds())
# Allocations between two passes of the cycle collector (the default is 700).
# Every connection alive is a task, a transport, buffers and futures, and each
# tenth pass reaches the older generations and walks all of them: with 10,000
# clients at once, again and again. 10,000 clients with --delay 1 took 2.9 to
# 3.4 s at the default, 2.4 to 2.5 s at this threshold, the same as with no
# collector at all. Reference counting still frees ordinary garbage at once;
# only reference cycles wait a little longer.
GC_THRESHOLD = 10_000

# RFC 6455 section 1.3: the server proves it read the key by hashing it with this.
HANDSHAKE_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
ROUTES = {"/echo": "echo", "/chat": "chat"}
# Opcodes (section 5.2); 0x3-0x7 and 0xB-0xF are reserved.
CONTINUATION = 0x0
TEXT = 0x1
BINARY = 0x2
CLOSE = 0x8
PING = 0x9
PONG = 0xA
FIN = 0x80  # the last frame of a message
RSV1 = 0x40  # permessage-deflate: this message is compressed
# Close codes (section 7.4.1) this server sends.
NORMAL_CLOSURE = 1000
GOING_AWAY = 1001
PROTOCOL_ERROR = 1002
NO_STATUS = 1005  # never sent: what an empty close frame means
INVALID_DATA = 1007
POLICY_VIOLATION = 1008
MESSAGE_TOO_BIG = 1009
INTERNAL_ERROR = 1011
# permessage-deflate (RFC 7692): windows of 4 KiB and memLevel 5, as the
# websockets library chooses: a chat message is short, and 10,000
# connections with zlib's defaults would need 3 GB.
DEFLATE_WINDOW_BITS = 12
DEFLATE_MEMORY_LEVEL = 5
# On /chat a message is compressed once for the whole room (Hub.broadcast()),
# by a compressor that lives for that message only: zlib's largest window
# (32 KiB) costs 144 KiB for a moment, not per member. The window matters: a
# message that repeats every 8 KiB costs its sender 16 KB in a 32 KiB window,
# and would cost every member 1 MiB in a 4 KiB one.
SHARED_WINDOW_BITS = 15
DEFLATE_TAIL = b"\x00\x00\xff\xff"  # the end of a sync flush, left off every compressed message (7.2.1)

TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
REQUEST_LINE = re.compile(rf"({TOKEN}) (/[!-~]*) HTTP/(1\.[01])".encode())
# A field value: visible characters, with spaces and tabs only between them;
# no control character (NUL, a bare CR or LF), and no obs-fold.
HEADER_LINE = re.compile(rf"({TOKEN}):([\t !-~\x80-\xff]*)".encode())
HOST = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._~!$&'()*+,;=%-]*)(?::([0-9]{1,5}))?")
EXTENSION = re.compile(rf"[ \t]*({TOKEN})[ \t]*")
EXTENSION_PARAMETER = re.compile(rf';[ \t]*({TOKEN})(?:[ \t]*=[ \t]*(?:({TOKEN})|"((?:[^"\\]|\\.)*)"))?[ \t]*')
WINDOW_BITS = re.compile(r"[89]|1[0-5]")  # 8..15, written the one way RFC 7692 allows
SINGLE_HEADERS = ("host", "origin", "sec-websocket-key", "sec-websocket-version", "content-length")

log = logging.getLogger("websocket_server")
T = TypeVar("T")


class ClientError(Exception):
    """The client broke the protocol or a limit; the message says how."""


class Refusal(Exception):
    """An HTTP request this server does not serve: the status to answer it with, and why."""

    def __init__(self, status: int, detail: str, headers: tuple[tuple[str, str], ...] = ()) -> None:
        super().__init__(detail)
        self.status = status
        self.headers = headers


class ProtocolViolation(Exception):
    """A client frame that fails the WebSocket connection: the close code, and why."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code


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
        description=__doc__.splitlines()[0],
        epilog=__doc__.split("\n", 1)[1].strip(),
        formatter_class=HelpFormatter,
    )
    parser.add_argument("port", type=port_number, help="TCP port; 0 lets the OS pick a free one")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on; 0.0.0.0 or :: exposes the server")
    parser.add_argument(
        "--max-message",
        type=message_size,
        default=MAX_MESSAGE,
        help="largest message in bytes, after decompression; a larger one is refused with close code 1009",
    )
    parser.add_argument(
        "--timeout",
        type=positive_seconds,
        default=10.0,
        help="seconds to send the HTTP request (the handshake), and to read a reply or the last frames",
    )
    parser.add_argument("--ping-interval", type=positive_seconds, default=20.0, help="seconds between keepalive pings")
    parser.add_argument(
        "--ping-timeout", type=positive_seconds, default=20.0, help="seconds to answer a ping before close code 1011"
    )
    parser.add_argument(
        "--allow-origin",
        type=origin,
        action="append",
        default=argparse.SUPPRESS,  # no "(default: None)": none is allowed but the server's own
        metavar="ORIGIN",
        help="also accept browsers on pages from this origin, such as https://example.com (repeatable)",
    )
    parser.add_argument(
        "--no-compression", action="store_true", help="decline permessage-deflate: no message is compressed"
    )
    parser.add_argument(
        "--redis",
        type=redis_url,
        metavar="URL",
        help="redis://[[USER]:PASSWORD@]HOST[:PORT][/DB]: /chat spans every process on this Redis (pub/sub)",
    )
    parser.add_argument("--room", type=room_name, default="chat", help="with --redis: the Redis channel of /chat")
    parser.add_argument("-q", "--quiet", action="store_true", help="no per-client log lines")
    args = parser.parse_args(argv)
    args.allow_origin = frozenset(getattr(args, "allow_origin", ()))
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


def message_size(text: str) -> int:
    value = int(text)
    if not 1 <= value <= LARGEST_MESSAGE:
        raise argparse.ArgumentTypeError(f"expected a number of bytes from 1 to {LARGEST_MESSAGE}, not {value}")
    return value


def origin(text: str) -> str:
    normalized = normalize_origin(text)
    if normalized is None:
        raise argparse.ArgumentTypeError(f"expected an origin such as https://example.com:8443, not {text!r}")
    return normalized


class RedisAddress(NamedTuple):
    host: str
    port: int
    username: str
    password: str | None  # None: no AUTH

    def __str__(self) -> str:  # for the log: never the password
        return format_address(self.host, self.port)


def redis_url(text: str) -> RedisAddress:
    """A redis:// URL as Redis documents it: redis://[[USER]:PASSWORD@]HOST[:PORT][/DB].

    The user and the password are percent-decoded. The database number is
    accepted and means nothing here: pub/sub channels belong to the whole
    server, whatever database a connection has selected.
    """
    usage = f"expected redis://[[USER]:PASSWORD@]HOST[:PORT][/DB], not {text!r}"
    try:
        parts = urllib.parse.urlsplit(text)
        port = parts.port
    except ValueError:
        raise argparse.ArgumentTypeError(usage) from None
    if parts.scheme == "rediss":
        raise argparse.ArgumentTypeError("rediss:// (Redis over TLS) is not supported: use redis://")
    if parts.scheme != "redis" or not parts.hostname or parts.query or parts.fragment:
        raise argparse.ArgumentTypeError(usage)
    if not re.fullmatch(r"/?|/[0-9]{1,5}", parts.path):
        raise argparse.ArgumentTypeError(usage)
    password = urllib.parse.unquote(parts.password) if parts.password is not None else None
    return RedisAddress(parts.hostname, port or 6379, urllib.parse.unquote(parts.username or ""), password)


def room_name(text: str) -> str:
    if not re.fullmatch(r"[!-~]{1,100}", text):
        raise argparse.ArgumentTypeError(f"expected 1 to 100 visible ASCII characters, not {text!r}")
    return text


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
    """Serve every client from one event loop until SIGINT or SIGTERM, then close every WebSocket."""
    raise_open_file_limit()
    gc.set_threshold(GC_THRESHOLD)
    stop = stop_signals(listener)
    log_accept_errors_briefly(listener)
    numbers = itertools.count(1)
    deadlines = Deadlines()
    hub = Hub()
    if args.redis is not None:  # connects in the background: /chat is local until Redis answers
        hub.relay = Relay(args, hub, deadlines)

    def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> Coroutine[Any, Any, None]:
        return handle_client(reader, writer, next(numbers), args, hub, deadlines)  # the loop runs it as a task

    # start_server() calls listen() again, with a queue of 100 unless told.
    server = await asyncio.start_server(on_connect, sock=listener, backlog=BACKLOG)
    # Only now, with the signal handlers in place: a Ctrl+C that comes right
    # after the ready line must stop the server cleanly, not with a traceback.
    print_ready_line(f"Listening on http://{format_address(*listener.getsockname()[:2])}/")
    await stop.wait()
    stop_accepting(listener)  # the signal refused new connections already: now the loop accepts none
    grace = min(CLOSE_TIMEOUT, args.timeout)
    if hub.relay is not None:  # first out of the room across processes, then the closes
        await hub.relay.stop(grace / 2)
    hub.stop(deadlines, grace)
    # Every task ends within bounds: a handshake in progress within the
    # grace, a WebSocket when its client answers the close or the grace has
    # passed (never beyond --timeout), and then its linger.
    while pending := asyncio.all_tasks() - {asyncio.current_task()}:
        await asyncio.wait(pending)
    server.close()


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


class Hub:
    """Every open WebSocket, and the room that /chat broadcasts to.

    Nothing here waits: broadcast() hands a message to each member's transport
    and moves on, so one member that does not read costs the others nothing
    (WebSocket.send() closes it once its queue is full).
    """

    def __init__(self) -> None:
        self.open: set[WebSocket] = set()  # every WebSocket past its handshake, for the stop
        self.room: set[WebSocket] = set()  # the /chat members that still take messages
        self.arriving: set[asyncio.Task[Any]] = set()  # connections still sending their HTTP request
        self.stopping = False
        self.grace = CLOSE_TIMEOUT  # from the stop on: the seconds a handshake or a close is given
        self.relay: Relay | None = None  # with --redis: the room across processes

    def join(self, websocket: WebSocket) -> None:
        self.open.add(websocket)
        if websocket.route == "chat":
            self.room.add(websocket)
        if self.stopping:  # opened after the stop began: told at once
            websocket.start_closing(GOING_AWAY, "the server is stopping", self.grace)

    def forget(self, websocket: WebSocket) -> None:
        self.open.discard(websocket)
        self.room.discard(websocket)

    def chat(self, opcode: int, payload: bytes) -> None:
        """A member's message: through Redis while the room spans processes, else to this process's members."""
        if self.relay is not None and self.relay.spans:
            self.relay.publish(opcode, payload)  # back to every process, this one included, in one order
        else:
            self.broadcast(opcode, payload)

    def broadcast(self, opcode: int, payload: bytes) -> None:
        """Send a message to every member of the room, making each form of its frame once.

        A compressed frame depends on the compressor that made it. With a
        compressor per member, a message cost a compression per member, in the
        loop: one member sending 1 MiB messages that compress well in its
        window (16 KB on its wire) but not in the server's froze the server for
        everyone, 4 s for five messages in a room of 30. On /chat the server
        compresses each message on its own (negotiate_deflate(), shared), so
        the frame depends on the window only, and one frame serves every
        member that agreed on that window: a message costs at most one
        compression per window size (9 to 15 bits) and one plain frame, however
        large the room; each member then costs a write of the same bytes.
        """
        frames: dict[int, bytes] = {}  # the server's window bits (0: uncompressed): the frame
        for member in tuple(self.room):  # a tuple: a member too slow leaves the room meanwhile
            bits = member.deflate.server_bits if member.deflate is not None and member.deflate.compresses else 0
            frame = frames.get(bits)
            if frame is None:
                frame = frames[bits] = member.frame(opcode, payload)
            member.send(frame)

    def stop(self, deadlines: Deadlines, grace: float) -> None:
        """A close (1001) to every WebSocket, answered within grace seconds, and as long for every handshake."""
        self.stopping = True
        self.grace = grace
        if self.open:
            log.info("stopping: a close (1001) to %d WebSocket(s)", len(self.open))
        for task in self.arriving:  # within() in handle_client(): this replaces its deadline
            deadlines.set(task, grace, task.cancel)
        for websocket in tuple(self.open):
            websocket.start_closing(GOING_AWAY, "the server is stopping", grace)


class RedisError(Exception):
    """Redis refused something, or sent what RESP does not allow: the message says which."""


class Relay:
    """The room across processes: Redis pub/sub, RESP by hand on asyncio streams.

    A member's message is published to the channel (--room), on one
    connection; every process, this one included, subscribes to it on a
    second connection (a subscribed connection may send nothing but
    (UN)SUBSCRIBE and PING) and sends what arrives to its own members. Even
    the sender gets its message back through Redis, never locally first:
    Redis hands the channel's messages to every subscriber in the one order it
    received them, so every member of every process sees one order. A
    shortcut home for the sender's own messages would put them ahead of
    messages other processes published earlier.

    Redis is a second thing that can fail, and a process keeps serving its
    own members while it is away. Unreachable at the start or lost later (a
    restart, a reset, a PING unanswered within --ping-timeout, a reply RESP
    does not allow): one line in the log, the connections closed, /chat local
    to this process, and a new attempt 0.1 s later, then 0.2, 0.4, ... up to
    5 s apart; one line again when it is back. What members on other
    processes miss meanwhile is lost for them: pub/sub stores nothing, and a
    message published while a subscriber is away never reaches it (nor do the
    ones in flight at the moment a connection breaks). A chat that must not
    lose messages needs Redis Streams (XADD, and XREAD from the last id seen)
    or a database.

    Memory stays bounded both ways. Published messages queue in this
    process's transport while Redis reads slowly: past PUBLISH_LIMIT the
    members' reads wait for it (paced()), so the room goes at Redis's pace,
    and past PUBLISH_LIMIT_HARD Redis counts as lost. Arriving messages are
    read one at a time, each bounded by --max-message, and handed to the
    members' bounded queues (WebSocket.send()); a process that cannot keep up
    leaves them in Redis's output buffer for it, which Redis bounds itself
    (client-output-buffer-limit pubsub, 32 MB by default) by dropping the
    connection: lost, and reconnected.

    A real deployment would use redis-py's asyncio client (redis.asyncio),
    with its connection pool, RESP3, TLS (rediss://), Sentinel and Cluster, or
    a layer built on it (Django Channels' channels_redis, broadcaster,
    Socket.IO's Redis adapter). This script speaks RESP itself to stay one
    file of the standard library, and because the protocol is small enough to
    show: a line of type and length, then the bytes.
    """

    def __init__(self, args: argparse.Namespace, hub: Hub, deadlines: Deadlines) -> None:
        self.address: RedisAddress = args.redis
        self.channel = args.room.encode()
        self.hub = hub
        self.deadlines = deadlines
        self.timeout = args.timeout  # for each answer Redis owes: to connect, AUTH, SUBSCRIBE, PING
        self.ping_interval = args.ping_interval
        self.ping_timeout = args.ping_timeout
        self.largest = args.max_message + 1  # a message as published: its opcode, then its bytes
        self.publisher: asyncio.StreamWriter | None = None  # while the room spans processes
        self.subscriber: asyncio.StreamWriter | None = None
        self.connections: list[asyncio.StreamWriter] = []
        self.since = 0.0  # when the room last came to span processes
        self.failure: Exception | None = None  # what the publishing side saw, if it failed first
        self.pacing = asyncio.Lock()  # drain() takes one waiter at a time before Python 3.10
        self.wake = asyncio.Event()  # set at the stop: a wait to retry ends at once
        self.stopping = False
        self.task = asyncio.get_running_loop().create_task(self.run())

    @property
    def spans(self) -> bool:
        """Whether the room spans processes: subscribed, and the publishing connection open."""
        return self.publisher is not None and not self.publisher.transport.is_closing()

    def publish(self, opcode: int, payload: bytes) -> None:
        assert self.publisher is not None
        self.publisher.write(command(b"PUBLISH", self.channel, bytes((opcode,)) + payload))
        queued = self.publisher.transport.get_write_buffer_size()
        if queued > PUBLISH_LIMIT_HARD:
            self.fail(RedisError(f"{queued} bytes unsent: too slow to take the messages"))

    async def paced(self) -> None:
        """Wait while more than PUBLISH_LIMIT bytes wait for Redis to read them."""
        publisher = self.publisher
        if publisher is None or publisher.transport.get_write_buffer_size() <= PUBLISH_LIMIT:
            return
        async with self.pacing:
            try:
                await publisher.drain()
            except OSError:  # lost meanwhile: run() says so
                pass

    async def run(self) -> None:
        """Connect, serve the room across processes until Redis is lost, wait, and again, until the stop."""
        delay = FIRST_RETRY
        told = False  # the outage in progress is in the log
        while not self.stopping:
            try:
                await self.session(told)  # returns at the stop, once unsubscribed
            except (OSError, EOFError, ValueError, RedisError, ClientError) as exc:
                if self.stopping:  # the stop closed the connections, or cancelled an attempt
                    break
                why = explain(self.failure or exc)
                if self.publisher is not None:
                    log.warning("redis at %s lost (%s): /chat serves this process's members only", self.address, why)
                    told = True
                    if time.monotonic() - self.since > LAST_RETRY:  # not a Redis that drops every connection
                        delay = FIRST_RETRY
                elif not told:
                    log.warning(
                        "redis at %s unreachable (%s): /chat serves this process's members only; retrying",
                        self.address,
                        why,
                    )
                    told = True
            finally:
                await self.disconnect()
            if not self.stopping:
                try:
                    await asyncio.wait_for(self.wake.wait(), delay)
                except asyncio.TimeoutError:
                    pass
                delay = min(delay * 2, LAST_RETRY)

    async def session(self, told: bool) -> None:
        """Both connections, the subscription, then the channel's messages to this process's members."""
        self.failure = None
        reader, self.subscriber = await self.connect()
        replies, publisher = await self.connect()
        self.subscriber.write(command(b"SUBSCRIBE", self.channel))
        reply = await within(self.deadlines, self.timeout, read_reply(reader, self.largest), "no answer to SUBSCRIBE")
        if not (isinstance(reply, list) and reply[:2] == [b"subscribe", self.channel]):
            raise RedisError(f"an answer to SUBSCRIBE that is not one: {str(reply)[:80]}")
        confirming = asyncio.get_running_loop().create_task(self.confirm(replies, publisher))
        try:
            self.publisher = publisher
            self.since = time.monotonic()
            if told:
                log.warning("redis at %s is back: /chat spans every process on it again", self.address)
            else:
                log.info("redis at %s: /chat spans every process subscribed to %r", self.address, self.channel.decode())
            await self.listen(reader)
        finally:
            for writer in self.connections:  # ends confirm(), if it has not ended
                writer.close()
            await asyncio.wait([confirming])
            if not confirming.cancelled():
                confirming.exception()  # retrieved: the failure, if any, is in self.failure

    async def connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """One connection to Redis, authenticated if the URL has a password."""
        host, port, username, password = self.address
        opening = asyncio.open_connection(host, port)
        reader, writer = await within(self.deadlines, self.timeout, opening, f"no connection in {self.timeout:g} s")
        self.connections.append(writer)
        if password is not None:
            auth = (b"AUTH", username.encode(), password.encode()) if username else (b"AUTH", password.encode())
            writer.write(command(*auth))
            reply = await within(self.deadlines, self.timeout, read_reply(reader, 0), "no answer to AUTH")
            if reply != b"OK":
                raise RedisError(f"an answer to AUTH that is not OK: {str(reply)[:80]}")
        return reader, writer

    async def listen(self, reader: asyncio.StreamReader) -> None:
        """The channel's messages, each to this process's members, until the unsubscription (the stop).

        Silence is normal on a quiet channel, so after --ping-interval of it
        a PING asks whether Redis is still there, as the server asks its
        clients: a restart would have reset the connection, but a machine
        gone or a network cut sends nothing at all.
        """
        pinged = False
        told = False  # of a message no process of this server published: once a session
        while True:
            wait = self.ping_timeout if pinged else self.ping_interval
            try:
                reply = await within(self.deadlines, wait, read_reply(reader, self.largest), "silent")
            except ClientError:
                if pinged or self.stopping:  # or the stop's cancel, which within() turns into ClientError
                    raise RedisError(f"no answer to a PING within {self.ping_timeout:g} s") from None
                self.subscriber.write(command(b"PING"))  # type: ignore[union-attr]
                pinged = True
                continue
            pinged = False
            if isinstance(reply, list) and len(reply) == 3 and reply[:2] == [b"message", self.channel]:
                data = reply[2]
                if ours(data):
                    self.hub.broadcast(data[0], data[1:])
                elif not told:
                    # Anyone may publish on a channel (an operator's redis-cli,
                    # another program that picked the same name): the message is
                    # dropped, not taken for a broken Redis. Ending the session
                    # for it cut every process off the room, and dropped the
                    # messages of the reconnect's gap, at each publish.
                    log.warning(
                        "redis: a message on %r that no process of this server published: dropped",
                        self.channel.decode(),
                    )
                    told = True
            elif isinstance(reply, list) and reply[:1] == [b"unsubscribe"]:
                return
            elif reply != [b"pong", b""]:
                raise RedisError(f"an unexpected message: {str(reply)[:80]}")

    async def confirm(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Read Redis's answers to PUBLISH: each the count of subscribers it reached."""
        try:
            while True:
                reply = await read_reply(reader, 0)
                if not isinstance(reply, int):
                    raise RedisError(f"an answer to PUBLISH that is not a number: {str(reply)[:80]}")
        except (OSError, EOFError, ValueError, RedisError) as exc:
            if not writer.transport.is_closing():  # not the session's end, which closed it
                self.fail(exc)
            raise

    def fail(self, exc: Exception) -> None:
        """The publishing side failed: end the session, whose run() reports this failure."""
        if self.failure is None:
            self.failure = exc
        for writer in self.connections:
            writer.close()  # listen() reads the end of the stream, and returns the failure

    async def disconnect(self) -> None:
        self.publisher = self.subscriber = None
        connections, self.connections = self.connections, []
        for writer in connections:
            await close(writer)

    async def stop(self, grace: float) -> None:
        """Unsubscribe and close both connections, within grace seconds."""
        self.stopping = True
        self.wake.set()
        subscribed = self.publisher is not None
        if subscribed:
            self.publisher = None  # from now on /chat is local, for the moments until the closes
            self.subscriber.write(command(b"UNSUBSCRIBE"))  # type: ignore[union-attr]  # listen() returns at the answer
        else:
            self.task.cancel()  # a connection in the making: within() turns it into ClientError
        done, _ = await asyncio.wait([self.task], timeout=grace)
        if not done:  # no answer in time: the connections close all the same
            self.task.cancel()
            await asyncio.wait([self.task])
        if subscribed:
            log.info("redis at %s: unsubscribed, and both connections closed", self.address)


def ours(data: object) -> bool:
    """Whether a message on the channel is as Relay.publish() makes them: an opcode, then text in UTF-8 or bytes."""
    if not isinstance(data, bytes) or not data or data[0] not in (TEXT, BINARY):
        return False
    if data[0] == TEXT:
        try:
            data[1:].decode()
        except UnicodeDecodeError:
            return False
    return True


def command(*parts: bytes) -> bytes:
    """A Redis command as RESP sends it: an array of bulk strings, each its length then its bytes."""
    pieces = [b"*%d\r\n" % len(parts)]
    for part in parts:
        pieces += (b"$%d\r\n" % len(part), part, b"\r\n")
    return b"".join(pieces)


async def read_reply(reader: asyncio.StreamReader, largest: int, nested: bool = False) -> Any:
    """One RESP2 reply: bytes, an int, None or a list; RedisError for an error reply or anything malformed.

    Every read is bounded before it is made: a line by the reader's limit
    (64 KiB; past it readline() raises ValueError), a bulk string by largest
    bytes (checked before a byte of it is read, so "$99999999999" costs
    nothing), an array by MAX_REPLY_ITEMS, and no array inside an array: a
    hostile or broken server costs a line in the log, not the memory.
    """
    line = await reader.readline()
    if not line:
        raise RedisError("the connection closed")
    if not line.endswith(b"\r\n"):
        raise RedisError(f"a reply cut short: {line[:40]!r}")
    kind, value = line[:1], line[1:-2]
    if kind == b"+":
        return value
    if kind == b"-":
        raise RedisError(value[:200].decode("utf-8", "replace"))
    if kind in b":$*" and RESP_NUMBER.fullmatch(value):
        number = int(value)
        if kind == b":":
            return number
        if kind == b"$" and -1 <= number <= largest:
            if number < 0:
                return None
            data = await reader.readexactly(number + 2)
            if data[-2:] != b"\r\n":
                raise RedisError("a bulk string longer than its length")
            return data[:-2]
        if kind == b"*" and not nested and -1 <= number <= MAX_REPLY_ITEMS:
            return [await read_reply(reader, largest, nested=True) for _ in range(number)]
        raise RedisError(f"a length out of bounds: {line[:40]!r}")
    raise RedisError(f"a malformed reply: {line[:40]!r}")


def explain(exc: Exception) -> str:
    if isinstance(exc, OSError):
        if exc.errno and exc.errno > 0:  # "Connection refused", not asyncio's "Connect call failed (...)"
            return os.strerror(exc.errno)
        return exc.strerror or str(exc)
    if isinstance(exc, EOFError):
        return "the connection closed"
    if isinstance(exc, ValueError):
        return "a reply line over 64 KiB"
    return str(exc)


async def handle_client(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    number: int,
    args: argparse.Namespace,
    hub: Hub,
    deadlines: Deadlines,
) -> None:
    """Serve one connection: an HTTP request, and on /echo or /chat the WebSocket it opens."""
    task = asyncio.current_task()
    hub.arriving.add(task)  # type: ignore[arg-type]
    # Accepted just before a stop, and started after it: the stop's grace, as for the others.
    timeout = hub.grace if hub.stopping else args.timeout
    asked = ""
    try:
        try:
            # One deadline for the whole request, fixed at connect: a client
            # that trickles a byte at a time does not extend it.
            request = await within(deadlines, timeout, read_request(reader), "sent no complete request in time")
            asked = f"{request.method} {request.target[:80]}: "
            response, route, deflate = handle_request(request, args)
            outcome = asked + response[9:12].decode()  # the status: HTTP/1.1 200 OK
        except Refusal as refusal:  # a request this server does not serve, or a head too large to read
            response, route, deflate = error_response(refusal), "", None
            outcome = f"{asked}{refusal.status}, {refusal}"
        finally:
            hub.arriving.discard(task)  # type: ignore[arg-type]
        if not route:  # an HTTP response, then the connection's end
            await write_response(writer, bytearray(response), args.timeout, deadlines)
            await close_gracefully(reader, writer, args.timeout, deadlines)
            log.info("#%d %s", number, outcome)
            return
        writer.write(response)  # 101 Switching Protocols: from here on, frames
        websocket = WebSocket(reader, writer, number, route, args, hub, deadlines, deflate, request.rest)
        log.info("#%d %sa WebSocket%s", number, asked, " (permessage-deflate)" if deflate else "")
        # A suspended coroutine keeps its locals: without this, 10,000 open
        # WebSockets would keep 10,000 request heads, a kilobyte each.
        del request, response
        hub.join(websocket)
        try:
            outcome = await websocket.run()
        finally:
            hub.forget(websocket)
        if not writer.transport.is_closing():  # not dropped: the last frames go out, then a graceful close
            try:
                await write_response(writer, bytearray(), args.timeout, deadlines)
                await close_gracefully(reader, writer, args.timeout, deadlines)
            except ClientError as exc:
                outcome += f"; then it {exc}"
        log.info("#%d %s", number, outcome)
    except ClientError as exc:
        log.info("#%d %s", number, exc)
    finally:
        await close(writer)


async def close(writer: asyncio.StreamWriter) -> None:
    """Close the connection, and wait until it has closed: writer.wait_closed(), never skipped.

    A connection lost to a reset leaves its OSError in a future of the
    stream's protocol as well. Left there, it is "Future exception was never
    retrieved" and a traceback on stderr, whenever the future is collected.
    The protocol's __del__ collects it, but only if it runs before the
    future's own, and in a garbage-collected cycle (the exception's traceback
    holds the frames that hold the stream) their order is luck: one stop in
    about 600 under load printed it. wait_closed() takes the exception in
    hand. It returns at the loop's next turn, because here no path leaves
    unsent bytes to close() (it would wait for the client to read them):
    each reply is drained or aborted first.
    """
    writer.close()
    try:
        await writer.wait_closed()
    except OSError:  # the reset, or whatever else ended the connection: it has ended
        pass


async def within(deadlines: Deadlines, timeout: float, work: Awaitable[T], failure: str) -> T:
    """Await work, or raise ClientError(failure + ": closed") once timeout seconds have passed.

    asyncio.wait_for() would run work in a task of its own (before 3.12), a
    task per await. Here a deadline cancels the task already running: the
    cancellation surfaces at the await, which is how asyncio.timeout() (3.11+)
    works too. A copy for 3.11 and later can write `async with
    asyncio.timeout(timeout):` instead, and lose nothing it would notice:
    with a loop timer per wait, it did 0.97x this one's requests/s on 3.13
    (50 clients in flight, --delay 0). It is kept here because 3.8 to 3.10
    lack it, and two ways of doing one thing would be a second path to test.

    The trap a copy inherits: every CancelledError is taken for the deadline's.
    Here nothing else ever cancels a connection's task (shutdown waits for
    them); code that does (a TaskGroup, a timeout of its own) must tell the
    two apart, as asyncio.timeout() does with Task.uncancel().
    """
    task = asyncio.current_task()
    deadlines.set(task, timeout, task.cancel)  # type: ignore[union-attr]
    try:
        return await work
    except asyncio.CancelledError:
        raise ClientError(f"{failure}: closed") from None
    finally:
        deadlines.clear(task)


class Request:
    """An HTTP request head, parsed strictly: the request line, the headers, and what came after."""

    def __init__(self, method: str, target: str, version: str, headers: dict[str, str], rest: bytes) -> None:
        self.method = method
        self.target = target
        self.version = version
        self.headers = headers  # lowercase name: value; a list header's repeats joined with ", "
        self.rest = rest  # bytes after the blank line: a WebSocket's first frames, sent early


async def read_request(reader: asyncio.StreamReader) -> Request:
    """Read an HTTP request head, up to the blank line, and parse it; Refusal if it is bad or too large."""
    head = bytearray()
    line_end = -1
    while True:
        try:
            chunk = await reader.read(CHUNK_SIZE)
        except OSError:  # reset, or any other failure of this one connection
            chunk = b""
        if not chunk:
            raise ClientError("disconnected before a complete request")
        # Search only where a line end can newly be: rescanning the whole head
        # at each chunk would make a head trickled a byte at a time cost O(n^2).
        searched = max(0, len(head) - 3)
        head += chunk
        if line_end < 0:
            line_end = head.find(b"\r\n", searched)
        if line_end > MAX_REQUEST_LINE or line_end < 0 and len(head) > MAX_REQUEST_LINE + 1:
            raise Refusal(414, f"a request line over {MAX_REQUEST_LINE} bytes")
        end = head.find(b"\r\n\r\n", searched)
        if end >= 0:
            break
        if len(head) > MAX_HEAD:
            raise Refusal(431, f"a request head over {MAX_HEAD} bytes")
    if end > MAX_HEAD:
        raise Refusal(431, f"a request head over {MAX_HEAD} bytes")
    return parse_request(bytes(head[:end]), bytes(head[end + 4 :]))


def parse_request(head: bytes, rest: bytes) -> Request:
    """The request line and headers (RFC 9112), strictly: anything unusual is a 400, not a guess.

    A lenient parser is how request smuggling starts: two programs on the path
    (a proxy, this server) that read one request two ways. So lines end in CR
    LF only, a header line that starts with a space (obs-fold) is refused, and
    so is any control character, NUL included.
    """
    lines = head.split(b"\r\n")
    match = REQUEST_LINE.fullmatch(lines[0])
    if not match:
        raise Refusal(400, "a malformed request line")
    method, target, version = (part.decode("ascii") for part in match.groups())
    if len(lines) - 1 > MAX_HEADERS:
        raise Refusal(431, f"more than {MAX_HEADERS} headers")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        field = HEADER_LINE.fullmatch(line)
        if not field:
            raise Refusal(400, "a malformed header line")
        name = field.group(1).decode("ascii").lower()
        # The spaces around a value stripped here, not by the pattern: one
        # that did it with [ \t]* on both sides of an optional value took
        # quadratic time on a line of spaces that ends in a byte it refuses
        # (16 KiB of them: half a second, with the loop stopped for everyone).
        value = field.group(2).strip(b" \t").decode("latin-1")
        if name not in headers:
            headers[name] = value
        elif name in SINGLE_HEADERS:
            raise Refusal(400, f"more than one {name} header")
        else:  # a list header given twice is the same as its values joined (RFC 9110 5.3)
            headers[name] += ", " + value
    host = headers.get("host")
    if host is None and version == "1.1":
        raise Refusal(400, "an HTTP/1.1 request without Host")
    if host is not None and not HOST.fullmatch(host):
        raise Refusal(400, "a malformed Host header")
    length = headers.get("content-length")
    if length is not None and not (length.isascii() and length.isdigit() and len(length) <= 18):
        raise Refusal(400, "a malformed Content-Length")
    if length is not None and "transfer-encoding" in headers:
        raise Refusal(400, "both Content-Length and Transfer-Encoding")
    return Request(method, target, version, headers, rest)


def handle_request(request: Request, args: argparse.Namespace) -> tuple[bytes, str, Deflate | None]:
    """The answer to one request: (the response, its WebSocket route or "", the compression agreed).

    Refusal for anything this server does not serve. A WebSocket handshake
    (RFC 6455 section 4.2.1) is a GET over HTTP/1.1 with Upgrade: websocket,
    Connection: upgrade, a Sec-WebSocket-Key of 16 bytes in base64 and
    Sec-WebSocket-Version: 13.
    """
    path = request.target.partition("?")[0]
    if path == "/":
        if request.method not in ("GET", "HEAD"):
            raise Refusal(405, "the page is read with GET", (("Allow", "GET, HEAD"),))
        headers = (("Content-Type", "text/html; charset=utf-8"), ("Cache-Control", "no-cache"))
        return http_response(200, headers, PAGE, send_body=request.method == "GET"), "", None
    route = ROUTES.get(path)
    if route is None:
        raise Refusal(404, "no such page: / is the chat page, /echo and /chat are WebSockets")
    if request.method != "GET":
        raise Refusal(405, "a WebSocket opens with GET", (("Allow", "GET"),))
    if "websocket" not in tokens(request.headers.get("upgrade", "")):
        upgrade = (("Upgrade", "websocket"), ("Sec-WebSocket-Version", "13"))
        raise Refusal(426, f"{path} is a WebSocket: open it with new WebSocket()", upgrade)
    if request.version != "1.1":
        raise Refusal(400, "a WebSocket handshake needs HTTP/1.1")
    if "upgrade" not in tokens(request.headers.get("connection", "")):
        raise Refusal(400, "Connection does not include upgrade")
    if request.headers.get("sec-websocket-version") != "13":
        raise Refusal(426, "this server speaks WebSocket version 13 only", (("Sec-WebSocket-Version", "13"),))
    key = request.headers.get("sec-websocket-key", "")
    try:
        if len(base64.b64decode(key, validate=True)) != 16:
            raise ValueError
    except (ValueError, binascii.Error):
        raise Refusal(400, "Sec-WebSocket-Key is not 16 bytes in base64") from None
    if request.headers.get("content-length", "0") != "0" or "transfer-encoding" in request.headers:
        raise Refusal(400, "a handshake with a body")  # its bytes would be read as frames
    if not origin_allowed(request.headers.get("origin"), request.headers["host"], args.allow_origin):
        raise Refusal(403, f"pages from {request.headers['origin'][:80]} may not open this WebSocket")
    accept = base64.b64encode(hashlib.sha1(key.encode() + HANDSHAKE_GUID).digest()).decode()
    headers = (("Upgrade", "websocket"), ("Connection", "Upgrade"), ("Sec-WebSocket-Accept", accept))
    deflate = None
    if not args.no_compression and "sec-websocket-extensions" in request.headers:
        agreed = negotiate_deflate(request.headers["sec-websocket-extensions"], shared=route == "chat")
        if agreed is not None:
            extension, deflate = agreed
            headers += (("Sec-WebSocket-Extensions", extension),)
    return http_response(101, headers), route, deflate


def tokens(value: str) -> list[str]:
    """A comma-separated list header (Connection, Upgrade) as lowercase tokens."""
    return [token.strip().lower() for token in value.split(",")]


def origin_allowed(origin_header: str | None, host: str, allowed: frozenset[str]) -> bool:
    """Whether a page from this Origin may open a WebSocket here (see the docstring: hijacking).

    The page's own server is the one the browser connects to, so its origin's
    host and port match the Host header; a proxy that terminates TLS makes
    https://example.com arrive as Host: example.com, which matches too, since
    a Host without a port means the origin scheme's default port.
    """
    if origin_header is None:  # not a browser: it has no victim's cookies to send
        return True
    normalized = normalize_origin(origin_header)
    if normalized is None:
        return False
    if normalized in allowed:
        return True
    parts = urllib.parse.urlsplit(normalized)
    match = HOST.fullmatch(host)
    if parts.scheme not in ("http", "https") or not match:
        return False
    host_name = match.group(1).strip("[]").lower()
    host_port = int(match.group(2)) if match.group(2) else (443 if parts.scheme == "https" else 80)
    return (parts.hostname, parts.port) == (host_name, host_port)


def normalize_origin(text: str) -> str | None:
    """scheme://host:port, lowercase, with the port spelt out; 'null' as it is; None if malformed."""
    if text == "null":  # a sandboxed page, a file: never the same origin as a server
        return text
    try:
        parts = urllib.parse.urlsplit(text)
        port = parts.port
    except ValueError:
        return None
    if not parts.scheme or not parts.hostname or parts.path not in ("", "/") or parts.query or parts.fragment:
        return None
    if "@" in parts.netloc:
        return None
    if port is None:
        port = {"http": 80, "https": 443}.get(parts.scheme.lower())
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{parts.scheme.lower()}://{host}" + (f":{port}" if port is not None else "")


def negotiate_deflate(header: str, shared: bool = False) -> tuple[str, Deflate] | None:
    """Accept the first permessage-deflate offer this server can meet (RFC 7692 section 7.1).

    Returns the extension as the response states it, and the Deflate for the
    connection; None declines them all: the WebSocket is then uncompressed.
    An offer is declined if a parameter is unknown, repeated, or has a value
    outside the RFC's; the RFC says to try the next offer then.

    shared: the connection's messages are broadcasts (/chat), whose frames
    are shared (Hub.broadcast()). The server then compresses each message on
    its own, and says so with server_no_context_takeover, which it may answer
    even when the client did not offer it (7.1.1.1); and it may use zlib's
    full window, the compressor being one per broadcast, not one per member.
    """
    for name, parameters in parse_extensions(header):
        if name.lower() != "permessage-deflate":
            continue
        seen: set[str] = set()
        server_reset, client_reset = shared, False
        server_bits = SHARED_WINDOW_BITS if shared else DEFLATE_WINDOW_BITS  # the server may lower it unasked (7.1.2.1)
        client_bits = None  # the response may limit the client's window only if the offer allows it
        for parameter, value in parameters:
            parameter = parameter.lower()
            if parameter in seen:
                break
            seen.add(parameter)
            if parameter == "server_no_context_takeover" and value is None:
                server_reset = True
            elif parameter == "client_no_context_takeover" and value is None:
                client_reset = True  # the client said it resets: our decompressor can too
            elif parameter == "server_max_window_bits" and value is not None and WINDOW_BITS.fullmatch(value):
                server_bits = min(server_bits, int(value))
            elif parameter == "client_max_window_bits" and (value is None or WINDOW_BITS.fullmatch(value)):
                client_bits = min(DEFLATE_WINDOW_BITS, int(value or 15))
            else:
                break
        else:
            extension = "permessage-deflate"
            if server_reset:
                extension += "; server_no_context_takeover"
            if client_reset:
                extension += "; client_no_context_takeover"
            extension += f"; server_max_window_bits={server_bits}"
            if client_bits is not None:
                extension += f"; client_max_window_bits={client_bits}"
            return extension, Deflate(server_bits, client_bits or 15, server_reset, client_reset)
    return None


def parse_extensions(header: str) -> list[tuple[str, list[tuple[str, str | None]]]]:
    """Sec-WebSocket-Extensions (RFC 6455 section 9.1): each offer's name and parameters; [] if malformed."""
    offers = []
    position = 0
    while True:
        name = EXTENSION.match(header, position)
        if not name:
            return []
        position = name.end()
        parameters: list[tuple[str, str | None]] = []
        while position < len(header) and header[position] == ";":
            parameter = EXTENSION_PARAMETER.match(header, position)
            if not parameter:
                return []
            quoted = parameter.group(3)
            value = re.sub(r"\\(.)", r"\1", quoted) if quoted is not None else parameter.group(2)
            parameters.append((parameter.group(1), value))
            position = parameter.end()
        offers.append((name.group(1), parameters))
        if position == len(header):
            return offers
        if header[position] != ",":
            return []
        position += 1


def http_response(
    status: int, headers: tuple[tuple[str, str], ...], body: bytes = b"", send_body: bool = True
) -> bytes:
    lines = [f"HTTP/1.1 {status} {http.HTTPStatus(status).phrase}"]
    lines += [f"{name}: {value}" for name, value in headers]
    if status != 101:
        # One request per connection: the page is a single request, and a
        # WebSocket is a connection of its own.
        lines += [f"Content-Length: {len(body)}", "Connection: close"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body if send_body else b"")


def error_response(refusal: Refusal) -> bytes:
    headers = (("Content-Type", "text/plain; charset=utf-8"), ("X-Content-Type-Options", "nosniff"), *refusal.headers)
    return http_response(refusal.status, headers, f"{refusal}\n".encode())


async def write_response(writer: asyncio.StreamWriter, reply: bytearray, timeout: float, deadlines: Deadlines) -> None:
    # drain() returns once the transport's buffer is below its high-water mark
    # (64 KiB), so the rest of the reply could wait there, and keep the
    # connection open, for as long as the client does not read. With the mark
    # at zero, drain() returns when the whole reply is with the kernel.
    writer.transport.set_write_buffer_limits(high=0)
    writer.write(reply)
    if not writer.transport.get_write_buffer_size():
        return  # write() handed it all to the kernel at once: no drain(), no timer
    try:
        await within(deadlines, timeout, writer.drain(), "did not read the reply in time")
    except ClientError:
        writer.transport.abort()  # drop what the client never read
        raise
    except OSError:
        raise ClientError("disconnected before the whole reply was sent") from None


async def close_gracefully(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, timeout: float, deadlines: Deadlines
) -> None:
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
    The transport would keep reading until close() anyway, but only by
    accident of its design: here it is the plan, with its bounds.
    """
    try:
        writer.write_eof()  # shutdown(SHUT_WR): write_response() left the buffer empty
        await within(deadlines, min(LINGER_SECONDS, timeout), discard_until_closed(reader), "lingered")
    except (OSError, ClientError):  # a reset, a time-out: the client has what it will get
        pass
    writer.close()


async def discard_until_closed(reader: asyncio.StreamReader) -> None:
    discarded = 0
    while discarded < LINGER_BYTES:
        chunk = await reader.read(CHUNK_SIZE)
        if not chunk:  # the client has closed: nothing can be lost now
            return
        discarded += len(chunk)


class WebSocket:
    """One WebSocket after its handshake: frames in, messages out, until the closing handshake.

    The frames are parsed as they arrive, a payload in as many pieces as the
    reads bring (so a 16 MiB frame never sits whole in a buffer, and invalid
    UTF-8 is caught at its first byte); the state between two reads lives here.
    __slots__: with 10,000 idle connections, a dict per object would be 10 MB.
    """

    __slots__ = (
        "reader",
        "writer",
        "transport",
        "number",
        "route",
        "hub",
        "deadlines",
        "deflate",
        "max_message",
        "ping_interval",
        "ping_timeout",
        "pending",
        "frame_left",
        "frame_final",
        "mask",
        "opcode",
        "compressed",
        "message",
        "utf8",
        "ping_payload",
        "close_sent",
        "close_received",
        "closed_by_client",
        "dropped",
        "finished",
        "messages",
        "started",
    )

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        number: int,
        route: str,
        args: argparse.Namespace,
        hub: Hub,
        deadlines: Deadlines,
        deflate: Deflate | None,
        data: bytes,
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.transport = writer.transport
        self.number = number
        self.route = route
        self.hub = hub
        self.deadlines = deadlines
        self.deflate = deflate
        self.max_message = args.max_message
        self.ping_interval = args.ping_interval
        self.ping_timeout = args.ping_timeout
        self.pending = data  # received, not yet parsed: the start of a frame header, or of a control frame
        # The data frame whose payload is arriving: bytes still to come (-1: none), FIN, and its masking key.
        self.frame_left = -1
        self.frame_final = False
        self.mask = b""
        # The message in progress: TEXT or BINARY (0: none), its bytes so far, and its UTF-8 check. One
        # bytearray, not a list of pieces: a message in a million 1-byte fragments would cost 34 MB as a list.
        self.opcode = 0
        self.compressed = False
        self.message = bytearray()
        self.utf8: codecs.IncrementalDecoder | None = None
        self.ping_payload: bytes | None = None  # the ping awaiting its pong
        self.close_sent: int | None = None  # the code of the close frame sent, once sent
        self.close_received: int | None = None
        self.closed_by_client = False  # the close handshake began with the client's close frame
        self.dropped = False  # no answer to our close in time: the connection was aborted
        self.finished = False  # run() has returned: no timer may act on this connection any more
        self.messages = 0
        self.started = time.monotonic()

    async def run(self) -> str:
        """Read frames until the closing handshake, a violation, or the end of the connection; say how it ended."""
        self.deadlines.set(self, self.ping_interval, self.ping_due)
        try:
            self.receive(b"")  # frames the client sent with its handshake
            while self.close_received is None:
                try:
                    data = await self.reader.read(CHUNK_SIZE)
                except OSError:
                    data = b""
                if not data:
                    if self.dropped:
                        return f"closed ({self.close_sent}), no answer: dropped after {self.summary()}"
                    if self.close_sent is not None:
                        return (
                            f"closed ({self.close_sent}), and the client left without answering, after {self.summary()}"
                        )
                    return f"disconnected without a close after {self.summary()}"
                self.receive(data)
                if self.hub.relay is not None and self.route == "chat":
                    await self.hub.relay.paced()
                # Backpressure: while this client has not read what it was
                # sent, the server reads no more of what it sends; the kernel
                # holds it, and then the client's own send() blocks.
                if self.transport.get_write_buffer_size():
                    try:
                        await self.writer.drain()
                    except OSError:  # dropped meanwhile: the read above says so
                        pass
        except ProtocolViolation as violation:
            # Fail the WebSocket connection (7.1.7): a close with the code, and
            # no more frames read; handle_client() closes TCP gracefully.
            if self.close_sent is None:
                self.close_sent = violation.code
                self.transport.write(encode_frame(FIN | CLOSE, close_payload(violation.code, str(violation))))
            return f"{violation}: closed ({violation.code}) after {self.summary()}"
        finally:
            self.finished = True
            self.deadlines.clear(self)
        if self.closed_by_client:
            return f"closed by the client ({self.close_received}) after {self.summary()}"
        return f"closed ({self.close_sent}), and the client answered, after {self.summary()}"

    def summary(self) -> str:
        return f"{self.messages} message(s) in {time.monotonic() - self.started:.1f} s"

    def receive(self, data: bytes) -> None:
        """Handle every frame that data completes or continues (RFC 6455 section 5.2).

        Raises ProtocolViolation at the first thing wrong, with its close code.
        """
        if self.pending:
            data = self.pending + data
            self.pending = b""
        position = 0
        end = len(data)
        while position < end and self.close_received is None:
            if self.frame_left >= 0:  # inside a data frame's payload
                position = self.take_payload(data, position)
                continue
            if end - position < 2:
                break
            first = data[position]
            second = data[position + 1]
            opcode = first & 0x0F
            length = second & 0x7F
            # What the first two bytes say is checked before the rest of the
            # header has come: a bad frame fails at once, not when it is whole.
            if not second & 0x80:
                # Section 5.3: a client masks every frame, so that a page's
                # script cannot choose the bytes a proxy in the path sees.
                raise ProtocolViolation(PROTOCOL_ERROR, "an unmasked frame")
            if first & 0x70 and (first & 0x30 or self.deflate is None or opcode not in (TEXT, BINARY)):
                raise ProtocolViolation(PROTOCOL_ERROR, "a frame with reserved bits set")
            if opcode >= CLOSE:
                if opcode > PONG:
                    raise ProtocolViolation(PROTOCOL_ERROR, f"a frame with the reserved opcode {opcode}")
                if not first & FIN:
                    raise ProtocolViolation(PROTOCOL_ERROR, "a fragmented control frame")
                if length > 125:
                    raise ProtocolViolation(PROTOCOL_ERROR, "a control frame over 125 bytes")
            elif opcode > BINARY:
                raise ProtocolViolation(PROTOCOL_ERROR, f"a frame with the reserved opcode {opcode}")
            start = position + 6  # the payload's first byte: after 2 bytes and the 4-byte masking key
            if length == 126:
                start += 2
                if end < start:
                    break
                length = int.from_bytes(data[position + 2 : position + 4], "big")
                if length < 126:
                    raise ProtocolViolation(PROTOCOL_ERROR, "a frame length in more bytes than it needs")
            elif length == 127:
                start += 8
                if end < start:
                    break
                length = int.from_bytes(data[position + 2 : position + 10], "big")
                if length >> 63:
                    raise ProtocolViolation(PROTOCOL_ERROR, "a 64-bit frame length with its top bit set")
                if length < 65536:
                    raise ProtocolViolation(PROTOCOL_ERROR, "a frame length in more bytes than it needs")
            elif end < start:
                break
            key = data[start - 4 : start]
            if opcode >= CLOSE:  # a control frame: short, whole, and allowed between two fragments
                if end < start + length:
                    break
                position = start + length
                self.control(opcode, unmask(data[start:position], key))
                continue
            if opcode == CONTINUATION:
                if not self.opcode:
                    raise ProtocolViolation(PROTOCOL_ERROR, "a continuation frame with no message to continue")
            elif self.opcode:
                raise ProtocolViolation(PROTOCOL_ERROR, "a new message inside a fragmented one")
            elif first & (FIN | RSV1) == FIN and end >= start + length:
                # The common case, and the hot path: a whole uncompressed
                # message in one frame, all of it received.
                if length > self.max_message:
                    raise ProtocolViolation(MESSAGE_TOO_BIG, f"a message over {self.max_message} bytes")
                position = start + length
                payload = unmask(data[start:position], key)
                if opcode == TEXT:
                    try:
                        payload.decode()
                    except UnicodeDecodeError:
                        raise ProtocolViolation(INVALID_DATA, "a text message that is not UTF-8") from None
                self.deliver(opcode, payload)
                continue
            else:
                self.opcode = opcode
                self.compressed = bool(first & RSV1)
                if opcode == TEXT:
                    self.utf8 = codecs.getincrementaldecoder("utf-8")()
            if not self.compressed and len(self.message) + length > self.max_message:
                # Refused at the header: the payload is never read, let alone kept.
                raise ProtocolViolation(MESSAGE_TOO_BIG, f"a message over {self.max_message} bytes")
            self.frame_left = length
            self.frame_final = bool(first & FIN)
            self.mask = key
            position = self.take_payload(data, start)
        self.pending = data[position:]

    def take_payload(self, data: bytes, position: int) -> int:
        """Take what data holds of the current frame's payload; return where the frame's bytes end in it."""
        taken = min(self.frame_left, len(data) - position)
        key = self.mask
        piece = unmask(data[position : position + taken], key)
        if taken % 4:  # the next byte is unmasked with the key's next byte
            self.mask = key[taken % 4 :] + key[: taken % 4]
        self.frame_left -= taken
        self.add_to_message(piece)
        if not self.frame_left:
            self.frame_left = -1
            if self.frame_final:
                self.end_message()
        return position + taken

    def add_to_message(self, piece: bytes) -> None:
        """One piece of a message (fragments, section 5.4): inflated within the limit, and UTF-8 checked."""
        if self.compressed:
            piece = self.deflate.decompress(piece, self.max_message - len(self.message))  # type: ignore[union-attr]
        if self.utf8 is not None:
            # The incremental decoder keeps a character cut between two pieces
            # for the next one, and fails at the first byte that cannot be
            # UTF-8 (Autobahn's cases 6.4 check that the close comes then,
            # before the rest of the message has been sent).
            try:
                self.utf8.decode(piece)
            except UnicodeDecodeError:
                raise ProtocolViolation(INVALID_DATA, "a text message that is not UTF-8") from None
        self.message += piece

    def end_message(self) -> None:
        if self.compressed:
            self.add_to_message(DEFLATE_TAIL)
            self.deflate.end_message()  # type: ignore[union-attr]
        if self.utf8 is not None:
            try:
                self.utf8.decode(b"", True)
            except UnicodeDecodeError:
                raise ProtocolViolation(INVALID_DATA, "a text message that ends inside a character") from None
        payload = bytes(self.message)
        opcode = self.opcode
        self.opcode = 0
        self.compressed = False
        self.message = bytearray()
        self.utf8 = None
        self.deliver(opcode, payload)

    def deliver(self, opcode: int, payload: bytes) -> None:
        self.messages += 1
        if self.close_sent is not None:  # closing: no more messages either way
            return
        if self.route == "echo":
            self.send(self.frame(opcode, payload))
        else:
            self.hub.chat(opcode, payload)

    def control(self, opcode: int, payload: bytes) -> None:
        """A ping, a pong or a close (section 5.5)."""
        if opcode == PING:
            if self.close_sent is None:
                self.transport.write(encode_frame(FIN | PONG, payload))
        elif opcode == PONG:
            # An unsolicited pong (a heartbeat the client chose to send) is ignored.
            if payload == self.ping_payload and self.close_sent is None:
                self.ping_payload = None
                self.deadlines.set(self, self.ping_interval, self.ping_due)
        else:
            code = close_code(payload)
            self.close_received = code
            if self.close_sent is None:  # answered with the same code; then TCP closes (7.1.1)
                self.closed_by_client = True
                self.close_sent = code
                self.hub.forget(self)
                self.transport.write(encode_frame(FIN | CLOSE, b"" if code == NO_STATUS else payload[:2]))

    def frame(self, opcode: int, payload: bytes) -> bytes:
        """A message as this connection sends it: compressed if it agreed to, in one frame."""
        if self.deflate is not None and self.deflate.compresses:
            return encode_frame(FIN | RSV1 | opcode, self.deflate.compress(payload))
        return encode_frame(FIN | opcode, payload)

    def send(self, frame: bytes) -> None:
        """Queue a message for this client, or close it if it has stopped reading.

        The transport's buffer is the client's queue. write() never waits:
        what the kernel does not take at once stays in the buffer, and grows
        for as long as the client does not read. Past WRITE_LIMIT the client
        is closed (1008) instead: one slow reader must not cost the server
        its memory, nor the others their pace.
        """
        # A client gone (a reset) is left out too: the loop learns of it at
        # once, its task some turns later, and a broadcast meanwhile would
        # write to the dead transport, which logs "socket.send() raised
        # exception." from the fifth write on, -q or not.
        if self.close_sent is not None or self.transport.is_closing():
            return
        queued = self.transport.get_write_buffer_size()
        if queued > WRITE_LIMIT:
            log.info("#%d is too slow: %d bytes unsent, closing it (1008)", self.number, queued)
            self.start_closing(POLICY_VIOLATION, "too slow to read its messages")
            return
        self.transport.write(frame)

    # Deadlines.expire() calls these two. They hand their work to the loop
    # instead of doing it: a callback that sets a wait of the length that is
    # expiring (the ping timeout is the interval, by default) would make
    # expire() keep two loop timers for one length, and the second fails with
    # KeyError.
    def ping_due(self) -> None:
        self.deadlines.loop.call_soon(self.ping)

    def pong_overdue(self) -> None:
        self.deadlines.loop.call_soon(self.pong_missing)

    def ping(self) -> None:
        """The keepalive: a ping, and a pong expected within --ping-timeout."""
        if self.finished or self.close_sent is not None:
            return
        self.ping_payload = random.getrandbits(32).to_bytes(4, "big")
        self.transport.write(encode_frame(FIN | PING, self.ping_payload))
        self.deadlines.set(self, self.ping_timeout, self.pong_overdue)

    def pong_missing(self) -> None:
        # The pong may have come between the deadline and this call (the
        # loop was busy): receiving it cleared ping_payload.
        if self.finished or self.close_sent is not None or self.ping_payload is None:
            return
        log.info("#%d sent no pong within %g s: closing (1011)", self.number, self.ping_timeout)
        self.start_closing(INTERNAL_ERROR, "no pong")

    def start_closing(self, code: int, why: str, answer_within: float = CLOSE_TIMEOUT) -> None:
        """Begin the closing handshake (section 7): a close frame now, and the answer within answer_within seconds.

        The frame goes after everything already queued, so nothing sent
        before it is lost. No message is sent or delivered after it. A client
        that does not answer in time is dropped.
        """
        if self.finished or self.close_sent is not None:
            return
        self.close_sent = code
        self.hub.forget(self)
        self.transport.write(encode_frame(FIN | CLOSE, close_payload(code, why)))
        self.deadlines.set(self, answer_within, self.drop)  # instead of the keepalive

    def drop(self) -> None:
        self.dropped = True
        self.transport.abort()  # what it has not read is lost: it was not reading


class Deflate:
    """permessage-deflate (RFC 7692) for one connection: what was agreed, and its two zlib streams.

    Each is made at its first message, not at the handshake, and dropped after
    every message when its side resets its context ("no_context_takeover").
    Kept, the context lets a message refer to earlier ones: a chat's repeated
    words cost a few bits. The memory: see the module's docstring.
    """

    __slots__ = ("server_bits", "client_bits", "server_reset", "client_reset", "compressor", "decompressor")

    def __init__(self, server_bits: int, client_bits: int, server_reset: bool, client_reset: bool) -> None:
        self.server_bits = server_bits
        self.client_bits = client_bits
        self.server_reset = server_reset
        self.client_reset = client_reset
        self.compressor: Any = None  # zlib's Compress and Decompress types have no public name
        self.decompressor: Any = None

    @property
    def compresses(self) -> bool:
        # zlib cannot keep within a window of 8 bits (256 bytes): it uses 9
        # and refuses 8. A client that asks for 8 gets it, and then messages
        # sent uncompressed (RSV1 clear), which the RFC allows for any message.
        return self.server_bits > 8

    def compress(self, payload: bytes) -> bytes:
        if self.compressor is None:
            self.compressor = zlib.compressobj(
                zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -self.server_bits, DEFLATE_MEMORY_LEVEL
            )
        data = self.compressor.compress(payload) + self.compressor.flush(zlib.Z_SYNC_FLUSH)
        if self.server_reset:
            self.compressor = None
        return data[:-4]  # the sync flush ends with DEFLATE_TAIL: the receiver puts it back (7.2.1)

    def decompress(self, data: bytes, room: int) -> bytes:
        """data inflated, or ProtocolViolation if that makes more than room bytes.

        max_length stops zlib at the limit: a compression bomb (a few KB that
        inflate to gigabytes) costs room + 1 bytes, not what it would inflate to.
        """
        if self.decompressor is None:
            self.decompressor = zlib.decompressobj(-self.client_bits)
        elif self.decompressor.eof:  # after a final block (BFINAL) only the tail may come
            if data and data != DEFLATE_TAIL:
                raise ProtocolViolation(INVALID_DATA, "compressed data after the end of its stream")
            return b""
        try:
            inflated = self.decompressor.decompress(data, room + 1)
        except zlib.error:
            raise ProtocolViolation(INVALID_DATA, "compressed data that does not inflate") from None
        if len(inflated) > room:
            raise ProtocolViolation(MESSAGE_TOO_BIG, "a compressed message over the size limit")
        if self.decompressor.eof and self.decompressor.unused_data not in (b"", DEFLATE_TAIL):
            raise ProtocolViolation(INVALID_DATA, "compressed data after the end of its stream")
        return inflated

    def end_message(self) -> None:
        if self.client_reset or self.decompressor.eof:
            self.decompressor = None


def unmask(data: bytes, key: bytes) -> bytes:
    """XOR data with the 4-byte masking key, repeated (section 5.3).

    The hot loop of a server. As one big integer the XOR runs in C, a machine
    word at a time; a Python loop over the bytes costs about 50 ns each.
    """
    length = len(data)
    if not length:
        return b""
    mask = (key * (length // 4 + 1))[:length]
    return (int.from_bytes(data, "big") ^ int.from_bytes(mask, "big")).to_bytes(length, "big")


def encode_frame(first: int, payload: bytes) -> bytes:
    """A server frame (section 5.2): FIN, RSV and opcode in the first byte, then the length, unmasked."""
    length = len(payload)
    if length < 126:
        return bytes((first, length)) + payload
    if length < 65536:
        return struct.pack("!BBH", first, 126, length) + payload
    return struct.pack("!BBQ", first, 127, length) + payload


def close_code(payload: bytes) -> int:
    """The code of a close frame from the client (sections 5.5.1, 7.4): ProtocolViolation if invalid."""
    if not payload:
        return NO_STATUS
    if len(payload) == 1:
        raise ProtocolViolation(PROTOCOL_ERROR, "a close frame of one byte")
    code = int.from_bytes(payload[:2], "big")
    # 1004-1006 and 1015 are reserved, never sent; 1012-2999 are unassigned
    # here, 3000-3999 registered for libraries, 4000-4999 private.
    if not (1000 <= code <= 1003 or 1007 <= code <= 1011 or 3000 <= code <= 4999):
        raise ProtocolViolation(PROTOCOL_ERROR, f"a close with the invalid code {code}")
    try:
        payload[2:].decode()
    except UnicodeDecodeError:
        raise ProtocolViolation(PROTOCOL_ERROR, "a close reason that is not UTF-8") from None
    return code


def close_payload(code: int, why: str) -> bytes:
    return code.to_bytes(2, "big") + why.encode()[:123]  # a control frame's payload: 125 bytes at most


# The chat page. The server relays messages whatever they hold; names exist on
# the page only: it sends {"name": ..., "text": ...} as JSON, and shows the
# name of any message as text (textContent, never HTML), cut to NAME_LENGTH
# characters, whoever sent it. Anything else (another client's plain text) is
# shown as it came. The icon is inline, so a browser asks for no /favicon.ico
# (a URL's line breaks are no part of it: the URL parser drops them).
PAGE = b"""<!doctype html>
<html lang="en">
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>WebSocket chat</title>
<link rel="icon" href="data:image/svg+xml,<svg xmlns='http://www.w3.org/2000/svg' viewBox='0 0 8 8'>
<path d='M0 0h8v6H4L2 8V6H0z' fill='%23369'/></svg>">
<style>
  body { font: 16px system-ui, sans-serif; max-width: 40em; margin: 2em auto; padding: 0 1em; }
  #messages { border: 1px solid #999; height: 20em; overflow-y: auto; padding: 0.5em; white-space: pre-wrap; }
  form { display: flex; gap: 0.5em; margin-top: 0.5em; }
  #name { width: 8em; }
  #text { flex: 1; }
</style>
<h1>WebSocket chat</h1>
<p id="state">Connecting...</p>
<div id="messages"></div>
<form id="form">
  <input id="name" maxlength="32" autocomplete="nickname" placeholder="Your name" aria-label="Your name">
  <input id="text" autocomplete="off" placeholder="Say something" aria-label="Message" autofocus>
  <button>Send</button>
</form>
<script>
  // Every message sent to /chat comes back to every page open on it, this one included.
  const NAME_LENGTH = 32;  // the page's bound on a name, mine or anyone's
  const state = document.getElementById("state");
  const messages = document.getElementById("messages");
  const nickname = document.getElementById("name");  // not "name": that is window.name
  const text = document.getElementById("text");
  nickname.value = localStorage.getItem("name") || "guest-" + Math.floor(Math.random() * 1000);
  nickname.onchange = () => { localStorage.setItem("name", nickname.value); };
  const socket = new WebSocket((location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/chat");
  socket.onopen = () => { state.textContent = "Connected: open this page in another tab too, and type."; };
  socket.onmessage = (event) => {
    const line = document.createElement("div");
    let message = null;
    try { message = JSON.parse(event.data); } catch (error) {}  // not from this page: shown as it came
    if (message && typeof message.name === "string" && typeof message.text === "string") {
      const who = document.createElement("b");
      who.textContent = message.name.slice(0, NAME_LENGTH);  // text, never HTML
      line.append(who, ": " + message.text);
    } else {
      line.textContent = typeof event.data === "string" ? event.data : "[a binary message]";
    }
    messages.append(line);
    messages.scrollTop = messages.scrollHeight;
  };
  socket.onclose = (event) => {
    state.textContent = "Closed (" + event.code + (event.reason ? ": " + event.reason : "") + "). Reload to reconnect.";
  };
  document.getElementById("form").onsubmit = (event) => {
    event.preventDefault();
    if (text.value && socket.readyState === WebSocket.OPEN) {
      socket.send(JSON.stringify({ name: nickname.value.slice(0, NAME_LENGTH) || "anonymous", text: text.value }));
      text.value = "";
    }
  };
</script>
</html>
"""


if __name__ == "__main__":
    sys.exit(main())
