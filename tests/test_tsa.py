"""RFC 3161 client, strict verifier and loopback server: real server on 127.0.0.1, real openssl, no mocks.

Every rejection path must surface its own stable code; tokens must cross-verify with `openssl ts` both ways.
"""

from __future__ import annotations

import hashlib
import http.server
import os
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from asn1crypto import algos, cms, core, tsp
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from git_vaultmesh.errors import VaultMeshError
from git_vaultmesh.tsa import (
    TsaTrust,
    build_request,
    parse_response,
    request_token,
    spki_pin_of,
    token_gen_time,
    verify_token,
)
from git_vaultmesh.tsa_server import (
    TEST_POLICY_OID,
    TsaIdentity,
    TsaServer,
    load_identity,
    make_identity,
    sign_token,
    write_identity,
)

DATA = b'{"v":1,"body":{"type":"release"},"sigs":[]}'
OPENSSL = "openssl"


# --- helpers ------------------------------------------------------------------------------------------------


def expect(code: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> VaultMeshError:
    """Assert fn fails with exactly this code, and that the error explains itself (cause and hint)."""
    with pytest.raises(VaultMeshError) as info:
        fn(*args, **kwargs)
    err = info.value
    assert err.code == code, err.render()
    assert err.cause and err.hint, err.render()
    return err


def trust_of(ident: TsaIdentity, pin: bool = False, name: str = "test") -> TsaTrust:
    return TsaTrust(name, ident.ca_cert_pem.decode(), spki_pin_of(ident.cert_pem) if pin else None)


def token(ident: TsaIdentity, data: bytes = DATA, **kwargs: Any) -> tuple[bytes, int]:
    """A token made offline with sign_token (no HTTP), and the nonce requested."""
    req, nonce = build_request(data)
    return sign_token(ident, req, **kwargs), nonce


def openssl(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([OPENSSL, *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=30)


def openssl_verify(tmp: Path, tsr: bytes, data: bytes, ca_pem: bytes) -> subprocess.CompletedProcess[str]:
    (tmp / "resp.tsr").write_bytes(tsr)
    (tmp / "data.bin").write_bytes(data)
    (tmp / "ca.pem").write_bytes(ca_pem)
    return openssl(
        "ts", "-verify", "-data", tmp / "data.bin", "-in", tmp / "resp.tsr", "-CAfile", tmp / "ca.pem"
    )


def copy(obj: Any) -> Any:
    """A detached copy of an asn1crypto value, safe to place into a new structure."""
    return obj.__class__.load(obj.dump())


def rebuild(tsr: bytes, *, econtent: bytes | None = None, signer_infos: list[Any] | None = None) -> bytes:
    """Re-encode a TimeStampResp with a replaced TSTInfo and/or SignerInfos (signatures left as they are)."""
    resp = tsp.TimeStampResp.load(tsr)
    sd = resp["time_stamp_token"]["content"]
    encap = sd["encap_content_info"]
    new_sd = cms.SignedData(
        {
            "version": sd["version"].native,
            "digest_algorithms": copy(sd["digest_algorithms"]),
            "encap_content_info": {
                "content_type": "tst_info",
                "content": core.ParsableOctetString(
                    econtent if econtent is not None else bytes(encap["content"])
                ),
            },
            "certificates": [copy(c) for c in sd["certificates"]],
            "signer_infos": signer_infos if signer_infos is not None else [copy(sd["signer_infos"][0])],
        }
    )
    out = tsp.TimeStampResp(
        {
            "status": copy(resp["status"]),
            "time_stamp_token": cms.ContentInfo({"content_type": "signed_data", "content": new_sd}),
        }
    )
    return bytes(out.dump())


def resign(
    tsr: bytes,
    ident: TsaIdentity,
    *,
    attrs: Callable[[list[Any]], list[Any]] = lambda a: a,
    pss: bool = False,
    sid_ski: bool = False,
) -> Any:
    """A new SignerInfo over (possibly edited) signed attributes, validly signed with the TSA key.

    Forges tokens whose signature is correct but whose content is not, to prove the verifier checks more than
    the signature.
    """
    resp = tsp.TimeStampResp.load(tsr)
    si = resp["time_stamp_token"]["content"]["signer_infos"][0]
    new_attrs = cms.CMSAttributes(attrs([copy(a) for a in si["signed_attrs"]]))
    to_sign = new_attrs.dump()
    key = serialization.load_pem_private_key(ident.key_pem, password=None)
    if isinstance(key, rsa.RSAPrivateKey) and pss:
        signature = key.sign(to_sign, padding.PSS(padding.MGF1(hashes.SHA256()), 32), hashes.SHA256())
        sig_alg = algos.SignedDigestAlgorithm(
            {
                "algorithm": "rsassa_pss",
                "parameters": {
                    "hash_algorithm": {"algorithm": "sha256"},
                    "mask_gen_algorithm": {"algorithm": "mgf1", "parameters": {"algorithm": "sha256"}},
                    "salt_length": 32,
                },
            }
        )
    elif isinstance(key, rsa.RSAPrivateKey):
        signature = key.sign(to_sign, padding.PKCS1v15(), hashes.SHA256())
        sig_alg = algos.SignedDigestAlgorithm({"algorithm": "sha256_rsa"})
    else:
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        signature = key.sign(to_sign, ec.ECDSA(hashes.SHA256()))
        sig_alg = algos.SignedDigestAlgorithm({"algorithm": "sha256_ecdsa"})
    sid = copy(si["sid"])
    if sid_ski:
        from asn1crypto import x509 as asn1_x509

        ski = asn1_x509.Certificate.load(x509_der(ident.cert_pem)).key_identifier
        sid = cms.SignerIdentifier({"subject_key_identifier": ski})
    return cms.SignerInfo(
        {
            "version": "v3" if sid_ski else "v1",
            "sid": sid,
            "digest_algorithm": copy(si["digest_algorithm"]),
            "signed_attrs": new_attrs,
            "signature_algorithm": sig_alg,
            "signature": signature,
        }
    )


def x509_der(pem: bytes) -> bytes:
    from cryptography import x509

    return x509.load_pem_x509_certificate(pem).public_bytes(serialization.Encoding.DER)


def flip(data: bytes, needle: bytes, at: int = -1) -> bytes:
    """Flip one bit in the single occurrence of needle inside data."""
    assert data.count(needle) == 1
    pos = data.index(needle) + (at % len(needle))
    return data[:pos] + bytes([data[pos] ^ 0x01]) + data[pos + 1 :]


# --- fixtures: identities are expensive (RSA keygen), so one per module -------------------------------------


@pytest.fixture(scope="module")
def ec_ident() -> TsaIdentity:
    return make_identity("ec")


@pytest.fixture(scope="module")
def rsa_ident() -> TsaIdentity:
    return make_identity("rsa")


@pytest.fixture(scope="module")
def other_ident() -> TsaIdentity:
    return make_identity("ec")


@pytest.fixture(scope="module")
def server(ec_ident: TsaIdentity) -> Iterator[TsaServer]:
    with TsaServer(ec_ident, max_lifetime=120) as srv:
        yield srv


# --- accept paths -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["ec", "rsa"])
@pytest.mark.parametrize("pin", [True, False])
def test_round_trip_over_http_verifies(
    kind: str, pin: bool, ec_ident: TsaIdentity, rsa_ident: TsaIdentity
) -> None:
    ident = ec_ident if kind == "ec" else rsa_ident
    with TsaServer(ident, max_lifetime=30) as srv:
        assert srv.url.startswith("http://127.0.0.1:") and srv.url.endswith("/tsr")
        before = datetime.now(timezone.utc).replace(microsecond=0)
        tsr, nonce = request_token(srv.url, DATA, timeout=5)
    info = verify_token(tsr, DATA, trust_of(ident, pin=pin), nonce=nonce)
    assert before <= info.gen_time <= datetime.now(timezone.utc)
    assert info.gen_time.tzinfo is not None
    assert info.nonce == nonce
    assert info.policy_oid == TEST_POLICY_OID
    assert info.spki_pin == spki_pin_of(ident.cert_pem)
    assert "git-vaultmesh test TSA" in info.signer_subject
    assert info.signer_not_before <= info.gen_time <= info.signer_not_after
    assert token_gen_time(tsr) == info.gen_time
    verify_token(tsr, DATA, trust_of(ident, pin=pin))  # nonce is checked only when given


def test_serials_increase_and_nonces_are_fresh(server: TsaServer) -> None:
    got = [request_token(server.url, DATA, timeout=5) for _ in range(3)]
    serials = [parse_response(t).serial for t, _ in got]
    assert serials == [serials[0], serials[0] + 1, serials[0] + 2]
    assert len({n for _, n in got}) == 3
    assert 0 < serials[0] < 1 << 64


def test_spki_pin_matches_der_and_pem(ec_ident: TsaIdentity) -> None:
    from cryptography import x509

    der = x509.load_pem_x509_certificate(ec_ident.cert_pem).public_bytes(serialization.Encoding.DER)
    assert spki_pin_of(der) == spki_pin_of(ec_ident.cert_pem)
    expect("VM-FILE-UNREADABLE", spki_pin_of, b"not a certificate")


def test_rsa_pss_signature_accepted(rsa_ident: TsaIdentity) -> None:
    tsr, nonce = token(rsa_ident)
    forged = rebuild(tsr, signer_infos=[resign(tsr, rsa_ident, pss=True)])
    assert verify_token(forged, DATA, trust_of(rsa_ident, pin=True), nonce).nonce == nonce


def test_signer_identified_by_subject_key_identifier(ec_ident: TsaIdentity, other_ident: TsaIdentity) -> None:
    tsr, nonce = token(ec_ident)
    forged = rebuild(tsr, signer_infos=[resign(tsr, ec_ident, sid_ski=True)])
    verify_token(forged, DATA, trust_of(ec_ident, pin=True), nonce)
    # a SKI naming a certificate the token does not carry
    wrong = rebuild(tsr, signer_infos=[resign(tsr, other_ident, sid_ski=True)])
    assert (
        "subjectKeyIdentifier" in expect("VM-TSA-CHAIN", verify_token, wrong, DATA, trust_of(ec_ident)).cause
    )


def test_granted_with_mods_accepted(ec_ident: TsaIdentity) -> None:
    tsr, nonce = token(ec_ident, status_override=1)
    assert parse_response(tsr).status == 1
    verify_token(tsr, DATA, trust_of(ec_ident), nonce)


def test_leaf_from_shared_ca_accepted(ec_ident: TsaIdentity) -> None:
    sibling = make_identity("ec", ca=ec_ident)
    tsr, _ = token(sibling)
    verify_token(tsr, DATA, trust_of(ec_ident))  # same CA: accepted
    expect("VM-TSA-PIN", verify_token, tsr, DATA, trust_of(ec_ident, pin=True))  # other key: pin refuses


# --- rejections, one code each ------------------------------------------------------------------------------


def test_wrong_imprint(ec_ident: TsaIdentity) -> None:
    tsr, _ = token(ec_ident)
    err = expect("VM-TSA-IMPRINT", verify_token, tsr, DATA + b"\n", trust_of(ec_ident))
    assert hashlib.sha256(DATA + b"\n").hexdigest() in err.cause


def test_imprint_with_another_hash_algorithm(ec_ident: TsaIdentity) -> None:
    req = tsp.TimeStampReq(
        {
            "version": "v1",
            "cert_req": True,
            "message_imprint": {
                "hash_algorithm": {"algorithm": "sha512"},
                "hashed_message": hashlib.sha512(DATA).digest(),
            },
        }
    )
    tsr = sign_token(ec_ident, req.dump())
    err = expect("VM-TSA-IMPRINT", verify_token, tsr, DATA, trust_of(ec_ident))
    assert "2.16.840.1.101.3.4.2.3" in err.cause


def test_empty(ec_ident: TsaIdentity) -> None:
    expect("VM-TSA-EMPTY", verify_token, b"", DATA, trust_of(ec_ident))
    expect("VM-TSA-EMPTY", token_gen_time, b"")


@pytest.mark.parametrize(
    ("blob", "word"),
    [
        (b"<!DOCTYPE html>\n<html><body>Service unavailable</body></html>", "HTML"),
        (b"  <html>\r\n<head>", "HTML"),
        (b"502 Bad Gateway\n", "text"),
        (b"-----BEGIN CERTIFICATE-----\nMIIB\n", "PEM"),
        (b"MIIGdTADAgEAMIIGbAYJKoZIhvcNAQcCoIIGXTCCBlkCAQMx", "base64"),
        (b"\x00\x01\x02garbage", "not DER"),
    ],
)
def test_not_der(blob: bytes, word: str, ec_ident: TsaIdentity) -> None:
    err = expect("VM-TSA-NOT-DER", verify_token, blob, DATA, trust_of(ec_ident))
    assert word in err.cause


def test_der_but_not_a_response(ec_ident: TsaIdentity) -> None:
    from cryptography import x509

    cert_der = x509.load_pem_x509_certificate(ec_ident.cert_pem).public_bytes(serialization.Encoding.DER)
    expect("VM-TSA-NOT-DER", verify_token, cert_der, DATA, trust_of(ec_ident))
    tsr, _ = token(ec_ident)
    bare = tsp.TimeStampResp.load(tsr)["time_stamp_token"].dump()  # the TimeStampToken without its status
    err = expect("VM-TSA-NOT-DER", verify_token, bare, DATA, trust_of(ec_ident))
    assert "bare TimeStampToken" in err.cause
    expect("VM-TSA-NOT-DER", verify_token, tsr + b"\x00", DATA, trust_of(ec_ident))  # trailing data


def test_truncated_at_every_length(ec_ident: TsaIdentity) -> None:
    tsr, _ = token(ec_ident)
    for n in range(1, len(tsr)):
        expect("VM-TSA-TRUNCATED", parse_response, tsr[:n])
    expect("VM-TSA-TRUNCATED", verify_token, tsr[: len(tsr) // 2], DATA, trust_of(ec_ident))


@pytest.mark.parametrize(
    ("status", "word"), [(2, "rejection"), (3, "waiting"), (5, "revocationNotification")]
)
def test_status_not_granted(status: int, word: str, ec_ident: TsaIdentity) -> None:
    tsr, _ = token(ec_ident, status_override=status)
    err = expect("VM-TSA-STATUS", verify_token, tsr, DATA, trust_of(ec_ident))
    assert word in err.cause


def test_server_rejects_bad_request_with_fail_info(ec_ident: TsaIdentity) -> None:
    err = expect("VM-TSA-STATUS", parse_response, sign_token(ec_ident, b"\x30\x03\x02\x01\x07"))
    assert "bad_data_format" in err.cause or "bad_request" in err.cause
    req = tsp.TimeStampReq(
        {
            "version": "v1",
            "message_imprint": {
                "hash_algorithm": {"algorithm": "md5"},
                "hashed_message": hashlib.md5(DATA).digest(),
            },
        }
    )
    assert "bad_alg" in expect("VM-TSA-STATUS", parse_response, sign_token(ec_ident, req.dump())).cause


def test_nonce_mismatch(ec_ident: TsaIdentity) -> None:
    tsr, nonce = token(ec_ident, nonce_override=12345)
    err = expect("VM-TSA-NONCE", verify_token, tsr, DATA, trust_of(ec_ident), nonce=nonce)
    assert "12345" in err.cause and str(nonce) in err.cause
    req = tsp.TimeStampReq(
        {
            "version": "v1",
            "cert_req": True,
            "message_imprint": {
                "hash_algorithm": {"algorithm": "sha256"},
                "hashed_message": hashlib.sha256(DATA).digest(),
            },
        }
    )
    no_nonce = sign_token(ec_ident, req.dump())
    assert (
        "no nonce" in expect("VM-TSA-NONCE", verify_token, no_nonce, DATA, trust_of(ec_ident), nonce=7).cause
    )


def test_signer_from_another_ca(ec_ident: TsaIdentity, other_ident: TsaIdentity) -> None:
    tsr, _ = token(other_ident)
    err = expect("VM-TSA-CHAIN", verify_token, tsr, DATA, trust_of(ec_ident))
    assert "does not chain" in err.cause


def test_signer_certificate_absent(ec_ident: TsaIdentity) -> None:
    req = tsp.TimeStampReq(
        {
            "version": "v1",
            "cert_req": False,
            "nonce": 1,
            "message_imprint": {
                "hash_algorithm": {"algorithm": "sha256"},
                "hashed_message": hashlib.sha256(DATA).digest(),
            },
        }
    )
    tsr = sign_token(ec_ident, req.dump())
    assert parse_response(tsr).certificates == ()
    assert "none matching" in expect("VM-TSA-CHAIN", verify_token, tsr, DATA, trust_of(ec_ident)).cause


def test_ca_with_same_name_but_other_key(ec_ident: TsaIdentity) -> None:
    """A CA certificate re-made with the same subject but another key is refused: signatures count."""
    from cryptography import x509

    real = x509.load_pem_x509_certificate(ec_ident.ca_cert_pem)
    key = ec.generate_private_key(ec.SECP256R1())
    builder = (
        x509.CertificateBuilder()
        .subject_name(real.subject)
        .issuer_name(real.subject)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(real.not_valid_before_utc)
        .not_valid_after(real.not_valid_after_utc)
    )
    for ext in real.extensions:
        if not isinstance(ext.value, x509.SubjectKeyIdentifier):
            builder = builder.add_extension(ext.value, ext.critical)
    impostor = builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM).decode()
    tsr, _ = token(ec_ident)
    expect("VM-TSA-CHAIN", verify_token, tsr, DATA, TsaTrust("impostor", impostor))


def test_without_timestamping_eku(ec_ident: TsaIdentity) -> None:
    ident = make_identity("ec", include_eku=False, ca=ec_ident)
    tsr, _ = token(ident)
    assert "no extendedKeyUsage" in expect("VM-TSA-EKU", verify_token, tsr, DATA, trust_of(ident)).cause


def test_eku_not_critical(ec_ident: TsaIdentity) -> None:
    ident = make_identity("ec", eku_critical=False, ca=ec_ident)
    tsr, _ = token(ident)
    assert "critical" in expect("VM-TSA-EKU", verify_token, tsr, DATA, trust_of(ident)).cause


def test_spki_pin_mismatch(ec_ident: TsaIdentity, other_ident: TsaIdentity) -> None:
    tsr, _ = token(ec_ident)
    trust = TsaTrust("test", ec_ident.ca_cert_pem.decode(), spki_pin_of(other_ident.cert_pem))
    err = expect("VM-TSA-PIN", verify_token, tsr, DATA, trust)
    assert spki_pin_of(ec_ident.cert_pem) in err.cause and spki_pin_of(other_ident.cert_pem) in err.cause
    expect(
        "VM-POLICY-INVALID", verify_token, tsr, DATA, TsaTrust("test", ec_ident.ca_cert_pem.decode(), "abc")
    )


def test_gen_time_outside_signer_validity(ec_ident: TsaIdentity) -> None:
    from cryptography import x509

    cert = x509.load_pem_x509_certificate(ec_ident.cert_pem)
    early, _ = token(ec_ident, gen_time=cert.not_valid_before_utc - timedelta(days=1))
    assert (
        "before its notBefore"
        in expect("VM-TSA-CERT-VALIDITY", verify_token, early, DATA, trust_of(ec_ident)).cause
    )
    late, _ = token(ec_ident, gen_time=cert.not_valid_after_utc + timedelta(seconds=1))
    assert (
        "after its notAfter"
        in expect("VM-TSA-CERT-VALIDITY", verify_token, late, DATA, trust_of(ec_ident)).cause
    )


def test_expired_signer_is_valid_when_gen_time_was_inside() -> None:
    """Validity is judged at genTime: expiry after genTime is the ledger's (archive timestamp) question."""
    start = datetime.now(timezone.utc) - timedelta(days=30)
    ident = make_identity("ec", not_before=start, not_after=start + timedelta(days=2))  # its CA covers that
    tsr, _ = token(ident, gen_time=start + timedelta(days=1))
    info = verify_token(tsr, DATA, trust_of(ident))
    assert info.signer_not_after < datetime.now(timezone.utc)


def test_altered_signed_attributes_byte_flip(ec_ident: TsaIdentity) -> None:
    from cryptography import x509

    tsr, _ = token(ec_ident)
    cert_der = x509.load_pem_x509_certificate(ec_ident.cert_pem).public_bytes(serialization.Encoding.DER)
    ess_hash = hashlib.sha256(cert_der).digest()  # inside signingCertificateV2, a signed attribute
    err = expect("VM-TSA-SIGNATURE", verify_token, flip(tsr, ess_hash), DATA, trust_of(ec_ident))
    assert "does not verify" in err.cause


def test_altered_signed_attributes_reencoded(ec_ident: TsaIdentity) -> None:
    """Change signingTime by one second, re-encode, keep the original signature."""
    tsr, _ = token(ec_ident)
    si = copy(tsp.TimeStampResp.load(tsr)["time_stamp_token"]["content"]["signer_infos"][0])
    attrs = []
    for attr in si["signed_attrs"]:
        attr = copy(attr)
        if attr["type"].native == "signing_time":
            when = attr["values"][0].native + timedelta(seconds=1)
            attr = cms.CMSAttribute({"type": "signing_time", "values": [cms.Time({"utc_time": when})]})
        attrs.append(attr)
    altered = cms.SignerInfo(
        {
            "version": "v1",
            "sid": copy(si["sid"]),
            "digest_algorithm": copy(si["digest_algorithm"]),
            "signed_attrs": cms.CMSAttributes(attrs),
            "signature_algorithm": copy(si["signature_algorithm"]),
            "signature": bytes(si["signature"]),
        }
    )
    forged = rebuild(tsr, signer_infos=[altered])
    assert forged != tsr
    assert rebuild(tsr) == tsr  # the re-encoding itself is faithful: only the edit changed
    expect("VM-TSA-SIGNATURE", verify_token, forged, DATA, trust_of(ec_ident))


def test_altered_tst_info(ec_ident: TsaIdentity, tmp_path: Path) -> None:
    tsr, _ = token(ec_ident)
    tst = tsp.TSTInfo.load(parse_response(tsr).econtent)
    fields = {
        name: copy(tst[name])
        for name, _spec, *_ in tsp.TSTInfo._fields
        if not isinstance(tst[name], core.Void)
    }
    fields["serial_number"] = core.Integer(tst["serial_number"].native + 1)
    forged = rebuild(tsr, econtent=tsp.TSTInfo(fields).dump())
    err = expect("VM-TSA-SIGNATURE", verify_token, forged, DATA, trust_of(ec_ident))
    assert "messageDigest" in err.cause
    # and a digit flipped inside genTime, without re-encoding (the seconds' last digit, so it still parses)
    gen = tst["gen_time"].dump()[2:]
    expect("VM-TSA-SIGNATURE", verify_token, flip(tsr, gen, at=-2), DATA, trust_of(ec_ident))
    assert openssl_verify(tmp_path, forged, DATA, ec_ident.ca_cert_pem).returncode != 0  # openssl agrees


def test_altered_signature_value(rsa_ident: TsaIdentity) -> None:
    tsr, _ = token(rsa_ident)
    sig = bytes(tsp.TimeStampResp.load(tsr)["time_stamp_token"]["content"]["signer_infos"][0]["signature"])
    expect("VM-TSA-SIGNATURE", verify_token, flip(tsr, sig, at=100), DATA, trust_of(rsa_ident))


def _drop(oid_name: str) -> Callable[[list[Any]], list[Any]]:
    return lambda attrs: [a for a in attrs if a["type"].native != oid_name]


def _replace_digest(attrs: list[Any]) -> list[Any]:
    out = [a for a in attrs if a["type"].native != "message_digest"]
    return [*out, cms.CMSAttribute({"type": "message_digest", "values": [b"\x00" * 32]})]


def _content_type_data(attrs: list[Any]) -> list[Any]:
    out = [a for a in attrs if a["type"].native != "content_type"]
    return [*out, cms.CMSAttribute({"type": "content_type", "values": ["data"]})]


@pytest.mark.parametrize(
    ("edit", "word"),
    [
        (_drop("content_type"), "content-type"),
        (_content_type_data, "content-type"),
        (_drop("message_digest"), "messageDigest"),
        (_replace_digest, "messageDigest"),
        (_drop("signing_certificate_v2"), "signingCertificate"),
    ],
)
def test_validly_signed_but_wrong_attributes(
    edit: Callable[[list[Any]], list[Any]], word: str, ec_ident: TsaIdentity
) -> None:
    tsr, _ = token(ec_ident)
    forged = rebuild(tsr, signer_infos=[resign(tsr, ec_ident, attrs=edit)])
    assert word in expect("VM-TSA-SIGNATURE", verify_token, forged, DATA, trust_of(ec_ident)).cause


def test_ess_cert_id_names_another_certificate(ec_ident: TsaIdentity) -> None:
    def swap(attrs: list[Any]) -> list[Any]:
        out = [a for a in attrs if a["type"].native != "signing_certificate_v2"]
        return [
            *out,
            cms.CMSAttribute(
                {"type": "signing_certificate_v2", "values": [{"certs": [{"cert_hash": b"\x11" * 32}]}]}
            ),
        ]

    tsr, _ = token(ec_ident)
    forged = rebuild(tsr, signer_infos=[resign(tsr, ec_ident, attrs=swap)])
    assert (
        "names a certificate"
        in expect("VM-TSA-SIGNATURE", verify_token, forged, DATA, trust_of(ec_ident)).cause
    )


def test_two_signer_infos(ec_ident: TsaIdentity) -> None:
    tsr, _ = token(ec_ident)
    two = rebuild(tsr, signer_infos=[resign(tsr, ec_ident), resign(tsr, ec_ident)])
    assert "exactly one" in expect("VM-TSA-SIGNATURE", verify_token, two, DATA, trust_of(ec_ident)).cause


# --- cross-checks with openssl ------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["ec", "rsa"])
def test_our_tokens_verify_with_openssl(
    kind: str, ec_ident: TsaIdentity, rsa_ident: TsaIdentity, tmp_path: Path
) -> None:
    ident = ec_ident if kind == "ec" else rsa_ident
    tsr, _ = token(ident)
    res = openssl_verify(tmp_path, tsr, DATA, ident.ca_cert_pem)
    assert res.returncode == 0 and "Verification: OK" in res.stdout, res.stderr
    bad = openssl_verify(tmp_path, tsr, DATA + b"x", ident.ca_cert_pem)
    assert bad.returncode != 0  # openssl really checks the imprint


TSA_CNF = """\
[ tsa ]
default_tsa = tsa_config1

[ tsa_config1 ]
serial = {dir}/serial
crypto_device = builtin
signer_digest = {digest}
default_policy = 1.2.3.4.1
other_policies = 1.2.3.4.5.6
digests = sha256, sha384, sha512
accuracy = secs:1, millisecs:500, microsecs:100
clock_precision_digits = {precision}
ordering = yes
tsa_name = yes
ess_cert_id_chain = no
ess_cert_id_alg = {ess}
"""

CERT_EXT = """\
[ v3_inter ]
basicConstraints = critical, CA:TRUE, pathlen:0
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid

[ v3_tsa ]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = critical, timeStamping
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
"""


def openssl_reply(
    tmp: Path,
    query: bytes,
    signer: Path,
    key: Path,
    *,
    digest: str = "sha256",
    ess: str = "sha256",
    precision: int = 0,
    chain: Path | None = None,
) -> bytes:
    (tmp / "serial").write_text("01\n")
    (tmp / "tsa.cnf").write_text(TSA_CNF.format(dir=tmp, digest=digest, ess=ess, precision=precision))
    (tmp / "q.tsq").write_bytes(query)
    args: list[str | Path] = [
        "ts",
        "-reply",
        "-config",
        tmp / "tsa.cnf",
        "-queryfile",
        tmp / "q.tsq",
        "-signer",
        signer,
        "-inkey",
        key,
        "-out",
        tmp / "resp.tsr",
    ]
    if chain is not None:
        args += ["-chain", chain]
    res = openssl(*args)
    assert res.returncode == 0, res.stderr
    return (tmp / "resp.tsr").read_bytes()


@pytest.mark.parametrize(("ess", "precision"), [("sha1", 0), ("sha256", 3)])
def test_openssl_reply_verifies_with_ours(
    ess: str, precision: int, rsa_ident: TsaIdentity, tmp_path: Path
) -> None:
    """openssl as the TSA (RSA key from make_identity; ESSCertID v1 or v2; fractional genTime)."""
    write_identity(rsa_ident, tmp_path / "id")
    (tmp_path / "data.bin").write_bytes(DATA)
    res = openssl(
        "ts", "-query", "-data", tmp_path / "data.bin", "-sha256", "-cert", "-out", tmp_path / "o.tsq"
    )
    assert res.returncode == 0, res.stderr
    query = (tmp_path / "o.tsq").read_bytes()
    nonce = tsp.TimeStampReq.load(query)["nonce"].native
    tsr = openssl_reply(
        tmp_path, query, tmp_path / "id/tsa.pem", tmp_path / "id/tsa.key", ess=ess, precision=precision
    )
    info = verify_token(tsr, DATA, trust_of(rsa_ident, pin=True), nonce=nonce)
    assert info.policy_oid == "1.2.3.4.1" and info.nonce == nonce and info.serial in (1, 2)
    expect("VM-TSA-IMPRINT", verify_token, tsr, b"other", trust_of(rsa_ident))


@pytest.fixture(scope="module")
def openssl_pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """root CA -> intermediate CA -> TSA signer, all P-384, made by the openssl binary (not by our code)."""
    d = tmp_path_factory.mktemp("pki")
    (d / "ext.cnf").write_text(CERT_EXT)
    newkey = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-384", "-nodes"]
    steps: list[list[str | Path]] = [
        [
            "req",
            "-x509",
            *newkey,
            "-keyout",
            d / "root.key",
            "-out",
            d / "root.pem",
            "-days",
            "30",
            "-sha384",
            "-subj",
            "/O=openssl test/CN=Root",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
        [
            "req",
            "-new",
            *newkey,
            "-keyout",
            d / "inter.key",
            "-out",
            d / "inter.csr",
            "-subj",
            "/O=openssl test/CN=Intermediate",
        ],
        [
            "x509",
            "-req",
            "-in",
            d / "inter.csr",
            "-CA",
            d / "root.pem",
            "-CAkey",
            d / "root.key",
            "-set_serial",
            "2",
            "-days",
            "30",
            "-sha384",
            "-extfile",
            d / "ext.cnf",
            "-extensions",
            "v3_inter",
            "-out",
            d / "inter.pem",
        ],
        [
            "req",
            "-new",
            *newkey,
            "-keyout",
            d / "tsa.key",
            "-out",
            d / "tsa.csr",
            "-subj",
            "/O=openssl test/CN=TSA",
        ],
        [
            "x509",
            "-req",
            "-in",
            d / "tsa.csr",
            "-CA",
            d / "inter.pem",
            "-CAkey",
            d / "inter.key",
            "-set_serial",
            "3",
            "-days",
            "30",
            "-sha384",
            "-extfile",
            d / "ext.cnf",
            "-extensions",
            "v3_tsa",
            "-out",
            d / "tsa.pem",
        ],
    ]
    for step in steps:
        res = openssl(*step)
        assert res.returncode == 0, res.stderr
    return d


def test_openssl_reply_through_intermediate(openssl_pki: Path, ec_ident: TsaIdentity, tmp_path: Path) -> None:
    """P-384 / SHA-384 signer two levels below the policy CA, intermediate carried in the token."""
    query, nonce = build_request(DATA)
    tsr = openssl_reply(
        tmp_path,
        query,
        openssl_pki / "tsa.pem",
        openssl_pki / "tsa.key",
        digest="sha384",
        chain=openssl_pki / "inter.pem",
    )
    root = TsaTrust(
        "root", (openssl_pki / "root.pem").read_text(), spki_pin_of((openssl_pki / "tsa.pem").read_bytes())
    )
    info = verify_token(tsr, DATA, root, nonce=nonce)
    assert "CN=TSA" in info.signer_subject
    verify_token(tsr, DATA, TsaTrust("inter", (openssl_pki / "inter.pem").read_text()), nonce=nonce)
    expect("VM-TSA-CHAIN", verify_token, tsr, DATA, trust_of(ec_ident))
    res = openssl_verify(tmp_path, tsr, DATA, (openssl_pki / "root.pem").read_bytes())
    assert res.returncode == 0, res.stderr
    # the same signer without the intermediate in the token cannot reach the root
    bare = openssl_reply(tmp_path, query, openssl_pki / "tsa.pem", openssl_pki / "tsa.key", digest="sha384")
    expect("VM-TSA-CHAIN", verify_token, bare, DATA, root)
    # a trust bundle is refused rather than guessed at
    bundle = (openssl_pki / "root.pem").read_text() + (openssl_pki / "inter.pem").read_text()
    expect("VM-POLICY-INVALID", verify_token, tsr, DATA, TsaTrust("bundle", bundle))


# --- client against a misbehaving server --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "code"),
    [
        ("down", "VM-TSA-UNREACHABLE"),
        ("slow", "VM-TSA-UNREACHABLE"),
        ("garbage", "VM-TSA-NOT-DER"),
        ("html", "VM-TSA-UNREACHABLE"),
        ("reject", "VM-TSA-STATUS"),
    ],
)
def test_client_failure_modes(mode: str, code: str, ec_ident: TsaIdentity) -> None:
    with TsaServer(ec_ident, mode=mode, max_lifetime=30) as srv:
        started = time.monotonic()
        err = expect(code, request_token, srv.url, DATA, timeout=0.5)
        assert time.monotonic() - started < 3
    if mode == "html":
        assert "text/html" in err.cause and "HTML" in err.cause
    if mode == "slow":
        assert "0.5 s" in err.cause


def test_client_connection_refused_and_bad_urls() -> None:
    with socket.socket() as sock:  # a port that was free a moment ago: nothing listens there
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    assert (
        "refused"
        in expect("VM-TSA-UNREACHABLE", request_token, f"http://127.0.0.1:{port}/tsr", DATA, timeout=2).cause
    )
    expect("VM-TSA-UNREACHABLE", request_token, "file:///etc/hostname", DATA)
    expect("VM-TSA-UNREACHABLE", request_token, "ftp://127.0.0.1/tsr", DATA)


class _Misconfigured(http.server.BaseHTTPRequestHandler):
    """Answers like a misconfigured front end: an HTTP error or a redirect instead of a TimeStampResp."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if self.path == "/moved":
            self.send_response(302)
            self.send_header("Location", "http://127.0.0.1:9/elsewhere")
        else:
            self.send_response(503)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_client_http_error_and_redirect() -> None:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Misconfigured)
    worker = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    worker.start()
    try:
        base = f"http://127.0.0.1:{httpd.server_address[1]}"
        assert "503" in expect("VM-TSA-UNREACHABLE", request_token, base + "/tsr", DATA, timeout=2).cause
        err = expect("VM-TSA-UNREACHABLE", request_token, base + "/moved", DATA, timeout=2)
        assert "302" in err.cause and "/elsewhere" in err.cause
    finally:
        httpd.shutdown()
        httpd.server_close()
        worker.join(timeout=5)


def test_client_ignores_proxy_for_loopback(server: TsaServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("http_proxy", "http://127.0.0.1:9")  # discard port: would fail if used
    monkeypatch.setenv("no_proxy", "")
    tsr, nonce = request_token(server.url, DATA, timeout=5)
    assert parse_response(tsr).nonce == nonce


def test_server_http_errors(server: TsaServer) -> None:
    def post(ctype: str, body: bytes) -> tuple[int, str, bytes]:
        req = urllib.request.Request(server.url, data=body, method="POST", headers={"Content-Type": ctype})
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(req, timeout=5) as resp:
                return resp.status, resp.headers.get_content_type(), resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, "", b""

    assert post("text/plain", b"x")[0] == 415
    status, ctype, body = post("application/timestamp-query", b"not a request")
    assert (status, ctype) == (200, "application/timestamp-reply")
    assert "bad_data_format" in expect("VM-TSA-STATUS", parse_response, body).cause


# --- server lifecycle and identities ------------------------------------------------------------------------


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.10", "example.org", "::"])
def test_server_refuses_non_loopback(host: str, ec_ident: TsaIdentity) -> None:
    with pytest.raises(ValueError, match="loopback"):
        TsaServer(ec_ident, host=host)


def test_server_listens_only_on_loopback_and_stops(ec_ident: TsaIdentity) -> None:
    srv = TsaServer(ec_ident, max_lifetime=30, host="localhost")
    with pytest.raises(RuntimeError):
        _ = srv.url
    with srv:
        assert srv._httpd is not None and srv._httpd.server_address[0] == "127.0.0.1"
        url = srv.url
    expect("VM-TSA-UNREACHABLE", request_token, url, DATA, timeout=1)
    srv.stop()  # idempotent
    with pytest.raises(ValueError):
        TsaServer(ec_ident, mode="flaky")


def test_server_ipv6_loopback(ec_ident: TsaIdentity) -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    try:
        srv = TsaServer(ec_ident, host="::1", max_lifetime=30).start()
    except OSError:
        pytest.skip("::1 not configured")
    with srv:
        assert srv.url.startswith("http://[::1]:")
        tsr, nonce = request_token(srv.url, DATA, timeout=5)
        verify_token(tsr, DATA, trust_of(ec_ident), nonce)


def test_server_stops_after_max_lifetime(ec_ident: TsaIdentity) -> None:
    srv = TsaServer(ec_ident, max_lifetime=0.3).start()
    try:
        url = srv.url
        request_token(url, DATA, timeout=2)
        time.sleep(0.8)
        expect("VM-TSA-UNREACHABLE", request_token, url, DATA, timeout=1)
    finally:
        srv.stop()


def test_serve_forever_returns_after_max_lifetime(ec_ident: TsaIdentity) -> None:
    srv = TsaServer(ec_ident, max_lifetime=0.3)
    worker = threading.Thread(target=srv.serve_forever, daemon=True)
    worker.start()
    worker.join(timeout=5)
    assert not worker.is_alive()
    srv.stop()


def test_serve_forever_stops_on_sigterm(tmp_path: Path, ec_ident: TsaIdentity) -> None:
    write_identity(ec_ident, tmp_path / "id")
    script = (
        "import signal, sys, threading, time\n"
        "from pathlib import Path\n"
        "from git_vaultmesh.tsa_server import TsaServer, load_identity\n"
        f"srv = TsaServer(load_identity(Path({str(tmp_path / 'id')!r})), max_lifetime=20)\n"
        "def ready():\n"
        "    while signal.getsignal(signal.SIGTERM) is signal.SIG_DFL: time.sleep(0.01)\n"
        "    print(srv.url, flush=True)\n"
        "threading.Thread(target=ready, daemon=True).start()\n"
        "srv.serve_forever()\n"
        "print('stopped', flush=True)\n"
    )
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        tsr, nonce = request_token(url, DATA, timeout=5)
        verify_token(tsr, DATA, trust_of(ec_ident), nonce)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=5)
        assert proc.returncode == 0 and "stopped" in out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_identity_files_round_trip(ec_ident: TsaIdentity, other_ident: TsaIdentity, tmp_path: Path) -> None:
    write_identity(ec_ident, tmp_path / "id")
    assert stat.S_IMODE((tmp_path / "id/tsa.key").stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "id/ca.key").stat().st_mode) == 0o600
    assert load_identity(tmp_path / "id") == ec_ident
    expect("VM-FILE-UNREADABLE", load_identity, tmp_path / "missing")
    (tmp_path / "id/tsa.key").write_bytes(other_ident.key_pem)  # a key that does not match tsa.pem
    assert "not the key" in expect("VM-FILE-UNREADABLE", load_identity, tmp_path / "id").cause


def test_make_identity_validity_and_shared_ca(ec_ident: TsaIdentity) -> None:
    from cryptography import x509

    cert = x509.load_pem_x509_certificate(ec_ident.cert_pem)
    now = datetime.now(timezone.utc)
    assert cert.not_valid_before_utc <= now - timedelta(minutes=59)
    assert cert.not_valid_after_utc - cert.not_valid_before_utc == timedelta(days=365)
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage)
    assert eku.critical and list(eku.value) == [x509.oid.ExtendedKeyUsageOID.TIME_STAMPING]
    ca = x509.load_pem_x509_certificate(ec_ident.ca_cert_pem)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    sibling = make_identity("rsa", ca=ec_ident)
    assert sibling.ca_cert_pem == ec_ident.ca_cert_pem and sibling.cert_pem != ec_ident.cert_pem
