"""pull: only the ledger moves, nothing of ours is lost, what is pending is carried, and a merge that would
not verify is refused before anything changes. Real clones, a bare `file://` origin, real gpg."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from git_vaultmesh.entry import now_rfc3339

from conftest import GpgKey, gen_gpg_key, git, vm, vm_ok
from policy_kit import entries, inject, key, ok_as, refused, verify_json

PUSH = ["refs/vaultmesh/log", "refs/vaultmesh/keep/*", "refs/notes/vaultmesh"]


@pytest.fixture
def bob(gnupghome: str) -> GpgKey:
    return gen_gpg_key(gnupghome, "Bob")


def _origin(repo: Path, tmp_path: Path) -> Path:
    if not git(repo, "for-each-ref", "refs/notes/vaultmesh"):
        vm_ok(repo, "record", "v1.0")  # the notes ref exists once a subject is recorded
    bare = tmp_path / "origin.git"
    git(tmp_path, "clone", "-q", "--bare", str(repo), str(bare))
    git(repo, "push", "-q", str(bare), *PUSH)
    git(repo, "remote", "add", "origin", str(bare))
    return bare


def _clone(origin: Path, dest: Path, signer: GpgKey) -> Path:
    git(origin.parent, "clone", "-q", str(origin), str(dest))
    git(dest, "fetch", "-q", "origin", "refs/vaultmesh/*:refs/vaultmesh/*", "refs/notes/*:refs/notes/*")
    git(dest, "config", "vaultmesh.signingKey", signer.fingerprint)
    return dest


def _commit(repo: Path, name: str) -> None:
    (repo / name).write_text(name + "\n")
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", name)


def test_pull_creates_nothing_outside_our_namespaces(ledger_repo: Path, gpg_key: GpgKey, tmp_path: Path) -> None:
    """A receipt naming refs/replace/<oid> must not make pull install that replace ref (git show would then
    print other content); only refs/tags/ subjects are fetched, and only when absent."""
    origin = _origin(ledger_repo, tmp_path)
    head = git(ledger_repo, "rev-parse", "HEAD")
    _commit(ledger_repo, "evil")
    evil = git(ledger_repo, "rev-parse", "HEAD")
    git(ledger_repo, "reset", "-q", "--hard", head)
    replace = f"refs/replace/{head}"
    git(ledger_repo, "update-ref", replace, evil)
    alice = key(gpg_key.fingerprint)
    log_id = entries(ledger_repo)[0].body["log"]
    inject(ledger_repo, {"type": "release", "log": log_id, "recorded_at": now_rfc3339(), "component": "x",
                         "subject": {"ref": replace, "commit": evil, "tree": git(ledger_repo, "rev-parse", f"{evil}^{{tree}}")},
                         "history": {"alg": "rfc6962-sha256", "size": 1, "root": "00" * 32}}, [alice], alice)
    git(ledger_repo, "push", "-q", str(origin), *PUSH, replace)
    other = _clone(origin, tmp_path / "other", gpg_key)
    git(other, "update-ref", "-d", replace)  # a clone does not fetch refs/replace/ by itself; make sure
    _commit(other, "ours")
    vm_ok(other, "record", "HEAD", "--environment", "ours")
    vm(other, "pull", "origin")
    assert git(other, "for-each-ref", "refs/replace/") == ""
    assert git(other, "show", "-s", "--format=%H", head) == head


def test_a_receipt_naming_a_malformed_ref_is_malformed(ledger_repo: Path, gpg_key: GpgKey) -> None:
    alice = key(gpg_key.fingerprint)
    commit = git(ledger_repo, "rev-parse", "HEAD")
    inject(ledger_repo, {"type": "deploy", "log": entries(ledger_repo)[0].body["log"], "recorded_at": now_rfc3339(),
                         "component": "x", "subject": {"ref": "refs/tags/a..b", "commit": commit,
                                                       "tree": git(ledger_repo, "rev-parse", "HEAD^{tree}")}},
           [alice], alice)
    rc, report = verify_json(ledger_repo, "--all")
    assert rc == 1 and "VM-ENTRY-MALFORMED" in {c["code"] for c in report["checks"] if not c["ok"]}, report


def test_pull_carries_entries_pending_cosign(ledger_repo: Path, gpg_key: GpgKey, bob: GpgKey,
                                             tmp_path: Path) -> None:
    vm_ok(ledger_repo, "policy", "add-signer", "bob", "--key", bob.fingerprint)
    vm_ok(ledger_repo, "policy", "set-threshold", "deploy", "2")
    vm_ok(ledger_repo, "record", "HEAD", "--environment", "prod")  # pending: 1 of 2
    origin = _origin(ledger_repo, tmp_path)
    cosigner = tmp_path / "bob"
    git(tmp_path, "clone", "-q", str(origin), str(cosigner))
    git(cosigner, "config", "vaultmesh.signingKey", bob.fingerprint)
    out = json.loads(vm_ok(cosigner, "pull", "origin", "--json"))
    assert out["action"] == "fast-forward" and len(out["pending"]) == 1 and "signatures" in out["pending"][0], out
    vm_ok(cosigner, "cosign", "HEAD")  # the cosigner got the entry and can now complete it
    vm_ok(cosigner, "verify", "--all")


def test_pull_that_removes_our_signer_stops_and_keeps_our_entries(ledger_repo: Path, gpg_key: GpgKey, bob: GpgKey,
                                                                  tmp_path: Path) -> None:
    vm_ok(ledger_repo, "policy", "add-signer", "bob", "--key", bob.fingerprint)
    origin = _origin(ledger_repo, tmp_path)
    theirs = _clone(origin, tmp_path / "bob", bob)
    shown = json.loads(vm_ok(theirs, "policy", "show", "--json"))
    (ours,) = [s["name"] for s in shown["signers"] if s["fingerprint"] == gpg_key.fingerprint]
    ok_as(theirs, bob.fingerprint, "policy", "remove-signer", ours)  # bob alone may change policy (1 of n)
    git(theirs, "push", "-q", "origin", *PUSH)
    _commit(ledger_repo, "ours")
    vm_ok(ledger_repo, "record", "HEAD", "--environment", "ours")  # unpushed, signed by alice
    before = git(ledger_repo, "for-each-ref", "refs/vaultmesh/log", "refs/notes/vaultmesh")
    err = refused(vm(ledger_repo, "pull", "origin"), "VM-PULL-SIGNER-REMOVED")
    assert "nothing was changed" in err
    assert git(ledger_repo, "for-each-ref", "refs/vaultmesh/log", "refs/notes/vaultmesh") == before
    assert [e.body.get("environment") for e in entries(ledger_repo) if e.type == "deploy"] == ["ours"]
    vm_ok(ledger_repo, "verify", "--all")  # our ledger is as it was, and still verifies
