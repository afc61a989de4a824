"""in-toto/DSSE export, Verification Summary Attestations and the CI action, on real repos and real keys.

The DSSE vectors are the spec's own: the PAE and ECDSA P-256 example of secure-systems-lab/dsse protocol.md,
and the Ed25519 vectors of its testvectors/vectors.json (RFC 8032 keys, so signatures are deterministic).
Every envelope we write is checked twice: by securesystemslib's DSSE verifier and by our own.
"""

from __future__ import annotations

import base64
import copy
import json
import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from securesystemslib.dsse import Envelope
from securesystemslib.signer import SSlibKey

from git_vaultmesh import intoto

from cli_helpers import assert_error, ok, ok_json, run
from conftest import ROOT, GpgKey, git

# --- DSSE spec vectors ---------------------------------------------------------------------------
# protocol.md "Test Vectors": ECDSA P-256 / SHA-256, deterministic RFC 6979, signature as raw r || s.
P256_X = 46950820868899156662930047687818585632848591499744589407958293238635476079160
P256_Y = 5640078356564379163099075877009565129882514886557779369047442380624545832820
P256_SIG = "A3JqsQGtVsJ2O2xqrI5IcnXip5GToJ3F+FnZ+O88SjtR6rDAajabZKciJTfUiHqJPcIAriEGAHTVeCUjW2JIZA=="

# testvectors/vectors.json: key A is RFC 8032 §7.1 TEST 1.
SEED_A = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
STATEMENT_B64 = "eyJfdHlwZSI6Imh0dHBzOi8vaW4tdG90by5pby9TdGF0ZW1lbnQvdjEifQ=="
VECTORS = [  # (id, payload, payloadType, sig by A, pae hex, expect accept with payloadType supported)
    ("single-signature", STATEMENT_B64, "application/vnd.in-toto+json",
     "2WAfaHm5jluo0w+0rk8uVkluELJYWjSmU9x7EUzx+AyteDGJ4/nqyJXfmAUVFIAoQafWm7AxBZNw5M9ixNHiCA==",
     "445353457631203238206170706c69636174696f6e2f766e642e696e2d746f746f2b6a736f6e203433207b225f74797065223a"
     "2268747470733a2f2f696e2d746f746f2e696f2f53746174656d656e742f7631227d", True),
    ("url-safe-base64", "-_-_Pj8=", "application/vnd.in-toto+json",
     "P-_KHICeR7tI6S_YyejJTRtrXhcQyQ2LYPaL8h90KjC9qN8HU_svOQ6TuDOT1HIrsGW886DbWNWcCmX5twLrAw==",
     "445353457631203238206170706c69636174696f6e2f766e642e696e2d746f746f2b6a736f6e203520fbffbf3e3f", True),
    ("non-ascii-payload-type", STATEMENT_B64, "application/vnd.exämple+json",
     "xmSk/ug66ysT7ayhkCIjhAq42zgZXSsEWuzUaNL7w2eGAdF/NU6/fRXPtmfN+5DNSAs5/i2lUnHjbbjPsu0tAw==",
     "445353457631203239206170706c69636174696f6e2f766e642e6578c3a46d706c652b6a736f6e203433207b225f7479706522"
     "3a2268747470733a2f2f696e2d746f746f2e696f2f53746174656d656e742f7631227d", True),
    ("empty-payload", "", "application/vnd.in-toto+json",
     "gSggCAaTLTYyRH6FIDBem6meyIynsYy8RTHVzwx9tnTb7Bg/1jMWnuVgI/gffqmbsC2VX5/jHfkkDqsj7CDbDg==",
     "445353457631203238206170706c69636174696f6e2f766e642e696e2d746f746f2b6a736f6e203020", True),
    # the signature covers application/vnd.in-toto+json, the envelope claims another (supported) type
    ("payload-type-swapped", STATEMENT_B64, "application/vnd.example.other+json",
     "2WAfaHm5jluo0w+0rk8uVkluELJYWjSmU9x7EUzx+AyteDGJ4/nqyJXfmAUVFIAoQafWm7AxBZNw5M9ixNHiCA==",
     None, False),
]


def test_pae_and_signature_of_the_protocol_example() -> None:
    body, ptype = b"hello world", "http://example.com/HelloWorld"
    expected = b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
    assert intoto.pae(ptype, body) == expected
    assert Envelope(body, ptype, {}).pae() == expected  # securesystemslib agrees
    raw = base64.b64decode(P256_SIG)
    der = encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))
    key = ec.EllipticCurvePublicNumbers(P256_X, P256_Y, ec.SECP256R1()).public_key()
    envelope = {"payload": base64.b64encode(body).decode(), "payloadType": ptype,
                "signatures": [{"sig": base64.b64encode(der).decode()}]}
    assert intoto.open_envelope(envelope, key, ptype) == body
    envelope["payload"] = base64.b64encode(b"hello World").decode()
    with pytest.raises(intoto.EnvelopeError):
        intoto.open_envelope(envelope, key, ptype)


@pytest.mark.parametrize("vid,payload,ptype,sig,pae_hex,accept", VECTORS, ids=[v[0] for v in VECTORS])
def test_dsse_vectors(vid: str, payload: str, ptype: str, sig: str, pae_hex: str | None, accept: bool) -> None:
    key = ed25519.Ed25519PrivateKey.from_private_bytes(SEED_A)
    body = intoto._b64decode(payload)
    if pae_hex is not None:
        assert intoto.pae(ptype, body).hex() == pae_hex
        # RFC 8032 signatures are deterministic: signing the PAE reproduces the vector's signature
        assert base64.b64encode(key.sign(intoto.pae(ptype, body))) == base64.b64encode(intoto._b64decode(sig))
    envelope = {"payload": payload, "payloadType": ptype, "signatures": [{"sig": sig, "keyid": ""}]}
    if accept:
        assert intoto.open_envelope(envelope, key.public_key(), ptype) == body
    else:
        with pytest.raises(intoto.EnvelopeError):
            intoto.open_envelope(envelope, key.public_key(), ptype)


# --- keys and repositories -----------------------------------------------------------------------
def write_key(path: Path, kind: str) -> Path:
    key: Any = {"ed25519": ed25519.Ed25519PrivateKey.generate, "p256": lambda: ec.generate_private_key(ec.SECP256R1()),
                "p384": lambda: ec.generate_private_key(ec.SECP384R1()),
                "rsa": lambda: rsa.generate_private_key(65537, 2048)}[kind]()
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    return path


def public_of(path: Path) -> Any:
    return serialization.load_pem_private_key(path.read_bytes(), None).public_key()


def sslib_verify(line: str, public: Any) -> dict[str, Any]:
    """securesystemslib's DSSE verifier, with the key under the keyid we document (its SSH fingerprint)."""
    env = Envelope.from_dict(json.loads(line))
    env.verify([SSlibKey.from_crypto(public, keyid=intoto.ssh_keyid(public))], 1)
    assert env.payload_type == intoto.PAYLOAD_TYPE
    return json.loads(env.payload)  # type: ignore[no-any-return]


@pytest.fixture
def released(ledger_repo: Path) -> Path:
    dist = ledger_repo / "dist"
    dist.mkdir()
    (dist / "app.tar.gz").write_bytes(b"release bytes\n" * 100)
    (dist / "app.sig").write_bytes(b"another artifact\n")
    ok(ledger_repo, "record", "v1.0", "--artifact", str(dist / "app.tar.gz"), "--artifact", str(dist / "app.sig"))
    return ledger_repo


def receipt(repo: Path, rev: str = "v1.0") -> dict[str, Any]:
    (found,) = ok_json(repo, "show", rev)
    return found  # type: ignore[no-any-return]


# --- export --------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["ed25519", "p256"])
def test_export_round_trip(released: Path, tmp_path: Path, kind: str) -> None:
    key = write_key(tmp_path / "signer.pem", kind)
    out = ok(released, "export", "v1.0", "--intoto", "--key", str(key), "--public-key", str(tmp_path / "pub.pem"))
    lines = out.splitlines()
    assert len(lines) == 1 and out.endswith("\n")
    public = public_of(key)
    assert intoto.load_public_key(str(tmp_path / "pub.pem")).public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo) == public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    ours = intoto.verify_envelope(json.loads(lines[0]), public)
    theirs = sslib_verify(lines[0], public)
    assert ours == theirs
    st = ours
    assert st["_type"] == "https://in-toto.io/Statement/v1"
    assert st["predicateType"] == intoto.RECEIPT_PREDICATE
    # subjects' digests are the receipt's, found independently with git and show
    rec = receipt(released)
    body = rec["entry"]["body"]
    by_alg = {alg: (s["name"], v) for s in st["subject"] for alg, v in s["digest"].items() if alg != "sha256"}
    assert by_alg["gitTag"] == ("refs/tags/v1.0", git(released, "rev-parse", "refs/tags/v1.0"))
    assert by_alg["gitCommit"] == ("refs/tags/v1.0^{commit}", git(released, "rev-parse", "v1.0^{commit}"))
    shas = {s["name"]: s["digest"]["sha256"] for s in st["subject"] if "sha256" in s["digest"]}
    import hashlib
    assert shas == {n: hashlib.sha256((released / "dist" / n).read_bytes()).hexdigest()
                    for n in ("app.tar.gz", "app.sig")}
    assert shas == {a["name"]: a["sha256"] for a in body["artifacts"]}
    p = st["predicate"]
    assert p["history"]["root"] == body["history"]["root"] and p["history"]["size"] == body["history"]["size"] == 3
    assert p["treeDigest"] == {"alg": "Git-EVTag-v0-SHA512", "value": body["tree_digest"]}
    assert p["receipt"]["entry"] == rec["id"] and p["receipt"]["seq"] == rec["seq"]
    assert hashlib.sha256(p["receipt"]["line"].encode()).hexdigest() == rec["id"]  # the signed entry travels
    genesis = ok_json(released, "log")[-1]
    assert p["policy"] == {"entry": genesis["id"], "seq": 0, "bodyDigest": genesis["body_digest"]}


def test_a_flipped_byte_anywhere_fails(released: Path, tmp_path: Path) -> None:
    key = write_key(tmp_path / "signer.pem", "ed25519")
    line = ok(released, "export", "v1.0", "--intoto", "--key", str(key)).splitlines()[0].encode()
    public = public_of(key)
    intoto.verify_envelope(json.loads(line), public)
    sslib_verify(line.decode(), public)
    for i in range(len(line)):
        bad = bytearray(line)
        bad[i] ^= 0x01
        with pytest.raises(Exception):  # noqa: B017 - any refusal: JSON, base64, shape or signature
            intoto.verify_envelope(json.loads(bytes(bad)), public)
        with pytest.raises(Exception):  # noqa: B017
            sslib_verify(bytes(bad).decode("utf-8"), public)
    # the right envelope under another key fails too
    other = public_of(write_key(tmp_path / "other.pem", "ed25519"))
    with pytest.raises(intoto.EnvelopeError):
        intoto.verify_envelope(json.loads(line), other)


def test_export_refusals(released: Path, tmp_path: Path) -> None:
    res = run(released, "export", "v1.0", "--intoto")
    assert_error(res, "VM-USAGE")
    for kind in ("rsa", "p384"):
        assert_error(run(released, "export", "v1.0", "--intoto", "--key", str(write_key(tmp_path / f"{kind}.pem", kind))),
                     "VM-KEY-UNSUPPORTED")
    (tmp_path / "junk.pem").write_text("not a key\n")
    assert_error(run(released, "export", "v1.0", "--intoto", "--key", str(tmp_path / "junk.pem")), "VM-FILE-UNREADABLE")
    good = write_key(tmp_path / "k.pem", "ed25519")
    git(released, "tag", "-a", "v2.0", "-m", "v2.0")
    assert_error(run(released, "export", "v2.0", "--intoto", "--key", str(good)), "VM-NOT-RECORDED")


# --- verification summaries ----------------------------------------------------------------------
def vsa_of(repo: Path, tmp_path: Path, key: Path, *args: str) -> tuple[int, dict[str, Any], dict[str, Any]]:
    """Run verify once with --vsa and --json: the exit status, the report and the verified VSA statement."""
    vsa = tmp_path / "vsa.intoto.jsonl"
    res = run(repo, "verify", "v1.0", "--vsa", str(vsa), "--vsa-key", str(key), "--json", *args)
    report = json.loads(res.stdout)
    text = vsa.read_text()
    assert text.count("\n") == 1 and text.endswith("\n")  # one envelope: what slsa-verifier reads
    public = public_of(key)
    st = intoto.verify_envelope(json.loads(text), public)
    assert sslib_verify(text.strip(), public) == st
    return res.returncode, report, st


def assert_vsa_matches(report: dict[str, Any], st: dict[str, Any], repo: Path) -> None:
    p = st["predicate"]
    assert st["predicateType"] == "https://slsa.dev/verification_summary/v1"
    assert p["verificationResult"] == ("PASSED" if report["ok"] else "FAILED")
    assert p[intoto.CHECKS_FIELD] == [{"check": c["check"], "ok": c["ok"], "code": c["code"]}
                                      for c in report["checks"]]
    assert p[intoto.TRUST_FIELD] == report["trust"]
    assert p["verifier"]["id"] == intoto.VERIFIER_ID
    assert not any(level.startswith("SLSA_") for level in p["verifiedLevels"])
    entries = {e["id"]: e for e in ok_json(repo, "log")}
    rec = receipt(repo)
    assert rec["id"] in {a["digest"]["sha256"] for a in p["inputAttestations"]}
    assert all(a["digest"]["sha256"] in entries for a in p["inputAttestations"])
    genesis = ok_json(repo, "log")[-1]
    assert p["policy"]["digest"] == {"sha256": genesis["id"]}
    assert p["resourceUri"].endswith("@refs/tags/v1.0") and p["resourceUri"].startswith("git+")


def test_vsa_passed(released: Path, tmp_path: Path, gpg_key: GpgKey) -> None:
    key = write_key(tmp_path / "vsa.pem", "p256")
    art = str(released / "dist" / "app.tar.gz")
    code, report, st = vsa_of(released, tmp_path, key, "--artifact", art, "--trust-root", gpg_key.fingerprint)
    assert code == 0 and report["ok"]
    assert_vsa_matches(report, st, released)
    p = st["predicate"]
    assert p["verifiedLevels"] == ["VAULTMESH_LOG_INTACT", "VAULTMESH_SIGNED", "VAULTMESH_SOURCE_MATCHES",
                                   "VAULTMESH_ARTIFACTS_MATCH", "VAULTMESH_TRUST_PINNED"]
    assert p[intoto.LEVELS_FIELD] == p["verifiedLevels"]
    digests = [d for s in st["subject"] for d in s["digest"].items()]
    assert ("gitCommit", git(released, "rev-parse", "v1.0^{commit}")) in digests
    # without --artifact or a pin, those levels are not claimed
    code, report, st = vsa_of(released, tmp_path, key)
    assert code == 0
    assert_vsa_matches(report, st, released)
    assert "VAULTMESH_ARTIFACTS_MATCH" not in st["predicate"]["verifiedLevels"]
    assert ("VAULTMESH_TRUST_PINNED" in st["predicate"]["verifiedLevels"]) == (report["trust"] == "pinned")


def test_vsa_failed_is_written_and_says_why(released: Path, tmp_path: Path) -> None:
    key = write_key(tmp_path / "vsa.pem", "ed25519")
    git(released, "tag", "-f", "-a", "v1.0", "-m", "moved", "HEAD~1")  # the tag moved after recording
    code, report, st = vsa_of(released, tmp_path, key)
    assert code == 1 and not report["ok"]
    assert "VM-TAG-MOVED" in [c["code"] for c in report["checks"] if not c["ok"]]
    assert_vsa_matches(report, st, released)
    p = st["predicate"]
    assert p["verifiedLevels"] == ["FAILED"]
    assert "VAULTMESH_SOURCE_MATCHES" not in p[intoto.LEVELS_FIELD]
    assert "VAULTMESH_SIGNED" in p[intoto.LEVELS_FIELD] and "VAULTMESH_LOG_INTACT" in p[intoto.LEVELS_FIELD]
    # a tampered artifact fails its own level
    (released / "dist" / "app.tar.gz").write_bytes(b"tampered\n")
    git(released, "tag", "-f", "-a", "v1.0", "-m", "v1.0", "HEAD")
    code, report, st = vsa_of(released, tmp_path, key, "--artifact", str(released / "dist" / "app.tar.gz"))
    # a re-made tag is another tag object: still moved; the artifact fails as well
    assert code == 1
    assert_vsa_matches(report, st, released)
    assert "VAULTMESH_ARTIFACTS_MATCH" not in st["predicate"][intoto.LEVELS_FIELD]


def test_vsa_refusals(released: Path, tmp_path: Path) -> None:
    vsa = tmp_path / "v.jsonl"
    assert_error(run(released, "verify", "v1.0", "--vsa", str(vsa)), "VM-USAGE")
    key = write_key(tmp_path / "k.pem", "ed25519")
    assert_error(run(released, "verify", "--vsa", str(vsa), "--vsa-key", str(key)), "VM-USAGE")
    assert_error(run(released, "verify", "v1.0", "--vsa", str(vsa), "--vsa-key",
                     str(write_key(tmp_path / "r.pem", "rsa"))), "VM-KEY-UNSUPPORTED")
    assert not vsa.exists()


# --- the GitHub composite action's script -------------------------------------------------------
ACTION = ROOT / "verify-action"
PUSH = ["refs/vaultmesh/log", "refs/vaultmesh/keep/*", "refs/notes/vaultmesh"]


def shim_dir(tmp_path: Path) -> Path:
    """`git-vaultmesh` on PATH running this checkout (PYTHONPATH is inherited from conftest)."""
    d = tmp_path / "bin"
    d.mkdir(exist_ok=True)
    shim = d / "git-vaultmesh"
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m git_vaultmesh "$@"\n')
    shim.chmod(shim.stat().st_mode | stat.S_IEXEC)
    return d


def run_action(clone: Path, tmp_path: Path, **inputs: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PATH=f"{shim_dir(tmp_path)}{os.pathsep}{os.environ['PATH']}",
               INPUT_INSTALL="false", GITHUB_WORKSPACE=str(clone))
    env.update({f"INPUT_{k.upper()}": v for k, v in inputs.items()})
    return subprocess.run(["bash", str(ACTION / "verify.sh")], cwd=clone, env=env, capture_output=True, text=True)


def test_action_yml_runs_the_script() -> None:
    text = (ACTION / "action.yml").read_text()
    assert "using: composite" in text or "using: 'composite'" in text or 'using: "composite"' in text
    assert "verify.sh" in text
    for name in ("ref", "trust-root", "artifacts", "vsa", "vsa-key", "remote", "install"):
        assert f"\n  {name}:" in text, name


def test_action_verifies_a_release_in_a_fresh_shallow_clone(released: Path, tmp_path: Path, gpg_key: GpgKey) -> None:
    origin = tmp_path / "origin.git"
    git(tmp_path, "clone", "-q", "--bare", str(released), str(origin))
    git(released, "push", "-q", str(origin), *PUSH)
    clone = tmp_path / "ci"
    git(tmp_path, "clone", "-q", "--depth", "1", origin.as_uri(), str(clone))  # like actions/checkout
    assert git(clone, "for-each-ref", "refs/vaultmesh/", "refs/notes/") == ""
    key = write_key(tmp_path / "vsa.pem", "ed25519")
    vsa = tmp_path / "vsa.intoto.jsonl"
    res = run_action(clone, tmp_path, ref="v1.0", trust_root=gpg_key.fingerprint, vsa=str(vsa), vsa_key=str(key),
                     artifacts=str(released / "dist" / "app.tar.gz"))
    assert res.returncode == 0, res.stdout + res.stderr
    assert "verify v1.0: OK; pinned trust root" in res.stdout
    st = intoto.verify_envelope(json.loads(vsa.read_text()), public_of(key))
    assert st["predicate"]["verificationResult"] == "PASSED"
    assert st["predicate"]["resourceUri"] == f"git+{origin.as_uri()}@refs/tags/v1.0"
    # a wrong trust root fails the job (and the VSA says FAILED)
    res = run_action(clone, tmp_path, ref="v1.0", trust_root="0" * 40, vsa=str(vsa), vsa_key=str(key))
    assert res.returncode == 1, res.stdout + res.stderr
    assert "VM-TRUST-ROOT-MISMATCH" in res.stdout
    assert intoto.verify_envelope(json.loads(vsa.read_text()), public_of(key))["predicate"][
        "verificationResult"] == "FAILED"


def test_action_fails_without_a_ledger_on_origin(repo: Path, tmp_path: Path) -> None:
    origin = tmp_path / "origin.git"
    git(tmp_path, "clone", "-q", "--bare", str(repo), str(origin))
    clone = tmp_path / "ci"
    git(tmp_path, "clone", "-q", origin.as_uri(), str(clone))
    res = run_action(clone, tmp_path, ref="v1.0")
    assert res.returncode != 0
    assert "refs/vaultmesh/log" in res.stderr


def test_statement_helpers_need_no_repository() -> None:
    """The VSA's levels are a pure function of the report: a check outside every group never adds a level."""
    from git_vaultmesh.verification import Check, Report

    r = Report(trust="pinned", checks=[Check("log.append-only", True, None, ""), Check("log.trust-root", True, None, ""),
                                       Check("entry.signatures", True, None, ""), Check("something.new", True, None, "")])
    assert intoto.levels_passed(r) == ["VAULTMESH_LOG_INTACT", "VAULTMESH_SIGNED", "VAULTMESH_TRUST_PINNED"]
    r2 = copy.deepcopy(r)
    r2.checks[2] = Check("entry.signatures", False, "VM-SIG-INVALID", "")
    assert intoto.levels_passed(r2) == ["VAULTMESH_LOG_INTACT", "VAULTMESH_TRUST_PINNED"]
