"""contrib/verify_standalone.py, the stdlib-only second implementation, must agree with `git vaultmesh verify`.

Every ledger here is built by the real CLI (or, for policy changes and cosigns, which have no verb yet, by the
package's own append path) and judged by both verifiers: same verdict on good ledgers and on each tampering.
The script's JCS and Merkle code are cross-checked against `rfc8785` and `git_vaultmesh.merkle`.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from git_vaultmesh import merkle

from conftest import GpgKey, gen_gpg_key, git, vm, vm_ok

SCRIPT = Path(__file__).resolve().parent.parent / "contrib" / "verify_standalone.py"
LOG = "refs/vaultmesh/log"


def _load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("verify_standalone", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


vs = _load_script()


def standalone(repo: Path, trust_root: str, release: str | None = None) -> subprocess.CompletedProcess[str]:
    args = [sys.executable, str(SCRIPT), "--repo", str(repo), "--trust-root", trust_root]
    if release:
        args += ["--release", release]
    return subprocess.run(args, capture_output=True, text=True, cwd=repo.parent)


def failed_checks(res: subprocess.CompletedProcess[str]) -> set[str]:
    return {line.split()[1].rstrip(":") for line in res.stdout.splitlines() if line.startswith("FAIL ")}


def tool(repo: Path, trust_root: str, release: str | None = None) -> dict[str, Any]:
    res = vm(repo, "verify", *([release] if release else ["--all"]), "--trust-root", trust_root, "--json")
    report = json.loads(res.stdout)
    assert (res.returncode == 0) == report["ok"]
    return dict(report)


def agree(repo: Path, trust_root: str, release: str | None = None) -> tuple[bool, set[str], set[str]]:
    """Both verdicts (asserted equal), the standalone's failed checks and the tool's failure codes."""
    mine = standalone(repo, trust_root, release)
    assert "Traceback" not in mine.stderr, mine.stderr
    theirs = tool(repo, trust_root, release)
    assert (mine.returncode == 0) == theirs["ok"], f"disagreement:\n{mine.stdout}\n{json.dumps(theirs, indent=1)}"
    verdict = mine.stdout.splitlines()[-1]
    assert verdict == "verify_standalone: OK" if theirs["ok"] else verdict.startswith("verify_standalone: FAILED (")
    return theirs["ok"], failed_checks(mine), {c["code"] for c in theirs["checks"] if c["code"]}


def commit_file(repo: Path, name: str, branch: str | None = None) -> None:
    if branch:
        git(repo, "checkout", "-q", branch)
    (repo / name).write_text(name + "\n")
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", name)


@pytest.fixture
def good(ledger_repo: Path) -> Path:
    """Two releases (the second's history has a merge and extends the first) and a deploy."""
    repo = ledger_repo
    vm_ok(repo, "record", "v1.0")
    git(repo, "checkout", "-q", "-b", "side")
    commit_file(repo, "side.txt")
    commit_file(repo, "main.txt", branch="main")
    git(repo, "merge", "-q", "--no-ff", "-m", "merge side", "side")
    git(repo, "tag", "-a", "v1.1", "-m", "v1.1")
    vm_ok(repo, "record", "v1.1")
    commit_file(repo, "hotfix.txt")
    vm_ok(repo, "record", "HEAD", "--environment", "prod")
    return repo


# --- agreement on real ledgers ------------------------------------------------------------------------


def test_good_ledger_passes_both(good: Path, gpg_key: GpgKey) -> None:
    for release in (None, "v1.0", "v1.1"):
        ok, mine, codes = agree(good, gpg_key.fingerprint, release)
        assert ok and not mine and not codes
    out = standalone(good, gpg_key.fingerprint, "v1.1").stdout
    assert "ok   release.base: refs/tags/v1.1" in out  # v1.1 extends v1.0's frontier
    assert out.count("ok   release.history") == 2  # the base chain is recomputed too
    assert out.count("\n") == len(out.splitlines())  # one line per check


def _replace_entry(repo: Path, seq: int, edit: Any) -> None:
    """What an attacker with push access does: a new log commit whose tree holds an edited entry."""
    path = vs.entry_path(seq)
    blob = subprocess.run(["git", "cat-file", "blob", f"{LOG}:{path}"], cwd=repo, capture_output=True,
                          check=True).stdout
    new = git(repo, "hash-object", "-w", "--stdin", input=edit(blob))
    env = dict(os.environ, GIT_INDEX_FILE=str(repo / ".git" / "tamper-index"))
    subprocess.run(["git", "read-tree", LOG], cwd=repo, env=env, check=True)
    subprocess.run(["git", "update-index", "--cacheinfo", f"100644,{new},{path}"], cwd=repo, env=env, check=True)
    tree = subprocess.run(["git", "write-tree"], cwd=repo, env=env, check=True, capture_output=True,
                          text=True).stdout.strip()
    commit = git(repo, "commit-tree", tree, "-p", LOG, "-m", "innocent-looking update")
    git(repo, "update-ref", LOG, commit)


@pytest.mark.parametrize("edit, expected", [
    # a byte inside a signed string: still canonical JSON, the signature and every root break
    (lambda b: b.replace(b'"version":"v1.0"', b'"version":"v1.9"'), {"entry.signatures", "log.checkpoint"}),
    # a byte of structure: no longer canonical
    (lambda b: b.replace(b'{"body":', b'{ "body":'), {"entry.canonical", "log.checkpoint"}),
], ids=["content-byte", "structure-byte"])
def test_edited_entry_byte_fails_both(good: Path, gpg_key: GpgKey, edit: Any, expected: set[str]) -> None:
    _replace_entry(good, 1, edit)
    for release in (None, "v1.1"):
        ok, mine, codes = agree(good, gpg_key.fingerprint, release)
        assert not ok
        assert expected | {"log.append-only"} <= mine
        assert {"VM-CHECKPOINT-MISMATCH", "VM-LOG-NOT-APPEND-ONLY"} <= codes


def test_moved_tag_fails_both(good: Path, gpg_key: GpgKey) -> None:
    git(good, "tag", "-f", "-a", "v1.0", "-m", "moved", "v1.0^{commit}~1")
    ok, mine, codes = agree(good, gpg_key.fingerprint, "v1.0")
    assert not ok and mine == {"release.tag"} and codes == {"VM-TAG-MOVED"}
    # v1.1's base chain includes v1.0: both verifiers check the base release's tag too
    ok, mine, codes = agree(good, gpg_key.fingerprint, "v1.1")
    assert not ok and mine == {"release.tag"} and codes == {"VM-TAG-MOVED"}
    assert standalone(good, gpg_key.fingerprint).returncode == 0  # the log itself is intact


def test_replace_refs_and_grafts(good: Path, gpg_key: GpgKey) -> None:
    """Neither verifier hashes through refs/replace/, and both fail a release that one covers (git would show
    other content than was recorded); both walk history as git does, so a graft that cuts it fails too."""
    first = git(good, "rev-list", "--max-parents=0", "v1.0")
    git(good, "replace", first, git(good, "commit-tree", "v1.0^{tree}", "-m", "not the recorded root"))
    ok, mine, codes = agree(good, gpg_key.fingerprint, "v1.0")
    assert not ok and mine == {"release.replaced"} and codes == {"VM-HISTORY-MISMATCH"}
    git(good, "replace", "-d", first)
    (good / ".git" / "info" / "grafts").write_text(git(good, "rev-parse", "v1.0^{commit}") + "\n")
    ok, mine, codes = agree(good, gpg_key.fingerprint, "v1.0")
    assert not ok and mine == {"release.history"} and codes == {"VM-HISTORY-MISMATCH"}


def test_wrong_trust_root_fails_both(good: Path, gpg_key: GpgKey) -> None:
    other = gen_gpg_key(gpg_key.home, "Mallory")
    ok, mine, codes = agree(good, other.fingerprint, "v1.1")
    assert not ok and mine == {"log.trust-root"} and codes == {"VM-TRUST-ROOT-MISMATCH"}
    ok, mine, codes = agree(good, "SHA256:" + "A" * 43)
    assert not ok and mine == {"log.trust-root"}


def test_release_not_recorded(good: Path, gpg_key: GpgKey) -> None:
    commit_file(good, "unrecorded.txt")
    git(good, "tag", "v9", "HEAD")
    ok, mine, codes = agree(good, gpg_key.fingerprint, "v9")
    assert not ok and mine == {"release.recorded"} and codes == {"VM-NOT-RECORDED"}


def test_ssh_signed_ledger(repo: Path, tmp_path: Path) -> None:
    key = tmp_path / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "alice", "-f", str(key)], check=True)
    fpr = subprocess.run(["ssh-keygen", "-l", "-f", str(key)], capture_output=True, text=True,
                         check=True).stdout.split()[1]
    git(repo, "config", "vaultmesh.signingFormat", "ssh")
    git(repo, "config", "vaultmesh.signingKey", str(key))
    vm_ok(repo, "init")
    vm_ok(repo, "record", "v1.0")
    ok, mine, codes = agree(repo, fpr, "v1.0")
    assert ok and not mine
    _replace_entry(repo, 1, lambda b: b.replace(b'"version":"v1.0"', b'"version":"v1.9"'))
    ok, mine, codes = agree(repo, fpr, "v1.0")
    assert not ok and "entry.signatures" in mine and "VM-SIG-INVALID" in codes


def test_threshold_policy_change_and_cosign(ledger_repo: Path, gpg_key: GpgKey) -> None:
    """A policy change (Alice adds Bob, releases need 2 signers), a release signed by Alice only (pending in
    both verifiers), then Bob's cosign (both pass); the package's append path writes the change and cosign."""
    from git_vaultmesh import ledger
    from git_vaultmesh.entry import canonical, make_entry, now_rfc3339
    from git_vaultmesh.git import Repo
    from git_vaultmesh.signing import resolve_signing_key, sign

    bob_key = gen_gpg_key(gpg_key.home, "Bob")
    repo = Repo.discover(ledger_repo)
    alice = resolve_signing_key("openpgp", gpg_key.fingerprint)
    bob = resolve_signing_key("openpgp", bob_key.fingerprint)
    _, entries = ledger.load(repo)
    genesis = entries[0].body
    # Bob may sign releases only, and so co-sign them (a cosign is judged by its target's type)
    signers = genesis["signers"] + [{"name": "bob", "format": "openpgp", "fingerprint": bob.fingerprint,
                                     "public_key": bob.public_key, "types": ["release"]}]
    body = {"type": "policy", "log": genesis["log"], "recorded_at": now_rfc3339(), "signers": signers,
            "thresholds": {"*": 1, "release": 2}, "tsas": [], "tokens_required": {}, "message": "add bob"}

    def signed(key: Any, b: dict[str, Any]) -> Any:
        return make_entry(b, [{"format": "openpgp", "signer": key.fingerprint, "sig": sign(key, canonical(b))}])

    ledger.append(repo, alice, [signed(alice, body)])
    vm_ok(ledger_repo, "record", "v1.0")
    ok, mine, codes = agree(ledger_repo, gpg_key.fingerprint, "v1.0")
    assert not ok and mine == {"entry.threshold"} and codes == {"VM-SIG-PENDING"}
    release = ledger.load(repo)[1][-1]
    cosign = {"type": "cosign", "log": genesis["log"], "recorded_at": now_rfc3339(), "entry": release.body_digest}
    ledger.append(repo, bob, [signed(bob, cosign)])
    ok, mine, codes = agree(ledger_repo, gpg_key.fingerprint, "v1.0")
    assert ok, (mine, codes)
    # an entry signed by Mallory, whom no policy pins, fails both
    mallory = resolve_signing_key("openpgp", gen_gpg_key(gpg_key.home, "Mallory").fingerprint)
    rogue = {"type": "decision", "log": genesis["log"], "recorded_at": now_rfc3339(), "title": "rogue"}
    ledger.append(repo, alice, [signed(mallory, rogue)])
    ok, mine, codes = agree(ledger_repo, gpg_key.fingerprint)
    assert not ok and "entry.signatures" in mine and "VM-SIG-UNPINNED" in codes
    # scope differs by design: `verify v1.0` judges the signatures of policies and of v1.0's receipts only,
    # the standalone verifier always judges every entry
    assert tool(ledger_repo, gpg_key.fingerprint, "v1.0")["ok"]
    assert standalone(ledger_repo, gpg_key.fingerprint, "v1.0").returncode == 1
    repo.close()


# --- the script's primitives against the package's -------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**53) + 1, max_value=2**53 - 1) | st.text(),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(), children, max_size=5),
    max_leaves=20,
)


@settings(max_examples=400, deadline=None)
@given(json_values)
def test_jcs_equals_rfc8785(value: Any) -> None:
    mine = vs.jcs_bytes(value)
    assert mine == rfc8785.dumps(value)
    assert vs.parse_strict(mine.decode()) == value


def test_jcs_edges() -> None:
    tricky = {"\u20ac": 1, "\r": 2, "\U0001f600": 3, "\ufb33": 4, "1": 5, "\x7f": "\x00\x1f\x7f\u2028\"\\/"}
    assert vs.jcs_bytes(tricky) == rfc8785.dumps(tricky)
    for bad in (2**53, -(2**53), 1.5, "\ud800", {"k": [float("nan")]}):
        with pytest.raises((ValueError, UnicodeEncodeError)):
            vs.jcs_bytes(bad)
    for text in ('{"a":1,"a":2}', '{"a":1.0}', '{"a":NaN}', "[1e3]"):
        with pytest.raises(ValueError):
            vs.parse_strict(text)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=8), max_size=70))
def test_merkle_root_equals_package(leaves: list[bytes]) -> None:
    hashes = [vs.leaf_hash(x) for x in leaves]
    assert hashes == [merkle.leaf_hash(x) for x in leaves]
    assert vs.mth(hashes) == merkle.root_from_leaf_hashes(hashes)
    frontier = vs.Frontier()
    for h in hashes:
        frontier.append(h)
    package = merkle.CompactRange.from_leaf_hashes(hashes)
    assert (frontier.size, frontier.hashes, frontier.root()) == (package.size, package.hashes, package.root())


def test_consistency_verification_equals_package() -> None:
    hashes = [hashlib.sha256(bytes([i])).digest() for i in range(40)]
    for n in range(1, 40):
        new = merkle.root_from_leaf_hashes(hashes[:n])
        for m in range(0, n + 1):
            old = merkle.root_from_leaf_hashes(hashes[:m])
            proof = merkle.consistency_proof(hashes[:n], m)
            assert vs.verify_consistency(m, n, old, new, proof)
            if proof:
                assert not vs.verify_consistency(m, n, old, new, proof[:-1])
                assert not vs.verify_consistency(m, n, new, old, proof) or old == new


def test_rfc6962_vector() -> None:
    root = vs.mth([vs.leaf_hash(x) for x in (b"a", b"b", b"c")])
    assert root == merkle.root_from_leaf_hashes([merkle.leaf_hash(x) for x in (b"a", b"b", b"c")])


def test_dearmor_equals_gpg_dearmor(gpg_key: GpgKey) -> None:
    armoured = subprocess.run(["gpg", "--batch", "--armor", "--export", gpg_key.fingerprint], capture_output=True,
                              check=True).stdout
    binary = subprocess.run(["gpg", "--batch", "--dearmor"], input=armoured, capture_output=True, check=True).stdout
    assert vs.dearmor(armoured.decode()) == binary
    assert base64.b64encode(binary)  # non-empty


# --- disagreements found while writing the standalone verifier (open ones pinned as strict xfails) --------------


def _rebuild_with_mode(repo: Path, seq: int, mode: str) -> None:
    """Rebuild the last log commit so that it *adds* entry `seq` with another file mode (content, checkpoint
    and signatures unchanged): no append commit ever modifies an entry, so only the layout check can tell."""
    head = git(repo, "rev-parse", LOG)
    env = dict(os.environ, GIT_INDEX_FILE=str(repo / ".git" / "tamper-index"))
    subprocess.run(["git", "read-tree", head], cwd=repo, env=env, check=True)
    oid = git(repo, "rev-parse", f"{head}:{vs.entry_path(seq)}")
    subprocess.run(["git", "update-index", "--cacheinfo", f"{mode},{oid},{vs.entry_path(seq)}"], cwd=repo, env=env,
                   check=True)
    tree = subprocess.run(["git", "write-tree"], cwd=repo, env=env, check=True, capture_output=True,
                          text=True).stdout.strip()
    git(repo, "update-ref", LOG, git(repo, "commit-tree", tree, "-p", f"{head}~1", "-m", "append"))


@pytest.mark.parametrize("mode", ["100755", "120000"])
def test_entry_file_mode(good: Path, gpg_key: GpgKey, mode: str) -> None:
    """Found by this verifier: ledger.entry_items once accepted any blob mode (fixed: only 100644)."""
    _rebuild_with_mode(good, 3, mode)
    ok, mine, codes = agree(good, gpg_key.fingerprint)
    assert not ok and mine == {"log.layout"}


def test_float_in_a_signed_entry(ledger_repo: Path, gpg_key: GpgKey) -> None:
    """Found by this verifier: entry.parse_line once accepted canonical floats (now refused, like here)."""
    from git_vaultmesh import ledger
    from git_vaultmesh.entry import canonical, make_entry, now_rfc3339
    from git_vaultmesh.git import Repo
    from git_vaultmesh.signing import resolve_signing_key, sign

    repo = Repo.discover(ledger_repo)
    alice = resolve_signing_key("openpgp", gpg_key.fingerprint)
    log_id = ledger.load(repo)[0].log_id
    body = {"type": "decision", "log": log_id, "recorded_at": now_rfc3339(), "title": "t", "status": 1.5}
    sig = {"format": "openpgp", "signer": alice.fingerprint, "sig": sign(alice, canonical(body))}
    ledger.append(repo, alice, [make_entry(body, [sig])])
    repo.close()
    ok, mine, codes = agree(ledger_repo, gpg_key.fingerprint)
    assert not ok and mine == {"entry.canonical"} and "VM-ENTRY-MALFORMED" in codes


def _superproject(tmp_path: Path) -> Path:
    sub, sup = tmp_path / "sub", tmp_path / "super"
    for path in (sub, sup):
        path.mkdir()
        git(path, "init", "-q", "-b", "main")
        commit_file(path, "file.txt")
    git(sup, "-c", "protocol.file.allow=always", "submodule", "add", "-q", str(sub), "sub")
    git(sup, "commit", "-q", "-m", "add sub")
    git(sup, "tag", "-a", "v1", "-m", "v1")
    return sup


def test_not_included_submodule_verifies_where_the_submodule_exists(tmp_path: Path, gpg_key: GpgKey) -> None:
    sup = _superproject(tmp_path)
    bare = tmp_path / "bare.git"
    git(tmp_path, "clone", "-q", "--bare", str(sup), str(bare))
    git(bare, "config", "vaultmesh.signingKey", gpg_key.fingerprint)
    vm_ok(bare, "init")
    vm_ok(bare, "record", "v1")
    ok, mine, codes = agree(bare, gpg_key.fingerprint, "v1")
    assert ok  # where it was recorded, both verify it
    git(bare, "push", "-q", str(sup), LOG, "refs/notes/vaultmesh")
    ok, mine, codes = agree(sup, gpg_key.fingerprint, "v1")
    assert ok


def test_absent_submodule_is_reported_as_absent(tmp_path: Path, gpg_key: GpgKey) -> None:
    sup = _superproject(tmp_path)
    git(sup, "config", "vaultmesh.signingKey", gpg_key.fingerprint)
    vm_ok(sup, "init")
    vm_ok(sup, "record", "v1")
    bare = tmp_path / "bare.git"
    git(tmp_path, "clone", "-q", "--bare", str(sup), str(bare))
    git(bare, "fetch", "-q", str(sup), "refs/vaultmesh/*:refs/vaultmesh/*", "refs/notes/*:refs/notes/*")
    ok, mine, codes = agree(bare, gpg_key.fingerprint, "v1")
    assert not ok and mine == {"release.tree-digest"}
    assert "absent" in standalone(bare, gpg_key.fingerprint, "v1").stdout
    assert codes == {"VM-SUBMODULES-MISSING"}
