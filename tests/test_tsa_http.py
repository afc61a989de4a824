"""HTTP transport of the RFC 3161 client, against real loopback servers that answer in odd but real ways.

Happy paths answer with a REAL token (sign_token over the exact request body the client sent) and check it
with verify_token; every transport failure must be VM-TSA-UNREACHABLE with a cause naming what happened,
never a truncated token accepted, never an uncaught exception, never a hang past the timeout.

Most tests run on both transports (the `route` fixture):
- "direct": a loopback URL, served by the socket client;
- "proxy": http://tsa.invalid/tsr with http_proxy/HTTP_PROXY pointing at the raw server, which then plays the
  forward proxy (the urllib path). `.invalid` never resolves, so an answer proves the proxy was used; the
  request target the server saw is checked too (absolute-form through the proxy, origin-form direct).

The raw servers run in daemon threads, one connection at a time, and stop by themselves: every socket has a
timeout, every drip or hold is bounded (DRIP_MAX / HOLD_MAX s), and the thread is joined on exit.
"""

from __future__ import annotations

import base64
import datetime as dt
import gc
import ipaddress
import re
import select
import socket
import ssl
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from git_vaultmesh.errors import VaultMeshError
from git_vaultmesh.rfc3161.server import TsaIdentity, TsaServer, make_identity, sign_token
from git_vaultmesh.rfc3161.tsa import request_token, verify_token

from tsa_kit import DATA, post, trust_of

LIMIT = 1 << 20  # the client's cap on a response body
PROXIED_URL = "http://tsa.invalid/tsr"
PROXY_VARS = (
    "http_proxy",
    "HTTP_PROXY",
    "https_proxy",
    "HTTPS_PROXY",
    "all_proxy",
    "ALL_PROXY",
    "no_proxy",
    "NO_PROXY",
    "REQUEST_METHOD",  # urllib ignores HTTP_PROXY when it is set (CGI)
)
DRIP_MAX = 4.0  # a drip-feeding handler gives up after this long, so a hanging client fails, bounded
HOLD_MAX = 4.0  # a keep-alive handler closes after this long if the client does not
TSR_CT = "Content-Type: application/timestamp-reply"


# --- a raw loopback server ------------------------------------------------------------------------------------


@dataclass
class Request:
    line: str
    method: str
    target: str
    headers: dict[str, str]  # names lower-cased
    body: bytes


class Conn:
    """One accepted connection, as a handler sees it."""

    def __init__(self, sock: socket.socket, server: RawServer) -> None:
        self.sock = sock
        self.server = server

    def read_request(self) -> Request:
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("the client closed before the end of its request headers")
            buf += chunk
            assert len(buf) < 65536, "request headers too long"
        head, _, rest = buf.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        method, target, _version = lines[0].split(" ", 2)
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
        while len(rest) < length:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("the client closed before the end of its request body")
            rest += chunk
        req = Request(lines[0], method, target, headers, rest[:length])
        self.server.requests.append(req)
        return req

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send_in_pieces(self, data: bytes, piece: int = 97, pause: float = 0.003) -> None:
        """Small writes, so the client meets chunk-size lines and CRLFs split across reads."""
        for i in range(0, len(data), piece):
            self.sock.sendall(data[i : i + piece])
            time.sleep(pause)

    def drip(self, units: list[bytes], every: float = 0.05) -> None:
        """Send one unit every `every` s, until done, DRIP_MAX, the server stops or the client hangs up."""
        end = time.monotonic() + DRIP_MAX
        for unit in units:
            if time.monotonic() > end or self.server.stopping.is_set():
                return
            self.sock.sendall(unit)
            time.sleep(every)

    def hold(self) -> None:
        """Keep the connection open (a keep-alive server) until the client closes it, or HOLD_MAX."""
        end = time.monotonic() + HOLD_MAX
        self.sock.settimeout(0.05)
        while time.monotonic() < end and not self.server.stopping.is_set():
            try:
                if not self.sock.recv(65536):
                    self.server.client_closed.set()
                    return
            except TimeoutError:
                continue


Handler = Callable[[Conn], None]


class RawServer:
    """A loopback TCP server in a daemon thread; each connection is given to `handler` in turn."""

    def __init__(self, handler: Handler, lifetime: float = 20.0) -> None:
        self._handler = handler
        self._lifetime = lifetime
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.05)
        self.port: int = self._listener.getsockname()[1]
        self.requests: list[Request] = []
        self.connections = 0
        self.errors: list[BaseException] = []
        self.stopping = threading.Event()
        self.client_closed = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True, name=f"raw-http-{self.port}")

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _serve(self) -> None:
        end = time.monotonic() + self._lifetime
        while not self.stopping.is_set() and time.monotonic() < end:
            try:
                sock, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections += 1
            with sock:
                sock.settimeout(5)
                try:
                    self._handler(Conn(sock, self))
                except OSError:
                    pass  # the client hung up or timed out: expected in most failure tests
                except Exception as exc:  # a bug in the test's handler: reported at exit
                    self.errors.append(exc)

    def __enter__(self) -> RawServer:
        self._thread.start()
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self.stopping.set()
        self._thread.join(timeout=10)
        self._listener.close()
        assert not self._thread.is_alive(), "the raw server thread did not stop"
        if exc_type is None and self.errors:
            raise self.errors[0]


def head(status: str, *headers: str) -> bytes:
    return (status + "\r\n" + "".join(h + "\r\n" for h in headers) + "\r\n").encode("latin-1")


def chunked(body: bytes, size: int | None = None) -> bytes:
    """Chunked encoding with several chunks, a chunk extension (with and without a value), upper and lower
    case hex, and a trailer section; or plain `size`-byte chunks."""
    if size is not None:
        parts = [body[i : i + size] for i in range(0, len(body), size)]
        return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts) + b"0\r\n\r\n"
    assert len(body) > 320, "the token is smaller than the chunk plan"
    p1, p2, p3, p4 = body[:1], body[1:8], body[8:300], body[300:]
    return (
        b"1\r\n" + p1 + b"\r\n"
        + b"7;name=value\r\n" + p2 + b"\r\n"
        + f"{len(p3):X}\r\n".encode() + p3 + b"\r\n"
        + f"{len(p4):x};flag\r\n".encode() + p4 + b"\r\n"
        + b"0\r\nX-Trailer: done\r\nX-Checksum: 0\r\n\r\n"
    )


def one_by_one(data: bytes) -> list[bytes]:
    return [data[i : i + 1] for i in range(len(data))]


Answer = Callable[[Conn, bytes], None]  # how a token handler sends the token it signed


def sized(status: str, *headers: str, before: bytes = b"") -> Answer:
    """Answer `before`, then `status` and `headers` with the token's Content-Length, then the token; and keep
    the connection open, as a keep-alive server does."""

    def answer(conn: Conn, tsr: bytes) -> None:
        conn.send(before + head(status, *headers, f"Content-Length: {len(tsr)}") + tsr)
        conn.hold()

    return answer


def _bad_gateway(conn: Conn) -> None:
    """A proxy that must not be used: it answers 502 to anything."""
    conn.read_request()
    conn.send(head("HTTP/1.1 502 Bad Gateway", "Content-Length: 0"))


# --- fixtures and checks --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ident() -> TsaIdentity:
    return make_identity("ec")


@dataclass
class Route:
    name: str
    monkeypatch: pytest.MonkeyPatch

    def url(self, srv: RawServer, path: str = "/tsr") -> str:
        if self.name == "direct":
            return srv.base + path
        self.monkeypatch.setenv("http_proxy", srv.base)
        self.monkeypatch.setenv("HTTP_PROXY", srv.base)
        return "http://tsa.invalid" + path

    def base(self, srv: RawServer) -> str:
        return srv.base if self.name == "direct" else "http://tsa.invalid"

    def check(self, srv: RawServer, path: str = "/tsr") -> Request:
        """The one request the server got, in the form this route must send it."""
        assert len(srv.requests) == 1, [r.line for r in srv.requests]
        req = srv.requests[0]
        if self.name == "direct":
            assert req.line == f"POST {path} HTTP/1.1", req.line
            assert req.headers.get("host") == f"127.0.0.1:{srv.port}", req.headers
        else:
            assert req.line == f"POST http://tsa.invalid{path} HTTP/1.1", req.line
            assert req.headers.get("host") == "tsa.invalid", req.headers
        return req


def clear_proxy_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in PROXY_VARS:
        monkeypatch.delenv(var, raising=False)


@pytest.fixture(params=["direct", "proxy"])
def route(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Route:
    clear_proxy_env(monkeypatch)
    return Route(request.param, monkeypatch)


def refused(url: str, timeout: float, code: str = "VM-TSA-UNREACHABLE") -> tuple[VaultMeshError, float]:
    """request_token must fail with exactly `code`; return the error and how long it took."""
    started = time.monotonic()
    with pytest.raises(VaultMeshError) as info:
        request_token(url, DATA, timeout=timeout)
    elapsed = time.monotonic() - started
    assert info.value.code == code, (info.value.code, info.value.cause)
    assert info.value.cause and info.value.hint
    return info.value, elapsed


def refused_promptly(
    route: Route, handler: Handler, timeout: float = 3, code: str = "VM-TSA-UNREACHABLE", why: str = ""
) -> VaultMeshError:
    """Serve `handler` on the route: request_token must fail with exactly `code` within 1.5 s."""
    with RawServer(handler) as srv:
        err, elapsed = refused(route.url(srv), timeout, code)
    assert elapsed < 1.5, f"{elapsed:.2f} s{': ' + why if why else ''} ({err.cause})"
    return err


def names_limit(cause: str) -> bool:
    return bool(re.search(r"1048576|1 ?MiB|1024 ?KiB|1 ?MB\b", cause))


def token_handler(ident: TsaIdentity, answer: Answer, sent: list[bytes] | None = None) -> Handler:
    """Read the request, sign a real token over its exact body (kept in `sent`), and answer it with `answer`."""

    def handler(conn: Conn) -> None:
        req = conn.read_request()
        tsr = sign_token(ident, req.body)
        if sent is not None:
            sent.append(tsr)
        answer(conn, tsr)

    return handler


def fetch_real_token(
    ident: TsaIdentity,
    route: Route,
    answer: Answer,
    path: str = "/tsr",
    wait_close: bool = False,
) -> bool:
    """Fetch through `answer`; the token must be the exact bytes sent, verify, and come back promptly.

    With wait_close, returns whether the server saw the client close the connection within 1 s."""
    sent: list[bytes] = []
    with RawServer(token_handler(ident, answer, sent)) as srv:
        url = route.url(srv, path)
        started = time.monotonic()
        tsr, nonce = request_token(url, DATA, timeout=3)
        elapsed = time.monotonic() - started
        closed = srv.client_closed.wait(1.0) if wait_close else True
    assert elapsed < 1.5, f"the client took {elapsed:.2f} s: it waited for EOF or for its timeout"
    assert sent and tsr == sent[0]
    info = verify_token(tsr, DATA, trust_of(ident), nonce)
    assert info.nonce == nonce
    req = route.check(srv, path)
    assert req.method == "POST"
    assert req.headers.get("content-type", "").lower() == "application/timestamp-query"
    assert int(req.headers["content-length"]) == len(req.body)
    assert "transfer-encoding" not in req.headers
    assert req.headers.get("connection", "").lower() == "close"
    return closed


# --- happy paths: a real token through every framing --------------------------------------------------------


_cl_keepalive = sized("HTTP/1.1 200 OK", TSR_CT, "Connection: keep-alive")


def _chunked_keepalive(conn: Conn, tsr: bytes) -> None:
    conn.send_in_pieces(head("HTTP/1.1 200 OK", TSR_CT, "Transfer-Encoding: chunked") + chunked(tsr))
    conn.hold()


def _chunked_one_write(conn: Conn, tsr: bytes) -> None:
    conn.send(head("HTTP/1.1 200 OK", TSR_CT, "Transfer-Encoding: chunked") + chunked(tsr))
    conn.hold()


def _eof_http11(conn: Conn, tsr: bytes) -> None:
    conn.send(head("HTTP/1.1 200 OK", TSR_CT, "Connection: close") + tsr[:100])
    time.sleep(0.05)  # the body arrives in two reads: the client must read on until EOF
    conn.send(tsr[100:])


_http10_content_length = sized("HTTP/1.0 200 OK", TSR_CT)


def _http10_eof(conn: Conn, tsr: bytes) -> None:
    conn.send(head("HTTP/1.0 200 OK", TSR_CT) + tsr[:10])
    time.sleep(0.05)
    conn.send(tsr[10:])


def _mixed_case(conn: Conn, tsr: bytes) -> None:
    conn.send(
        head(
            "HTTP/1.1 200 OK",
            "sERVER: odd",
            "cONTENT-tYPE: application/timestamp-reply",
            f"CONTENT-LENGTH: {len(tsr)}",
            "CoNnEcTiOn: Keep-Alive",
        )
        + tsr
    )
    conn.hold()


def _mixed_case_chunked(conn: Conn, tsr: bytes) -> None:
    conn.send(
        head("HTTP/1.1 200 OK", "CONTENT-TYPE: application/timestamp-reply", "TRANSFER-ENCODING: Chunked")
        + chunked(tsr)
    )
    conn.hold()


# what a real TSA behind a load balancer sends: many headers, repeated ones, a long one
_busy_headers = sized(
    "HTTP/1.1 200 OK",
    "Date: Mon, 02 Jun 2025 10:00:00 GMT",
    "Server: Apache",
    "Set-Cookie: a=1; Path=/",
    "Set-Cookie: b=2; Path=/",
    "Cache-Control: no-store",
    "X-Padding: " + "a" * 4000,
    TSR_CT,
)


HAPPY: dict[str, Answer] = {
    "content-length-keepalive": _cl_keepalive,
    "chunked-keepalive-small-writes": _chunked_keepalive,
    "chunked-keepalive-one-write": _chunked_one_write,
    "read-to-eof-http11": _eof_http11,
    "http10-content-length": _http10_content_length,
    "http10-read-to-eof": _http10_eof,
    "mixed-case-headers": _mixed_case,
    "mixed-case-chunked": _mixed_case_chunked,
    "busy-headers": _busy_headers,
}


@pytest.mark.parametrize("framing", list(HAPPY))
def test_real_token_through_framing(framing: str, route: Route, ident: TsaIdentity) -> None:
    fetch_real_token(ident, route, HAPPY[framing])


@pytest.mark.parametrize("framing", ["content-length-keepalive", "chunked-keepalive-one-write", "mixed-case-headers"])
def test_client_closes_its_socket_after_a_keepalive_answer(framing: str, route: Route, ident: TsaIdentity) -> None:
    """No socket left open per record: the server must see the client hang up once it has the token."""
    assert fetch_real_token(ident, route, HAPPY[framing], wait_close=True), "the client never closed its connection (leaked socket)"


@pytest.mark.parametrize(
    "ctype",
    [
        "Application/Timestamp-Reply; charset=binary",
        "APPLICATION/TIMESTAMP-REPLY",
        "application/timestamp-reply;charset=binary",
    ],
)
def test_content_type_case_and_parameters_accepted(ctype: str, route: Route, ident: TsaIdentity) -> None:
    fetch_real_token(ident, route, sized("HTTP/1.1 200 OK", f"Content-Type: {ctype}"))


@pytest.mark.parametrize(
    "ctype",
    [
        None,
        "application/octet-stream",
        "application/timestamp-query",
        "application/timestamp-replyx",
        "text/plain; x=application/timestamp-reply",
    ],
    ids=["missing", "octet-stream", "query-echoed", "longer-name", "in-a-parameter"],
)
def test_wrong_or_missing_content_type_refused(ctype: str | None, route: Route, ident: TsaIdentity) -> None:
    """Even with a real, valid token as the body."""
    ct = [] if ctype is None else [f"Content-Type: {ctype}"]
    err = refused_promptly(route, token_handler(ident, sized("HTTP/1.1 200 OK", *ct)))
    assert "content-type" in err.cause.lower(), err.cause


# --- refusals: status codes and redirects -------------------------------------------------------------------


@pytest.mark.parametrize("code", [301, 302, 303, 307, 308])
@pytest.mark.parametrize("location", ["absolute", "relative"])
def test_redirect_refused_and_never_followed(code: int, location: str, route: Route, ident: TsaIdentity) -> None:
    """A 3xx names its code and Location and is never followed, even with a real token as its body; the
    Location points back at the same server, so following it would show as a second request."""

    def handler(conn: Conn) -> None:
        req = conn.read_request()
        tsr = sign_token(ident, req.body)
        target = f"{base}/elsewhere-{code}" if location == "absolute" else f"/elsewhere-{code}"
        conn.send(
            head(f"HTTP/1.1 {code} Moved", f"Location: {target}", TSR_CT, f"Content-Length: {len(tsr)}") + tsr
        )
        conn.hold()

    with RawServer(handler) as srv:
        base = route.base(srv)
        url = route.url(srv)
        err, elapsed = refused(url, timeout=3)
    assert str(code) in err.cause and f"/elsewhere-{code}" in err.cause, err.cause
    assert elapsed < 1.5
    assert [r.target.rsplit("/", 1)[-1] for r in srv.requests] == ["tsr"], "the redirect was followed"
    assert srv.connections == 1


@pytest.mark.parametrize("code", [201, 206, 404, 500])
def test_non_200_refused_even_with_a_token(code: int, route: Route, ident: TsaIdentity) -> None:
    err = refused_promptly(route, token_handler(ident, sized(f"HTTP/1.1 {code} Whatever", TSR_CT)))
    assert str(code) in err.cause, err.cause


# --- refusals: not HTTP, cut short ---------------------------------------------------------------------------


def _ssh_after_request(conn: Conn) -> None:
    conn.read_request()
    conn.send(b"SSH-2.0-OpenSSH_9.6\r\n")


def _ssh_at_once(conn: Conn) -> None:
    conn.send(b"SSH-2.0-OpenSSH_9.6\r\n")
    time.sleep(0.05)


def _closed_silently(conn: Conn) -> None:
    conn.read_request()


def _closed_at_once(conn: Conn) -> None:
    pass


def _binary_noise(conn: Conn) -> None:
    conn.read_request()
    conn.send(bytes(range(256)))


def _no_status_code(conn: Conn) -> None:
    conn.read_request()
    conn.send(b"HTTP/1.1\r\n\r\n")


NON_HTTP: dict[str, Handler] = {
    "ssh-banner-after-request": _ssh_after_request,
    "ssh-banner-at-once": _ssh_at_once,
    "closed-without-answer": _closed_silently,
    "closed-at-once": _closed_at_once,
    "binary-noise": _binary_noise,
    "status-line-without-code": _no_status_code,
}


@pytest.mark.parametrize("kind", list(NON_HTTP))
def test_non_http_answer_is_unreachable(kind: str, route: Route) -> None:
    refused_promptly(route, NON_HTTP[kind])


@pytest.mark.parametrize("status", ["HTTP/1.1 2OO OK", "HTTP/1.1 99999 OK", "HTTP/1.1 -200 OK", "HTTX/1.1 200 OK"])
def test_bad_status_line_with_a_token_is_refused(status: str, route: Route, ident: TsaIdentity) -> None:
    refused_promptly(route, token_handler(ident, sized(status, TSR_CT)))


def test_bare_token_without_http_is_refused(route: Route, ident: TsaIdentity) -> None:
    """An HTTP/0.9-style answer (the body alone) is not HTTP: never accepted as a token."""
    refused_promptly(route, token_handler(ident, lambda conn, tsr: conn.send(tsr)))


HEADER_CUTS = {
    "mid-status-line": "HTTP/1.1 20",
    "after-status-line": "HTTP/1.1 200 OK\r\n",
    "mid-header-line": "HTTP/1.1 200 OK\r\nContent-Type: application/timest",
    "before-blank-line": "HTTP/1.1 200 OK\r\nContent-Type: application/timestamp-reply\r\nContent-Length: 900\r\n",
}


@pytest.mark.parametrize("cut", list(HEADER_CUTS))
def test_connection_closed_mid_headers(cut: str, route: Route) -> None:
    def handler(conn: Conn) -> None:
        conn.read_request()
        conn.send(HEADER_CUTS[cut].encode())

    refused_promptly(route, handler)


def _cl_half(conn: Conn, tsr: bytes) -> None:
    conn.send(head("HTTP/1.1 200 OK", TSR_CT, f"Content-Length: {len(tsr)}") + tsr[: len(tsr) // 2])


def _cl_whole_token_but_short(conn: Conn, tsr: bytes) -> None:
    """The whole token arrives, but Content-Length promised 10 bytes more: the transfer was cut."""
    conn.send(head("HTTP/1.1 200 OK", TSR_CT, f"Content-Length: {len(tsr) + 10}") + tsr)


def _chunked_no_last_chunk(conn: Conn, tsr: bytes) -> None:
    """Every byte of the token in complete chunks, but no last-chunk: the transfer was cut."""
    body = chunked(tsr, size=256)
    conn.send(head("HTTP/1.1 200 OK", TSR_CT, "Transfer-Encoding: chunked") + body[: -len(b"0\r\n\r\n")])


def _chunked_mid_chunk(conn: Conn, tsr: bytes) -> None:
    body = chunked(tsr, size=256)
    conn.send(head("HTTP/1.1 200 OK", TSR_CT, "Transfer-Encoding: chunked") + body[:400])


def _chunked_mid_size_line(conn: Conn, tsr: bytes) -> None:
    body = chunked(tsr[:512], size=256)[: -len(b"0\r\n\r\n")]
    conn.send(head("HTTP/1.1 200 OK", TSR_CT, "Transfer-Encoding: chunked") + body + b"1")


def _chunked_no_crlf_after_data(conn: Conn, tsr: bytes) -> None:
    conn.send(head("HTTP/1.1 200 OK", TSR_CT, "Transfer-Encoding: chunked") + b"%x\r\n" % len(tsr) + tsr)


BODY_CUTS: dict[str, Answer] = {
    "content-length-half": _cl_half,
    "content-length-whole-token-10-bytes-short": _cl_whole_token_but_short,
    "chunked-no-last-chunk": _chunked_no_last_chunk,
    "chunked-mid-chunk-data": _chunked_mid_chunk,
    "chunked-mid-size-line": _chunked_mid_size_line,
    "chunked-no-crlf-after-data": _chunked_no_crlf_after_data,
}


@pytest.mark.parametrize("cut", list(BODY_CUTS))
def test_connection_closed_mid_body(cut: str, route: Route, ident: TsaIdentity) -> None:
    refused_promptly(route, token_handler(ident, BODY_CUTS[cut]))


@pytest.mark.parametrize("size_line", [b"zz", b"-1", b"", b"0x10", b"1" * 40])
def test_malformed_chunk_size_is_unreachable(size_line: bytes, route: Route, ident: TsaIdentity) -> None:
    def answer(conn: Conn, tsr: bytes) -> None:
        conn.send(head("HTTP/1.1 200 OK", TSR_CT, "Transfer-Encoding: chunked") + size_line + b"\r\n" + tsr)

    refused_promptly(route, token_handler(ident, answer))


# --- the 1 MiB cap ------------------------------------------------------------------------------------------


def _oversize(framing: str, total: int, then_hold: bool) -> Handler:
    """Answer with `total` body bytes (in 64 KiB writes), declaring a 64 MiB body where framing allows."""

    def handler(conn: Conn) -> None:
        conn.read_request()
        block = b"\x30" + b"\x00" * 65535
        blocks = [block] * (total // len(block)) + ([block[: total % len(block)]] if total % len(block) else [])
        if framing == "content-length":
            conn.send(head("HTTP/1.1 200 OK", TSR_CT, f"Content-Length: {64 << 20}"))
            units = blocks
        elif framing == "chunked":
            conn.send(head("HTTP/1.1 200 OK", TSR_CT, "Transfer-Encoding: chunked"))
            units = [b"%x\r\n%s\r\n" % (len(b), b) for b in blocks]
        elif framing == "chunked-one-huge-chunk":
            conn.send(head("HTTP/1.1 200 OK", TSR_CT, "Transfer-Encoding: chunked") + b"7FFFFFFFFFFF\r\n")
            units = blocks
        else:  # read to EOF
            conn.send(head("HTTP/1.1 200 OK", TSR_CT, "Connection: close"))
            units = blocks
        for unit in units:
            conn.send(unit)
        if then_hold:
            conn.hold()

    return handler


@pytest.mark.parametrize("framing", ["content-length", "chunked", "chunked-one-huge-chunk", "eof"])
def test_body_over_1_mib_refused_without_reading_it_all(framing: str, route: Route) -> None:
    """1 MiB + 64 KiB arrive, then the server goes quiet with much more promised: the client must refuse on
    size at once, not wait for the rest (which would end in a timeout)."""
    handler = _oversize(framing, LIMIT + 65536, then_hold=True)
    err = refused_promptly(route, handler, timeout=2.5, why="it waited for the rest of an oversized body")
    assert names_limit(err.cause), err.cause


@pytest.mark.parametrize("framing", ["content-length-exact", "chunked", "eof"])
@pytest.mark.parametrize("extra", [0, 1], ids=["exactly-1-MiB", "1-MiB-plus-1"])
def test_body_size_limit_boundary(framing: str, extra: int, route: Route, ident: TsaIdentity) -> None:
    """A body of exactly 1 MiB is read (and then refused as a TimeStampResp with trailing data: NOT-DER);
    one byte more is refused on size."""

    def answer(conn: Conn, tsr: bytes) -> None:
        body = tsr + b"\x00" * (LIMIT + extra - len(tsr))
        if framing == "content-length-exact":
            conn.send(head("HTTP/1.1 200 OK", TSR_CT, f"Content-Length: {len(body)}") + body)
            conn.hold()
        elif framing == "chunked":
            conn.send(head("HTTP/1.1 200 OK", TSR_CT, "Transfer-Encoding: chunked") + chunked(body, 65536))
            conn.hold()
        else:
            conn.send(head("HTTP/1.1 200 OK", TSR_CT, "Connection: close") + body)

    code = "VM-TSA-NOT-DER" if extra == 0 else "VM-TSA-UNREACHABLE"
    err = refused_promptly(route, token_handler(ident, answer), timeout=2.5, code=code)
    if extra:
        assert names_limit(err.cause), err.cause
    else:
        assert "trailing" in err.cause, err.cause


# --- the overall deadline -----------------------------------------------------------------------------------


def _dripper(phase: str, ident: TsaIdentity) -> Handler:
    def handler(conn: Conn) -> None:
        req = conn.read_request()
        tsr = sign_token(ident, req.body)
        if phase == "status-line":
            whole = head("HTTP/1.1 200 OK", TSR_CT, f"Content-Length: {len(tsr)}") + tsr
            conn.drip(one_by_one(whole))
        elif phase == "headers":
            conn.send(b"HTTP/1.1 200 OK\r\n" + TSR_CT.encode() + b"\r\nX-Slow: ")
            conn.drip([b"a"] * 1000)
        elif phase == "content-length-body":
            conn.send(head("HTTP/1.1 200 OK", TSR_CT, f"Content-Length: {len(tsr)}"))
            conn.drip(one_by_one(tsr))
        elif phase == "chunked-body":  # one complete 1-byte chunk at a time
            conn.send(head("HTTP/1.1 200 OK", TSR_CT, "Transfer-Encoding: chunked"))
            conn.drip([b"1\r\n%s\r\n" % byte for byte in one_by_one(tsr)])
        else:  # read-to-EOF body
            conn.send(head("HTTP/1.1 200 OK", TSR_CT))
            conn.drip(one_by_one(tsr))

    return handler


@pytest.mark.parametrize("phase", ["status-line", "headers", "content-length-body", "chunked-body", "eof-body"])
def test_drip_feed_cannot_hold_the_client_past_its_timeout(phase: str, route: Route, ident: TsaIdentity) -> None:
    why = "a server sending a byte every 50 ms held the client that long (timeout 0.7 s)"
    err = refused_promptly(route, _dripper(phase, ident), timeout=0.7, why=why)
    assert "0.7" in err.cause, err.cause


# --- proxies from the environment (the urllib path) ---------------------------------------------------------


def _forwarding_proxy(tsa: TsaServer) -> Handler:
    """A forward proxy for one POST: sends the body on to the real TSA, returns its answer."""

    def handler(conn: Conn) -> None:
        req = conn.read_request()
        status, ctype, body = post(tsa.url, req.body, req.headers["content-type"])
        assert status == 200, status
        conn.send(
            head("HTTP/1.1 200 OK", f"Content-Type: {ctype}", f"Content-Length: {len(body)}", "Connection: close")
            + body
        )

    return handler


@pytest.fixture
def no_proxy_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    clear_proxy_env(monkeypatch)
    yield monkeypatch


@pytest.mark.parametrize("var", ["http_proxy", "HTTP_PROXY"])
def test_environment_proxy_used_for_a_non_loopback_url(
    var: str, no_proxy_env: pytest.MonkeyPatch, ident: TsaIdentity
) -> None:
    with TsaServer(ident, max_lifetime=30) as tsa, RawServer(_forwarding_proxy(tsa)) as proxy:
        no_proxy_env.setenv(var, proxy.base)
        tsr, nonce = request_token(PROXIED_URL, DATA, timeout=5)
    assert [r.line for r in proxy.requests] == ["POST http://tsa.invalid/tsr HTTP/1.1"]
    assert proxy.requests[0].headers.get("host") == "tsa.invalid"
    assert verify_token(tsr, DATA, trust_of(ident), nonce).nonce == nonce


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_environment_proxy_not_used_for_loopback(host: str, no_proxy_env: pytest.MonkeyPatch, ident: TsaIdentity) -> None:
    with TsaServer(ident, max_lifetime=30) as tsa, RawServer(_bad_gateway) as proxy:
        for var in ("http_proxy", "HTTP_PROXY"):
            no_proxy_env.setenv(var, proxy.base)
        url = tsa.url.replace("127.0.0.1", host)
        tsr, nonce = request_token(url, DATA, timeout=5)
    assert proxy.connections == 0 and proxy.requests == []
    assert verify_token(tsr, DATA, trust_of(ident), nonce).nonce == nonce


@pytest.mark.parametrize("var", ["no_proxy", "NO_PROXY"])
@pytest.mark.parametrize("value", ["tsa.invalid", ".invalid", "*", "example.org, tsa.invalid"])
def test_no_proxy_match_goes_direct(var: str, value: str, no_proxy_env: pytest.MonkeyPatch) -> None:
    """no_proxy matches, so the client goes direct: tsa.invalid does not resolve, and the proxy sees nothing."""
    with RawServer(_bad_gateway) as proxy:
        no_proxy_env.setenv("http_proxy", proxy.base)
        no_proxy_env.setenv(var, value)
        err, elapsed = refused(PROXIED_URL, timeout=2)
    assert proxy.connections == 0, "the proxy was used although no_proxy matched"
    assert "502" not in err.cause
    assert elapsed < 1.5


# --- beyond the brief: RFC 9110/9112 points a robust client handles ------------------------------------------


def test_interim_100_continue_before_the_answer(route: Route, ident: TsaIdentity) -> None:
    """RFC 9110 15.2: a client MUST parse 1xx responses before the final one, even unasked for."""
    fetch_real_token(ident, route, sized("HTTP/1.1 200 OK", TSR_CT, before=b"HTTP/1.1 100 Continue\r\n\r\n"))


def test_status_line_with_empty_reason_phrase(route: Route, ident: TsaIdentity) -> None:
    """RFC 9112 4: reason-phrase may be empty ("HTTP/1.1 200 " then CRLF)."""
    fetch_real_token(ident, route, sized("HTTP/1.1 200 ", TSR_CT))


def test_path_and_query_sent_as_given(route: Route, ident: TsaIdentity) -> None:
    fetch_real_token(ident, route, _cl_keepalive, path="/a/b/tsr?policy=1&x=%2F")


def test_endless_headers_refused_before_the_deadline(route: Route) -> None:
    """A server streaming header lines forever (fast) must be cut off by a header size cap, not the timeout."""

    def handler(conn: Conn) -> None:
        conn.read_request()
        conn.send(b"HTTP/1.1 200 OK\r\n")
        line = b"X-Flood: " + b"a" * 1000 + b"\r\n"
        for _ in range(2048):  # 2 MiB of headers, then silence
            conn.send(line)
        conn.hold()

    refused_promptly(route, handler, timeout=2.5, why="headers were read until the deadline")


def _token_or_unreachable(url: str, ident: TsaIdentity) -> str:
    """Either a verified token or VM-TSA-UNREACHABLE: never another code, a wrong token or an exception."""
    try:
        tsr, nonce = request_token(url, DATA, timeout=2)
    except VaultMeshError as exc:
        assert exc.code == "VM-TSA-UNREACHABLE", (exc.code, exc.cause)
        return "refused"
    verify_token(tsr, DATA, trust_of(ident), nonce)
    return "accepted"


@pytest.mark.parametrize(
    "kind",
    [
        "cl-not-a-number",
        "cl-negative",
        "cl-superscript-digit",
        "cl-twice-differing",
        "cl-and-chunked",
        "te-identity",
    ],
)
def test_ambiguous_framing_is_a_token_or_unreachable(kind: str, route: Route, ident: TsaIdentity) -> None:
    """RFC 9112 6.3: invalid or conflicting lengths. Refusing or reading right are both fine; crashing, or
    a wrong code from parsing the wrong bytes, is not."""

    def answer(conn: Conn, tsr: bytes) -> None:
        n = len(tsr)
        if kind == "cl-not-a-number":
            conn.send(head("HTTP/1.1 200 OK", TSR_CT, "Content-Length: abc") + tsr)
        elif kind == "cl-negative":
            conn.send(head("HTTP/1.1 200 OK", TSR_CT, "Content-Length: -5") + tsr)
        elif kind == "cl-superscript-digit":  # byte 0xB2: '\xb2'.isdigit() is True, int('\xb2') fails
            conn.send(head("HTTP/1.1 200 OK", TSR_CT, "Content-Length: \xb2") + tsr)
        elif kind == "cl-twice-differing":
            conn.send(head("HTTP/1.1 200 OK", TSR_CT, f"Content-Length: {n}", f"Content-Length: {n + 7}") + tsr)
        elif kind == "cl-and-chunked":  # Transfer-Encoding overrides Content-Length
            body = chunked(tsr)
            conn.send(head("HTTP/1.1 200 OK", TSR_CT, f"Content-Length: {n}", "Transfer-Encoding: chunked") + body)
        else:
            conn.send(head("HTTP/1.1 200 OK", TSR_CT, "Transfer-Encoding: identity") + tsr)

    with RawServer(token_handler(ident, answer)) as srv:
        started = time.monotonic()
        _token_or_unreachable(route.url(srv), ident)
        assert time.monotonic() - started < 2.5


@pytest.mark.parametrize("path", ["/tsr/\u20ac", "/tsr/\xe9", "/t sr", "/tsr?q=a b"], ids=["euro", "e-acute", "space", "space-in-query"])
def test_odd_url_paths_never_crash(path: str, route: Route, ident: TsaIdentity) -> None:
    """A TSA URL from a policy or config with a space or a non-ASCII character: percent-encode it or refuse
    it with VM-TSA-UNREACHABLE, never a UnicodeEncodeError or a malformed request line."""
    with RawServer(token_handler(ident, _cl_keepalive)) as srv:
        outcome = _token_or_unreachable(route.url(srv, path), ident)
    if outcome == "accepted":
        (req,) = srv.requests
        assert len(req.line.split(" ")) == 3 and req.line.isascii(), req.line


@pytest.mark.parametrize("port", ["99999", "abc", "-1"])
def test_invalid_port_is_unreachable(port: str, no_proxy_env: pytest.MonkeyPatch) -> None:
    refused(f"http://127.0.0.1:{port}/tsr", timeout=1)


# --- https: real TLS on loopback -----------------------------------------------------------------------------
#
# A throwaway CA (trusted through SSL_CERT_FILE, which OpenSSL reads each time ssl.create_default_context() runs;
# SSL_CERT_DIR points at an empty directory so the system store plays no part) issues the loopback TLS servers'
# certificates. The TSA behind TLS is a RawServer whose handler first completes a server-side TLS handshake;
# CONNECT tunnels go through a RawServer playing the proxy, which relays bytes to that TLS server whatever the
# CONNECT target says, so `https://tsa.invalid:PORT/tsr` succeeding proves the tunnel was used.

TLS_SANS = ("127.0.0.1", "2001:db8::5", "localhost", "tsa.invalid", "xn--ts-wia.invalid")  # the last: tsä.invalid
RELAY_MAX = 4.0  # a tunnel relays for at most this long


@dataclass
class CertFiles:
    cert: Path
    key: Path


@dataclass
class Pki:
    ca_pem: Path  # the trusted CA
    good: CertFiles  # from the trusted CA, for every name in TLS_SANS
    rogue: CertFiles  # the same names, from a CA nobody trusts
    other_host: CertFiles  # from the trusted CA, for other.invalid only
    expired: CertFiles  # from the trusted CA, every name, expired yesterday


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _make_ca(cn: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(_name(cn))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def _issue(
    out: Path,
    stem: str,
    ca: tuple[ec.EllipticCurvePrivateKey, x509.Certificate],
    names: tuple[str, ...],
    expired: bool = False,
) -> CertFiles:
    ca_key, ca_cert = ca
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.timezone.utc)
    start, end = (now - dt.timedelta(days=3), now - dt.timedelta(days=1)) if expired else (
        now - dt.timedelta(hours=1), now + dt.timedelta(days=1))
    sans: list[x509.GeneralName] = []
    for n in names:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(n)))
        except ValueError:
            sans.append(x509.DNSName(n))
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(names[0]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    files = CertFiles(out / f"{stem}.crt", out / f"{stem}.key")
    files.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    files.key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return files


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    out = tmp_path_factory.mktemp("pki")
    ca, rogue_ca = _make_ca("vaultmesh test CA"), _make_ca("vaultmesh rogue CA")
    ca_pem = out / "ca.pem"
    ca_pem.write_bytes(ca[1].public_bytes(serialization.Encoding.PEM))
    return Pki(
        ca_pem=ca_pem,
        good=_issue(out, "good", ca, TLS_SANS),
        rogue=_issue(out, "rogue", rogue_ca, TLS_SANS),
        other_host=_issue(out, "other", ca, ("other.invalid",)),
        expired=_issue(out, "expired", ca, TLS_SANS, expired=True),
    )


@pytest.fixture
def tls_env(monkeypatch: pytest.MonkeyPatch, pki: Pki, tmp_path: Path) -> pytest.MonkeyPatch:
    """No proxy settings; the test CA (and only it) trusted by ssl.create_default_context()."""
    clear_proxy_env(monkeypatch)
    empty = tmp_path / "no-certs"
    empty.mkdir()
    monkeypatch.setenv("SSL_CERT_FILE", str(pki.ca_pem))
    monkeypatch.setenv("SSL_CERT_DIR", str(empty))
    loaded = [dict(x[0] for x in c["subject"]) for c in ssl.create_default_context().get_ca_certs()]
    assert loaded == [{"commonName": "vaultmesh test CA"}], f"SSL_CERT_FILE was not honoured: {loaded}"
    return monkeypatch


class TlsServer(RawServer):
    """A RawServer whose connections are TLS: each is handed to `inner` after the server-side handshake."""

    def __init__(self, cert: CertFiles, inner: Handler) -> None:
        self.sni: list[str | None] = []
        self.handshake_errors: list[BaseException] = []
        self.handshakes = 0
        self.sent: list[bytes] = []  # tokens signed, when the inner handler is a token_handler
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert.cert, cert.key)
        ctx.sni_callback = lambda _sock, name, _ctx: self.sni.append(name)

        def handler(conn: Conn) -> None:
            try:
                tls = ctx.wrap_socket(conn.sock, server_side=True)
            except (ssl.SSLError, OSError) as exc:
                self.handshake_errors.append(exc)
                return
            self.handshakes += 1
            with tls:
                inner(Conn(tls, conn.server))

        super().__init__(handler)

    def url(self, host: str = "127.0.0.1", path: str = "/tsr") -> str:
        shown = f"[{host}]" if ":" in host else host
        return f"https://{shown}:{self.port}{path}"


def _relay(a: socket.socket, b: socket.socket, stopping: threading.Event) -> None:
    """Bytes both ways until either side closes, the server stops, or RELAY_MAX."""
    end = time.monotonic() + RELAY_MAX
    while time.monotonic() < end and not stopping.is_set():
        readable, _, _ = select.select([a, b], [], [], 0.05)
        for s in readable:
            data = s.recv(65536)
            if not data:
                return
            (b if s is a else a).sendall(data)


def connect_proxy(
    upstream_port: int,
    answer: bytes = b"HTTP/1.1 200 Connection established\r\n\r\n",
    delay: float = 0.0,
) -> Handler:
    """A CONNECT proxy: records the request, waits `delay` s, answers `answer`; after a 200, relays to the
    loopback upstream_port whatever the target was; after anything else, holds the connection."""

    def handler(conn: Conn) -> None:
        conn.read_request()
        if delay:
            conn.server.stopping.wait(delay)
        conn.send(answer)
        if answer.split(b" ", 2)[1] != b"200":
            conn.hold()
            return
        with socket.create_connection(("127.0.0.1", upstream_port), timeout=5) as up:
            _relay(conn.sock, up, conn.server.stopping)

    return handler


def fetch_over_tls(url: str, ident: TsaIdentity, srv: TlsServer, timeout: float = 2.5) -> Request:
    """request_token over TLS: the token is the one signed over the exact request body, it verifies, and it
    came promptly; returns the request the TLS server saw (decrypted)."""
    started = time.monotonic()
    tsr, nonce = request_token(url, DATA, timeout=timeout)
    elapsed = time.monotonic() - started
    assert elapsed < 1.5, f"the client took {elapsed:.2f} s over TLS"
    assert srv.sent and tsr == srv.sent[0]
    assert verify_token(tsr, DATA, trust_of(ident), nonce).nonce == nonce
    assert len(srv.requests) == 1, [r.line for r in srv.requests]
    return srv.requests[0]


def tls_token_server(pki: Pki, ident: TsaIdentity, answer: Answer = _cl_keepalive,
                     cert: CertFiles | None = None) -> TlsServer:
    """A TLS TSA signing a real token over the exact request body it decrypts (kept in .sent)."""
    sent: list[bytes] = []
    srv = TlsServer(cert or pki.good, token_handler(ident, answer, sent))
    srv.sent = sent
    return srv


@pytest.mark.parametrize("framing", ["content-length-keepalive", "chunked-keepalive-small-writes", "read-to-eof-http11"])
@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_https_direct_real_token(framing: str, host: str, tls_env: pytest.MonkeyPatch, pki: Pki,
                                 ident: TsaIdentity) -> None:
    with tls_token_server(pki, ident, HAPPY[framing]) as srv:
        req = fetch_over_tls(srv.url(host), ident, srv)
    assert req.line == "POST /tsr HTTP/1.1", req.line
    assert req.headers.get("host") == f"{host}:{srv.port}", req.headers
    assert "proxy-authorization" not in req.headers
    assert srv.sni == [None if host == "127.0.0.1" else host], srv.sni  # no SNI for an IP address (RFC 6066 3)


def test_https_loopback_ignores_https_proxy(tls_env: pytest.MonkeyPatch, pki: Pki, ident: TsaIdentity) -> None:
    with RawServer(_bad_gateway) as proxy, tls_token_server(pki, ident) as srv:
        for var in ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY"):
            tls_env.setenv(var, proxy.base)
        fetch_over_tls(srv.url(), ident, srv)
    assert proxy.connections == 0


def test_https_client_closes_its_tls_socket(tls_env: pytest.MonkeyPatch, pki: Pki, ident: TsaIdentity) -> None:
    """After a keep-alive answer over TLS, the server sees the client hang up, and no socket is left for the
    garbage collector to close (a ResourceWarning names an SSLSocket nobody closed)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        with tls_token_server(pki, ident) as srv:
            fetch_over_tls(srv.url(), ident, srv)
            assert srv.client_closed.wait(1.0), "the client never closed its TLS connection"
        gc.collect()
    leaks = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
    assert not leaks, leaks


def test_https_error_answer_does_not_keep_the_tls_socket_open(
    tls_env: pytest.MonkeyPatch, pki: Pki, ident: TsaIdentity
) -> None:
    """A TSA answering 503 over keep-alive TLS: the client must hang up at once, not when the error (whose
    traceback a caller may keep, to log or retry) is garbage-collected."""

    def answer(conn: Conn, tsr: bytes) -> None:
        conn.send(head("HTTP/1.1 503 Busy", "Content-Length: 0"))
        conn.hold()

    with tls_token_server(pki, ident, answer) as srv:
        with pytest.raises(VaultMeshError) as info:
            request_token(srv.url(), DATA, timeout=2.5)
        assert info.value.code == "VM-TSA-UNREACHABLE" and "503" in info.value.cause, info.value.cause
        closed = srv.client_closed.wait(1.0)
        info = None  # type: ignore[assignment]  # drop the traceback before the server's exit
    assert closed, "the TLS socket stayed open while the error was alive"


# --- https through a CONNECT tunnel ---------------------------------------------------------------------------


PROXY_CREDS = {
    "no-credentials": ("", None),
    "user-and-password": ("user:p%40ss@", "user:p@ss"),
    "user-only": ("user@", "user:"),
}


@pytest.mark.parametrize("creds", list(PROXY_CREDS))
@pytest.mark.parametrize("var", ["https_proxy", "HTTPS_PROXY"])
def test_https_through_connect_tunnel(creds: str, var: str, tls_env: pytest.MonkeyPatch, pki: Pki,
                                      ident: TsaIdentity) -> None:
    userinfo, plain = PROXY_CREDS[creds]
    with tls_token_server(pki, ident) as srv, RawServer(connect_proxy(srv.port)) as proxy:
        tls_env.setenv(var, f"http://{userinfo}127.0.0.1:{proxy.port}")
        req = fetch_over_tls(f"https://tsa.invalid:{srv.port}/tsr", ident, srv)
    authority = f"tsa.invalid:{srv.port}"
    assert [r.line for r in proxy.requests] == [f"CONNECT {authority} HTTP/1.1"]
    connect = proxy.requests[0]
    assert connect.headers.get("host") == authority, connect.headers
    if plain is None:
        assert "proxy-authorization" not in connect.headers, connect.headers
    else:
        assert connect.headers.get("proxy-authorization") == "Basic " + base64.b64encode(plain.encode()).decode()
    assert connect.body == b""
    # inside the tunnel: an origin-form request to the TSA, which never sees the proxy's credentials
    assert req.line == "POST /tsr HTTP/1.1", req.line
    assert req.headers.get("host") == authority, req.headers
    assert "proxy-authorization" not in req.headers, "the proxy credentials were sent to the TSA"
    assert srv.sni == ["tsa.invalid"], srv.sni
    assert proxy.connections == 1 and srv.connections == 1


@pytest.mark.parametrize(
    "proxy_answer",
    [
        b"HTTP/1.0 200 Connection established\r\nProxy-agent: Squid/6.6\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 \r\n\r\n",
    ],
    ids=["http10-with-proxy-agent", "ok-with-content-length-0", "empty-reason"],
)
def test_connect_answers_proxies_really_send(proxy_answer: bytes, tls_env: pytest.MonkeyPatch, pki: Pki,
                                             ident: TsaIdentity) -> None:
    """RFC 9110 9.3.6: any 2xx to CONNECT opens the tunnel; its headers (even Content-Length) are ignored."""
    with tls_token_server(pki, ident) as srv, RawServer(connect_proxy(srv.port, proxy_answer)) as proxy:
        tls_env.setenv("https_proxy", proxy.base)
        fetch_over_tls(f"https://tsa.invalid:{srv.port}/tsr", ident, srv)


@pytest.mark.parametrize(
    "url_host,target_host,sni",
    [
        ("tsa.invalid", "tsa.invalid", "tsa.invalid"),
        ("[2001:db8::5]", "[2001:db8::5]", None),
        ("ts\u00e4.invalid", "xn--ts-wia.invalid", "xn--ts-wia.invalid"),
    ],
    ids=["default-port-443", "ipv6-literal", "idn-host"],
)
def test_connect_target_is_always_host_colon_port(url_host: str, target_host: str, sni: str | None,
                                                  tls_env: pytest.MonkeyPatch, pki: Pki, ident: TsaIdentity) -> None:
    """RFC 9112 3.2.3: CONNECT's request-target is authority-form, uri-host ":" port, the port never left out
    (even the default 443); an IPv6 literal in brackets; an IDN host in its A-label form."""
    default_port = url_host == "tsa.invalid"
    with tls_token_server(pki, ident) as srv, RawServer(connect_proxy(srv.port)) as proxy:
        tls_env.setenv("https_proxy", f"127.0.0.1:{proxy.port}")  # no scheme: an http:// proxy, as in curl
        url = f"https://{url_host}/tsr" if default_port else f"https://{url_host}:{srv.port}/tsr"
        req = fetch_over_tls(url, ident, srv)
    port = 443 if default_port else srv.port
    assert [r.line for r in proxy.requests] == [f"CONNECT {target_host}:{port} HTTP/1.1"]
    assert proxy.requests[0].headers.get("host") in (f"{target_host}:{port}", target_host if default_port else None)
    assert req.headers.get("host") == (target_host if default_port else f"{target_host}:{port}"), req.headers
    assert srv.sni == [sni], srv.sni


@pytest.mark.parametrize(
    "status_line", ["HTTP/1.1 407 Proxy Authentication Required", "HTTP/1.1 403 Forbidden", "HTTP/1.0 502 Bad Gateway"]
)
def test_connect_refused_by_the_proxy(status_line: str, tls_env: pytest.MonkeyPatch, pki: Pki,
                                      ident: TsaIdentity) -> None:
    answer = head(status_line, "Proxy-Authenticate: Basic realm=\"p\"", "Content-Length: 5") + b"nope!"
    with tls_token_server(pki, ident) as srv, RawServer(connect_proxy(srv.port, answer)) as proxy:
        tls_env.setenv("https_proxy", proxy.base)
        err, elapsed = refused(f"https://tsa.invalid:{srv.port}/tsr", timeout=2.5)
    status = status_line.split()[1]
    assert status in err.cause, err.cause
    assert "proxy" in err.cause.lower(), err.cause
    assert elapsed < 1.5
    assert srv.connections == 0


def test_connect_tunnel_closed_by_the_proxy(tls_env: pytest.MonkeyPatch, pki: Pki, ident: TsaIdentity) -> None:
    """The proxy says 200 and hangs up (upstream gone): the TLS handshake fails, promptly."""

    def handler(conn: Conn) -> None:
        conn.read_request()
        conn.send(b"HTTP/1.1 200 Connection established\r\n\r\n")

    with RawServer(handler) as proxy:
        tls_env.setenv("https_proxy", proxy.base)
        _err, elapsed = refused("https://tsa.invalid:8443/tsr", timeout=2.5)
    assert elapsed < 1.5


def test_https_no_proxy_match_goes_direct(tls_env: pytest.MonkeyPatch) -> None:
    with RawServer(_bad_gateway) as proxy:
        tls_env.setenv("https_proxy", proxy.base)
        tls_env.setenv("no_proxy", ".invalid")
        refused("https://tsa.invalid/tsr", timeout=2)
    assert proxy.connections == 0


# --- http:// through a proxy with credentials -----------------------------------------------------------------


@pytest.mark.parametrize("creds", [c for c in PROXY_CREDS if c != "no-credentials"])
@pytest.mark.parametrize("var", ["http_proxy", "HTTP_PROXY"])
def test_http_proxy_credentials_sent_as_basic(creds: str, var: str, no_proxy_env: pytest.MonkeyPatch,
                                              ident: TsaIdentity) -> None:
    userinfo, plain = PROXY_CREDS[creds]
    assert plain is not None
    with RawServer(token_handler(ident, _cl_keepalive)) as proxy:
        no_proxy_env.setenv(var, f"http://{userinfo}127.0.0.1:{proxy.port}")
        tsr, nonce = request_token(PROXIED_URL, DATA, timeout=2.5)
    assert verify_token(tsr, DATA, trust_of(ident), nonce).nonce == nonce
    (req,) = proxy.requests
    assert req.line == "POST http://tsa.invalid/tsr HTTP/1.1", req.line
    assert req.headers.get("host") == "tsa.invalid", req.headers
    assert req.headers.get("proxy-authorization") == "Basic " + base64.b64encode(plain.encode()).decode(), req.headers


# --- proxy settings that are not http:// proxies --------------------------------------------------------------


@pytest.mark.parametrize(
    "var,value,url",
    [
        ("https_proxy", "socks5://127.0.0.1:{port}", "https://tsa.invalid/tsr"),
        ("HTTPS_PROXY", "socks5h://127.0.0.1:{port}", "https://tsa.invalid/tsr"),
        ("https_proxy", "https://127.0.0.1:{port}", "https://tsa.invalid/tsr"),
        ("http_proxy", "socks4://127.0.0.1:{port}", "http://tsa.invalid/tsr"),
        ("http_proxy", "http://127.0.0.1:99999", "http://tsa.invalid/tsr"),
    ],
    ids=["socks5", "socks5h-upper-case-var", "https-proxy", "socks4-for-http", "bad-port"],
)
def test_unsupported_proxy_setting_is_named(var: str, value: str, url: str, no_proxy_env: pytest.MonkeyPatch) -> None:
    def handler(conn: Conn) -> None:
        conn.hold()

    with RawServer(handler) as proxy:
        setting = value.format(port=proxy.port)
        no_proxy_env.setenv(var, setting)
        err, elapsed = refused(url, timeout=2)
    assert setting in err.cause, err.cause
    assert "proxy" in err.cause.lower(), err.cause
    assert proxy.connections == 0, "an unsupported proxy was connected to"
    assert elapsed < 0.5


# --- one deadline over the TLS handshake ----------------------------------------------------------------------


def _silent_after_client_hello(conn: Conn) -> None:
    conn.hold()  # reads the ClientHello (and whatever follows), never answers


def _dripped_server_hello(conn: Conn) -> None:
    """A TLS handshake record that promises 16 KiB, sent one byte every 50 ms: each read returns data, so only
    an overall deadline ends it."""
    conn.sock.recv(65536)  # the ClientHello
    conn.drip([b"\x16", b"\x03", b"\x03", b"\x40", b"\x00"] + [b"\x02"] * 400)


@pytest.mark.parametrize("kind", ["silent-server", "dripped-server-hello"])
def test_tls_handshake_bounded_by_the_timeout(kind: str, tls_env: pytest.MonkeyPatch) -> None:
    handler = _silent_after_client_hello if kind == "silent-server" else _dripped_server_hello
    with RawServer(handler) as srv:
        err, elapsed = refused(f"https://127.0.0.1:{srv.port}/tsr", timeout=0.7)
    assert 0.6 < elapsed < 1.3, f"{elapsed:.2f} s for a 0.7 s timeout ({err.cause})"
    assert "0.7" in err.cause, err.cause


@pytest.mark.parametrize("stall", ["proxy-silent", "tls-silent-after-slow-connect"])
def test_tunnel_and_handshake_share_one_deadline(stall: str, tls_env: pytest.MonkeyPatch) -> None:
    """The proxy takes 0.6 s to open the tunnel (or never does), then the TLS server never answers: 1 s in all,
    not 1.6 s."""
    with RawServer(_silent_after_client_hello) as tls_srv:
        if stall == "proxy-silent":
            proxy_handler: Handler = _silent_after_client_hello
        else:
            proxy_handler = connect_proxy(tls_srv.port, delay=0.6)
        with RawServer(proxy_handler) as proxy:
            tls_env.setenv("https_proxy", proxy.base)
            err, elapsed = refused(f"https://tsa.invalid:{tls_srv.port}/tsr", timeout=1.0)
    assert 0.9 < elapsed < 1.4, f"{elapsed:.2f} s for a 1 s timeout ({err.cause})"
    assert "1 s" in err.cause, err.cause


def test_tls_drip_fed_answer_bounded_by_the_timeout(tls_env: pytest.MonkeyPatch, pki: Pki,
                                                    ident: TsaIdentity) -> None:
    """After the handshake, one TLS record per byte every 50 ms: still one deadline."""
    with TlsServer(pki.good, _dripper("content-length-body", ident)) as srv:
        err, elapsed = refused(srv.url(), timeout=0.7)
    assert elapsed < 1.3, f"{elapsed:.2f} s for a 0.7 s timeout"
    assert "0.7" in err.cause, err.cause


# --- TLS verification failures --------------------------------------------------------------------------------


@pytest.mark.parametrize("cert", ["rogue", "other_host", "expired"], ids=["untrusted-ca", "wrong-hostname", "expired"])
@pytest.mark.parametrize("via", ["direct", "tunnel"])
def test_tls_certificate_failure_is_unreachable(cert: str, via: str, tls_env: pytest.MonkeyPatch, pki: Pki,
                                                ident: TsaIdentity) -> None:
    with TlsServer(getattr(pki, cert), token_handler(ident, _cl_keepalive)) as srv:
        if via == "direct":
            err, elapsed = refused(srv.url(), timeout=2.5)
        else:
            with RawServer(connect_proxy(srv.port)) as proxy:
                tls_env.setenv("https_proxy", proxy.base)
                err, elapsed = refused(f"https://tsa.invalid:{srv.port}/tsr", timeout=2.5)
            assert proxy.connections == 1
        time.sleep(0.05)  # let the server finish its side of the aborted handshake
    assert "certificate" in err.cause.lower(), err.cause
    assert elapsed < 1.5
    assert srv.requests == [] and srv.handshakes == 0, "the client finished a handshake it should have refused"
    assert srv.handshake_errors, "the server saw no aborted handshake"


def test_plain_http_server_on_an_https_url(tls_env: pytest.MonkeyPatch) -> None:
    def handler(conn: Conn) -> None:
        conn.sock.recv(65536)
        conn.send(head("HTTP/1.1 400 Bad Request", "Content-Length: 0", "Connection: close"))

    with RawServer(handler) as srv:
        _err, elapsed = refused(f"https://127.0.0.1:{srv.port}/tsr", timeout=2.5)
    assert elapsed < 1.5


@pytest.mark.parametrize("url,why", [
    ("https://tsa.example.org/tsr", None),
    ("http://127.0.0.1:8080/", None),
    ("ftp://tsa.example.org/", "is not an http:// or https:// URL with a host"),
    ("https:///no-host", "is not an http:// or https:// URL with a host"),
    ("https://tsa.example.org:99999/", "has an invalid port"),
    ("https://tsa.example.org:port/", "has an invalid port"),
    ("http://[::1/", "does not parse as a URL"),
    (7, "is not a string"),
])
def test_one_reading_of_a_tsa_url(url: object, why: str | None) -> None:
    """post, `tsa add --url` and doctor judge a TSA URL by this one rule."""
    from git_vaultmesh.rfc3161.client import post, url_problem

    assert url_problem(url) == why
    if why is not None and isinstance(url, str):
        with pytest.raises(VaultMeshError) as exc:
            post(url, b"", 1.0)
        assert exc.value.code == "VM-TSA-UNREACHABLE" and why in exc.value.cause
