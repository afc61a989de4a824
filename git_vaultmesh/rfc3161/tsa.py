"""RFC 3161 time-stamp client and strict token verifier.

Why hand-written: `cryptography` has no CMS verification API, and the RFC 3161 libraries we measured either
skip the signer chain and EKU or fail on EC keys. Why on our own DER reader (der.py) rather than asn1crypto
and cryptography's X.509 module: `record` verifies a fresh token before appending it, within a 50 ms budget,
and importing those two costs ~55 ms of CPU; der.py and cryptography's public-key primitives cost ~10 ms.
The structures are read field by field after RFC 3161 (TSP), RFC 5652 (CMS SignedData), RFC 5280 (X.509) and
RFC 5816/2634 (ESSCertID(v2)); every signature is checked with `cryptography`. Tests hold this verifier to
the previous asn1crypto/cryptography.x509 one and to `openssl ts -verify`, both ways.

Verification order (the first failure is the one reported): structure and status, then the CMS signature over
the signed attributes (so a forged field reports SIGNATURE, not a misleading IMPRINT), then imprint, nonce,
chain to the policy CA, EKU, SPKI pin and validity at genTime.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import os
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, NamedTuple, NoReturn

from ..errors import VaultMeshError
from . import der
from .der import (
    BIT_STRING,
    BOOLEAN,
    GENERALIZED_TIME,
    INTEGER,
    OCTET_STRING,
    OID,
    SEQUENCE,
    SET,
    DerError,
    Node,
    ctx,
)

if TYPE_CHECKING:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

    _PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey | None

# cryptography is imported where a signature is checked, not here: requesting and parsing a token need only
# der.py, so `record` can fetch a token while cryptography (~25 ms of imports) loads in the thread that will
# verify it (timestamping.stamp_entries).

__all__ = [
    "ParsedToken",
    "TokenInfo",
    "TsaTrust",
    "build_request",
    "parse_response",
    "request_token",
    "spki_pin_of",
    "token_gen_time",
    "verify_token",
]

# --- object identifiers ---------------------------------------------------------------------------------------
OID_SHA256 = "2.16.840.1.101.3.4.2.1"
OID_SHA384 = "2.16.840.1.101.3.4.2.2"
OID_SHA512 = "2.16.840.1.101.3.4.2.3"
OID_SHA1 = "1.3.14.3.2.26"
OID_SIGNED_DATA = "1.2.840.113549.1.7.2"
OID_TST_INFO = "1.2.840.113549.1.9.16.1.4"
OID_ATTR_CONTENT_TYPE = "1.2.840.113549.1.9.3"
OID_ATTR_MESSAGE_DIGEST = "1.2.840.113549.1.9.4"
OID_ATTR_SIGNING_CERT = "1.2.840.113549.1.9.16.2.12"
OID_ATTR_SIGNING_CERT_V2 = "1.2.840.113549.1.9.16.2.47"
OID_RSA_ENCRYPTION = "1.2.840.113549.1.1.1"
OID_RSASSA_PSS = "1.2.840.113549.1.1.10"
OID_MGF1 = "1.2.840.113549.1.1.8"
OID_EC_PUBLIC_KEY = "1.2.840.10045.2.1"
OID_TIME_STAMPING = "1.3.6.1.5.5.7.3.8"
OID_EXT_SKI = "2.5.29.14"
OID_EXT_KEY_USAGE = "2.5.29.15"
OID_EXT_BASIC_CONSTRAINTS = "2.5.29.19"
OID_EXT_EKU = "2.5.29.37"

# Digests accepted for the CMS signature, ESSCertIDv2 and messageDigest: SHA-1 and weaker are refused.
_DIGESTS: dict[str, str] = {OID_SHA256: "sha256", OID_SHA384: "sha384", OID_SHA512: "sha512"}  # hashlib names
# Signature algorithm OIDs that name their digest; in a SignerInfo it must equal the digestAlgorithm.
_RSA_PKCS1_WITH: dict[str, str] = {
    "1.2.840.113549.1.1.11": OID_SHA256,
    "1.2.840.113549.1.1.12": OID_SHA384,
    "1.2.840.113549.1.1.13": OID_SHA512,
}
_ECDSA_WITH: dict[str, str] = {
    "1.2.840.10045.4.3.2": OID_SHA256,
    "1.2.840.10045.4.3.3": OID_SHA384,
    "1.2.840.10045.4.3.4": OID_SHA512,
}
_EC_CURVES = {"1.2.840.10045.3.1.7": "SECP256R1", "1.3.132.0.34": "SECP384R1", "1.3.132.0.35": "SECP521R1"}
_MIN_RSA_BITS = 2048
_DER_NULL = b"\x05\x00"
_MAX_CHAIN_DEPTH = 4  # intermediates between the signer and the policy CA
_PKI_STATUS = {
    0: "granted",
    1: "grantedWithMods",
    2: "rejection",
    3: "waiting",
    4: "revocationWarning",
    5: "revocationNotification",
}
_FAIL_INFO = {0: "bad_alg", 2: "bad_request", 5: "bad_data_format", 14: "time_not_available",
              15: "unaccepted_policy", 16: "unaccepted_extension", 17: "add_info_not_available",
              25: "system_failure"}
_KEY_USAGE = ("digitalSignature", "nonRepudiation", "keyEncipherment", "dataEncipherment", "keyAgreement",
              "keyCertSign", "cRLSign", "encipherOnly", "decipherOnly")
# RFC 4514 short names, as `openssl` and cryptography print them.
_DN_NAMES = {"2.5.4.3": "CN", "2.5.4.7": "L", "2.5.4.8": "ST", "2.5.4.10": "O", "2.5.4.11": "OU", "2.5.4.6": "C",
             "2.5.4.9": "STREET", "0.9.2342.19200300.100.1.25": "DC", "0.9.2342.19200300.100.1.1": "UID"}
_PEM_CERT = re.compile(r"-----BEGIN CERTIFICATE-----([A-Za-z0-9+/=\s]*?)-----END CERTIFICATE-----")

def _fail(code: str, cause: str, hint: str | None = None) -> NoReturn:
    raise VaultMeshError(code, cause, hint)  # no hint: the registry's


# --- public data types --------------------------------------------------------------------------------------


# NamedTuples, not dataclasses: each frozen dataclass costs ~1 ms to create at import, inside record's budget.
class TsaTrust(NamedTuple):
    """What a policy says about one TSA: the CA its signer must chain to, and optionally a key pin."""

    name: str
    ca_cert_pem: str
    spki_pin: str | None = None  # base64(SHA-256(DER SubjectPublicKeyInfo of the signer certificate))


class TokenInfo(NamedTuple):
    """The facts of a verified token; the caller judges later expiry (archive timestamps) from these."""

    gen_time: datetime
    serial: int
    policy_oid: str
    nonce: int | None
    signer_not_before: datetime
    signer_not_after: datetime
    signer_subject: str
    spki_pin: str


@dataclass(frozen=True)
class ParsedToken:
    """A structurally parsed, granted TimeStampResp. Nothing in it is trusted yet: see verify_token."""

    status: int
    gen_time: datetime
    serial: int
    policy_oid: str
    nonce: int | None
    imprint_alg_oid: str
    imprint_alg_params: bytes | None  # DER of the AlgorithmIdentifier parameters, None when absent
    imprint: bytes
    econtent: bytes  # the DER TSTInfo exactly as signed
    certificates: tuple[bytes, ...]  # DER of every X.509 certificate carried in the token
    signer_count: int
    _signer_infos: tuple[Node, ...] = field(repr=False, compare=False)  # SignerInfo elements, unparsed


# --- DER shape: tell empty, non-DER and truncated input apart -----------------------------------------------


def _check_der_shape(data: bytes) -> None:
    """Walk every constructed element so empty, non-DER and truncated tokens each get their own code:
    a user needs to know whether a transfer was cut short or the TSA URL served a web page."""
    if not data:
        _fail("VM-TSA-EMPTY", "the timestamp token is empty (0 bytes); a DER TimeStampResp was required")
    if data[0] != SEQUENCE:
        _fail(
            "VM-TSA-NOT-DER",
            f"the timestamp token is {_describe_non_der(data)}; a DER TimeStampResp "
            "(starting with a SEQUENCE, byte 0x30) was required",
        )
    try:
        _tag, outer_start, outer_end = der.header(data, 0, len(data))
    except DerError as exc:
        if exc.truncated:
            _fail(
                "VM-TSA-TRUNCATED",
                f"the timestamp token is truncated DER ({len(data)} bytes): {exc.detail}; "
                "a complete DER TimeStampResp was required",
            )
        _fail("VM-TSA-NOT-DER", f"the timestamp token is not DER: {exc.detail}")
    if outer_end != len(data):
        _fail(
            "VM-TSA-NOT-DER",
            f"the timestamp token has {len(data) - outer_end} bytes of trailing data after "
            f"its {outer_end}-byte DER structure; exactly one DER TimeStampResp was required",
        )
    stack = [(outer_start, outer_end)]
    try:
        while stack:
            pos, end = stack.pop()
            while pos < end:
                tag, cstart, cend = der.header(data, pos, end)
                if tag & 0x20:
                    stack.append((cstart, cend))
                pos = cend
    except DerError as exc:  # inside a complete outer element: inconsistent, not cut short
        _fail("VM-TSA-NOT-DER", f"the timestamp token is malformed DER: {exc.detail}")


def _describe_non_der(data: bytes) -> str:
    """Name what was found instead of DER, with a short excerpt, for the error cause."""
    head = data[:400].lstrip()
    text = head[:60].decode("latin-1")
    excerpt = "".join(ch if ch.isprintable() else " " for ch in text).strip()
    if head[:1] == b"<":
        return f"an HTML or XML page ({excerpt!r}…)"
    if head.startswith(b"-----BEGIN"):
        return f"PEM text ({excerpt!r}…)"
    printable = sum(1 for b in head if 32 <= b < 127 or b in (9, 10, 13))
    if head and printable == len(head):
        if head.startswith(b"MII"):
            return f"base64 text ({excerpt[:20]!r}…): decode it to DER first"
        return f"text ({excerpt!r}…)"
    return f"binary data that is not DER (first bytes {data[:8].hex()})"


# --- reading the response -----------------------------------------------------------------------------------


def _alg(node: Node, what: str) -> tuple[str, Node | None]:
    """AlgorithmIdentifier: (OID, parameters element or None when absent)."""
    r = node.reader(what)
    oid = r.take(OID, "algorithm").oid(f"{what}'s algorithm")
    params = r.any("parameters") if r.peek() is not None else None
    r.done()
    return oid, params


def _not_tsr(detail: str) -> NoReturn:
    _fail(
        "VM-TSA-NOT-DER",
        f"the timestamp token is well-formed DER but not an RFC 3161 TimeStampResp: {detail}",
    )


def parse_response(tsr: bytes) -> ParsedToken:
    """Parse a TimeStampResp: shape, status and TSTInfo only; nothing is trusted here."""
    _check_der_shape(tsr)
    try:
        root = der.parse(tsr)
        resp = root.reader("the TimeStampResp")
        if resp.peek() == OID:
            _not_tsr("it is a bare TimeStampToken (CMS ContentInfo); store the TSA's full TimeStampResp")
        status_info = resp.take(SEQUENCE, "status")
        token = resp.opt(SEQUENCE)
        resp.done()
        si = status_info.reader("the PKIStatusInfo")
        status = si.take(INTEGER, "status").integer("the PKI status")
        texts = si.opt(SEQUENCE)
        fail_info = si.opt(BIT_STRING)
        si.done()
    except DerError as exc:
        _not_tsr(exc.detail)
    if status not in (0, 1):
        _fail(
            "VM-TSA-STATUS",
            f"the TSA answered status {_PKI_STATUS.get(status, 'unknown')} ({status})"
            f"{_status_detail(texts, fail_info)}; granted (0) or grantedWithMods (1) was required",
        )
    if token is None:
        _fail(
            "VM-TSA-STATUS",
            f"the TSA answered status {_PKI_STATUS[status]} but sent no timeStampToken; "
            "a granted response must carry one",
        )
    try:
        return _parse_token(token, status)
    except DerError as exc:
        _not_tsr(exc.detail)


def _parse_token(token: Node, status: int) -> ParsedToken:
    ci = token.reader("the timeStampToken (ContentInfo)")
    content_type = ci.take(OID, "contentType").oid()
    if content_type != OID_SIGNED_DATA:
        _not_tsr(f"its token has content type {content_type}, signedData ({OID_SIGNED_DATA}) was required")
    signed = ci.take(ctx(0), "content").only("the ContentInfo content")
    ci.done()
    sd = signed.reader("the SignedData")
    sd.take(INTEGER, "version").integer("the SignedData version")
    sd.take(SET, "digestAlgorithms").children()
    encap = sd.take(SEQUENCE, "encapContentInfo").reader("the encapContentInfo")
    econtent_type = encap.take(OID, "eContentType").oid()
    if econtent_type != OID_TST_INFO:
        _not_tsr(f"the signed content type is {econtent_type}, id-ct-TSTInfo ({OID_TST_INFO}) was required")
    wrapped = encap.opt(ctx(0))
    encap.done()
    if wrapped is None:
        _not_tsr("the SignedData carries no encapsulated TSTInfo")
    econtent = wrapped.only("the eContent").octets("the eContent")
    cert_set = sd.opt(ctx(0))
    sd.opt(ctx(1))  # crls: not used (validity is judged at genTime from the chain alone)
    signer_infos = tuple(sd.take(SET, "signerInfos").children())
    sd.done()
    certs: list[bytes] = []
    for choice in cert_set.children() if cert_set is not None else []:
        if choice.tag == SEQUENCE:
            certs.append(choice.raw)
        elif choice.tag not in (ctx(0), ctx(1), ctx(2), ctx(3)):  # other CertificateChoices are skipped
            raise DerError(f"the certificates hold a {der.tag_name(choice.tag)}, which is no CertificateChoices")

    tst = der.parse(econtent).reader("the TSTInfo") if econtent else _not_tsr("the TSTInfo is empty")
    version = tst.take(INTEGER, "version").integer()
    if version != 1:
        _not_tsr(f"its TSTInfo has version {version}; version 1 was required")
    policy_oid = tst.take(OID, "policy").oid()
    mi = tst.take(SEQUENCE, "messageImprint").reader("the messageImprint")
    alg_oid, alg_params = _alg(mi.take(SEQUENCE, "hashAlgorithm"), "the imprint's hashAlgorithm")
    if alg_params is not None:
        alg_params.null("the imprint hashAlgorithm's parameters (absent or NULL)")
    imprint = mi.take(OCTET_STRING, "hashedMessage").octets()
    mi.done()
    serial = tst.take(INTEGER, "serialNumber").integer()
    gen_time = tst.take(GENERALIZED_TIME, "genTime").time("genTime")
    tst.opt(SEQUENCE)  # accuracy
    ordering = tst.opt(BOOLEAN)
    if ordering is not None and not ordering.boolean("ordering"):
        raise DerError("the TSTInfo encodes its DEFAULT ordering FALSE explicitly (not DER)")
    nonce = tst.opt(INTEGER)
    tst.opt(ctx(0))  # tsa name
    tst.opt(ctx(1))  # extensions
    tst.done()
    return ParsedToken(
        status=status,
        gen_time=gen_time,
        serial=serial,
        policy_oid=policy_oid,
        nonce=None if nonce is None else nonce.integer("the nonce"),
        imprint_alg_oid=alg_oid,
        imprint_alg_params=None if alg_params is None else alg_params.raw,
        imprint=imprint,
        econtent=econtent,
        certificates=tuple(certs),
        signer_count=len(signer_infos),
        _signer_infos=signer_infos,
    )


def _status_detail(texts: Node | None, fail_info: Node | None) -> str:
    parts: list[str] = []
    try:
        if fail_info is not None:
            on = _bits_on(fail_info.bits("failInfo")[0])
            parts.append("failInfo " + ", ".join(sorted(_FAIL_INFO.get(i, f"bit{i}") for i in on)))
        if texts is not None:
            joined = "; ".join(t.string("statusString") for t in texts.children())
            parts.append("text " + repr(joined)[:200])
    except DerError:
        parts.append("unparsable failInfo/statusString")
    return f" ({'; '.join(parts)})" if parts else ""


def _bits_on(octets: bytes) -> list[int]:
    """The numbers of the named bits set in a BIT STRING (bit 0 is the first octet's high bit)."""
    return [i for i in range(len(octets) * 8) if octets[i // 8] & (0x80 >> (i % 8))]


def token_gen_time(tsr: bytes) -> datetime:
    """genTime of a token without verifying it (for listings); raises like parse_response."""
    return parse_response(tsr).gen_time


# --- requests -----------------------------------------------------------------------------------------------

_SHA256_ALG = der.encode(SEQUENCE, der.encode_oid(OID_SHA256) + _DER_NULL)


def build_request(data: bytes, nonce: int | None = None) -> tuple[bytes, int]:
    """DER TimeStampReq v1 over SHA-256(data) with a random 64-bit nonce and certReq TRUE.

    certReq makes the TSA include its certificate, so a token verifies offline from the policy's CA alone.
    """
    if nonce is None:
        nonce = int.from_bytes(os.urandom(8), "big")  # 64 random bits (os.urandom: secrets costs an import)
    elif nonce < 0:
        raise ValueError("the nonce must be a non-negative integer")
    imprint = der.encode(SEQUENCE, _SHA256_ALG + der.encode(OCTET_STRING, hashlib.sha256(data).digest()))
    body = der.encode_int(1) + imprint + der.encode_int(nonce) + der.encode(BOOLEAN, b"\xff")
    return der.encode(SEQUENCE, body), nonce


def request_token(url: str, data: bytes, timeout: float = 10.0) -> tuple[bytes, int]:
    """POST a fresh request for data to url; return (TimeStampResp DER, nonce sent).

    Checks status, imprint and nonce at once (a proxy or TSA answering another request is caught here, while
    the request can still be retried), but not the trust chain: that is verify_token's job.
    """
    from .client import post

    request_der, nonce = build_request(data)
    ctype, body = post(url, request_der, timeout)
    if ctype != "application/timestamp-reply":
        what = f": {_describe_non_der(body)}" if body else ""
        _fail(
            "VM-TSA-UNREACHABLE",
            f"the TSA at {url} answered Content-Type {ctype or '(none)'}{what}; application/timestamp-reply "
            "was required",
            "the URL is probably a web page, a login portal or a proxy error page: check the TSA URL",
        )
    parsed = parse_response(body)
    _check_imprint(parsed, data)
    _check_nonce(parsed, nonce)
    return body, nonce


# --- checks -------------------------------------------------------------------------------------------------


def _check_imprint(parsed: ParsedToken, data: bytes) -> None:
    if parsed.imprint_alg_oid != OID_SHA256:  # parse_response admits only absent or NULL parameters
        _fail(
            "VM-TSA-IMPRINT",
            f"the token's message imprint uses hash algorithm {parsed.imprint_alg_oid}; SHA-256 ({OID_SHA256}) "
            "was required",
        )
    want = hashlib.sha256(data).digest()
    if parsed.imprint != want:
        _fail(
            "VM-TSA-IMPRINT",
            f"the token's imprint is {parsed.imprint.hex()}, SHA-256 of the timestamped data "
            f"is {want.hex()}: the token was issued for other data",
        )


def _check_nonce(parsed: ParsedToken, nonce: int) -> None:
    if parsed.nonce != nonce:
        found = "no nonce" if parsed.nonce is None else f"nonce {parsed.nonce}"
        _fail("VM-TSA-NONCE", f"the token carries {found}; nonce {nonce} (the one sent) was required")


# --- X.509 (RFC 5280): what the checks need, parsed up front ------------------------------------------------

_Rdns = tuple[tuple[tuple[str, Node], ...], ...]  # RDNSequence: per RDN, its (attribute type, value) pairs


def _name(node: Node, what: str) -> _Rdns:
    if node.tag != SEQUENCE:
        raise DerError(f"{what} is not a Name (SEQUENCE)")
    rdns = []
    for rdn in node.children():
        if rdn.tag != SET:
            raise DerError(f"{what} holds a {der.tag_name(rdn.tag)} where a RelativeDistinguishedName SET was required")
        pairs = []
        for atv in rdn.children():
            r = atv.reader(f"an attribute of {what}")
            pairs.append((r.take(OID, "type").oid(), r.any("value")))
            r.done()
        if not pairs:
            raise DerError(f"{what} holds an empty RelativeDistinguishedName")
        rdns.append(tuple(pairs))
    return tuple(rdns)


def _norm(value: Node) -> object:
    """RFC 5280 §7.1 comparison form of an attribute value: strings case-folded with spaces collapsed."""
    try:
        return " ".join(value.string().casefold().split())
    except DerError:
        return value.raw


def _same_name(a: Node, b: Node) -> bool:
    """X.500 name equality: identical DER (the usual case, cheap), else RFC 5280 normalized comparison."""
    if a.raw == b.raw:
        return True
    try:
        ra, rb = _name(a, "a name"), _name(b, "a name")
    except DerError:
        return False
    return len(ra) == len(rb) and all(
        sorted((t, repr(_norm(v))) for t, v in x) == sorted((t, repr(_norm(v))) for t, v in y)
        for x, y in zip(ra, rb)
    )


def _rfc4514(rdns: _Rdns) -> str:
    def value(v: Node) -> str:
        try:
            s = v.string()
        except DerError:
            return "#" + v.raw.hex()
        if not s:
            return ""
        for ch in "\\\"+,;<>":
            s = s.replace(ch, "\\" + ch)
        s = s.replace("\0", "\\00")
        if s[0] in "# ":
            s = "\\" + s
        if s[-1] == " ":
            s = s[:-1] + "\\ "
        return s

    return ",".join("+".join(f"{_DN_NAMES.get(t, t)}={value(v)}" for t, v in rdn) for rdn in reversed(rdns))


class _Cert:
    """One X.509 certificate: every field the checks use, parsed up front so a malformed certificate fails
    at load (DerError), never mid-check."""

    def __init__(self, data: bytes) -> None:
        self.der = data
        cert = der.parse(data).reader("the certificate")
        tbs_node = cert.take(SEQUENCE, "tbsCertificate")
        sig_node = cert.take(SEQUENCE, "signatureAlgorithm")
        self.sig_alg_raw = sig_node.raw
        self.sig_alg = _alg(sig_node, "the certificate's signatureAlgorithm")
        sig_bits, _unused = cert.take(BIT_STRING, "signatureValue").bits("the certificate signature")
        cert.done()
        self.tbs = tbs_node.raw
        self.signature = sig_bits
        tbs = tbs_node.reader("the tbsCertificate")
        version = 0
        explicit_version = tbs.opt(ctx(0))
        if explicit_version is not None:
            version = explicit_version.only("the version").integer("the certificate version")
            if version not in (1, 2):
                raise DerError(f"certificate version {version} (v1 must be omitted, v2/v3 are 1/2)")
        self.serial = tbs.take(INTEGER, "serialNumber").integer("the serial number")
        if tbs.take(SEQUENCE, "signature").raw != self.sig_alg_raw:
            raise DerError("the certificate's inner and outer signature algorithms differ (RFC 5280 4.1.1.2)")
        self.issuer = tbs.take(SEQUENCE, "issuer")
        validity = tbs.take(SEQUENCE, "validity").reader("the validity")
        self.not_before = validity.any("notBefore").time("notBefore")
        self.not_after = validity.any("notAfter").time("notAfter")
        validity.done()
        subject = tbs.take(SEQUENCE, "subject")
        self.subject_rdns = _name(subject, "the subject")
        _name(self.issuer, "the issuer")
        self.subject_node = subject
        spki = tbs.take(SEQUENCE, "subjectPublicKeyInfo")
        self.spki_der = spki.raw
        sr = spki.reader("the subjectPublicKeyInfo")
        self.key_alg = _alg(sr.take(SEQUENCE, "algorithm"), "the public key algorithm")
        self.key_bits, unused = sr.take(BIT_STRING, "subjectPublicKey").bits("the public key")
        sr.done()
        if unused:
            raise DerError("the public key BIT STRING has unused bits")
        tbs.opt(ctx(1, constructed=False))  # issuerUniqueID
        tbs.opt(ctx(2, constructed=False))  # subjectUniqueID
        self.extensions: dict[str, tuple[bool, bytes]] = {}
        exts = tbs.opt(ctx(3))
        tbs.done()
        if exts is not None:
            if version != 2:
                raise DerError("extensions in a certificate that is not v3")
            for ext in exts.only("the extensions").children():
                r = ext.reader("an extension")
                oid = r.take(OID, "extnID").oid()
                crit = r.opt(BOOLEAN)
                if crit is not None and not crit.boolean("critical"):
                    raise DerError(f"extension {oid} encodes its DEFAULT critical FALSE explicitly (not DER)")
                value = r.take(OCTET_STRING, "extnValue").octets()
                r.done()
                if oid in self.extensions:
                    raise DerError(f"extension {oid} appears twice")
                self.extensions[oid] = (crit is not None, value)
        self.ski = self._ski()
        self._key: _PublicKey = None
        self._key_loaded = False
        self.ca, self.key_usage, self.eku = self._basic_constraints(), self._key_usage(), self._eku()

    def _ext(self, oid: str) -> Node | None:
        """The value of extension `oid` (the DER inside its extnValue), None when absent."""
        ext = self.extensions.get(oid)
        return None if ext is None else der.parse(ext[1])

    def _ski(self) -> bytes | None:
        node = self._ext(OID_EXT_SKI)
        return None if node is None else node.octets("the subjectKeyIdentifier")

    def _basic_constraints(self) -> bool:
        node = self._ext(OID_EXT_BASIC_CONSTRAINTS)
        if node is None:
            return False
        r = node.reader("basicConstraints")
        ca = r.opt(BOOLEAN)
        if ca is not None and not ca.boolean("cA"):
            raise DerError("basicConstraints encodes its DEFAULT cA FALSE explicitly (not DER)")
        path_len = r.opt(INTEGER)
        if path_len is not None and path_len.integer("pathLenConstraint") < 0:
            raise DerError("a negative pathLenConstraint")
        r.done()
        return ca is not None

    def _key_usage(self) -> frozenset[str] | None:
        node = self._ext(OID_EXT_KEY_USAGE)
        if node is None:
            return None
        return frozenset(_KEY_USAGE[i] for i in _bits_on(node.bits("keyUsage")[0]) if i < len(_KEY_USAGE))

    def _eku(self) -> tuple[bool, list[str]] | None:
        node = self._ext(OID_EXT_EKU)
        if node is None:
            return None
        usages = [kid.oid("an extendedKeyUsage purpose") for kid in node.reader("extendedKeyUsage").rest()]
        if not usages:
            raise DerError("extendedKeyUsage is empty; a SEQUENCE OF at least one OBJECT IDENTIFIER is required")
        return self.extensions[OID_EXT_EKU][0], usages

    @property
    def subject(self) -> str:
        return _rfc4514(self.subject_rdns)

    @property
    def issuer_text(self) -> str:
        return _rfc4514(_name(self.issuer, "the issuer"))

    def is_ca(self) -> bool:
        return self.ca and (self.key_usage is None or "keyCertSign" in self.key_usage)

    def public_key(self) -> _PublicKey:
        """The subject key (RSA or EC on P-256/384/521), or None for any other kind."""
        if not self._key_loaded:
            self._key, self._key_loaded = self._load_key(), True
        return self._key

    def _load_key(self) -> _PublicKey:
        from cryptography.hazmat.primitives.asymmetric import ec, rsa

        oid, params = self.key_alg
        try:
            if oid == OID_RSA_ENCRYPTION and (params is None or params.raw == _DER_NULL):
                r = der.parse(self.key_bits).reader("the RSA public key")
                n = r.take(INTEGER, "modulus").integer()
                e = r.take(INTEGER, "publicExponent").integer()
                r.done()
                return rsa.RSAPublicNumbers(e, n).public_key()
            if oid == OID_EC_PUBLIC_KEY and params is not None and params.tag == OID:
                curve = _EC_CURVES.get(params.oid())
                if curve is not None:
                    return ec.EllipticCurvePublicKey.from_encoded_point(getattr(ec, curve)(), self.key_bits)
        except (DerError, ValueError):
            return None
        return None


def _load_cert(data: bytes) -> _Cert:
    try:
        return _Cert(data)
    except DerError as exc:
        raise ValueError(exc.detail) from exc


@functools.lru_cache(maxsize=64)
def _load_trust_ca(trust: TsaTrust) -> _Cert:
    """The policy CA of a TSA, parsed once per process (verify judges every token of a log against few)."""
    hint = "fix the TSA's CA certificate in the policy (a signed policy change)"
    blocks = _PEM_CERT.findall(trust.ca_cert_pem)
    if not blocks:
        _fail("VM-POLICY-INVALID",
              f"the CA certificate of TSA {trust.name!r} in the policy is not a PEM certificate "
              "(no -----BEGIN CERTIFICATE----- block)", hint)
    if len(blocks) != 1:
        _fail(
            "VM-POLICY-INVALID",
            f"the CA certificate of TSA {trust.name!r} in the policy holds {len(blocks)} "
            "certificates; exactly one (the CA the TSA signer chains to) was required",
            "keep only the CA certificate in the policy; intermediates travel inside the tokens",
        )
    try:
        return _load_cert(base64.b64decode("".join(blocks[0].split()), validate=True))
    except (ValueError, binascii.Error) as exc:
        _fail("VM-POLICY-INVALID",
              f"the CA certificate of TSA {trust.name!r} in the policy cannot be parsed ({exc})", hint)


def _sid_matches(sid: Node, cert: _Cert) -> bool:
    if sid.tag == SEQUENCE:  # IssuerAndSerialNumber
        r = sid.reader("the IssuerAndSerialNumber")
        issuer = r.take(SEQUENCE, "issuer")
        serial = r.take(INTEGER, "serialNumber").integer()
        r.done()
        return serial == cert.serial and _same_name(issuer, cert.issuer)
    return cert.ski is not None and cert.ski == sid.octets("the subjectKeyIdentifier", ctx(0, constructed=False))


def _describe_sid(sid: Node) -> str:
    try:
        if sid.tag == SEQUENCE:
            r = sid.reader("the IssuerAndSerialNumber")
            issuer = _rfc4514(_name(r.take(SEQUENCE, "issuer"), "the issuer"))
            serial = r.take(INTEGER, "serialNumber").integer()
            r.done()
            return f"issuer {issuer!r}, serial {serial}"
        return f"subjectKeyIdentifier {sid.octets('the sid', ctx(0, constructed=False)).hex()}"
    except DerError as exc:
        return f"an unparsable signer identifier: {exc.detail}"


def _hash(oid: str) -> hashes.HashAlgorithm:
    from cryptography.hazmat.primitives import hashes

    name = _DIGESTS[oid]
    return hashes.SHA256() if name == "sha256" else hashes.SHA384() if name == "sha384" else hashes.SHA512()


def _verify_signature(key: _PublicKey, alg: tuple[str, Node | None], digest_oid: str | None, signature: bytes,
                      signed: bytes, who: str, what: str = "the certificate signature",
                      over: str = "the tbsCertificate") -> None:
    """Check a signature by alg (RSA PKCS#1 v1.5, RSASSA-PSS, ECDSA; SHA-256/384/512) or raise
    VM-TSA-SIGNATURE naming why. digest_oid: the digest a SignerInfo declares (None: the algorithm's own)."""
    sig_oid, params = alg
    named = _RSA_PKCS1_WITH.get(sig_oid) or _ECDSA_WITH.get(sig_oid)
    if digest_oid is not None and named is not None and named != digest_oid:
        _fail("VM-TSA-SIGNATURE", f"the signature algorithm {sig_oid} names another digest than the "
                                  f"SignerInfo's digestAlgorithm {_DIGESTS[digest_oid]}; they must agree")
    digest = named or digest_oid
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric import ec, padding

    try:
        if sig_oid == OID_RSA_ENCRYPTION and digest_oid is not None or sig_oid in _RSA_PKCS1_WITH:
            if params is not None and params.raw != _DER_NULL:
                _fail("VM-TSA-SIGNATURE", f"RSA PKCS#1 v1.5 signature parameters {params.raw.hex()}; NULL or "
                                          "none was required")
            assert digest is not None
            _rsa_key(key).verify(signature, signed, padding.PKCS1v15(), _hash(digest))
        elif sig_oid == OID_RSASSA_PSS:
            pss, digest = _pss_padding(params, digest_oid)
            _rsa_key(key).verify(signature, signed, pss, _hash(digest))
        elif sig_oid in _ECDSA_WITH or sig_oid == OID_EC_PUBLIC_KEY and digest_oid is not None:
            if not isinstance(key, ec.EllipticCurvePublicKey):
                _fail("VM-TSA-SIGNATURE", f"the signature is ECDSA but the signer key is {_key_desc(key)}; an "
                                          "EC key on P-256, P-384 or P-521 was required")
            assert digest is not None
            key.verify(signature, signed, _ecdsa(_hash(digest)))
        else:
            _fail("VM-TSA-SIGNATURE", f"the signature algorithm {sig_oid} is not supported; RSA PKCS#1 v1.5, "
                                      "RSASSA-PSS or ECDSA with SHA-256/384/512 was required")
    except InvalidSignature:
        name = _DIGESTS.get(digest or "", "?")
        _fail("VM-TSA-SIGNATURE", f"{what} ({sig_oid}, {name}) does not verify over {over} with the key of "
                                  f"{who!r}: it was altered")


def _ecdsa(algorithm: hashes.HashAlgorithm) -> ec.ECDSA:
    return _verifying_ecdsa()(algorithm)


@functools.cache
def _verifying_ecdsa() -> type[ec.ECDSA]:
    """ec.ECDSA without its constructor, which imports cryptography's whole OpenSSL backend (~5 ms, ciphers
    included) only to check deterministic-signing support, which verifying never uses. The subclass answers
    the two properties an ECDSA verifier reads."""
    from cryptography.hazmat.primitives.asymmetric import ec

    class Verifying(ec.ECDSA):
        def __init__(self, algorithm: hashes.HashAlgorithm) -> None:  # no super().__init__(): that is the point
            self._chosen = algorithm

        @property
        def algorithm(self) -> hashes.HashAlgorithm:
            return self._chosen

        @property
        def deterministic_signing(self) -> bool:
            return False

    return Verifying


def _rsa_key(key: _PublicKey) -> rsa.RSAPublicKey:
    from cryptography.hazmat.primitives.asymmetric import rsa

    if not isinstance(key, rsa.RSAPublicKey):
        _fail("VM-TSA-SIGNATURE", f"the signature is RSA but the signer key is {_key_desc(key)}")
    if key.key_size < _MIN_RSA_BITS:
        _fail("VM-TSA-SIGNATURE", f"the signer key is RSA-{key.key_size}; at least RSA-{_MIN_RSA_BITS} was required")
    return key


def _key_desc(key: _PublicKey) -> str:
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    if isinstance(key, rsa.RSAPublicKey):
        return f"RSA-{key.key_size}"
    if isinstance(key, ec.EllipticCurvePublicKey):
        return f"EC {key.curve.name}"
    return "of an unsupported kind"


def _pss_padding(params: Node | None, digest_oid: str | None) -> tuple[padding.PSS, str]:
    """RSASSA-PSS parameters (RFC 4055): hash (equal to the digestAlgorithm, if one is declared), MGF1 with an
    accepted hash, trailer 1. Returns (padding, hash OID)."""
    if params is None or params.tag != SEQUENCE:
        _fail("VM-TSA-SIGNATURE", "RSASSA-PSS without parameters means SHA-1; SHA-256/384/512 was required")
    try:
        r = params.reader("the RSASSA-PSS parameters")
        hash_node, mgf_node = r.opt(ctx(0)), r.opt(ctx(1))
        salt_node, trailer_node = r.opt(ctx(2)), r.opt(ctx(3))
        r.done()
        hash_oid = _alg(hash_node.only("hashAlgorithm"), "the PSS hash")[0] if hash_node else OID_SHA1
        mgf_oid, mgf_params = _alg(mgf_node.only("maskGenAlgorithm"), "the PSS MGF") if mgf_node else (OID_MGF1, None)
        mgf_hash = _alg(mgf_params, "the MGF1 hash")[0] if mgf_params is not None else OID_SHA1
        salt = salt_node.only("saltLength").integer() if salt_node else 20
        trailer = trailer_node.only("trailerField").integer() if trailer_node else 1
    except DerError as exc:
        _fail("VM-TSA-SIGNATURE", f"the RSASSA-PSS parameters cannot be parsed ({exc.detail})")
    if hash_oid not in _DIGESTS or (digest_oid is not None and hash_oid != digest_oid):
        _fail("VM-TSA-SIGNATURE", f"the RSASSA-PSS hash {hash_oid} differs from the digestAlgorithm {digest_oid} "
                                  "or is not SHA-256/384/512")
    if mgf_oid != OID_MGF1:
        _fail("VM-TSA-SIGNATURE", f"the RSASSA-PSS mask generation function is {mgf_oid}, MGF1 was required")
    if mgf_hash not in _DIGESTS:
        _fail("VM-TSA-SIGNATURE", f"the RSASSA-PSS MGF1 hash is {mgf_hash}; SHA-256/384/512 was required")
    if trailer != 1:
        _fail("VM-TSA-SIGNATURE", "the RSASSA-PSS trailer field is not 1 (0xBC)")
    if salt < 0:
        _fail("VM-TSA-SIGNATURE", f"the RSASSA-PSS salt length {salt} is negative")
    from cryptography.hazmat.primitives.asymmetric import padding

    return padding.PSS(mgf=padding.MGF1(_hash(mgf_hash)), salt_length=salt), hash_oid


def _signed_attributes(attrs: Node | None) -> tuple[bytes, dict[str, list[Node]]]:
    """Return (bytes the signature covers, attribute values by type OID).

    RFC 5652 section 5.4: the signature covers the DER of the signedAttrs with the EXPLICIT SET OF tag (0x31),
    not the [0] IMPLICIT tag they carry inside SignerInfo. We re-tag the received bytes rather than re-encode
    them, so what is verified is exactly what was sent.
    """
    items = attrs.children() if attrs is not None else []
    if attrs is None or not items:
        _fail(
            "VM-TSA-SIGNATURE",
            "the SignerInfo has no signed attributes; RFC 3161 tokens require them "
            "(content-type, messageDigest, signingCertificate)",
        )
    by_type: dict[str, list[Node]] = {}
    for attr in items:
        r = attr.reader("a signed attribute")
        oid = r.take(OID, "attrType").oid()
        values = r.take(SET, "attrValues").children()
        r.done()
        if oid in by_type:
            _fail("VM-TSA-SIGNATURE", f"the signed attribute {oid} appears twice; each must appear once")
        by_type[oid] = values
    return b"\x31" + attrs.raw[1:], by_type


def _single(by_type: dict[str, list[Node]], oid: str, name: str) -> Node:
    values = by_type.get(oid)
    if values is None:
        _fail("VM-TSA-SIGNATURE", f"the signed attribute {name} ({oid}) is absent; it is required")
    if len(values) != 1:
        _fail(
            "VM-TSA-SIGNATURE",
            f"the signed attribute {name} has {len(values)} values; exactly one was required",
        )
    return values[0]


def _check_ess(by_type: dict[str, list[Node]], cert: _Cert) -> None:
    """signingCertificate(V2) (RFC 2634/5035, required by RFC 3161 2.4.1) must name the signer certificate.

    It binds the signer certificate into the signed data, so the certificate cannot be swapped for another
    one with the same key.
    """
    found = False
    for oid, v2 in ((OID_ATTR_SIGNING_CERT_V2, True), (OID_ATTR_SIGNING_CERT, False)):
        if oid not in by_type:
            continue
        found = True
        name = "signingCertificateV2" if v2 else "signingCertificate"
        value = _single(by_type, oid, name).reader(f"the {name} attribute")
        ids = value.take(SEQUENCE, "certs").children()
        value.opt(SEQUENCE)  # policies
        value.done()
        if not ids:
            _fail("VM-TSA-SIGNATURE", f"the {name} attribute lists no certificate")
        first = ids[0].reader("the first ESSCertID")  # RFC 5035: the first one identifies the signing certificate
        hash_oid = OID_SHA1
        if v2:
            hash_alg = first.opt(SEQUENCE)  # DEFAULT sha256
            hash_oid = _alg(hash_alg, "the ESSCertIDv2 hashAlgorithm")[0] if hash_alg is not None else OID_SHA256
            if hash_oid not in _DIGESTS:
                _fail("VM-TSA-SIGNATURE",
                      f"the ESSCertIDv2 hash algorithm is {hash_oid}; SHA-256/384/512 was required")
        want = hashlib.new(_DIGESTS[hash_oid] if v2 else "sha1", cert.der).digest()
        got = first.take(OCTET_STRING, "certHash").octets()
        if got != want:
            _fail(
                "VM-TSA-SIGNATURE",
                f"the {name} attribute names a certificate with hash {got.hex()}, the signer "
                f"certificate's hash is {want.hex()}",
            )
        issuer_serial = first.opt(SEQUENCE)
        first.done()
        if issuer_serial is not None:
            r = issuer_serial.reader("the issuerSerial")
            names = r.take(SEQUENCE, "issuer").children()
            serial = r.take(INTEGER, "serialNumber").integer()
            r.opt(BIT_STRING)  # issuerUID
            r.done()
            ok = serial == cert.serial and any(
                gn.tag == ctx(4) and _same_name(gn.only("a directoryName"), cert.issuer) for gn in names
            )
            if not ok:
                _fail(
                    "VM-TSA-SIGNATURE",
                    f"the {name} attribute's issuerSerial does not name the signer "
                    "certificate's issuer and serial number",
                )
    if not found:
        _fail(
            "VM-TSA-SIGNATURE",
            "the signed attributes carry neither signingCertificate nor "
            "signingCertificateV2; RFC 3161 section 2.4.1 requires one",
        )


def _issued_by(child: _Cert, issuer: _Cert) -> bool:
    """Is child's signature made by issuer's key (and does child name issuer as its issuer)?"""
    if not _same_name(child.issuer, issuer.subject_node):
        return False
    try:
        _verify_signature(issuer.public_key(), child.sig_alg, None, child.signature, child.tbs, issuer.subject)
    except VaultMeshError:
        return False
    return True


def _chain(signer: _Cert, ca: _Cert, pool: list[_Cert], trust: TsaTrust) -> list[_Cert]:
    """Path signer -> [intermediates from the token] -> policy CA, each link's signature checked."""
    if signer.der == ca.der:  # the policy pins a self-signed TSA certificate itself
        if _issued_by(signer, ca):
            return [signer]
    path = [signer]
    current = signer
    for _ in range(_MAX_CHAIN_DEPTH + 1):
        if _issued_by(current, ca):
            if not ca.is_ca():
                _fail(
                    "VM-TSA-CHAIN",
                    f"the policy CA certificate of TSA {trust.name!r} ({ca.subject!r}) is not "
                    "a CA (basicConstraints CA:TRUE with keyCertSign was required)",
                )
            return [*path, ca]
        nxt = next(
            (c for c in pool if c.der not in {p.der for p in path} and c.is_ca() and _issued_by(current, c)),
            None,
        )
        if nxt is None:
            break
        path.append(nxt)
        current = nxt
    chain = " <- ".join(repr(p.subject) for p in reversed(path))
    _fail(
        "VM-TSA-CHAIN",
        f"the TSA signer certificate does not chain to the policy CA of TSA {trust.name!r}: "
        f"found {chain}, issued by {current.issuer_text!r}; required a path "
        f"to {ca.subject!r} (signatures checked)",
    )


def _check_eku(cert: _Cert) -> None:
    """RFC 3161 2.3: exactly one EKU extension, critical, holding only id-kp-timeStamping.

    keyUsage, when present, may hold only digitalSignature/nonRepudiation (as `openssl ts -verify` requires).
    """
    if cert.eku is None:
        _fail(
            "VM-TSA-EKU",
            f"the TSA signer certificate {cert.subject!r} has no extendedKeyUsage extension; a "
            "critical extendedKeyUsage of exactly timeStamping was required",
        )
    critical, usages = cert.eku
    if usages != [OID_TIME_STAMPING]:
        _fail(
            "VM-TSA-EKU",
            f"the TSA signer certificate's extendedKeyUsage is {', '.join(usages)}; "
            f"exactly timeStamping ({OID_TIME_STAMPING}) was required",
        )
    if not critical:
        _fail(
            "VM-TSA-EKU",
            "the TSA signer certificate's extendedKeyUsage (timeStamping) is not marked critical; "
            "RFC 3161 requires it critical",
        )
    if cert.key_usage is None:
        return
    others = sorted(cert.key_usage - {"digitalSignature", "nonRepudiation", "encipherOnly", "decipherOnly"},
                    key=_KEY_USAGE.index)
    if others or not cert.key_usage & {"digitalSignature", "nonRepudiation"}:
        _fail(
            "VM-TSA-EKU",
            f"the TSA signer certificate's keyUsage allows {', '.join(others) or 'no signing'}; "
            "only digitalSignature and/or nonRepudiation was allowed",
        )


def _pin(spki_der: bytes) -> str:
    return base64.b64encode(hashlib.sha256(spki_der).digest()).decode("ascii")


def spki_pin_of(cert_pem_or_der: bytes) -> str:
    """The policy pin of a certificate: base64(SHA-256(DER SubjectPublicKeyInfo)), as in HPKP pin-sha256.

    Hashes the SPKI bytes exactly as stored in the certificate, so the pin does not depend on how a library
    would re-encode the key.
    """
    data = cert_pem_or_der
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            blocks = _PEM_CERT.findall(data.decode("ascii", "replace"))
            if not blocks:
                raise ValueError("no -----BEGIN CERTIFICATE----- block")
            data = base64.b64decode("".join(blocks[0].split()), validate=True)
        return _pin(_load_cert(data).spki_der)
    except (ValueError, binascii.Error) as exc:
        _fail(
            "VM-FILE-UNREADABLE",
            f"the input is not a PEM or DER X.509 certificate ({exc})",
            "pass the TSA's signer certificate (PEM or DER)",
        )


def _check_validity(gen_time: datetime, cert: _Cert, role: str) -> None:
    nb, na = cert.not_before, cert.not_after
    if not nb <= gen_time <= na:
        side = "before its notBefore" if gen_time < nb else "after its notAfter"
        _fail(
            "VM-TSA-CERT-VALIDITY",
            f"genTime {_iso(gen_time)} lies {side}: the {role} {cert.subject!r} is valid "
            f"from {_iso(nb)} to {_iso(na)}, and genTime was required within that",
        )


def _iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _check_signer_info(node: Node, pool: list[_Cert], econtent: bytes) -> _Cert:
    """Find the signer certificate and check the CMS signature, content-type, messageDigest and ESS binding."""
    si = node.reader("the SignerInfo")
    si.take(INTEGER, "version").integer("the SignerInfo version")
    sid = si.any("sid")
    if sid.tag not in (SEQUENCE, ctx(0, constructed=False)):
        raise DerError(f"the SignerInfo's sid is a {der.tag_name(sid.tag)}")
    digest_oid = _alg(si.take(SEQUENCE, "digestAlgorithm"), "the digestAlgorithm")[0]
    attrs = si.opt(ctx(0))
    sig_alg = _alg(si.take(SEQUENCE, "signatureAlgorithm"), "the signatureAlgorithm")
    signature = si.take(OCTET_STRING, "signature").octets()
    si.opt(ctx(1))  # unsignedAttrs
    si.done()
    signer = next((c for c in pool if _sid_matches(sid, c)), None)
    if signer is None:
        _fail(
            "VM-TSA-CHAIN",
            f"the token's {len(pool)} certificate(s) hold none matching its signer "
            f"identifier ({_describe_sid(sid)}); the signer certificate was required",
            "request tokens with certReq TRUE (build_request does) so the TSA includes its certificate",
        )
    if digest_oid not in _DIGESTS:
        _fail(
            "VM-TSA-SIGNATURE",
            f"the SignerInfo digest algorithm is {digest_oid}; SHA-256, SHA-384 or SHA-512 was required",
        )
    signed_bytes, by_type = _signed_attributes(attrs)
    _verify_signature(signer.public_key(), sig_alg, digest_oid, signature, signed_bytes, signer.subject,
                      "the CMS signature", "the signed attributes")
    content_type = _single(by_type, OID_ATTR_CONTENT_TYPE, "content-type")
    found_type = content_type.oid("the content-type attribute") if content_type.tag == OID else "not an OID"
    if found_type != OID_TST_INFO:
        _fail(
            "VM-TSA-SIGNATURE",
            f"the signed content-type attribute is {found_type}; id-ct-TSTInfo ({OID_TST_INFO}) was required",
        )
    md = _single(by_type, OID_ATTR_MESSAGE_DIGEST, "messageDigest")
    digest = md.octets("the messageDigest") if md.tag == OCTET_STRING else b""
    want = hashlib.new(_DIGESTS[digest_oid], econtent).digest()
    if digest != want:
        _fail(
            "VM-TSA-SIGNATURE",
            f"the signed messageDigest is {digest.hex()}, the TSTInfo hashes to "
            f"{want.hex()}: the TSTInfo was altered after signing",
        )
    _check_ess(by_type, signer)
    return signer


def verify_token(tsr: bytes, data: bytes, trust: TsaTrust, nonce: int | None = None) -> TokenInfo:
    """Strictly verify a TimeStampResp over data against one policy TSA; return its facts or raise."""
    parsed = parse_response(tsr)
    ca = _load_trust_ca(trust)
    if parsed.signer_count != 1:
        _fail(
            "VM-TSA-SIGNATURE", f"the token has {parsed.signer_count} SignerInfos; exactly one was required"
        )
    pool: list[_Cert] = []
    for cert_der in parsed.certificates:
        try:
            pool.append(_load_cert(cert_der))
        except ValueError as exc:
            _fail("VM-TSA-CHAIN", f"a certificate in the token cannot be parsed ({exc})")
    try:
        signer = _check_signer_info(parsed._signer_infos[0], pool, parsed.econtent)
    except DerError as exc:
        _fail("VM-TSA-SIGNATURE", f"the token's SignerInfo cannot be parsed ({exc.detail})")
    _check_imprint(parsed, data)
    if nonce is not None:
        _check_nonce(parsed, nonce)
    path = _chain(signer, ca, [c for c in pool if c is not signer], trust)
    _check_eku(signer)
    pin = _pin(signer.spki_der)
    if trust.spki_pin is not None:
        try:
            wanted = base64.b64decode(trust.spki_pin.strip(), validate=True)
        except (binascii.Error, ValueError):
            wanted = b""
        if len(wanted) != 32:
            _fail(
                "VM-POLICY-INVALID",
                f"the SPKI pin of TSA {trust.name!r} in the policy is not base64 of a SHA-256 digest",
                "fix the pin in the policy (spki_pin_of prints it)",
            )
        if base64.b64decode(pin) != wanted:
            _fail(
                "VM-TSA-PIN",
                f"the TSA signer's SPKI pin is {pin}; the policy pins {trust.spki_pin.strip()} "
                f"for TSA {trust.name!r}",
            )
    _check_validity(parsed.gen_time, signer, "TSA signer certificate")
    for cert in path[1:]:
        role = "policy CA certificate" if cert is path[-1] else "intermediate certificate"
        _check_validity(parsed.gen_time, cert, role)
    return TokenInfo(
        gen_time=parsed.gen_time,
        serial=parsed.serial,
        policy_oid=parsed.policy_oid,
        nonce=parsed.nonce,
        signer_not_before=signer.not_before,
        signer_not_after=signer.not_after,
        signer_subject=signer.subject,
        spki_pin=pin,
    )
