"""Differential oracle for tests only: the previous production RFC 3161 token verifier. Not shipped.

This is git_vaultmesh/tsa.py as it was before the lean rewrite: built on asn1crypto and
cryptography.x509, two independent ASN.1/X.509 parsers, with every cryptographic check done by
`cryptography`. The production verifier (git_vaultmesh/tsa.py) now reads DER with its own small strict
reader (git_vaultmesh/der.py) and cryptography's hazmat primitives only, to save ~70 ms of imports per
process. tests/test_tsa_differential.py runs both over the same tokens and requires the same verdict: equal
TokenInfo/ParsedToken fields on acceptance, the same error code on rejection.

The parsing and checking code is kept as it was (the existing tests proved it); only the HTTP client
(request_token and its helpers) is dropped, since the oracle only parses and verifies. What is data or wording,
not judgement, comes from git_vaultmesh.rfc3161.tsa instead of a copy: the OIDs, the PKI status names, _fail with its
hints (so it raises the package's VaultMeshError and codes compare directly), the error wording helpers
(_describe_non_der, _not_tsr, _iso), and the public TsaTrust and TokenInfo. Its own ParsedToken stays: it holds
asn1crypto SignerInfos. So does its own _check_der_shape, which, unlike the lean reader's, accepts non-minimal
lengths (asn1crypto reads them).

Verification order (the first failure is the one reported): structure and status, then the CMS signature over
the signed attributes (so a forged field reports SIGNATURE, not a misleading IMPRINT), then imprint, nonce,
chain to the policy CA, EKU, SPKI pin and validity at genTime.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from asn1crypto import cms, core, tsp
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID

from git_vaultmesh.errors import VaultMeshError
from git_vaultmesh.rfc3161.tsa import (
    _PKI_STATUS,
    OID_ATTR_CONTENT_TYPE,
    OID_ATTR_MESSAGE_DIGEST,
    OID_ATTR_SIGNING_CERT,
    OID_ATTR_SIGNING_CERT_V2,
    OID_EC_PUBLIC_KEY,
    OID_MGF1,
    OID_RSA_ENCRYPTION,
    OID_RSASSA_PSS,
    OID_SHA256,
    OID_SHA384,
    OID_SHA512,
    OID_SIGNED_DATA,
    OID_TST_INFO,
    TokenInfo,
    TsaTrust,
    _describe_non_der,
    _fail,
    _iso,
    _not_tsr,
)

__all__ = [
    "ParsedToken",
    "TokenInfo",
    "TsaTrust",
    "build_request",
    "parse_response",
    "spki_pin_of",
    "token_gen_time",
    "verify_token",
]

# Digests accepted for the CMS signature, ESSCertIDv2 and messageDigest: SHA-1 and weaker are refused.
_DIGESTS: dict[str, tuple[str, Callable[[], hashes.HashAlgorithm]]] = {
    OID_SHA256: ("sha256", hashes.SHA256),
    OID_SHA384: ("sha384", hashes.SHA384),
    OID_SHA512: ("sha512", hashes.SHA512),
}
# Signature algorithm OIDs that name their digest; it must equal the SignerInfo's digestAlgorithm.
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
_EC_CURVES = ("secp256r1", "secp384r1", "secp521r1")
_MIN_RSA_BITS = 2048
_DER_NULL = b"\x05\x00"
_MAX_CHAIN_DEPTH = 4  # intermediates between the signer and the policy CA


# --- public data types (TsaTrust and TokenInfo: git_vaultmesh.rfc3161.tsa's) ----------------------------------------


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
    _signer_infos: Any = field(repr=False, compare=False)  # asn1crypto SignerInfos (internal)


# asn1crypto declares timeStampToken mandatory; RFC 3161 makes it OPTIONAL (absent on rejection).
class _TimeStampResp(core.Sequence):  # type: ignore[misc]
    _fields = [
        ("status", tsp.PKIStatusInfo),
        ("time_stamp_token", cms.ContentInfo, {"optional": True}),
    ]


# --- DER shape: tell empty, non-DER and truncated input apart -----------------------------------------------


class _Shape(Exception):
    def __init__(self, truncated: bool, detail: str) -> None:
        super().__init__(detail)
        self.truncated = truncated
        self.detail = detail


def _read_tlv(data: bytes, pos: int, limit: int) -> tuple[int, int, int]:
    """Return (first tag byte, content start, content end) of the TLV at pos, within data[:limit]."""
    start = pos
    if pos >= limit:
        raise _Shape(True, f"an element at offset {start} has no tag")
    first = data[pos]
    pos += 1
    if first & 0x1F == 0x1F:  # high tag number form
        while True:
            if pos >= limit:
                raise _Shape(True, f"the tag at offset {start} is cut off")
            octet = data[pos]
            pos += 1
            if not octet & 0x80:
                break
    if pos >= limit:
        raise _Shape(True, f"the element at offset {start} has no length")
    lead = data[pos]
    pos += 1
    if lead == 0x80:
        raise _Shape(False, f"indefinite length at offset {start} (BER, not DER)")
    if lead & 0x80:
        count = lead & 0x7F
        if count > 4:
            raise _Shape(False, f"a {count}-byte length at offset {start}")
        if pos + count > limit:
            raise _Shape(True, f"the length at offset {start} is cut off")
        length = int.from_bytes(data[pos : pos + count], "big")
        pos += count
    else:
        length = lead
    if pos + length > limit:
        raise _Shape(
            True,
            f"the element at offset {start} declares {length} content bytes, only {limit - pos} are present",
        )
    return first, pos, pos + length


def _check_der_shape(data: bytes) -> None:
    """Walk every constructed TLV so empty, non-DER and truncated tokens each get their own code.

    asn1crypto reports all of them as one ValueError (and only when a field is first touched); a user needs to
    know whether a transfer was cut short or the TSA URL served a web page.
    """
    if not data:
        _fail("VM-TSA-EMPTY", "the timestamp token is empty (0 bytes); a DER TimeStampResp was required")
    if data[0] != 0x30:
        _fail(
            "VM-TSA-NOT-DER",
            f"the timestamp token is {_describe_non_der(data)}; a DER TimeStampResp "
            "(starting with a SEQUENCE, byte 0x30) was required",
        )
    try:
        _tag, outer_start, outer_end = _read_tlv(data, 0, len(data))
    except _Shape as exc:
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
                first, cstart, cend = _read_tlv(data, pos, end)
                if first & 0x20:
                    stack.append((cstart, cend))
                pos = cend
    except _Shape as exc:  # inside a complete outer element: inconsistent, not cut short
        _fail("VM-TSA-NOT-DER", f"the timestamp token is malformed DER: {exc.detail}")


# --- asn1crypto access, kept behind typed helpers -----------------------------------------------------------


def _der(obj: Any) -> bytes:
    out: bytes = obj.dump()
    return out


def _dotted(obj: Any) -> str:
    out: str = obj.dotted
    return out


def _octets(obj: Any) -> bytes:
    """Value octets of an OCTET STRING (constructed BER forms concatenated)."""
    out: bytes = bytes(obj)
    return out


def _alg_params(alg: Any) -> bytes | None:
    params = alg["parameters"]
    if isinstance(params, core.Void):
        return None
    return _der(params)


def parse_response(tsr: bytes) -> ParsedToken:
    """Parse a TimeStampResp: shape, status and TSTInfo only; nothing is trusted here."""
    _check_der_shape(tsr)
    try:
        _tag, start, end = _read_tlv(tsr, 0, len(tsr))
        if start < end and tsr[start] == 0x06:
            _not_tsr("it is a bare TimeStampToken (CMS ContentInfo); store the TSA's full TimeStampResp")
        resp = _TimeStampResp.load(tsr, strict=True)
        status_info = resp["status"]
        status = int(status_info["status"])
    except VaultMeshError:
        raise
    except (ValueError, TypeError, KeyError) as exc:
        _not_tsr(str(exc).splitlines()[0])
    if status not in (0, 1):
        _fail(
            "VM-TSA-STATUS",
            f"the TSA answered status {_PKI_STATUS.get(status, 'unknown')} ({status})"
            f"{_status_detail(status_info)}; granted (0) or grantedWithMods (1) was required",
        )
    try:
        token = resp["time_stamp_token"]
        if isinstance(token, core.Void):
            _fail(
                "VM-TSA-STATUS",
                f"the TSA answered status {_PKI_STATUS[status]} but sent no timeStampToken; "
                "a granted response must carry one",
            )
        if _dotted(token["content_type"]) != OID_SIGNED_DATA:
            _not_tsr(
                f"its token has content type {_dotted(token['content_type'])}, "
                f"signedData ({OID_SIGNED_DATA}) was required"
            )
        signed = token["content"]
        encap = signed["encap_content_info"]
        if _dotted(encap["content_type"]) != OID_TST_INFO:
            _not_tsr(
                f"the signed content type is {_dotted(encap['content_type'])}, "
                f"id-ct-TSTInfo ({OID_TST_INFO}) was required"
            )
        if isinstance(encap["content"], core.Void):
            _not_tsr("the SignedData carries no encapsulated TSTInfo")
        econtent = _octets(encap["content"])
        tst = tsp.TSTInfo.load(econtent, strict=True)
        if int(tst["version"]) != 1:
            _not_tsr(f"its TSTInfo has version {int(tst['version'])}; version 1 was required")
        gen_time = tst["gen_time"].native
        if not isinstance(gen_time, datetime) or gen_time.tzinfo is None:
            _not_tsr(f"genTime {gen_time!r} is not a UTC date and time")
        imprint = tst["message_imprint"]
        nonce_obj = tst["nonce"]
        certs: list[bytes] = []
        if not isinstance(signed["certificates"], core.Void):
            for choice in signed["certificates"]:
                if choice.name == "certificate":
                    # The bytes as received: asn1crypto's dump() re-encodes a value whose header ends in 0x80
                    # (it takes a long-form length such as 82 01 80 for an indefinite one).
                    certs.append(bytes(choice.chosen._header) + bytes(choice.chosen.contents))
        signer_infos = signed["signer_infos"]
        return ParsedToken(
            status=status,
            gen_time=gen_time.astimezone(timezone.utc),
            serial=int(tst["serial_number"]),
            policy_oid=_dotted(tst["policy"]),
            nonce=None if isinstance(nonce_obj, core.Void) else int(nonce_obj),
            imprint_alg_oid=_dotted(imprint["hash_algorithm"]["algorithm"]),
            imprint_alg_params=_alg_params(imprint["hash_algorithm"]),
            imprint=_octets(imprint["hashed_message"]),
            econtent=econtent,
            certificates=tuple(certs),
            signer_count=len(signer_infos),
            _signer_infos=signer_infos,
        )
    except VaultMeshError:
        raise
    except (ValueError, TypeError, KeyError, OverflowError) as exc:
        _not_tsr(str(exc).splitlines()[0])


def _status_detail(status_info: Any) -> str:
    parts: list[str] = []
    try:
        fail_info = status_info["fail_info"]
        if not isinstance(fail_info, core.Void):
            names = sorted(str(n) for n in fail_info.native)
            parts.append("failInfo " + ", ".join(names))
        texts = status_info["status_string"]
        if not isinstance(texts, core.Void):
            parts.append("text " + repr("; ".join(str(t) for t in texts.native))[:200])
    except (ValueError, TypeError, KeyError):
        parts.append("unparsable failInfo/statusString")
    return f" ({'; '.join(parts)})" if parts else ""


def token_gen_time(tsr: bytes) -> datetime:
    """genTime of a token without verifying it (for listings); raises like parse_response."""
    return parse_response(tsr).gen_time


# --- requests -----------------------------------------------------------------------------------------------


def build_request(data: bytes, nonce: int | None = None) -> tuple[bytes, int]:
    """DER TimeStampReq v1 over SHA-256(data) with a random 64-bit nonce and certReq TRUE.

    certReq makes the TSA include its certificate, so a token verifies offline from the policy's CA alone.
    """
    if nonce is None:
        nonce = secrets.randbits(64)
    elif nonce < 0:
        raise ValueError("the nonce must be a non-negative integer")
    req = tsp.TimeStampReq(
        {
            "version": "v1",
            "message_imprint": {
                "hash_algorithm": {"algorithm": "sha256"},
                "hashed_message": hashlib.sha256(data).digest(),
            },
            "nonce": nonce,
            "cert_req": True,
        }
    )
    return _der(req), nonce


# --- checks -------------------------------------------------------------------------------------------------


def _check_imprint(parsed: ParsedToken, data: bytes) -> None:
    odd_params = parsed.imprint_alg_params not in (None, _DER_NULL)
    if parsed.imprint_alg_oid != OID_SHA256 or odd_params:
        extra = f" with parameters {parsed.imprint_alg_params!r}" if odd_params else ""
        _fail(
            "VM-TSA-IMPRINT",
            f"the token's message imprint uses hash algorithm {parsed.imprint_alg_oid}{extra}; "
            f"SHA-256 ({OID_SHA256}, parameters absent or NULL) was required",
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


@dataclass(frozen=True)
class _Cert:
    """One certificate in both parsers: cryptography for crypto and names, asn1crypto for raw DER fields."""

    der: bytes
    crypto: x509.Certificate
    asn1: Any
    spki_der: bytes  # SubjectPublicKeyInfo exactly as encoded in the certificate

    @classmethod
    def load(cls, der: bytes) -> _Cert:
        """Parse everything up front, so a malformed certificate fails here (ValueError), not mid-check."""
        try:
            crypto = x509.load_der_x509_certificate(der)
            _ = crypto.extensions  # cryptography parses extensions lazily; duplicates raise here
            asn1 = asn1_x509.Certificate.load(der, strict=True)
            spki = _der(asn1["tbs_certificate"]["subject_public_key_info"])
            _ = asn1["tbs_certificate"]["issuer"].chosen, asn1.key_identifier
        except (ValueError, TypeError, KeyError, x509.DuplicateExtension) as exc:
            raise ValueError(str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from exc
        return cls(der, crypto, asn1, spki)

    @property
    def subject(self) -> str:
        return self.crypto.subject.rfc4514_string()


def _load_trust_ca(trust: TsaTrust) -> _Cert:
    hint = "fix the TSA's CA certificate in the policy (a signed policy change)"
    try:
        certs = x509.load_pem_x509_certificates(trust.ca_cert_pem.encode())
    except ValueError as exc:
        _fail(
            "VM-POLICY-INVALID",
            f"the CA certificate of TSA {trust.name!r} in the policy is not a PEM certificate ({exc})",
            hint,
        )
    if len(certs) != 1:
        _fail(
            "VM-POLICY-INVALID",
            f"the CA certificate of TSA {trust.name!r} in the policy holds {len(certs)} "
            "certificates; exactly one (the CA the TSA signer chains to) was required",
            "keep only the CA certificate in the policy; intermediates travel inside the tokens",
        )
    try:
        return _Cert.load(certs[0].public_bytes(Encoding.DER))
    except ValueError as exc:
        _fail(
            "VM-POLICY-INVALID",
            f"the CA certificate of TSA {trust.name!r} in the policy cannot be parsed ({exc})",
            hint,
        )


def _same_name(a: Any, b: Any) -> bool:
    """X.500 name equality: identical DER (the usual case, cheap), else RFC 5280 normalized comparison.

    Compares the RDNSequence inside each Name: an EXPLICIT [4] directoryName's own dump carries the outer tag.
    """
    return _der(a.chosen) == _der(b.chosen) or bool(a == b)


def _sid_matches(sid: Any, cert: _Cert) -> bool:
    if sid.name == "issuer_and_serial_number":
        ias = sid.chosen
        return bool(
            int(ias["serial_number"]) == cert.crypto.serial_number
            and _same_name(ias["issuer"], cert.asn1["tbs_certificate"]["issuer"])
        )
    ski = cert.asn1.key_identifier  # subjectKeyIdentifier extension value, None when absent
    return ski is not None and bytes(ski) == _octets(sid.chosen)


def _describe_sid(sid: Any) -> str:
    try:
        if sid.name == "issuer_and_serial_number":
            return (
                f"issuer {sid.chosen['issuer'].human_friendly!r}, serial {int(sid.chosen['serial_number'])}"
            )
        return f"subjectKeyIdentifier {_octets(sid.chosen).hex()}"
    except (ValueError, TypeError, KeyError):
        return "an unparsable signer identifier"


def _verify_cms_signature(cert: _Cert, signer_info: Any, digest_oid: str, signed_bytes: bytes) -> None:
    """Check signerInfo.signature over signed_bytes with the signer's key and the declared algorithm."""
    sig_alg = signer_info["signature_algorithm"]
    sig_oid = _dotted(sig_alg["algorithm"])
    signature = _octets(signer_info["signature"])
    digest_name, digest_cls = _DIGESTS[digest_oid]
    key = cert.crypto.public_key()
    try:
        if sig_oid == OID_RSA_ENCRYPTION or sig_oid in _RSA_PKCS1_WITH:
            if sig_oid in _RSA_PKCS1_WITH and _RSA_PKCS1_WITH[sig_oid] != digest_oid:
                _fail(
                    "VM-TSA-SIGNATURE",
                    f"the signature algorithm {sig_oid} names another digest than the "
                    f"SignerInfo's digestAlgorithm {digest_name}; they must agree",
                )
            rsa_key = _rsa_key(key)
            rsa_key.verify(signature, signed_bytes, padding.PKCS1v15(), digest_cls())
        elif sig_oid == OID_RSASSA_PSS:
            rsa_key = _rsa_key(key)
            rsa_key.verify(
                signature, signed_bytes, _pss_padding(sig_alg["parameters"], digest_oid), digest_cls()
            )
        elif sig_oid in _ECDSA_WITH or sig_oid == OID_EC_PUBLIC_KEY:
            if sig_oid in _ECDSA_WITH and _ECDSA_WITH[sig_oid] != digest_oid:
                _fail(
                    "VM-TSA-SIGNATURE",
                    f"the signature algorithm {sig_oid} names another digest than the "
                    f"SignerInfo's digestAlgorithm {digest_name}; they must agree",
                )
            if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name not in _EC_CURVES:
                _fail(
                    "VM-TSA-SIGNATURE",
                    f"the signature is ECDSA but the signer key is {_key_desc(key)}; an EC "
                    "key on P-256, P-384 or P-521 was required",
                )
            key.verify(signature, signed_bytes, ec.ECDSA(digest_cls()))
        else:
            _fail(
                "VM-TSA-SIGNATURE",
                f"the signature algorithm {sig_oid} is not supported; RSA PKCS#1 v1.5, "
                "RSASSA-PSS or ECDSA with SHA-256/384/512 was required",
            )
    except InvalidSignature:
        _fail(
            "VM-TSA-SIGNATURE",
            f"the CMS signature ({sig_oid}, {digest_name}) does not verify over the signed "
            f"attributes with the key of {cert.subject!r}: the token was altered",
        )


def _rsa_key(key: object) -> rsa.RSAPublicKey:
    if not isinstance(key, rsa.RSAPublicKey):
        _fail("VM-TSA-SIGNATURE", f"the signature is RSA but the signer key is {_key_desc(key)}")
    if key.key_size < _MIN_RSA_BITS:
        _fail(
            "VM-TSA-SIGNATURE",
            f"the signer key is RSA-{key.key_size}; at least RSA-{_MIN_RSA_BITS} was required",
        )
    return key


def _key_desc(key: object) -> str:
    if isinstance(key, rsa.RSAPublicKey):
        return f"RSA-{key.key_size}"
    if isinstance(key, ec.EllipticCurvePublicKey):
        return f"EC {key.curve.name}"
    return type(key).__name__


def _pss_padding(params: Any, digest_oid: str) -> padding.PSS:
    """RSASSA-PSS parameters (RFC 4055): hash must equal the digestAlgorithm, MGF1 with an accepted hash."""
    if isinstance(params, core.Void):
        _fail("VM-TSA-SIGNATURE", "RSASSA-PSS without parameters means SHA-1; SHA-256/384/512 was required")
    hash_oid = _dotted(params["hash_algorithm"]["algorithm"])
    mgf = params["mask_gen_algorithm"]
    if hash_oid != digest_oid:
        _fail(
            "VM-TSA-SIGNATURE",
            f"the RSASSA-PSS hash {hash_oid} differs from the digestAlgorithm {digest_oid}",
        )
    if _dotted(mgf["algorithm"]) != OID_MGF1:
        _fail(
            "VM-TSA-SIGNATURE",
            f"the RSASSA-PSS mask generation function is {_dotted(mgf['algorithm'])}, MGF1 was required",
        )
    mgf_hash_oid = _dotted(mgf["parameters"]["algorithm"])
    if mgf_hash_oid not in _DIGESTS:
        _fail("VM-TSA-SIGNATURE", f"the RSASSA-PSS MGF1 hash is {mgf_hash_oid}; SHA-256/384/512 was required")
    if int(params["trailer_field"]) != 1:
        _fail("VM-TSA-SIGNATURE", "the RSASSA-PSS trailer field is not 1 (0xBC)")
    salt = int(params["salt_length"])
    return padding.PSS(mgf=padding.MGF1(_DIGESTS[mgf_hash_oid][1]()), salt_length=salt)


def _signed_attributes(signer_info: Any) -> tuple[bytes, dict[str, list[Any]]]:
    """Return (bytes the signature covers, attribute values by type OID).

    RFC 5652 section 5.4: the signature covers the DER of the signedAttrs with the EXPLICIT SET OF tag (0x31),
    not the [0] IMPLICIT tag they carry inside SignerInfo. We re-tag the received bytes rather than re-encode
    them, so what is verified is exactly what was sent.
    """
    attrs = signer_info["signed_attrs"]
    if isinstance(attrs, core.Void) or len(attrs) == 0:
        _fail(
            "VM-TSA-SIGNATURE",
            "the SignerInfo has no signed attributes; RFC 3161 tokens require them "
            "(content-type, messageDigest, signingCertificate)",
        )
    raw = _der(attrs)
    if raw[0] != 0xA0:
        _fail(
            "VM-TSA-SIGNATURE",
            f"the signed attributes carry tag 0x{raw[0]:02x}; [0] IMPLICIT (0xa0) was required",
        )
    by_type: dict[str, list[Any]] = {}
    for attr in attrs:
        oid = _dotted(attr["type"])
        if oid in by_type:
            _fail("VM-TSA-SIGNATURE", f"the signed attribute {oid} appears twice; each must appear once")
        by_type[oid] = list(attr["values"])
    return b"\x31" + raw[1:], by_type


def _single(by_type: dict[str, list[Any]], oid: str, name: str) -> Any:
    values = by_type.get(oid)
    if values is None:
        _fail("VM-TSA-SIGNATURE", f"the signed attribute {name} ({oid}) is absent; it is required")
    if len(values) != 1:
        _fail(
            "VM-TSA-SIGNATURE",
            f"the signed attribute {name} has {len(values)} values; exactly one was required",
        )
    return values[0]


def _check_ess(by_type: dict[str, list[Any]], cert: _Cert) -> None:
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
        value = _single(by_type, oid, name)
        ids = value["certs"]
        if len(ids) == 0:
            _fail("VM-TSA-SIGNATURE", f"the {name} attribute lists no certificate")
        first = ids[0]  # RFC 5035: the first ESSCertID identifies the signing certificate
        if v2:
            hash_oid = _dotted(first["hash_algorithm"]["algorithm"])
            if hash_oid not in _DIGESTS:
                _fail(
                    "VM-TSA-SIGNATURE",
                    f"the ESSCertIDv2 hash algorithm is {hash_oid}; SHA-256/384/512 was required",
                )
            want = hashlib.new(_DIGESTS[hash_oid][0], cert.der).digest()
        else:
            want = hashlib.sha1(cert.der).digest()
        got = _octets(first["cert_hash"])
        if got != want:
            _fail(
                "VM-TSA-SIGNATURE",
                f"the {name} attribute names a certificate with hash {got.hex()}, the signer "
                f"certificate's hash is {want.hex()}",
            )
        issuer_serial = first["issuer_serial"]
        if not isinstance(issuer_serial, core.Void):
            ok = int(issuer_serial["serial_number"]) == cert.crypto.serial_number and any(
                gn.name == "directory_name" and _same_name(gn.chosen, cert.asn1["tbs_certificate"]["issuer"])
                for gn in issuer_serial["issuer"]
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


def _is_ca(cert: _Cert) -> bool:
    try:
        bc = cert.crypto.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        return False
    if not bc.ca:
        return False
    try:
        ku = cert.crypto.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return True
    return bool(ku.key_cert_sign)


def _issued_by(child: _Cert, issuer: _Cert) -> bool:
    try:
        child.crypto.verify_directly_issued_by(issuer.crypto)
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
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
            if not _is_ca(ca):
                _fail(
                    "VM-TSA-CHAIN",
                    f"the policy CA certificate of TSA {trust.name!r} ({ca.subject!r}) is not "
                    "a CA (basicConstraints CA:TRUE with keyCertSign was required)",
                )
            return [*path, ca]
        nxt = next(
            (c for c in pool if c.der not in {p.der for p in path} and _is_ca(c) and _issued_by(current, c)),
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
        f"found {chain}, issued by {current.crypto.issuer.rfc4514_string()!r}; required a path "
        f"to {ca.subject!r} (signatures checked)",
    )


def _check_eku(cert: _Cert) -> None:
    """RFC 3161 2.3: exactly one EKU extension, critical, holding only id-kp-timeStamping.

    keyUsage, when present, may hold only digitalSignature/nonRepudiation (as `openssl ts -verify` requires).
    """
    try:
        ext = cert.crypto.extensions.get_extension_for_class(x509.ExtendedKeyUsage)
    except x509.ExtensionNotFound:
        _fail(
            "VM-TSA-EKU",
            f"the TSA signer certificate {cert.subject!r} has no extendedKeyUsage extension; a "
            "critical extendedKeyUsage of exactly timeStamping was required",
        )
    usages = [u.dotted_string for u in ext.value]
    if usages != [ExtendedKeyUsageOID.TIME_STAMPING.dotted_string]:
        _fail(
            "VM-TSA-EKU",
            f"the TSA signer certificate's extendedKeyUsage is {', '.join(usages) or 'empty'}; "
            f"exactly timeStamping ({ExtendedKeyUsageOID.TIME_STAMPING.dotted_string}) was required",
        )
    if not ext.critical:
        _fail(
            "VM-TSA-EKU",
            "the TSA signer certificate's extendedKeyUsage (timeStamping) is not marked critical; "
            "RFC 3161 requires it critical",
        )
    try:
        ku = cert.crypto.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return
    others = [
        name
        for name, on in (
            ("keyEncipherment", ku.key_encipherment),
            ("dataEncipherment", ku.data_encipherment),
            ("keyAgreement", ku.key_agreement),
            ("keyCertSign", ku.key_cert_sign),
            ("cRLSign", ku.crl_sign),
        )
        if on
    ]
    if others or not (ku.digital_signature or ku.content_commitment):
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
            data = x509.load_pem_x509_certificate(data).public_bytes(Encoding.DER)
        return _pin(_Cert.load(data).spki_der)
    except ValueError as exc:
        _fail(
            "VM-FILE-UNREADABLE",
            f"the input is not a PEM or DER X.509 certificate ({exc})",
            "pass the TSA's signer certificate (PEM or DER)",
        )


def _check_validity(gen_time: datetime, cert: _Cert, role: str) -> None:
    nb, na = cert.crypto.not_valid_before_utc, cert.crypto.not_valid_after_utc
    if not nb <= gen_time <= na:
        side = "before its notBefore" if gen_time < nb else "after its notAfter"
        _fail(
            "VM-TSA-CERT-VALIDITY",
            f"genTime {_iso(gen_time)} lies {side}: the {role} {cert.subject!r} is valid "
            f"from {_iso(nb)} to {_iso(na)}, and genTime was required within that",
        )


def verify_token(tsr: bytes, data: bytes, trust: TsaTrust, nonce: int | None = None) -> TokenInfo:
    """Strictly verify a TimeStampResp over data against one policy TSA; return its facts or raise."""
    parsed = parse_response(tsr)
    ca = _load_trust_ca(trust)
    if parsed.signer_count != 1:
        _fail(
            "VM-TSA-SIGNATURE", f"the token has {parsed.signer_count} SignerInfos; exactly one was required"
        )
    pool: list[_Cert] = []
    for der in parsed.certificates:
        try:
            pool.append(_Cert.load(der))
        except ValueError as exc:
            _fail("VM-TSA-CHAIN", f"a certificate in the token cannot be parsed ({exc})")
    try:
        signer_info = parsed._signer_infos[0]
        sid = signer_info["sid"]
        signer = next((c for c in pool if _sid_matches(sid, c)), None)
        if signer is None:
            _fail(
                "VM-TSA-CHAIN",
                f"the token's {len(pool)} certificate(s) hold none matching its signer "
                f"identifier ({_describe_sid(sid)}); the signer certificate was required",
                "request tokens with certReq TRUE (build_request does) so the TSA includes its certificate",
            )
        digest_oid = _dotted(signer_info["digest_algorithm"]["algorithm"])
        if digest_oid not in _DIGESTS:
            _fail(
                "VM-TSA-SIGNATURE",
                f"the SignerInfo digest algorithm is {digest_oid}; SHA-256, SHA-384 or SHA-512 was required",
            )
        signed_bytes, by_type = _signed_attributes(signer_info)
        _verify_cms_signature(signer, signer_info, digest_oid, signed_bytes)
        content_type = _single(by_type, OID_ATTR_CONTENT_TYPE, "content-type")
        if _dotted(content_type) != OID_TST_INFO:
            _fail(
                "VM-TSA-SIGNATURE",
                f"the signed content-type attribute is {_dotted(content_type)}; "
                f"id-ct-TSTInfo ({OID_TST_INFO}) was required",
            )
        digest = _octets(_single(by_type, OID_ATTR_MESSAGE_DIGEST, "messageDigest"))
        want = hashlib.new(_DIGESTS[digest_oid][0], parsed.econtent).digest()
        if digest != want:
            _fail(
                "VM-TSA-SIGNATURE",
                f"the signed messageDigest is {digest.hex()}, the TSTInfo hashes to "
                f"{want.hex()}: the TSTInfo was altered after signing",
            )
        _check_ess(by_type, signer)
    except VaultMeshError:
        raise
    except (ValueError, TypeError, KeyError, OverflowError) as exc:
        _fail("VM-TSA-SIGNATURE", f"the token's SignerInfo cannot be parsed ({str(exc).splitlines()[0]})")
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
        signer_not_before=signer.crypto.not_valid_before_utc,
        signer_not_after=signer.crypto.not_valid_after_utc,
        signer_subject=signer.subject,
        spki_pin=pin,
    )
