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

import re
import socket
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from git_vaultmesh.errors import VaultMeshError
from git_vaultmesh.tsa import TsaTrust, request_token, verify_token
from git_vaultmesh.tsa_server import TsaIdentity, TsaServer, make_identity, sign_token

DATA = b'{"v":1,"body":{"type":"release"},"sigs":[]}'
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


# --- fixtures and checks --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ident() -> TsaIdentity:
    return make_identity("ec")


def trust(ident: TsaIdentity) -> TsaTrust:
    return TsaTrust("t", ident.ca_cert_pem.decode())


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


@pytest.fixture(params=["direct", "proxy"])
def route(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Route:
    for var in PROXY_VARS:
        monkeypatch.delenv(var, raising=False)
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


def names_limit(cause: str) -> bool:
    return bool(re.search(r"1048576|1 ?MiB|1024 ?KiB|1 ?MB\b", cause))


def token_handler(ident: TsaIdentity, answer: Callable[[Conn, bytes], None], sent: list[bytes]) -> Handler:
    """Read the request, sign a real token over its exact body, and answer it with `answer`."""

    def handler(conn: Conn) -> None:
        req = conn.read_request()
        tsr = sign_token(ident, req.body)
        sent.append(tsr)
        answer(conn, tsr)

    return handler


def fetch_real_token(
    ident: TsaIdentity,
    route: Route,
    answer: Callable[[Conn, bytes], None],
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
    info = verify_token(tsr, DATA, trust(ident), nonce)
    assert info.nonce == nonce
    req = route.check(srv, path)
    assert req.method == "POST"
    assert req.headers.get("content-type", "").lower() == "application/timestamp-query"
    assert int(req.headers["content-length"]) == len(req.body)
    assert "transfer-encoding" not in req.headers
    assert req.headers.get("connection", "").lower() == "close"
    return closed


# --- happy paths: a real token through every framing --------------------------------------------------------


def _cl_keepalive(conn: Conn, tsr: bytes) -> None:
    conn.send(
        head("HTTP/1.1 200 OK", TSR_CT, f"Content-Length: {len(tsr)}", "Connection: keep-alive") + tsr
    )
    conn.hold()


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


def _http10_content_length(conn: Conn, tsr: bytes) -> None:
    conn.send(head("HTTP/1.0 200 OK", TSR_CT, f"Content-Length: {len(tsr)}") + tsr)
    conn.hold()


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


def _busy_headers(conn: Conn, tsr: bytes) -> None:
    """What a real TSA behind a load balancer sends: many headers, repeated ones, a long one."""
    conn.send(
        head(
            "HTTP/1.1 200 OK",
            "Date: Mon, 02 Jun 2025 10:00:00 GMT",
            "Server: Apache",
            "Set-Cookie: a=1; Path=/",
            "Set-Cookie: b=2; Path=/",
            "Cache-Control: no-store",
            "X-Padding: " + "a" * 4000,
            TSR_CT,
            f"Content-Length: {len(tsr)}",
        )
        + tsr
    )
    conn.hold()


HAPPY: dict[str, Callable[[Conn, bytes], None]] = {
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
    def answer(conn: Conn, tsr: bytes) -> None:
        conn.send(head("HTTP/1.1 200 OK", f"Content-Type: {ctype}", f"Content-Length: {len(tsr)}") + tsr)
        conn.hold()

    fetch_real_token(ident, route, answer)


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

    def answer(conn: Conn, tsr: bytes) -> None:
        ct = [] if ctype is None else [f"Content-Type: {ctype}"]
        conn.send(head("HTTP/1.1 200 OK", *ct, f"Content-Length: {len(tsr)}") + tsr)
        conn.hold()

    with RawServer(token_handler(ident, answer, [])) as srv:
        err, _ = refused(route.url(srv), timeout=3)
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
    def answer(conn: Conn, tsr: bytes) -> None:
        conn.send(head(f"HTTP/1.1 {code} Whatever", TSR_CT, f"Content-Length: {len(tsr)}") + tsr)
        conn.hold()

    with RawServer(token_handler(ident, answer, [])) as srv:
        err, elapsed = refused(route.url(srv), timeout=3)
    assert str(code) in err.cause, err.cause
    assert elapsed < 1.5


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
    with RawServer(NON_HTTP[kind]) as srv:
        _err, elapsed = refused(route.url(srv), timeout=3)
    assert elapsed < 1.5


@pytest.mark.parametrize("status", ["HTTP/1.1 2OO OK", "HTTP/1.1 99999 OK", "HTTP/1.1 -200 OK", "HTTX/1.1 200 OK"])
def test_bad_status_line_with_a_token_is_refused(status: str, route: Route, ident: TsaIdentity) -> None:
    def answer(conn: Conn, tsr: bytes) -> None:
        conn.send(head(status, TSR_CT, f"Content-Length: {len(tsr)}") + tsr)
        conn.hold()

    with RawServer(token_handler(ident, answer, [])) as srv:
        _err, elapsed = refused(route.url(srv), timeout=3)
    assert elapsed < 1.5


def test_bare_token_without_http_is_refused(route: Route, ident: TsaIdentity) -> None:
    """An HTTP/0.9-style answer (the body alone) is not HTTP: never accepted as a token."""
    with RawServer(token_handler(ident, lambda conn, tsr: conn.send(tsr), [])) as srv:
        _err, elapsed = refused(route.url(srv), timeout=3)
    assert elapsed < 1.5


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

    with RawServer(handler) as srv:
        _err, elapsed = refused(route.url(srv), timeout=3)
    assert elapsed < 1.5


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


BODY_CUTS: dict[str, Callable[[Conn, bytes], None]] = {
    "content-length-half": _cl_half,
    "content-length-whole-token-10-bytes-short": _cl_whole_token_but_short,
    "chunked-no-last-chunk": _chunked_no_last_chunk,
    "chunked-mid-chunk-data": _chunked_mid_chunk,
    "chunked-mid-size-line": _chunked_mid_size_line,
    "chunked-no-crlf-after-data": _chunked_no_crlf_after_data,
}


@pytest.mark.parametrize("cut", list(BODY_CUTS))
def test_connection_closed_mid_body(cut: str, route: Route, ident: TsaIdentity) -> None:
    with RawServer(token_handler(ident, BODY_CUTS[cut], [])) as srv:
        err, elapsed = refused(route.url(srv), timeout=3)
    assert elapsed < 1.5, f"{elapsed:.2f} s ({err.cause})"


@pytest.mark.parametrize("size_line", [b"zz", b"-1", b"", b"0x10", b"1" * 40])
def test_malformed_chunk_size_is_unreachable(size_line: bytes, route: Route, ident: TsaIdentity) -> None:
    def answer(conn: Conn, tsr: bytes) -> None:
        conn.send(head("HTTP/1.1 200 OK", TSR_CT, "Transfer-Encoding: chunked") + size_line + b"\r\n" + tsr)

    with RawServer(token_handler(ident, answer, [])) as srv:
        _err, elapsed = refused(route.url(srv), timeout=3)
    assert elapsed < 1.5


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
    with RawServer(_oversize(framing, LIMIT + 65536, then_hold=True)) as srv:
        err, elapsed = refused(route.url(srv), timeout=2.5)
    assert names_limit(err.cause), err.cause
    assert elapsed < 1.5, f"{elapsed:.2f} s: the client waited for the rest of an oversized body"


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

    with RawServer(token_handler(ident, answer, [])) as srv:
        err, elapsed = refused(route.url(srv), timeout=2.5, code="VM-TSA-NOT-DER" if extra == 0 else "VM-TSA-UNREACHABLE")
    if extra:
        assert names_limit(err.cause), err.cause
    else:
        assert "trailing" in err.cause, err.cause
    assert elapsed < 1.5


# --- the overall deadline -----------------------------------------------------------------------------------


def _dripper(phase: str, ident: TsaIdentity) -> Handler:
    def handler(conn: Conn) -> None:
        req = conn.read_request()
        tsr = sign_token(ident, req.body)
        if phase == "status-line":
            whole = head("HTTP/1.1 200 OK", TSR_CT, f"Content-Length: {len(tsr)}") + tsr
            conn.drip([whole[i : i + 1] for i in range(len(whole))])
        elif phase == "headers":
            conn.send(b"HTTP/1.1 200 OK\r\n" + TSR_CT.encode() + b"\r\nX-Slow: ")
            conn.drip([b"a"] * 1000)
        elif phase == "content-length-body":
            conn.send(head("HTTP/1.1 200 OK", TSR_CT, f"Content-Length: {len(tsr)}"))
            conn.drip([tsr[i : i + 1] for i in range(len(tsr))])
        elif phase == "chunked-body":  # one complete 1-byte chunk at a time
            conn.send(head("HTTP/1.1 200 OK", TSR_CT, "Transfer-Encoding: chunked"))
            conn.drip([b"1\r\n%s\r\n" % tsr[i : i + 1] for i in range(len(tsr))])
        else:  # read-to-EOF body
            conn.send(head("HTTP/1.1 200 OK", TSR_CT))
            conn.drip([tsr[i : i + 1] for i in range(len(tsr))])

    return handler


@pytest.mark.parametrize("phase", ["status-line", "headers", "content-length-body", "chunked-body", "eof-body"])
def test_drip_feed_cannot_hold_the_client_past_its_timeout(phase: str, route: Route, ident: TsaIdentity) -> None:
    with RawServer(_dripper(phase, ident)) as srv:
        err, elapsed = refused(route.url(srv), timeout=0.7)
    assert elapsed < 1.5, f"a server sending a byte every 50 ms held the client {elapsed:.2f} s (timeout 0.7 s)"
    assert "0.7" in err.cause, err.cause


# --- proxies from the environment (the urllib path) ---------------------------------------------------------


def _forwarding_proxy(tsa: TsaServer) -> Handler:
    """A forward proxy for one POST: sends the body on to the real TSA, returns its answer."""

    def handler(conn: Conn) -> None:
        req = conn.read_request()
        fwd = urllib.request.Request(
            tsa.url, data=req.body, method="POST", headers={"Content-Type": req.headers["content-type"]}
        )
        with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(fwd, timeout=5) as resp:
            body, ctype = resp.read(), resp.headers["Content-Type"]
        conn.send(
            head("HTTP/1.1 200 OK", f"Content-Type: {ctype}", f"Content-Length: {len(body)}", "Connection: close")
            + body
        )

    return handler


@pytest.fixture
def no_proxy_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    for var in PROXY_VARS:
        monkeypatch.delenv(var, raising=False)
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
    assert verify_token(tsr, DATA, trust(ident), nonce).nonce == nonce


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_environment_proxy_not_used_for_loopback(host: str, no_proxy_env: pytest.MonkeyPatch, ident: TsaIdentity) -> None:
    def proxy_handler(conn: Conn) -> None:
        conn.read_request()
        conn.send(head("HTTP/1.1 502 Bad Gateway", "Content-Length: 0"))

    with TsaServer(ident, max_lifetime=30) as tsa, RawServer(proxy_handler) as proxy:
        for var in ("http_proxy", "HTTP_PROXY"):
            no_proxy_env.setenv(var, proxy.base)
        url = tsa.url.replace("127.0.0.1", host)
        tsr, nonce = request_token(url, DATA, timeout=5)
    assert proxy.connections == 0 and proxy.requests == []
    assert verify_token(tsr, DATA, trust(ident), nonce).nonce == nonce


@pytest.mark.parametrize("var", ["no_proxy", "NO_PROXY"])
@pytest.mark.parametrize("value", ["tsa.invalid", ".invalid", "*", "example.org, tsa.invalid"])
def test_no_proxy_match_goes_direct(var: str, value: str, no_proxy_env: pytest.MonkeyPatch) -> None:
    """no_proxy matches, so the client goes direct: tsa.invalid does not resolve, and the proxy sees nothing."""

    def proxy_handler(conn: Conn) -> None:
        conn.read_request()
        conn.send(head("HTTP/1.1 502 Bad Gateway", "Content-Length: 0"))

    with RawServer(proxy_handler) as proxy:
        no_proxy_env.setenv("http_proxy", proxy.base)
        no_proxy_env.setenv(var, value)
        err, elapsed = refused(PROXIED_URL, timeout=2)
    assert proxy.connections == 0, "the proxy was used although no_proxy matched"
    assert "502" not in err.cause
    assert elapsed < 1.5


# --- beyond the brief: RFC 9110/9112 points a robust client handles ------------------------------------------


def test_interim_100_continue_before_the_answer(route: Route, ident: TsaIdentity) -> None:
    """RFC 9110 15.2: a client MUST parse 1xx responses before the final one, even unasked for."""

    def answer(conn: Conn, tsr: bytes) -> None:
        conn.send(
            b"HTTP/1.1 100 Continue\r\n\r\n"
            + head("HTTP/1.1 200 OK", TSR_CT, f"Content-Length: {len(tsr)}")
            + tsr
        )
        conn.hold()

    fetch_real_token(ident, route, answer)


def test_status_line_with_empty_reason_phrase(route: Route, ident: TsaIdentity) -> None:
    """RFC 9112 4: reason-phrase may be empty ("HTTP/1.1 200 " then CRLF)."""

    def answer(conn: Conn, tsr: bytes) -> None:
        conn.send(head("HTTP/1.1 200 ", TSR_CT, f"Content-Length: {len(tsr)}") + tsr)
        conn.hold()

    fetch_real_token(ident, route, answer)


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

    with RawServer(handler) as srv:
        _err, elapsed = refused(route.url(srv), timeout=2.5)
    assert elapsed < 1.5, f"{elapsed:.2f} s: headers were read until the deadline"


def _token_or_unreachable(url: str, ident: TsaIdentity) -> str:
    """Either a verified token or VM-TSA-UNREACHABLE: never another code, a wrong token or an exception."""
    try:
        tsr, nonce = request_token(url, DATA, timeout=2)
    except VaultMeshError as exc:
        assert exc.code == "VM-TSA-UNREACHABLE", (exc.code, exc.cause)
        return "refused"
    verify_token(tsr, DATA, trust(ident), nonce)
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

    with RawServer(token_handler(ident, answer, [])) as srv:
        started = time.monotonic()
        _token_or_unreachable(route.url(srv), ident)
        assert time.monotonic() - started < 2.5


@pytest.mark.parametrize("path", ["/tsr/\u20ac", "/tsr/\xe9", "/t sr", "/tsr?q=a b"], ids=["euro", "e-acute", "space", "space-in-query"])
def test_odd_url_paths_never_crash(path: str, route: Route, ident: TsaIdentity) -> None:
    """A TSA URL from a policy or config with a space or a non-ASCII character: percent-encode it or refuse
    it with VM-TSA-UNREACHABLE, never a UnicodeEncodeError or a malformed request line."""
    with RawServer(token_handler(ident, _cl_keepalive, [])) as srv:
        outcome = _token_or_unreachable(route.url(srv, path), ident)
    if outcome == "accepted":
        (req,) = srv.requests
        assert len(req.line.split(" ")) == 3 and req.line.isascii(), req.line


@pytest.mark.parametrize("port", ["99999", "abc", "-1"])
def test_invalid_port_is_unreachable(port: str, no_proxy_env: pytest.MonkeyPatch) -> None:
    refused(f"http://127.0.0.1:{port}/tsr", timeout=1)
