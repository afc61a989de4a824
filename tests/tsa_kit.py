"""Helpers shared by the RFC 3161 tests (test_tsa, test_tsa_differential, test_tsa_http, test_timestamps).

Tokens made offline with sign_token; requests built field by field; tokens forged with asn1crypto, either
re-encoded with their signature left as it was, or validly re-signed over edited signed attributes (so a
verifier must check more than the signature); an HTTP POST that bypasses the client under test; and the
`openssl` recipes: a TSA reply, a verification, and a root -> intermediate -> TSA PKI made by the binary.

Everything here makes inputs; nothing judges them. asn1crypto does the forging, apart from both verifiers.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import urllib.error
import urllib.request
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from asn1crypto import algos, cms, core, tsp
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from git_vaultmesh.rfc3161.server import TsaIdentity, sign_token
from git_vaultmesh.rfc3161.tsa import TsaTrust, build_request, spki_pin_of

DATA = b'{"v":1,"body":{"type":"release"},"sigs":[]}'
OPENSSL = shutil.which("openssl")

AttrsEdit = Callable[[list[Any]], list[Any]]


# --- identities, requests and tokens ------------------------------------------------------------------------


def trust_of(ident: TsaIdentity, pin: bool = False, name: str = "test") -> TsaTrust:
    """The policy's view of an identity: its CA, and its signer's SPKI pin when `pin`."""
    return TsaTrust(name, ident.ca_cert_pem.decode(), spki_pin_of(ident.cert_pem) if pin else None)


def cert_der(pem: bytes) -> bytes:
    return x509.load_pem_x509_certificate(pem).public_bytes(serialization.Encoding.DER)


def ca_lookalike(
    real: x509.Certificate,
    key: Any,
    extensions: list[tuple[x509.ExtensionType, bool]],
    *,
    not_before: datetime | None = None,
    not_after: datetime | None = None,
) -> str:
    """PEM of a self-signed certificate named like the CA `real`, on `key`, with these (value, critical)
    extensions and, unless given, real's validity: an impostor, or the CA re-issued with changes."""
    builder = (
        x509.CertificateBuilder()
        .subject_name(real.subject)
        .issuer_name(real.subject)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(not_before or real.not_valid_before_utc)
        .not_valid_after(not_after or real.not_valid_after_utc)
    )
    for value, critical in extensions:
        builder = builder.add_extension(value, critical)
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM).decode()


def token(
    ident: TsaIdentity,
    data: bytes = DATA,
    *,
    build: Callable[[bytes], tuple[bytes, int]] = build_request,
    **kwargs: Any,
) -> tuple[bytes, int]:
    """A token made offline with sign_token (no HTTP) over a `build` request, and the nonce requested.

    kwargs go to sign_token (gen_time, serial, status_override, nonce_override).
    """
    req, nonce = build(data)
    return sign_token(ident, req, **kwargs), nonce


def request_der(alg: str = "sha256", *, cert_req: bool = True, nonce: int | None = None) -> bytes:
    """A TimeStampReq v1 over `alg`(DATA), built field by field: what build_request never sends (another hash,
    no nonce, certReq FALSE). nonce None leaves the nonce out."""
    req: dict[str, Any] = {
        "version": "v1",
        "cert_req": cert_req,
        "message_imprint": {
            "hash_algorithm": {"algorithm": alg},
            "hashed_message": hashlib.new(alg, DATA).digest(),
        },
    }
    if nonce is not None:
        req["nonce"] = nonce
    return bytes(tsp.TimeStampReq(req).dump())


# --- forging tokens with asn1crypto -------------------------------------------------------------------------


def asn1_copy(obj: Any) -> Any:
    """A detached copy of an asn1crypto value, safe to place into a new structure."""
    return obj.__class__.load(obj.dump())


def signer_info(tsr: bytes) -> Any:
    """The token's first SignerInfo (asn1crypto)."""
    return tsp.TimeStampResp.load(tsr)["time_stamp_token"]["content"]["signer_infos"][0]


def tst_info(tsr: bytes) -> Any:
    """The token's TSTInfo (asn1crypto), read from the eContent octets as signed."""
    encap = tsp.TimeStampResp.load(tsr)["time_stamp_token"]["content"]["encap_content_info"]
    return tsp.TSTInfo.load(bytes(encap["content"]))


def rebuild(tsr: bytes, *, econtent: bytes | None = None, signer_infos: list[Any] | None = None) -> bytes:
    """Re-encode a TimeStampResp with a replaced TSTInfo and/or SignerInfos (signatures left as they are)."""
    resp = tsp.TimeStampResp.load(tsr)
    sd = resp["time_stamp_token"]["content"]
    encap = sd["encap_content_info"]
    new_sd = cms.SignedData(
        {
            "version": sd["version"].native,
            "digest_algorithms": asn1_copy(sd["digest_algorithms"]),
            "encap_content_info": {
                "content_type": "tst_info",
                "content": core.ParsableOctetString(
                    econtent if econtent is not None else bytes(encap["content"])
                ),
            },
            "certificates": [asn1_copy(c) for c in sd["certificates"]],
            "signer_infos": signer_infos if signer_infos is not None else [asn1_copy(sd["signer_infos"][0])],
        }
    )
    out = tsp.TimeStampResp(
        {
            "status": asn1_copy(resp["status"]),
            "time_stamp_token": cms.ContentInfo({"content_type": "signed_data", "content": new_sd}),
        }
    )
    return bytes(out.dump())


def resign(
    tsr: bytes,
    ident: TsaIdentity,
    *,
    attrs: AttrsEdit = lambda a: a,
    pss: bool = False,
    sid_ski: bool = False,
) -> Any:
    """A new SignerInfo over (possibly edited) signed attributes, validly signed with the TSA key.

    Forges tokens whose signature is correct but whose content is not, to prove the verifier checks more than
    the signature.
    """
    si = signer_info(tsr)
    new_attrs = cms.CMSAttributes(attrs([asn1_copy(a) for a in si["signed_attrs"]]))
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
    sid = asn1_copy(si["sid"])
    if sid_ski:
        ski = asn1_x509.Certificate.load(cert_der(ident.cert_pem)).key_identifier
        sid = cms.SignerIdentifier({"subject_key_identifier": ski})
    return cms.SignerInfo(
        {
            "version": "v3" if sid_ski else "v1",
            "sid": sid,
            "digest_algorithm": asn1_copy(si["digest_algorithm"]),
            "signed_attrs": new_attrs,
            "signature_algorithm": sig_alg,
            "signature": signature,
        }
    )


def resigned(tsr: bytes, ident: TsaIdentity, **kwargs: Any) -> bytes:
    """The token with its one SignerInfo replaced by resign(tsr, ident, **kwargs)."""
    return rebuild(tsr, signer_infos=[resign(tsr, ident, **kwargs)])


def flip(data: bytes, needle: bytes, at: int = -1) -> bytes:
    """Flip one bit in the single occurrence of needle inside data."""
    assert data.count(needle) == 1
    pos = data.index(needle) + (at % len(needle))
    return data[:pos] + bytes([data[pos] ^ 0x01]) + data[pos + 1 :]


def signing_time_shifted(tsr: bytes) -> bytes:
    """signingTime moved by one second and the signed attributes re-encoded; the original signature kept."""
    si = asn1_copy(signer_info(tsr))
    attrs = []
    for attr in si["signed_attrs"]:
        attr = asn1_copy(attr)
        if attr["type"].native == "signing_time":
            when = attr["values"][0].native + timedelta(seconds=1)
            attr = cms.CMSAttribute({"type": "signing_time", "values": [cms.Time({"utc_time": when})]})
        attrs.append(attr)
    altered = cms.SignerInfo(
        {
            "version": "v1",
            "sid": asn1_copy(si["sid"]),
            "digest_algorithm": asn1_copy(si["digest_algorithm"]),
            "signed_attrs": cms.CMSAttributes(attrs),
            "signature_algorithm": asn1_copy(si["signature_algorithm"]),
            "signature": bytes(si["signature"]),
        }
    )
    return rebuild(tsr, signer_infos=[altered])


def serial_plus_one(tsr: bytes) -> bytes:
    """The TSTInfo re-encoded with serialNumber + 1; signature and messageDigest left as they were."""
    tst = tst_info(tsr)
    fields = {n: asn1_copy(tst[n]) for n, _spec, *_ in tsp.TSTInfo._fields if not isinstance(tst[n], core.Void)}
    fields["serial_number"] = core.Integer(tst["serial_number"].native + 1)
    return rebuild(tsr, econtent=tsp.TSTInfo(fields).dump())


def gen_time_digit_flipped(tsr: bytes) -> bytes:
    """A digit flipped inside genTime, without re-encoding (the seconds' last digit, so it still parses)."""
    return flip(tsr, tst_info(tsr)["gen_time"].dump()[2:], at=-2)


def signature_flipped(tsr: bytes) -> bytes:
    """One bit of the SignerInfo's signature value flipped (its byte 100, counted modulo its length)."""
    return flip(tsr, bytes(signer_info(tsr)["signature"]), at=100)


# edits of the signed attributes, for resign(attrs=...)


def drop_attr(oid_name: str) -> AttrsEdit:
    return lambda attrs: [a for a in attrs if a["type"].native != oid_name]


def zero_message_digest(attrs: list[Any]) -> list[Any]:
    out = [a for a in attrs if a["type"].native != "message_digest"]
    return [*out, cms.CMSAttribute({"type": "message_digest", "values": [b"\x00" * 32]})]


def content_type_data(attrs: list[Any]) -> list[Any]:
    out = [a for a in attrs if a["type"].native != "content_type"]
    return [*out, cms.CMSAttribute({"type": "content_type", "values": ["data"]})]


def ess_v2_naming(cert_hash: bytes) -> AttrsEdit:
    """signingCertificateV2 replaced by one ESSCertIDv2 holding only this hash (no issuerSerial)."""

    def edit(attrs: list[Any]) -> list[Any]:
        out = [a for a in attrs if a["type"].native != "signing_certificate_v2"]
        value = {"certs": [{"cert_hash": cert_hash}]}
        return [*out, cms.CMSAttribute({"type": "signing_certificate_v2", "values": [value]})]

    return edit


# --- HTTP without the client under test ---------------------------------------------------------------------


def post(
    url: str, body: bytes, content_type: str = "application/timestamp-query", timeout: float = 5
) -> tuple[int, str, bytes]:
    """POST with urllib, never through a proxy: (status, Content-Type, body); an HTTP error is (code, "", b"")."""
    req = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": content_type})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(req, timeout=timeout) as resp:
            return resp.status, resp.headers.get("Content-Type", ""), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, "", b""


# --- openssl ------------------------------------------------------------------------------------------------

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


def openssl(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """Run the openssl binary; the caller judges the outcome."""
    assert OPENSSL is not None, "openssl is not installed"
    return subprocess.run([OPENSSL, *map(str, args)], capture_output=True, text=True, timeout=30)


def openssl_ok(*args: str | Path) -> subprocess.CompletedProcess[str]:
    res = openssl(*args)
    assert res.returncode == 0, res.stderr
    return res


def openssl_query(tmp: Path, data: bytes) -> bytes:
    """A TimeStampReq made by `openssl ts -query`: SHA-256, certReq, a random nonce."""
    (tmp / "query.data").write_bytes(data)
    openssl_ok("ts", "-query", "-data", tmp / "query.data", "-sha256", "-cert", "-out", tmp / "q.tsq")
    return (tmp / "q.tsq").read_bytes()


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
    """`openssl ts -reply` to a query: openssl as the TSA, with `signer` and its `key` (files)."""
    (tmp / "serial").write_text("01\n")
    (tmp / "tsa.cnf").write_text(TSA_CNF.format(dir=tmp, digest=digest, ess=ess, precision=precision))
    (tmp / "q.tsq").write_bytes(query)
    args: list[str | Path] = ["ts", "-reply", "-config", tmp / "tsa.cnf", "-queryfile", tmp / "q.tsq",
                              "-signer", signer, "-inkey", key, "-out", tmp / "resp.tsr"]  # fmt: skip
    if chain is not None:
        args += ["-chain", chain]
    openssl_ok(*args)
    return (tmp / "resp.tsr").read_bytes()


def openssl_verify(tmp: Path, tsr: bytes, data: bytes, ca_pem: bytes) -> subprocess.CompletedProcess[str]:
    """`openssl ts -verify` of a token over data against one CA; the caller judges the outcome."""
    (tmp / "resp.tsr").write_bytes(tsr)
    (tmp / "data.bin").write_bytes(data)
    (tmp / "ca.pem").write_bytes(ca_pem)
    return openssl(
        "ts", "-verify", "-data", tmp / "data.bin", "-in", tmp / "resp.tsr", "-CAfile", tmp / "ca.pem"
    )


def make_openssl_pki(d: Path) -> Path:
    """root CA -> intermediate CA -> TSA signer, all P-384, made by the openssl binary (not by our code), in d:
    root.pem/.key, inter.pem/.key, tsa.pem/.key."""
    (d / "ext.cnf").write_text(CERT_EXT)
    newkey = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-384", "-nodes"]
    openssl_ok("req", "-x509", *newkey, "-keyout", d / "root.key", "-out", d / "root.pem", "-days", "30",
               "-sha384", "-subj", "/O=openssl test/CN=Root", "-addext", "basicConstraints=critical,CA:TRUE",
               "-addext", "keyUsage=critical,keyCertSign,cRLSign")  # fmt: skip
    for name, cn, issuer, serial in (("inter", "Intermediate", "root", "2"), ("tsa", "TSA", "inter", "3")):
        openssl_ok("req", "-new", *newkey, "-keyout", d / f"{name}.key", "-out", d / f"{name}.csr",
                   "-subj", f"/O=openssl test/CN={cn}")  # fmt: skip
        openssl_ok("x509", "-req", "-in", d / f"{name}.csr", "-CA", d / f"{issuer}.pem", "-CAkey", d / f"{issuer}.key",
                   "-set_serial", serial, "-days", "30", "-sha384", "-extfile", d / "ext.cnf",
                   "-extensions", f"v3_{name}", "-out", d / f"{name}.pem")  # fmt: skip
    return d
