"""Federation between clones (`pull`) and offline proof bundles (`prove` / `check-proof`), on real repos."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from conftest import GpgKey, gen_gpg_key, git, vm, vm_ok

PUSH = ["refs/vaultmesh/log", "refs/vaultmesh/keep/*", "refs/notes/vaultmesh"]


def _clone(origin: Path, dest: Path, key: GpgKey) -> Path:
    git(origin.parent, "clone", "-q", str(origin), str(dest))
    git(dest, "fetch", "-q", "origin", "refs/vaultmesh/*:refs/vaultmesh/*", "refs/notes/*:refs/notes/*")
    git(dest, "config", "vaultmesh.signingKey", key.fingerprint)
    return dest


@pytest.fixture
def origin(ledger_repo: Path, tmp_path: Path) -> Path:
    vm_ok(ledger_repo, "record", "v1.0")
    bare = tmp_path / "origin.git"
    git(tmp_path, "clone", "-q", "--bare", str(ledger_repo), str(bare))
    git(ledger_repo, "push", "-q", str(bare), *PUSH)
    return bare


def _commit(repo: Path, name: str) -> None:
    (repo / name).write_text(name + "\n")
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", name)


def test_two_clones_record_then_converge(origin: Path, tmp_path: Path, gpg_key: GpgKey) -> None:
    a = _clone(origin, tmp_path / "a", gpg_key)
    b = _clone(origin, tmp_path / "b", gpg_key)
    _commit(a, "feature-a")
    vm_ok(a, "record", "HEAD", "--environment", "prod")
    _commit(b, "feature-b")
    git(b, "tag", "-a", "v1.1", "-m", "v1.1")
    vm_ok(b, "record", "v1.1")
    git(a, "push", "-q", "origin", *PUSH)
    git(a, "push", "-q", "origin", "HEAD:refs/heads/main")
    # b's push is refused: the logs diverged
    res = subprocess_push(b)
    assert res != 0
    out = json.loads(vm_ok(b, "pull", "origin", "--json"))
    assert out["action"] == "re-appended" and out["reappended"] == 1
    entries_b = json.loads(vm_ok(b, "log", "--json"))
    assert len(entries_b) == 4  # genesis, v1.0, a's deploy, b's release
    assert [e["entry"]["body"]["type"] for e in reversed(entries_b)] == ["policy", "release", "deploy", "release"]
    vm_ok(b, "verify", "--all")
    git(b, "push", "-q", "origin", *PUSH)  # now a fast-forward (git refuses non-ff pushes)
    git(b, "push", "-q", "origin", "v1.1")
    out_a = json.loads(vm_ok(a, "pull", "origin", "--json"))
    assert out_a["action"] == "fast-forward"
    assert git(a, "rev-parse", "refs/vaultmesh/log") == git(b, "rev-parse", "refs/vaultmesh/log")
    assert git(a, "rev-parse", "refs/notes/vaultmesh") == git(b, "rev-parse", "refs/notes/vaultmesh")
    assert git(a, "rev-parse", "v1.1") == git(b, "rev-parse", "v1.1")  # pull fetched the tag it names
    vm_ok(a, "verify", "--all")
    # the re-appended entry is byte-identical (no re-signing): same entry id in both
    ids = {e["id"] for e in entries_b}
    assert {e["id"] for e in json.loads(vm_ok(a, "log", "--json"))} == ids


def subprocess_push(repo: Path) -> int:
    import subprocess

    return subprocess.run(["git", "push", "-q", "origin", *PUSH], cwd=repo, capture_output=True).returncode


def test_pull_refuses_rewritten_remote(origin: Path, tmp_path: Path, gpg_key: GpgKey) -> None:
    a = _clone(origin, tmp_path / "a", gpg_key)
    vm_ok(a, "pull", "origin")
    # someone rewinds the remote's log to its genesis commit
    first = git(origin, "rev-list", "--max-parents=0", "refs/vaultmesh/log")
    git(origin, "update-ref", "refs/vaultmesh/log", first)
    res = vm(a, "pull", "origin")
    assert res.returncode == 1
    assert "VM-REMOTE-DIVERGED" in res.stderr
    assert "Traceback" not in res.stderr


def test_pull_refuses_other_ledger(origin: Path, tmp_path: Path, gpg_key: GpgKey) -> None:
    a = _clone(origin, tmp_path / "a", gpg_key)
    other = tmp_path / "other"
    other.mkdir()
    git(other, "init", "-q", "-b", "main")
    _commit(other, "x")
    git(other, "config", "vaultmesh.signingKey", gpg_key.fingerprint)
    vm_ok(other, "init")
    git(a, "remote", "add", "other", str(other))
    res = vm(a, "pull", "other")
    assert res.returncode == 1
    assert "VM-LOG-FORKED" in res.stderr


def test_pull_without_remote_ledger(repo: Path, tmp_path: Path, gpg_key: GpgKey) -> None:
    bare = tmp_path / "empty.git"
    git(tmp_path, "init", "-q", "--bare", str(bare))
    git(repo, "remote", "add", "origin", str(bare))
    res = vm(repo, "pull", "origin")
    assert res.returncode == 1
    assert "VM-REMOTE-FAILED" in res.stderr


def test_prove_and_check_proof(ledger_repo: Path, tmp_path: Path, gpg_key: GpgKey) -> None:
    vm_ok(ledger_repo, "record", "v1.0")
    old_commit = git(ledger_repo, "rev-parse", "HEAD~1")
    _commit(ledger_repo, "more")
    git(ledger_repo, "tag", "-a", "v1.1", "-m", "v1.1")
    vm_ok(ledger_repo, "record", "v1.1")
    bundle = tmp_path / "p.json"
    vm_ok(ledger_repo, "prove", old_commit, "--in", "v1.1", "--from", "v1.0", "-o", str(bundle))
    # check-proof needs no repository: run it from an empty directory
    empty = tmp_path / "nowhere"
    empty.mkdir()
    out = json.loads(vm_ok(empty, "check-proof", "--trust-root", gpg_key.fingerprint, str(bundle), "--json"))
    assert out["ok"] is True
    assert any("prefix" in f for f in out["facts"])

    data = json.loads(bundle.read_text())

    def check(mutated: dict[str, object], code: str, trust: str = gpg_key.fingerprint) -> None:
        p = tmp_path / "bad.json"
        p.write_text(json.dumps(mutated))
        res = vm(empty, "check-proof", "--trust-root", trust, str(p))
        assert res.returncode == 1, res.stdout
        assert code in res.stderr, res.stderr
        assert "Traceback" not in res.stderr

    check(data, "VM-TRUST-ROOT-MISMATCH", trust="0" * 40)
    alt = json.loads(json.dumps(data))
    alt["commit"]["index"] += 1
    check(alt, "VM-PROOF-INVALID")
    alt = json.loads(json.dumps(data))
    alt["commit"]["inclusion"][0] = "00" * 32
    check(alt, "VM-PROOF-INVALID")
    alt = json.loads(json.dumps(data))
    rel = next(x for x in alt["entries"] if x["index"] == alt["release"])
    rel["line"] = rel["line"].replace('"release"', '"deploy"')
    check(alt, "VM-PROOF-INVALID")
    alt = json.loads(json.dumps(data))
    alt["checkpoint"]["text"] = alt["checkpoint"]["text"].replace("\n3\n", "\n4\n")
    check(alt, "VM-PROOF-INVALID")
    alt = json.loads(json.dumps(data))
    del alt["commit"]
    check(alt, "VM-PROOF-MALFORMED")
    check({"format": "nope"}, "VM-PROOF-MALFORMED")
    check(dict(data, format="vaultmesh-proof-v1"), "VM-PROOF-VERSION")
    alt = json.loads(json.dumps(data))
    alt["entries"] = [x for x in alt["entries"] if x["index"] != 0]  # leave the genesis policy out
    check(alt, "VM-PROOF-INCOMPLETE")

    # the checkpoint re-signed by an attacker key is refused even though the bundle is internally consistent
    mallory = gen_gpg_key(gpg_key.home, "Mallory")
    alt = json.loads(json.dumps(data))
    alt["checkpoint"]["sig"] = subprocess.run(
        ["gpg", "--batch", "--armor", "--detach-sign", "-u", mallory.fingerprint], input=alt["checkpoint"]["text"],
        capture_output=True, text=True, check=True, env=dict(os.environ, GNUPGHOME=gpg_key.home)).stdout
    check(alt, "VM-CHECKPOINT-SIG")

    res = vm(empty, "check-proof", "--trust-root", gpg_key.fingerprint, str(tmp_path / "absent.json"))
    assert res.returncode == 1 and "VM-FILE-UNREADABLE" in res.stderr


def test_prove_commit_not_in_release(ledger_repo: Path) -> None:
    vm_ok(ledger_repo, "record", "v1.0")
    _commit(ledger_repo, "later")
    res = vm(ledger_repo, "prove", "HEAD", "--in", "v1.0")
    assert res.returncode == 1 and "VM-PROOF-NO-PATH" in res.stderr


def test_doctor_repairs_notes(ledger_repo: Path) -> None:
    vm_ok(ledger_repo, "record", "v1.0")
    assert vm(ledger_repo, "doctor").returncode == 0
    git(ledger_repo, "update-ref", "-d", "refs/notes/vaultmesh")
    res = vm(ledger_repo, "verify", "v1.0", "--json")
    assert res.returncode == 1
    assert "VM-NOTES-MISMATCH" in [c["code"] for c in json.loads(res.stdout)["checks"]]
    assert vm(ledger_repo, "doctor").returncode == 1
    vm_ok(ledger_repo, "doctor", "--repair")
    assert vm(ledger_repo, "doctor").returncode == 0
    vm_ok(ledger_repo, "verify", "v1.0")


def test_demo_runs_green(tmp_path: Path) -> None:
    res = vm(tmp_path, "demo", "--json")
    assert res.returncode == 0, res.stdout + res.stderr
    out = json.loads(res.stdout)
    assert out["ok"] is True
    assert [s["exit"] for s in out["steps"]][-1] == 1  # the tampered ledger was rejected


def test_proof_v2_vector(tmp_path: Path) -> None:
    """The committed bundle of docs/formats.md §10 verifies with nothing but its trust root; as v1 it is refused;
    each of its checks is needed (one flipped byte in the checkpoint signature, the commit, a proof)."""
    vector = json.loads((Path(__file__).parent / "vectors" / "proof_v2.json").read_text())
    root, bundle = vector["trust_root"], vector["bundle"]

    def run(b: dict[str, object]) -> tuple[int, dict[str, object]]:
        p = tmp_path / "b.json"
        p.write_text(json.dumps(b))
        res = vm(tmp_path, "check-proof", "--trust-root", root, str(p), "--json")
        assert "Traceback" not in res.stderr
        return res.returncode, json.loads(res.stdout)

    rc, out = run(bundle)
    assert rc == 0 and out["ok"] is True and out["trust"] == "pinned", out
    assert {c["check"] for c in out["checks"]} >= {"proof.inclusion", "proof.policies", "log.genesis",
                                                  "log.trust-root", "entry.signatures", "entry.threshold",
                                                  "log.checkpoint", "proof.commit"}
    rc, out = run(dict(bundle, format="vaultmesh-proof-v1"))
    assert rc == 1 and [c["code"] for c in out["checks"] if not c["ok"]] == ["VM-PROOF-VERSION"]
    sig = bundle["checkpoint"]["sig"]
    lines = sig.split("\n")
    body = next(i for i, x in enumerate(lines) if x and not x.startswith("-----") and ":" not in x)
    flipped = lines[body][:10] + ("A" if lines[body][10] != "A" else "B") + lines[body][11:]
    bad = json.loads(json.dumps(bundle))
    bad["checkpoint"]["sig"] = "\n".join(lines[:body] + [flipped] + lines[body + 1:])
    rc, out = run(bad)
    assert rc == 1 and "VM-CHECKPOINT-SIG" in [c["code"] for c in out["checks"]], out
    bad = json.loads(json.dumps(bundle))
    bad["commit"]["oid"] = "0" * 40
    rc, out = run(bad)
    assert rc == 1 and "VM-PROOF-INVALID" in [c["code"] for c in out["checks"]], out
