"""A small, real RFC 3161 time-stamp server on loopback, for the demo, the tests and air-gapped sites.

It answers `application/timestamp-query` POSTs with DER TimeStampResps that verify under our own
verify_token and under `openssl ts -verify`: the signer certificate is included, signed attributes carry
content-type, signingTime, messageDigest and signingCertificateV2 (ESSCertIDv2, SHA-256), genTime is the
current second (UTC) with an accuracy of 1 s, and serial numbers increase from a random 62-bit start.

Tokens carry the TSA policy OID 1.2.3.4.1 (TEST_POLICY_OID): an example OID from the documentation arc that
OpenSSL's own TSA tests also use, registered to nobody. It marks tokens from this test/air-gapped server; it
says nothing about the operational assurances a public TSA's policy would.

The server only ever listens on a loopback address, stops by itself after `max_lifetime` seconds, and keeps
its keys unencrypted: it is not a production TSA.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import secrets
import signal
import socket
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any, Literal

from asn1crypto import algos, cms, core, tsp
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ..errors import VaultMeshError


# asn1crypto declares timeStampToken mandatory; RFC 3161 makes it OPTIONAL (absent on rejection).
class _TimeStampResp(core.Sequence):  # type: ignore[misc]
    _fields = [
        ("status", tsp.PKIStatusInfo),
        ("time_stamp_token", cms.ContentInfo, {"optional": True}),
    ]

__all__ = [
    "TEST_POLICY_OID",
    "TsaIdentity",
    "TsaServer",
    "load_identity",
    "make_identity",
    "sign_token",
    "write_identity",
]

TEST_POLICY_OID = "1.2.3.4.1"
MODES = ("ok", "reject", "garbage", "html", "slow", "down")
_MAX_REQUEST_BYTES = 64 * 1024
_IMPRINT_SIZES = {"sha256": 32, "sha384": 48, "sha512": 64}
_IDENTITY_FILES = {
    "ca_cert_pem": "ca.pem",
    "ca_key_pem": "ca.key",
    "cert_pem": "tsa.pem",
    "key_pem": "tsa.key",
}
_HTML_PAGE = (
    b"<!DOCTYPE html>\n<html><head><title>Sign in</title></head>\n"
    b"<body><p>Please sign in to continue.</p></body></html>\n"
)

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


@dataclass
class TsaIdentity:
    """A CA and the TSA signer it issued, all PEM; for tests and air-gapped sites (keys are unencrypted)."""

    ca_cert_pem: bytes
    ca_key_pem: bytes
    cert_pem: bytes
    key_pem: bytes


def _new_key(key_type: Literal["rsa", "ec"]) -> PrivateKey:
    if key_type == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if key_type == "ec":
        return ec.generate_private_key(ec.SECP256R1())
    raise ValueError(f"key_type must be 'rsa' or 'ec', not {key_type!r}")


def _key_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _load_key(pem: bytes) -> PrivateKey:
    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise ValueError(f"unsupported TSA key type {type(key).__name__}; RSA or EC was required")
    return key


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "git-vaultmesh test TSA"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _utc(moment: datetime) -> datetime:
    """Naive datetimes are taken as UTC, as cryptography's certificate builder does."""
    return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment.astimezone(timezone.utc)


def _key_usage(*, ca: bool) -> x509.KeyUsage:
    """A CA signs certificates and CRLs only; a TSA leaf signs tokens only (what RFC 3161 §2.3 expects)."""
    return x509.KeyUsage(
        digital_signature=not ca, content_commitment=False, key_encipherment=False, data_encipherment=False,
        key_agreement=False, key_cert_sign=ca, crl_sign=ca, encipher_only=False, decipher_only=False,
    )


def make_identity(
    key_type: Literal["rsa", "ec"] = "ec",
    *,
    not_before: datetime | None = None,
    not_after: datetime | None = None,
    eku_critical: bool = True,
    include_eku: bool = True,
    ca: TsaIdentity | None = None,
    key_usage: x509.KeyUsage | None = None,
    self_signed: bool = False,
) -> TsaIdentity:
    """A fresh CA (or `ca`'s) and a TSA signer certificate issued by it.

    The signer gets keyUsage digitalSignature and a critical EKU timeStamping, as RFC 3161 requires;
    `eku_critical`/`include_eku`/`key_usage` make deliberately wrong certificates for tests; `self_signed`
    makes the signer its own issuer (a TSA whose policy pins its certificate itself: ca_cert_pem is then the
    signer's). Default validity: from one hour ago for one year (the hour absorbs clock skew between machines).
    """
    now = datetime.now(timezone.utc).replace(microsecond=0)
    nb = _utc(not_before) if not_before is not None else now - timedelta(hours=1)
    na = _utc(not_after) if not_after is not None else nb + timedelta(days=365)
    suffix = secrets.token_hex(4)
    if ca is None:
        ca_key = _new_key(key_type)
        ca_name = _name(f"git-vaultmesh test TSA CA {suffix}")
        ca_cert = (
            x509.CertificateBuilder()
            .subject_name(ca_name)
            .issuer_name(ca_name)
            .public_key(ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(min(nb, now - timedelta(hours=1)))
            .not_valid_after(max(na, now + timedelta(days=365)))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_key_usage(ca=True), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        ca_cert_pem, ca_key_pem = ca_cert.public_bytes(serialization.Encoding.PEM), _key_pem(ca_key)
    else:
        ca_cert_pem, ca_key_pem = ca.ca_cert_pem, ca.ca_key_pem
        ca_cert, ca_key = x509.load_pem_x509_certificate(ca_cert_pem), _load_key(ca_key_pem)
    key = _new_key(key_type)
    subject = _name(f"git-vaultmesh test {'self-signed ' if self_signed else ''}TSA {suffix}")
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject if self_signed else ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(nb)
        .not_valid_after(na)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(key_usage if key_usage is not None else _key_usage(ca=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    if not self_signed:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
    if include_eku:
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.TIME_STAMPING]), critical=eku_critical
        )
    if self_signed:
        pem = builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)
        return TsaIdentity(ca_cert_pem=pem, ca_key_pem=_key_pem(key), cert_pem=pem, key_pem=_key_pem(key))
    cert = builder.sign(ca_key, hashes.SHA256())
    return TsaIdentity(
        ca_cert_pem=ca_cert_pem,
        ca_key_pem=ca_key_pem,
        cert_pem=cert.public_bytes(serialization.Encoding.PEM),
        key_pem=_key_pem(key),
    )


def write_identity(ident: TsaIdentity, directory: Path) -> None:
    """Write ca.pem, ca.key, tsa.pem, tsa.key into directory; key files are created 0600."""
    directory.mkdir(parents=True, exist_ok=True)
    for attr, filename in _IDENTITY_FILES.items():
        path = directory / filename
        secret = filename.endswith(".key")
        if path.exists():
            path.unlink()  # re-create, so the mode below applies even if the file existed
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600 if secret else 0o644)
        with os.fdopen(fd, "wb") as fh:
            fh.write(getattr(ident, attr))


def load_identity(directory: Path) -> TsaIdentity:
    """Read an identity written by write_identity; check the files parse and each key fits its certificate."""
    values: dict[str, bytes] = {}
    for attr, filename in _IDENTITY_FILES.items():
        try:
            values[attr] = (directory / filename).read_bytes()
        except OSError as exc:
            raise VaultMeshError(
                "VM-FILE-UNREADABLE",
                f"cannot read TSA identity file {filename} in {directory}: {exc.strerror}",
                "create one with `write_identity(make_identity(), DIR)` or copy the four "
                "files ca.pem, ca.key, tsa.pem, tsa.key there",
            ) from exc
    ident = TsaIdentity(**values)
    try:
        for cert_attr, key_attr in (("ca_cert_pem", "ca_key_pem"), ("cert_pem", "key_pem")):
            cert = x509.load_pem_x509_certificate(values[cert_attr])
            key = _load_key(values[key_attr])
            if cert.public_key() != key.public_key():
                raise ValueError(
                    f"{_IDENTITY_FILES[key_attr]} is not the key of {_IDENTITY_FILES[cert_attr]}"
                )
    except (ValueError, TypeError) as exc:
        raise VaultMeshError(
            "VM-FILE-UNREADABLE",
            f"the TSA identity in {directory} is invalid: {exc}",
            "re-create the identity files (PEM certificates, unencrypted PKCS#8 keys)",
        ) from exc
    return ident


def _frozen(value: Any) -> Any:
    """Re-load a freshly built asn1crypto value from its DER.

    asn1crypto re-serializes a constructed value (re-sorting every SET OF inside it) each time a parent asks
    for its contents, which made one token cost ~10 ms; a value loaded from bytes is serialized once.
    """
    return value.__class__.load(value.dump())


class _SerialCounter:
    """Monotonic serial numbers from a random start, so two servers rarely issue the same serial."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._next = secrets.randbits(62) + 1

    def take(self) -> int:
        with self._lock:
            value = self._next
            self._next += 1
            return value


_DEFAULT_SERIALS = _SerialCounter()


class _Signer:
    """An identity's parsed key and certificate, built once per server rather than once per token."""

    def __init__(self, ident: TsaIdentity) -> None:
        self.key = _load_key(ident.key_pem)
        cert = x509.load_pem_x509_certificate(ident.cert_pem)
        self.cert_der = cert.public_bytes(serialization.Encoding.DER)
        self.cert_hash = hashlib.sha256(self.cert_der).digest()

    def sign(
        self,
        request_der: bytes,
        *,
        gen_time: datetime | None,
        serial: int,
        status_override: int | None,
        nonce_override: int | None,
    ) -> bytes:
        try:
            req = tsp.TimeStampReq.load(request_der, strict=True)
            version = int(req["version"])
            imprint = req["message_imprint"]
            alg = str(imprint["hash_algorithm"]["algorithm"].native)
            imprint_len = len(bytes(imprint["hashed_message"]))
            policy = req["req_policy"]
            extensions = req["extensions"]
            nonce_obj = req["nonce"]
            cert_req = bool(req["cert_req"].native)
        except (ValueError, TypeError, KeyError) as exc:
            detail = (str(exc).splitlines() or [type(exc).__name__])[0][:200]
            return _rejection("bad_data_format", f"the request is not a DER TimeStampReq ({detail})")
        if version != 1:
            return _rejection("bad_request", f"request version {version}; 1 is required")
        if _IMPRINT_SIZES.get(alg) != imprint_len:
            return _rejection(
                "bad_alg", f"imprint algorithm {alg} with {imprint_len} bytes; SHA-256/384/512 is required"
            )
        if not isinstance(policy, core.Void) and policy.dotted != TEST_POLICY_OID:
            return _rejection(
                "unaccepted_policy", f"policy {policy.dotted}; this TSA issues {TEST_POLICY_OID}"
            )
        if not isinstance(extensions, core.Void) and len(extensions) > 0:
            return _rejection("unaccepted_extensions", "request extensions are not supported")
        if status_override is not None and status_override not in (0, 1):
            return _status_only(status_override, "rejected on request (status_override)")
        nonce = (
            nonce_override
            if nonce_override is not None
            else (None if isinstance(nonce_obj, core.Void) else int(nonce_obj))
        )
        when = _utc(gen_time or datetime.now(timezone.utc)).replace(microsecond=0)
        tst_fields: dict[str, Any] = {
            "version": "v1",
            "policy": TEST_POLICY_OID,
            "message_imprint": tsp.MessageImprint.load(imprint.dump()),
            "serial_number": serial,
            "gen_time": when,
            "accuracy": {"seconds": 1},
        }
        if nonce is not None:
            tst_fields["nonce"] = nonce
        econtent: bytes = tsp.TSTInfo(tst_fields).dump()
        return self._wrap(econtent, when, cert_req, 0 if status_override is None else status_override)

    def _wrap(self, econtent: bytes, when: datetime, cert_req: bool, status: int) -> bytes:
        """CMS SignedData (RFC 5652) around the TSTInfo, with the signed attributes RFC 3161 requires."""
        # A fresh parse per token: asn1crypto parses lazily (mutating the object); handlers run in threads.
        cert_asn1 = asn1_x509.Certificate.load(self.cert_der)
        tbs = cert_asn1["tbs_certificate"]
        issuer = asn1_x509.Name.load(tbs["issuer"].dump())
        serial = int(tbs["serial_number"])
        ess_id = _frozen(
            tsp.ESSCertIDv2(
                {
                    # hashAlgorithm left out: it DEFAULTs to SHA-256, and DER omits default values
                    "cert_hash": self.cert_hash,
                    "issuer_serial": _frozen(
                        tsp.IssuerSerial(
                            {
                                "issuer": [asn1_x509.GeneralName({"directory_name": issuer})],
                                "serial_number": serial,
                            }
                        )
                    ),
                }
            )
        )
        signing_time = cms.Time({"utc_time": when} if when.year < 2050 else {"generalized_time": when})
        ess = _frozen(
            tsp.SetOfSigningCertificatesV2([_frozen(tsp.SigningCertificateV2({"certs": [ess_id]}))])
        )
        attrs = cms.CMSAttributes(
            [
                _frozen(attr)
                for attr in (
                    cms.CMSAttribute({"type": "content_type", "values": ["tst_info"]}),
                    cms.CMSAttribute({"type": "signing_time", "values": [signing_time]}),
                    cms.CMSAttribute(
                        {"type": "message_digest", "values": [hashlib.sha256(econtent).digest()]}
                    ),
                    cms.CMSAttribute({"type": "signing_certificate_v2", "values": ess}),
                )
            ]
        )
        signed_bytes: bytes = attrs.dump()  # SET OF (tag 0x31), sorted by asn1crypto as DER requires
        if isinstance(self.key, rsa.RSAPrivateKey):
            signature = self.key.sign(signed_bytes, padding.PKCS1v15(), hashes.SHA256())
            sig_alg = "sha256_rsa"
        else:
            signature = self.key.sign(signed_bytes, ec.ECDSA(hashes.SHA256()))
            sig_alg = "sha256_ecdsa"
        signer_info = _frozen(
            cms.SignerInfo(
                {
                    "version": "v1",
                    "sid": cms.SignerIdentifier(
                        {
                            "issuer_and_serial_number": _frozen(
                                cms.IssuerAndSerialNumber({"issuer": issuer, "serial_number": serial})
                            )
                        }
                    ),
                    "digest_algorithm": algos.DigestAlgorithm({"algorithm": "sha256"}),
                    "signed_attrs": cms.CMSAttributes.load(signed_bytes),
                    "signature_algorithm": algos.SignedDigestAlgorithm({"algorithm": sig_alg}),
                    "signature": signature,
                }
            )
        )
        signed_data: dict[str, Any] = {
            "version": "v3",  # RFC 5652 5.1: eContentType other than id-data
            "digest_algorithms": [algos.DigestAlgorithm({"algorithm": "sha256"})],
            "encap_content_info": {"content_type": "tst_info", "content": core.ParsableOctetString(econtent)},
            "signer_infos": [signer_info],
        }
        if cert_req:
            signed_data["certificates"] = [cert_asn1]
        resp = _TimeStampResp(
            {
                "status": {"status": status},
                "time_stamp_token": _frozen(
                    cms.ContentInfo(
                        {"content_type": "signed_data", "content": _frozen(cms.SignedData(signed_data))}
                    )
                ),
            }
        )
        out: bytes = resp.dump()
        return out


def _rejection(fail_info: str, text: str) -> bytes:
    out: bytes = _TimeStampResp(
        {
            "status": {
                "status": "rejection",
                "status_string": [text],
                "fail_info": tsp.PKIFailureInfo({fail_info}),
            }
        }
    ).dump()
    return out


def _status_only(status: int, text: str) -> bytes:
    out: bytes = _TimeStampResp({"status": {"status": status, "status_string": [text]}}).dump()
    return out


def sign_token(
    ident: TsaIdentity,
    request_der: bytes,
    *,
    gen_time: datetime | None = None,
    serial: int | None = None,
    status_override: int | None = None,
    nonce_override: int | None = None,
) -> bytes:
    """Answer one DER TimeStampReq with a full DER TimeStampResp (a rejection when the request is unusable).

    The overrides forge otherwise-valid tokens for tests: a genTime outside the certificate, a non-granted
    status (no token), or a nonce other than the one requested.
    """
    return _Signer(ident).sign(
        request_der,
        gen_time=gen_time,
        serial=serial if serial is not None else _DEFAULT_SERIALS.take(),
        status_override=status_override,
        nonce_override=nonce_override,
    )


def _loopback_host(host: str) -> str:
    if host == "localhost":
        return "127.0.0.1"
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(
            f"TsaServer host {host!r} is not an IP address; a loopback address is required"
        ) from None
    if not ip.is_loopback:
        raise ValueError(
            f"TsaServer host {host!r} is not a loopback address; this test TSA only listens on "
            "loopback (127.0.0.0/8 or ::1)"
        )
    return str(ip)


class _HTTPServer(ThreadingHTTPServer):
    # a client timestamping many pending entries opens connections in bursts; the default backlog of 5
    # makes the kernel reset some of them
    request_queue_size = 128

    daemon_threads = True

    def __init__(self, owner: TsaServer, address: tuple[str, int]) -> None:
        self.owner = owner
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)


class _Handler(BaseHTTPRequestHandler):
    server_version = "git-vaultmesh-tsa"
    timeout = 10.0  # drop clients that connect and then send nothing

    def _owner(self) -> TsaServer:
        assert isinstance(self.server, _HTTPServer)
        return self.server.owner

    def handle(self) -> None:
        if self._owner().mode == "down":  # close without reading or answering: a dead or crashing TSA
            return
        super().handle()

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: a test run or a demo should not print a line per request."""

    def _send(self, code: int, ctype: str, body: bytes) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        self._send(405, "text/plain; charset=utf-8", b"POST an application/timestamp-query (RFC 3161)\n")

    def do_POST(self) -> None:
        owner = self._owner()
        if self.headers.get_content_type() != "application/timestamp-query":
            self._send(
                415, "text/plain; charset=utf-8", b"Content-Type must be application/timestamp-query\n"
            )
            return
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            self._send(411, "text/plain; charset=utf-8", b"Content-Length required\n")
            return
        if not 0 <= length <= _MAX_REQUEST_BYTES:
            self._send(413, "text/plain; charset=utf-8", b"request too large\n")
            return
        body = self.rfile.read(length)
        mode = owner.mode
        if mode == "slow" and owner._stopping.wait(owner.slow_delay):
            return  # the server is stopping: drop the connection
        if mode == "garbage":
            self._send(200, "application/timestamp-reply", b"\xff" + secrets.token_bytes(63))
        elif mode == "html":
            self._send(200, "text/html; charset=utf-8", _HTML_PAGE)
        elif mode == "reject":
            self._send(200, "application/timestamp-reply", _status_only(2, "rejected (test mode 'reject')"))
        else:
            self._send(200, "application/timestamp-reply", owner._sign(body))


class TsaServer:
    """An RFC 3161 server on a loopback port, in a daemon thread; a context manager that always stops.

    Without `identity` a fresh EC identity is made (see `identity` for its CA). `mode` makes it misbehave for
    tests of the client: "reject" (status rejection), "garbage" (non-DER bytes
    labelled as a reply), "html" (a login page), "slow" (answers after `slow_delay` s), "down" (closes every
    connection unanswered).
    """

    def __init__(
        self,
        identity: TsaIdentity | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        max_lifetime: float = 600.0,
        mode: str = "ok",
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
        if max_lifetime < 0:
            raise ValueError("max_lifetime must be >= 0 (0 = no limit)")
        self.host = _loopback_host(host)
        self.port = port
        self.mode = mode
        self.max_lifetime = max_lifetime
        self.slow_delay = 30.0
        self.identity = identity if identity is not None else make_identity()
        self._signer = _Signer(self.identity)
        self._serials = _SerialCounter()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._timer: threading.Timer | None = None

    @property
    def url(self) -> str:
        """http://HOST:PORT/tsr of the running server."""
        if self._httpd is None:
            raise RuntimeError("the TSA server is not started")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/tsr"

    def _sign(self, request_der: bytes) -> bytes:
        return self._signer.sign(
            request_der, gen_time=None, serial=self._serials.take(), status_override=None, nonce_override=None
        )

    def start(self) -> TsaServer:
        """Bind and serve in a daemon thread; a timer stops the server after max_lifetime seconds."""
        with self._lock:
            if self._httpd is not None:
                return self
            self._stopping.clear()
            httpd = _HTTPServer(self, (self.host, self.port))
            self.port = int(httpd.server_address[1])
            self._httpd = httpd
            self._thread = threading.Thread(
                target=httpd.serve_forever,
                kwargs={"poll_interval": 0.1},
                name=f"vaultmesh-tsa-{self.port}",
                daemon=True,
            )
            self._thread.start()
            if self.max_lifetime > 0:
                self._timer = threading.Timer(self.max_lifetime, self.stop)
                self._timer.daemon = True
                self._timer.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket; idempotent, callable from any thread but the server's own."""
        self._stopping.set()  # wakes "slow" handlers first
        with self._lock:
            httpd, thread, timer = self._httpd, self._thread, self._timer
            self._httpd = self._thread = self._timer = None
        if timer is not None and timer is not threading.current_thread():
            timer.cancel()
        if httpd is not None:
            httpd.shutdown()
            httpd.server_close()
        if thread is not None:
            thread.join(timeout=5)

    def __enter__(self) -> TsaServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def serve_forever(self) -> None:
        """Serve in the foreground until max_lifetime passes, SIGTERM, or Ctrl-C; then stop cleanly.

        To print the URL first, call start() before this (start is idempotent).
        """
        self.start()
        previous: Any = None
        in_main = threading.current_thread() is threading.main_thread()
        if in_main:

            def _on_term(signum: int, frame: FrameType | None) -> None:
                self._stopping.set()

            previous = signal.signal(signal.SIGTERM, _on_term)
        try:
            while not self._stopping.wait(0.5):
                pass
        except KeyboardInterrupt:
            pass
        finally:
            self.stop()
            if in_main:
                signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)
