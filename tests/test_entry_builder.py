"""The one entry builder (`entry.sign_body` / `add_signature` / `sign_batch`) and the one "may my key sign this
type" (`policy.may_sign`): fixed vectors that pin the bytes every verb writes, and a structural test that no
other module of the package builds a signature item or signs an entry body itself.

The vectors use a throwaway Ed25519 SSH key kept in this file: SSHSIG over Ed25519 is deterministic, so the
entry line (and its id) is a fixed function of the body and the key, and any change of what is signed, of the
signature item or of the line encoding changes the id.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import pytest

from git_vaultmesh import merkle
from git_vaultmesh.entry import (
    Entry,
    add_signature,
    batch_statement,
    canonical,
    make_entry,
    parse_line,
    sign_batch,
    sign_body,
    signed_message,
)
from git_vaultmesh.errors import VaultMeshError
from git_vaultmesh.policy import Policy, PolicySigner, check_signatures, claimed_timeline, may_sign
from git_vaultmesh.signing import PinnedKey, SigningKey, Verifier, resolve_signing_key, sign

from policy_kit import ssh_keypair

# A test vector key, generated for this file only; it signs nothing but these vectors.
VECTOR_KEY = """\
-----BEGIN OPENSSH PRIVATE KEY-----
b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW
QyNTUxOQAAACDgJEuvANsrYkAqblV2RQqsQVT8kjfBJqPWJ6HFTZAYHAAAAJjpHY6y6R2O
sgAAAAtzc2gtZWQyNTUxOQAAACDgJEuvANsrYkAqblV2RQqsQVT8kjfBJqPWJ6HFTZAYHA
AAAEBUcv1ZZF+tlR9JtjG42VLtpG7A31BUKDg9J5C674o7neAkS68A2ytiQCpuVXZFCqxB
VPySN8Emo9YnocVNkBgcAAAAEnZlY3RvckBleGFtcGxlLm9yZwECAw==
-----END OPENSSH PRIVATE KEY-----
"""
VECTOR_FPR = "SHA256:g7Ta1l7xmO2kzmL/2P83GSKdtHbWeNzwUcUtWB5lIek"
BODY: dict[str, Any] = {"type": "deploy", "log": "0" * 31 + "1", "recorded_at": "2026-01-02T03:04:05Z",
                        "component": "demo", "message": "vector"}
SECOND: dict[str, Any] = {**BODY, "message": "second"}
# Entry ids (SHA-256 of the line) of sign_body(BODY) and of sign_batch([BODY, SECOND]) with the vector key.
BODY_ID = "eae35d65e7b0e0ac7d8baebfdcb4684d90522519ef35e0ec7161868757dc8d2f"
BATCH_IDS = ["ac26c0972d30cd892a8b5be5c91a62eae1bc4ebfc5d85a6be715b33dadc51bbd",
             "0f1daea37ca53ed6b82b846fa7dff18ee67dfdfa71b177d18d77d46b28a38d40"]

PACKAGE = Path(__file__).resolve().parent.parent / "git_vaultmesh"


@pytest.fixture()
def vkey(tmp_path: Path) -> SigningKey:
    path = tmp_path / "id_vector"
    path.write_text(VECTOR_KEY)
    path.chmod(0o600)
    k = resolve_signing_key("ssh", str(path))
    assert k.fingerprint == VECTOR_FPR
    return k


def _verified(entry: Entry, k: SigningKey, typ: str = "deploy") -> frozenset[str]:
    policy = Policy((PolicySigner("vector", "ssh", k.fingerprint, k.public_key, (typ,)),))
    with Verifier([PinnedKey("ssh", k.fingerprint, k.public_key)]) as v:
        res = check_signatures(policy, typ, entry, v)
    assert res.problems == (), res.problems
    return res.good


def test_sign_body_writes_the_fixed_vector(vkey: SigningKey) -> None:
    e = sign_body(BODY, vkey)
    # the formula every verb wrote by hand before: one {format, signer, sig} over JCS(body)
    by_hand = make_entry(BODY, [{"format": vkey.format, "signer": vkey.fingerprint, "sig": sign(vkey, canonical(BODY))}])
    assert e.line == by_hand.line
    assert e.id == BODY_ID
    assert e.line.startswith(b'{"body":' + canonical(BODY) + b',"sigs":[{"format":"ssh","sig":"')
    assert e.line.endswith(b'","signer":"' + VECTOR_FPR.encode() + b'"}],"v":1}')
    assert parse_line(e.line) == e and e.body is BODY
    assert _verified(e, vkey) == {VECTOR_FPR}


def test_add_signature_keeps_the_body_and_earlier_signatures(vkey: SigningKey, tmp_path: Path) -> None:
    other_path, other_fpr = ssh_keypair(tmp_path, "other")
    other = resolve_signing_key("ssh", other_path)
    first = sign_body(BODY, vkey)
    both = add_signature(first, other)
    assert both.body_bytes == first.body_bytes and both.sigs[0] == first.sigs[0]
    assert [s["signer"] for s in both.sigs] == [VECTOR_FPR, other_fpr]
    assert both.sigs[1]["sig"] == sign(other, canonical(BODY))
    assert add_signature(make_entry(BODY, []), vkey).line == first.line
    for k in (vkey, other):
        policy = Policy(tuple(PolicySigner(n, "ssh", x.fingerprint, x.public_key, ("*",))
                              for n, x in (("vector", vkey), ("other", other))), {"*": 2})
        with Verifier([PinnedKey("ssh", x.fingerprint, x.public_key) for x in (vkey, other)]) as v:
            res = check_signatures(policy, "deploy", both, v)
        assert res.problems == () and res.good == {VECTOR_FPR, other_fpr}, k


def test_sign_batch_writes_the_fixed_vector(vkey: SigningKey) -> None:
    entries = sign_batch([BODY, SECOND], vkey)
    assert [e.id for e in entries] == BATCH_IDS
    leaves = [merkle.leaf_hash(canonical(b)) for b in (BODY, SECOND)]
    statement = batch_statement(BODY["log"], 2, merkle.root_from_leaf_hashes(leaves))
    assert len({e.sigs[0]["sig"] for e in entries}) == 1  # one signature for the whole batch
    for i, e in enumerate(entries):
        (s,) = e.sigs
        batch: Any = s["batch"]  # Entry.sigs is typed {str: str}; a batch signature also carries its proof
        assert batch == {"size": 2, "index": i, "proof": [h.hex() for h in merkle.inclusion_proof(leaves, i)]}
        assert signed_message(s, e) == statement
        assert parse_line(e.line) == e
        assert _verified(e, vkey) == {VECTOR_FPR}
    assert sign_batch([], vkey) == []


def test_may_sign_is_the_one_refusal(vkey: SigningKey) -> None:
    releaser = PolicySigner("vector", "ssh", vkey.fingerprint, vkey.public_key, ("release",))
    policy = Policy((releaser,))
    assert may_sign(policy, vkey, "release") is releaser
    with pytest.raises(VaultMeshError) as wrong_type:
        may_sign(policy, vkey, "deploy")
    assert wrong_type.value.code == "VM-SIGNER-NOT-IN-POLICY"
    assert wrong_type.value.cause == "signer vector may sign release, not deploy"
    assert wrong_type.value.hint == "ask the policy signers to extend your types"
    stranger = Policy((PolicySigner("someone", "ssh", "SHA256:" + "A" * 43, vkey.public_key, ("*",)),))
    for unpinned in (stranger, None):
        with pytest.raises(VaultMeshError) as exc:
            may_sign(unpinned, vkey, "release")
        assert exc.value.code == "VM-SIGNER-NOT-IN-POLICY"
        assert exc.value.cause == f"your signing key {VECTOR_FPR} is not a signer in the ledger's policy"
    seen: list[PolicySigner | None] = []

    def worded(s: PolicySigner | None) -> tuple[str, str]:
        seen.append(s)
        return "the verb's own cause", "the verb's own hint"

    with pytest.raises(VaultMeshError) as exc:
        may_sign(policy, vkey, "policy", worded)
    assert (exc.value.code, exc.value.cause, exc.value.hint) == (
        "VM-SIGNER-NOT-IN-POLICY", "the verb's own cause", "the verb's own hint")
    assert seen == [releaser]


def test_may_sign_reads_a_timeline(vkey: SigningKey) -> None:
    genesis_body = {"type": "policy", "log": BODY["log"], "recorded_at": BODY["recorded_at"],
                    **Policy((PolicySigner("vector", "ssh", vkey.fingerprint, vkey.public_key, ("policy",)),))
                    .body_fields()}
    view = claimed_timeline([sign_body(genesis_body, vkey)])
    assert may_sign(view, vkey, "policy").name == "vector"
    with pytest.raises(VaultMeshError, match="may sign policy, not release"):
        may_sign(view, vkey, "release")


# --- structure: nobody else signs entries ------------------------------------------------------------

def _calls(tree: ast.AST) -> list[ast.Call]:
    return [n for n in ast.walk(tree) if isinstance(n, ast.Call)]


def _name(call: ast.Call) -> str:
    f = call.func
    return f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else ""


def _signing_names(tree: ast.AST) -> set[str]:
    """Local names bound to git_vaultmesh.signing.sign by `from ..signing import sign [as x]`."""
    return {a.asname or a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)
            and (n.module or "").endswith("signing") for a in n.names if a.name == "sign"}


def test_no_other_module_signs_entries() -> None:
    offences: list[str] = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).as_posix()
        if rel in ("entry.py", "signing.py"):
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        signers = _signing_names(tree)
        for call in _calls(tree):
            where = f"{rel}:{call.lineno}"
            if _name(call) in signers and not any(k.arg == "armor" for k in call.keywords):
                offences.append(f"{where}: calls signing.sign on entry material (use entry.sign_body)")
            if _name(call) == "make_entry":
                offences.append(f"{where}: builds an entry line itself (use entry.sign_body / add_signature)")
        for node in ast.walk(tree):
            if isinstance(node, ast.Dict):
                keys = {k.value for k in node.keys if isinstance(k, ast.Constant)}
                if {"signer", "sig"} <= keys:
                    offences.append(f"{rel}:{node.lineno}: writes a signature item by hand")
    assert offences == []


def test_the_only_armoured_signature_is_the_checkpoint() -> None:
    """The one signing.sign call left outside entry.py signs the checkpoint (armoured), never an entry."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).as_posix()
        if rel in ("entry.py", "signing.py"):
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        found += [(rel, ast.unparse(c)) for c in _calls(tree) if _name(c) in _signing_names(tree)]
    assert found == [("ledger.py", "sign(key, cp, armor=True)")]


def test_no_command_decides_may_sign_by_itself() -> None:
    """A function that looks our key up in a policy and asks the signer's types is a second copy of may_sign."""
    offences = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).as_posix()
        if rel == "policy.py":
            continue
        for fn in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            calls = _calls(fn)
            looks_up_key = any(_name(c) == "signer" and c.args and isinstance(c.args[0], ast.Attribute)
                               and c.args[0].attr == "fingerprint" and isinstance(c.args[0].value, ast.Name)
                               and c.args[0].value.id == "key" for c in calls)
            if looks_up_key and any(_name(c) == "may_sign" and isinstance(c.func, ast.Attribute) for c in calls):
                offences.append(f"{rel}:{fn.lineno} {fn.name}")
    assert offences == []
