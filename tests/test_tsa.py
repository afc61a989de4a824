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
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from asn1crypto import tsp
from cryptography.hazmat.primitives.asymmetric import ec

from git_vaultmesh.errors import VaultMeshError
from git_vaultmesh.rfc3161.server import (
    TEST_POLICY_OID,
    TsaIdentity,
    TsaServer,
    load_identity,
    make_identity,
    sign_token,
    write_identity,
)
from git_vaultmesh.rfc3161.tsa import (
    TsaTrust,
    build_request,
    parse_response,
    request_token,
    spki_pin_of,
    token_gen_time,
    verify_token,
)

from tsa_kit import (
    DATA,
    ca_lookalike,
    cert_der,
    content_type_data,
    drop_attr,
    ess_v2_naming,
    flip,
    gen_time_digit_flipped,
    make_openssl_pki,
    openssl_query,
    openssl_reply,
    openssl_verify,
    post,
    rebuild,
    request_der,
    resign,
    resigned,
    serial_plus_one,
    signature_flipped,
    signing_time_shifted,
    token,
    trust_of,
    zero_message_digest,
)

# --- helpers ------------------------------------------------------------------------------------------------


def expect(code: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> VaultMeshError:
    """Assert fn fails with exactly this code, and that the error explains itself (cause and hint)."""
    with pytest.raises(VaultMeshError) as info:
        fn(*args, **kwargs)
    err = info.value
    assert err.code == code, err.render()
    assert err.cause and err.hint, err.render()
    return err


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
    assert spki_pin_of(cert_der(ec_ident.cert_pem)) == spki_pin_of(ec_ident.cert_pem)
    expect("VM-FILE-UNREADABLE", spki_pin_of, b"not a certificate")


def test_rsa_pss_signature_accepted(rsa_ident: TsaIdentity) -> None:
    tsr, nonce = token(rsa_ident)
    forged = resigned(tsr, rsa_ident, pss=True)
    assert verify_token(forged, DATA, trust_of(rsa_ident, pin=True), nonce).nonce == nonce


def test_signer_identified_by_subject_key_identifier(ec_ident: TsaIdentity, other_ident: TsaIdentity) -> None:
    tsr, nonce = token(ec_ident)
    forged = resigned(tsr, ec_ident, sid_ski=True)
    verify_token(forged, DATA, trust_of(ec_ident, pin=True), nonce)
    # a SKI naming a certificate the token does not carry
    wrong = resigned(tsr, other_ident, sid_ski=True)
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
    tsr = sign_token(ec_ident, request_der("sha512"))
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
    expect("VM-TSA-NOT-DER", verify_token, cert_der(ec_ident.cert_pem), DATA, trust_of(ec_ident))
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
    md5_request = request_der("md5", cert_req=False)
    assert "bad_alg" in expect("VM-TSA-STATUS", parse_response, sign_token(ec_ident, md5_request)).cause


def test_nonce_mismatch(ec_ident: TsaIdentity) -> None:
    tsr, nonce = token(ec_ident, nonce_override=12345)
    err = expect("VM-TSA-NONCE", verify_token, tsr, DATA, trust_of(ec_ident), nonce=nonce)
    assert "12345" in err.cause and str(nonce) in err.cause
    no_nonce = sign_token(ec_ident, request_der())
    assert (
        "no nonce" in expect("VM-TSA-NONCE", verify_token, no_nonce, DATA, trust_of(ec_ident), nonce=7).cause
    )


def test_signer_from_another_ca(ec_ident: TsaIdentity, other_ident: TsaIdentity) -> None:
    tsr, _ = token(other_ident)
    err = expect("VM-TSA-CHAIN", verify_token, tsr, DATA, trust_of(ec_ident))
    assert "does not chain" in err.cause


def test_signer_certificate_absent(ec_ident: TsaIdentity) -> None:
    tsr = sign_token(ec_ident, request_der(cert_req=False, nonce=1))
    assert parse_response(tsr).certificates == ()
    assert "none matching" in expect("VM-TSA-CHAIN", verify_token, tsr, DATA, trust_of(ec_ident)).cause


def test_ca_with_same_name_but_other_key(ec_ident: TsaIdentity) -> None:
    """A CA certificate re-made with the same subject but another key is refused: signatures count."""
    from cryptography import x509

    real = x509.load_pem_x509_certificate(ec_ident.ca_cert_pem)
    kept = [(e.value, e.critical) for e in real.extensions if not isinstance(e.value, x509.SubjectKeyIdentifier)]
    impostor = ca_lookalike(real, ec.generate_private_key(ec.SECP256R1()), kept)
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


def _ku(**on: bool) -> Any:
    from cryptography import x509

    names = ("digital_signature", "content_commitment", "key_encipherment", "data_encipherment", "key_agreement",
             "key_cert_sign", "crl_sign", "encipher_only", "decipher_only")
    return x509.KeyUsage(**{n: on.get(n, False) for n in names})


@pytest.mark.parametrize("usage, word", [({"digital_signature": True, "key_cert_sign": True}, "keyCertSign"),
                                         ({}, "no signing")], ids=["may-sign-certificates", "may-sign-nothing"])
def test_signer_key_usage_other_than_signing_tokens(usage: dict[str, bool], word: str, ec_ident: TsaIdentity) -> None:
    """keyUsage must allow signing (digitalSignature and/or nonRepudiation) and nothing else (found by mutation
    testing: neither the intersection nor the extra-bit branch had a test)."""
    ident = make_identity("ec", ca=ec_ident, key_usage=_ku(**usage))
    tsr, _ = token(ident)
    assert word in expect("VM-TSA-EKU", verify_token, tsr, DATA, trust_of(ident)).cause


def test_signer_key_usage_digital_signature_and_non_repudiation_accepted(ec_ident: TsaIdentity) -> None:
    ident = make_identity("ec", ca=ec_ident, key_usage=_ku(digital_signature=True, content_commitment=True))
    tsr, _ = token(ident)
    assert verify_token(tsr, DATA, trust_of(ident)).serial > 0


def test_self_signed_tsa_pinned_as_its_own_ca() -> None:
    """A policy may pin a self-signed TSA certificate itself: its token verifies (it is its own trust anchor,
    and being no CA does not matter then); a token of another key under that pin does not."""
    ident = make_identity("ec", self_signed=True)
    assert ident.ca_cert_pem == ident.cert_pem
    tsr, _ = token(ident)
    assert verify_token(tsr, DATA, trust_of(ident)).serial > 0
    other = make_identity("ec", self_signed=True)
    forged, _ = token(other)
    expect("VM-TSA-CHAIN", verify_token, forged, DATA, trust_of(ident))


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
    tsr, _ = token(ec_ident)
    # the signer certificate's hash, inside signingCertificateV2, a signed attribute
    ess_hash = hashlib.sha256(cert_der(ec_ident.cert_pem)).digest()
    err = expect("VM-TSA-SIGNATURE", verify_token, flip(tsr, ess_hash), DATA, trust_of(ec_ident))
    assert "does not verify" in err.cause


def test_altered_signed_attributes_reencoded(ec_ident: TsaIdentity) -> None:
    """Change signingTime by one second, re-encode, keep the original signature."""
    tsr, _ = token(ec_ident)
    forged = signing_time_shifted(tsr)
    assert forged != tsr
    assert rebuild(tsr) == tsr  # the re-encoding itself is faithful: only the edit changed
    expect("VM-TSA-SIGNATURE", verify_token, forged, DATA, trust_of(ec_ident))


def test_altered_tst_info(ec_ident: TsaIdentity, tmp_path: Path) -> None:
    tsr, _ = token(ec_ident)
    forged = serial_plus_one(tsr)
    err = expect("VM-TSA-SIGNATURE", verify_token, forged, DATA, trust_of(ec_ident))
    assert "messageDigest" in err.cause
    # and a digit flipped inside genTime, without re-encoding
    expect("VM-TSA-SIGNATURE", verify_token, gen_time_digit_flipped(tsr), DATA, trust_of(ec_ident))
    assert openssl_verify(tmp_path, forged, DATA, ec_ident.ca_cert_pem).returncode != 0  # openssl agrees


def test_altered_signature_value(rsa_ident: TsaIdentity) -> None:
    tsr, _ = token(rsa_ident)
    expect("VM-TSA-SIGNATURE", verify_token, signature_flipped(tsr), DATA, trust_of(rsa_ident))


@pytest.mark.parametrize(
    ("edit", "word"),
    [
        (drop_attr("content_type"), "content-type"),
        (content_type_data, "content-type"),
        (drop_attr("message_digest"), "messageDigest"),
        (zero_message_digest, "messageDigest"),
        (drop_attr("signing_certificate_v2"), "signingCertificate"),
    ],
)
def test_validly_signed_but_wrong_attributes(
    edit: Callable[[list[Any]], list[Any]], word: str, ec_ident: TsaIdentity
) -> None:
    tsr, _ = token(ec_ident)
    forged = resigned(tsr, ec_ident, attrs=edit)
    assert word in expect("VM-TSA-SIGNATURE", verify_token, forged, DATA, trust_of(ec_ident)).cause


def test_ess_cert_id_names_another_certificate(ec_ident: TsaIdentity) -> None:
    tsr, _ = token(ec_ident)
    forged = resigned(tsr, ec_ident, attrs=ess_v2_naming(b"\x11" * 32))
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


@pytest.mark.parametrize(("ess", "precision"), [("sha1", 0), ("sha256", 3)])
def test_openssl_reply_verifies_with_ours(
    ess: str, precision: int, rsa_ident: TsaIdentity, tmp_path: Path
) -> None:
    """openssl as the TSA (RSA key from make_identity; ESSCertID v1 or v2; fractional genTime)."""
    write_identity(rsa_ident, tmp_path / "id")
    query = openssl_query(tmp_path, DATA)
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
    return make_openssl_pki(tmp_path_factory.mktemp("pki"))


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
    assert post(server.url, b"x", "text/plain")[0] == 415
    status, ctype, body = post(server.url, b"not a request")
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
        "from git_vaultmesh.rfc3161.server import TsaServer, load_identity\n"
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
