"""The HTTP leg of an RFC 3161 request (RFC 3161 §3.4: POST application/timestamp-query, answered by HTTP 200
application/timestamp-reply), as one HTTP/1.1 exchange on a fresh connection.

Why not urllib: importing urllib.request (with http.client, email and ssl) costs ~15 ms of CPU, a third of
`record`'s timestamping budget; and urllib's timeout is per socket operation, so a server dripping one byte
at a time holds it indefinitely, and a body cut short of its Content-Length comes back as if complete. Here
one deadline covers connecting, the TLS handshake, sending and every byte of the answer; the answer is
capped at 1 MiB and its framing (Content-Length, chunked, or until close) must be complete; no redirect is
followed (a TSA that redirects is misconfigured, and a redirected POST silently becomes a GET).

Proxies come from the environment as curl and urllib read them (http_proxy / https_proxy / no_proxy and
their upper-case forms, parsed by urllib.request, imported only when one is set); a loopback TSA is never
proxied. An http:// TSA is asked through the proxy in absolute form, an https:// one through a CONNECT
tunnel; only http:// proxies are supported.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import time
import urllib.parse
from typing import NoReturn

from ..errors import VaultMeshError

MAX_RESPONSE_BYTES = 1 << 20
_MAX_HEADER_BYTES = 64 * 1024  # the status line and all header lines together
_MAX_HEADER_LINES = 128
_USER_AGENT = "git-vaultmesh"
_HINT = ("check the TSA URL and the network, raise the timeout, or retry later; the entry stays pending until "
         "a token is added")
_URL_HINT = "set the TSA URL to the http(s) address the TSA operator publishes"


def _fail(cause: str, hint: str = _HINT) -> NoReturn:
    raise VaultMeshError("VM-TSA-UNREACHABLE", cause, hint)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def url_problem(url: object) -> str | None:
    """What keeps `url` from being a TSA's address (None: nothing): it must be an http:// or https:// URL with a
    host and, if it names one, a valid port. The one reading of a TSA URL: `post`, `tsa add --url` and doctor."""
    if not isinstance(url, str):
        return "is not a string"
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:  # e.g. an unclosed [IPv6 literal
        return "does not parse as a URL"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "is not an http:// or https:// URL with a host"
    try:
        parts.port  # noqa: B018 - reading it raises ValueError for a port out of range or not a number
    except ValueError:
        return "has an invalid port"
    return None


def post(url: str, body: bytes, timeout: float) -> tuple[str, bytes]:
    """POST an application/timestamp-query; return the HTTP 200 answer's (media type in lower case, body).

    A redirect or any other status, and every transport failure, raise VM-TSA-UNREACHABLE naming what
    happened."""
    problem = url_problem(url)
    if problem is not None:
        _fail(f"the TSA URL {url!r} {problem}", _URL_HINT)
    parts = urllib.parse.urlsplit(url)
    assert parts.hostname is not None
    port = parts.port or (443 if parts.scheme == "https" else 80)
    proxy = None if is_loopback(parts.hostname) else _proxy_for(parts, url)
    return _Exchange(url, parts.scheme, parts.hostname, port, proxy, timeout).post(_target(parts), body)


def _target(parts: urllib.parse.SplitResult) -> str:
    """The request target's path and query, percent-encoded where the URL was not (spaces, non-ASCII)."""
    path = urllib.parse.quote(parts.path or "/", safe="/%:@!$&'()*+,;=~")
    query = urllib.parse.quote(parts.query, safe="/?%:@!$&'()*+,;=~")
    return path + (f"?{query}" if query else "")


class _Proxy:
    def __init__(self, host: str, port: int, auth: str | None) -> None:
        self.host, self.port, self.auth = host, port, auth


def _proxy_for(parts: urllib.parse.SplitResult, url: str) -> _Proxy | None:
    scheme = parts.scheme
    var = next((v for v in (f"{scheme}_proxy", f"{scheme.upper()}_PROXY") if os.environ.get(v)), None)
    if var is None:
        return None  # the common case: no proxy, and no urllib import
    import urllib.request

    proxies = urllib.request.getproxies_environment()
    raw = proxies.get(scheme)
    host_port = parts.netloc.rpartition("@")[2]
    bypass = urllib.request.proxy_bypass_environment  # type: ignore[attr-defined]  # stdlib, not in typeshed
    if not raw or bypass(host_port, proxies):
        return None
    p = urllib.parse.urlsplit(raw if "://" in raw else f"http://{raw}")
    try:
        port = p.port or 80
    except ValueError:
        port = -1
    if p.scheme != "http" or not p.hostname or port < 0:
        _fail(f"the {var} setting {raw!r} is not an http://HOST[:PORT] proxy (for the TSA at {url})",
              "set the proxy as http://host:port, or add the TSA's host to no_proxy")
    auth = None
    if p.username is not None:
        import base64

        creds = f"{urllib.parse.unquote(p.username)}:{urllib.parse.unquote(p.password or '')}"
        auth = "Basic " + base64.b64encode(creds.encode()).decode("ascii")
    return _Proxy(p.hostname, port, auth)


def _reason(exc: BaseException, timeout: float, received: int) -> str:
    if isinstance(exc, TimeoutError | socket.timeout):
        return f"it did not finish answering within {timeout:g} s" if received else f"no answer within {timeout:g} s"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused (nothing listens there)"
    if isinstance(exc, ConnectionError):
        return f"the connection closed without a complete HTTP response ({type(exc).__name__}: {exc})"
    return f"{type(exc).__name__}: {exc}"


class _Exchange:
    """One request and its answer on a fresh connection (Connection: close), under one deadline."""

    def __init__(self, url: str, scheme: str, host: str, port: int, proxy: _Proxy | None, timeout: float) -> None:
        self.url = url
        self.scheme = scheme
        self.host = host
        self.port = port
        self.proxy = proxy
        self.timeout = timeout
        self.deadline = time.monotonic() + timeout
        self.buf = b""
        self.received = 0
        self.sock: socket.socket | None = None

    @property
    def host_text(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if host.isascii() else host.encode("idna").decode("ascii")

    @property
    def authority(self) -> str:
        """host[:port] for the Host header: the port only when it is not the scheme's default."""
        default = 443 if self.scheme == "https" else 80
        return self.host_text if self.port == default else f"{self.host_text}:{self.port}"

    def post(self, target: str, body: bytes) -> tuple[str, bytes]:
        via = self.proxy
        host, port = (via.host, via.port) if via is not None else (self.host, self.port)
        # An ASCII host as bytes: a str would be IDNA-encoded, whose first use imports unicodedata (~3 ms).
        address = host.encode("ascii") if host.isascii() else host
        try:
            self.sock = socket.create_connection((address, port), timeout=self.timeout)  # type: ignore[arg-type]
        except OSError as exc:
            where = f" through the proxy {host}:{port}" if via is not None else ""
            _fail(f"the TSA at {self.url} could not be reached{where}: {_reason(exc, self.timeout, 0)}")
        try:
            if self.scheme == "https":
                self._tls()  # replaces self.sock by the TLS socket wrapping it
            elif via is not None:
                target = f"http://{self.authority}{target}"  # absolute form, RFC 9112 §3.2.2
            head = (f"POST {target} HTTP/1.1\r\nHost: {self.authority}\r\nUser-Agent: {_USER_AGENT}\r\n"
                    "Content-Type: application/timestamp-query\r\nAccept: application/timestamp-reply\r\n"
                    f"Content-Length: {len(body)}\r\nConnection: close\r\n")
            if via is not None and via.auth and self.scheme == "http":
                head += f"Proxy-Authorization: {via.auth}\r\n"
            self._send(head.encode("ascii") + b"\r\n" + body)
            return self._answer()
        except VaultMeshError:
            raise
        except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
            _fail(f"the TSA at {self.url} failed: {_reason(exc, self.timeout, self.received)}")
        finally:
            self.sock.close()

    def _left(self) -> float:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError
        return left

    def _send(self, data: bytes) -> None:
        assert self.sock is not None
        self.sock.settimeout(self._left())
        self.sock.sendall(data)

    def _tls(self) -> None:
        """Through the proxy's CONNECT tunnel if there is one, then a verified TLS session with the TSA."""
        import ssl

        if self.proxy is not None:
            tunnel = f"{self.host_text}:{self.port}"
            head = f"CONNECT {tunnel} HTTP/1.1\r\nHost: {tunnel}\r\n"  # host:port always, RFC 9112 §3.2.3
            if self.proxy.auth:
                head += f"Proxy-Authorization: {self.proxy.auth}\r\n"
            self._send(head.encode("ascii") + b"\r\n")
            status, reason, _headers = self._head()
            if status != 200 or self.buf:
                _fail(f"the proxy {self.proxy.host}:{self.proxy.port} refused to tunnel to the TSA at {self.url}: "
                      f"HTTP {status} {reason}".rstrip(), "check the proxy settings (https_proxy, no_proxy)")
            self.received = 0
        assert self.sock is not None
        self.sock.settimeout(self._left())
        self.sock = ssl.create_default_context().wrap_socket(self.sock, server_hostname=self.host)

    def _recv(self) -> bytes:
        assert self.sock is not None
        self.sock.settimeout(self._left())
        chunk = self.sock.recv(65536)
        self.received += len(chunk)
        return chunk

    def _closed(self, where: str) -> NoReturn:
        if not self.received:
            _fail(f"the TSA at {self.url} failed: the connection closed without an HTTP response")
        _fail(f"the TSA at {self.url} failed: the connection closed {where}, without a complete HTTP response")

    def _line(self, what: str) -> bytes:
        while b"\r\n" not in self.buf:
            if len(self.buf) > _MAX_HEADER_BYTES:
                _fail(f"the TSA at {self.url} sent an HTTP {what} longer than {_MAX_HEADER_BYTES} bytes")
            chunk = self._recv()
            if not chunk:
                self._closed(f"in the {what}")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _exactly(self, n: int, what: str) -> bytes:
        while len(self.buf) < n:
            chunk = self._recv()
            if not chunk:
                self._closed(f"{len(self.buf)} bytes into a {n}-byte {what}")
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def _head(self) -> tuple[int, str, dict[str, str]]:
        """Status and headers of the final answer (interim 1xx answers are skipped)."""
        size = 0
        while True:
            status_line = self._line("status line")
            fields = status_line.split(None, 2)
            if (len(fields) < 2 or fields[0] not in (b"HTTP/1.0", b"HTTP/1.1") or len(fields[1]) != 3
                    or not fields[1].isdigit()):
                shown = status_line[:60].decode("latin-1")
                _fail(f"the TSA at {self.url} did not answer in HTTP (it sent {shown!r})",
                      "check the TSA URL: the port serves another protocol")
            status = int(fields[1])
            reason = fields[2].decode("latin-1").strip() if len(fields) > 2 else ""
            headers: dict[str, str] = {}
            lines = 0
            while line := self._line("header"):
                size += len(line) + 2
                lines += 1
                if size > _MAX_HEADER_BYTES or lines > _MAX_HEADER_LINES:
                    _fail(f"the TSA at {self.url} sent more than {_MAX_HEADER_LINES} header lines or "
                          f"{_MAX_HEADER_BYTES} bytes of headers")
                name, sep, value = line.partition(b":")
                if not sep or not name or name != name.strip():
                    _fail(f"the TSA at {self.url} sent a malformed HTTP header line {line[:60]!r}")
                key, text = name.decode("latin-1").lower(), value.strip().decode("latin-1")
                if key == "content-length" and key in headers and headers[key] != text:
                    _fail(f"the TSA at {self.url} sent two different Content-Length headers")
                headers[key] = f"{headers[key]}, {text}" if key in headers and key != "content-length" else text
            if not 100 <= status < 200:
                return status, reason, headers

    def _answer(self) -> tuple[str, bytes]:
        status, reason, headers = self._head()
        if 300 <= status < 400:
            _fail(f"the TSA at {self.url} answered HTTP {status} redirecting to {headers.get('location', '?')}; "
                  "a direct HTTP 200 response was required",
                  "configure the final TSA URL (the redirect target, if you trust it)")
        if status != 200:
            _fail(f"the TSA at {self.url} answered HTTP {status} {reason}".rstrip() + "; HTTP 200 was required")
        ctype = headers.get("content-type", "").split(";", 1)[0].strip().lower()
        coding = headers.get("transfer-encoding")
        if coding is not None:
            if coding.strip().lower() != "chunked":
                _fail(f"the TSA at {self.url} sent Transfer-Encoding {coding[:40]!r}; only chunked is supported")
            return ctype, self._chunked()
        length = headers.get("content-length")
        if length is not None:
            if not (length.isascii() and length.isdigit()):
                _fail(f"the TSA at {self.url} sent Content-Length {length[:40]!r}, not a number")
            n = int(length)
            self._cap(n)
            return ctype, self._exactly(n, "body")
        while chunk := self._recv():  # no length: the body ends when the server closes
            self.buf += chunk
            self._cap(len(self.buf))
        return ctype, self.buf

    def _cap(self, size: int) -> None:
        if size > MAX_RESPONSE_BYTES:
            _fail(f"the TSA at {self.url} sent more than {MAX_RESPONSE_BYTES} bytes; a TimeStampResp is a few "
                  "kilobytes")

    def _chunked(self) -> bytes:
        body = b""
        while True:
            size_field = self._line("chunk size").split(b";", 1)[0].strip()
            if not size_field or len(size_field) > 16 or not all(c in b"0123456789abcdefABCDEF" for c in size_field):
                _fail(f"the TSA at {self.url} sent a malformed chunk size {size_field[:20]!r}")
            size = int(size_field, 16)
            if size == 0:
                while self._line("trailer"):
                    pass
                return body
            self._cap(len(body) + size)
            body += self._exactly(size, "chunk")
            if self._exactly(2, "chunk end") != b"\r\n":
                _fail(f"the TSA at {self.url} sent a chunk without its closing CRLF")
