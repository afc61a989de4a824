"""Adversarial round two, remotes, notes and names: a remote that rewrites the ledger after we pushed to it, a
federated peer that force-pushes a re-signed rewrite, notes edited by hand with git's own porcelain, tags that
name other tags' objects, and Unicode-normalisation twins of tag and artifact names. Real clones, a bare
origin, real gpg, the real CLI. Listed in docs/threat-model.md, "Adversarial round two"."""

from __future__ import annotations

import json
import shutil
import subprocess
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from git_vaultmesh.entry import canonical, now_rfc3339

from conftest import GIT_ENV, GpgKey, gen_gpg_key, git, kill_agent, make_gpg_home, make_repo, vm, vm_ok
from policy_kit import codes, deploy_body, entries, failures, inject, key, refused, tag, verify_json

PUSH = ["refs/vaultmesh/log", "refs/vaultmesh/keep/*", "refs/notes/vaultmesh"]
LOG, NOTES = "refs/vaultmesh/log", "refs/notes/vaultmesh"


@dataclass
class Net:
    ours: Path  # alice's clone: pushed, pulled once, verified (a checkpoint is remembered)
    theirs: Path  # a clone of the same origin, holding the same key (the rewriter)
    origin: Path  # bare
    alice: GpgKey
    mallory: GpgKey


def _commit(repo: Path, name: str) -> str:
    (repo / name).write_text(name + "\n")
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", name)
    return git(repo, "rev-parse", "HEAD")


@pytest.fixture(scope="module")
def net_template(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Net]:
    home = make_gpg_home()
    base = tmp_path_factory.mktemp("net")
    try:
        with pytest.MonkeyPatch.context() as mp:
            for k, v in {**GIT_ENV, "GNUPGHOME": home, "HOME": str(base)}.items():
                mp.setenv(k, v)
            mp.delenv("SOURCE_DATE_EPOCH", raising=False)
            alice, mallory = gen_gpg_key(home, "Alice"), gen_gpg_key(home, "Mallory")
            ours = make_repo(base / "ours")
            git(ours, "config", "vaultmesh.signingKey", alice.fingerprint)
            vm_ok(ours, "init")
            vm_ok(ours, "record", "v1.0")
            _commit(ours, "c3")
            vm_ok(ours, "record", "HEAD", "--environment", "prod")
            origin = base / "origin.git"
            git(base, "clone", "-q", "--bare", str(ours), str(origin))
            git(ours, "push", "-q", str(origin), *PUSH)
            git(ours, "remote", "add", "origin", str(origin))
            vm_ok(ours, "pull", "origin")  # we have seen the remote's log
            vm_ok(ours, "verify", "--all")  # and remembered our checkpoint
            theirs = base / "theirs"
            git(base, "clone", "-q", str(origin), str(theirs))
            git(theirs, "fetch", "-q", "origin", "refs/vaultmesh/*:refs/vaultmesh/*", "refs/notes/*:refs/notes/*")
            git(theirs, "config", "vaultmesh.signingKey", alice.fingerprint)
            yield Net(ours, theirs, origin, alice, mallory)
    finally:
        kill_agent(home)
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture
def net(net_template: Net, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Net:
    monkeypatch.setenv("GNUPGHOME", net_template.alice.home)
    paths = {}
    for name in ("ours", "theirs", "origin.git"):
        paths[name] = tmp_path / name
        shutil.copytree(net_template.ours.parent / name, paths[name], symlinks=True)
    git(paths["ours"], "remote", "set-url", "origin", str(paths["origin.git"]))
    git(paths["theirs"], "remote", "set-url", "origin", str(paths["origin.git"]))
    return Net(paths["ours"], paths["theirs"], paths["origin.git"], net_template.alice, net_template.mallory)


def all_refs(repo: Path) -> str:
    return git(repo, "for-each-ref", "--format=%(refname) %(objectname)")


def our_refs(repo: Path) -> str:
    """Every ref but the remote's notes tracking ref (see test_refused_pull_moves_no_ref_at_all)."""
    return "\n".join(ln for ln in all_refs(repo).splitlines() if "/remotes/origin/notes " not in ln)


def _rewrite_theirs(net: Net, *environments: str) -> None:
    """theirs (holding the genesis key) drops the newest entry, records other deploys, force-pushes."""
    t = net.theirs
    git(t, "update-ref", LOG, git(t, "rev-parse", f"{LOG}~1"))
    git(t, "update-ref", NOTES, git(t, "rev-parse", f"{NOTES}~1"))
    for env in environments:
        vm_ok(t, "record", "HEAD", "--environment", env)
    git(t, "push", "-q", "--force", "origin", *PUSH)


def test_pull_after_the_remote_force_pushed_a_re_signed_rewrite(net: Net) -> None:
    """The remote's log is replaced, after we pushed, by a validly re-signed one of the same size (our deploy
    dropped, another in its place): pull refuses, and not one of our refs moves."""
    _rewrite_theirs(net, "staging")
    before = our_refs(net.ours)
    err = refused(vm(net.ours, "pull", "origin"), "VM-REMOTE-DIVERGED")
    assert "rewritten" in err
    assert our_refs(net.ours) == before
    rc, rep = verify_json(net.ours, "--all")
    assert rc == 0, failures(rep)


def test_pull_after_the_remote_force_pushed_a_longer_rewrite(net: Net) -> None:
    """The rewrite is longer than what we saw (so a size-only check would take it for an extension)."""
    _rewrite_theirs(net, "staging", "qa", "canary")
    before = our_refs(net.ours)
    refused(vm(net.ours, "pull", "origin"), "VM-REMOTE-DIVERGED")
    assert our_refs(net.ours) == before


def test_refused_pull_moves_no_ref_at_all(net: Net) -> None:
    """The refusal says the remote was rewritten; then no ref of ours, tracking refs included, may move."""
    _rewrite_theirs(net, "staging")
    before = all_refs(net.ours)
    refused(vm(net.ours, "pull", "origin"), "VM-REMOTE-DIVERGED")
    assert all_refs(net.ours) == before


def test_first_pull_from_a_rewritten_remote_loses_nothing(net: Net, tmp_path: Path) -> None:
    """A clone that never pulled from this remote (no tracking ref: nothing to compare with) meets the
    rewritten log: either refused with nothing changed, or merged with every entry it had kept and a ledger
    that still verifies. (Today it merges: without a tracking ref a dropped published entry cannot be told from
    an unpushed one, and pull re-remembers the merged checkpoint; see the threat model's round-two limits.)"""
    _rewrite_theirs(net, "staging")
    git(net.ours, "update-ref", "-d", "refs/vaultmesh/remotes/origin/log")
    had = {e.body_digest for e in entries(net.ours)}
    before = all_refs(net.ours)
    res = vm(net.ours, "pull", "origin")
    assert "Traceback" not in res.stderr
    if res.returncode != 0:
        assert res.returncode == 1 and "error: VM-" in res.stderr, res.stderr
        assert all_refs(net.ours) == before
    else:
        assert had <= {e.body_digest for e in entries(net.ours)}
    rc, rep = verify_json(net.ours, "--all")
    assert rc == 0, failures(rep)


def test_pull_keeps_our_notes_when_the_remote_forges_its_notes(net: Net) -> None:
    """The remote's notes ref (derived data) is force-pushed with a forged receipt on v1.0's commit while its
    log is unchanged: after pull, what `git log --notes=vaultmesh` shows us is still derived from our log."""
    t = net.theirs
    forged = canonical({"v": 1, "body": deploy_body(t, "forged note"), "sigs": []}).decode()
    git(t, "notes", "--ref", "vaultmesh", "add", "-f", "-m", forged, "v1.0^{commit}")
    git(t, "push", "-q", "--force", "origin", NOTES)
    vm_ok(net.ours, "pull", "origin")
    rc, rep = verify_json(net.ours, "v1.0")
    assert rc == 0, failures(rep)
    shown = git(net.ours, "notes", "--ref", "vaultmesh", "show", "v1.0^{commit}")
    assert "forged note" not in shown


def test_pull_does_not_move_our_tag_when_the_remote_moved_it(net: Net) -> None:
    """The remote's refs/tags/v1.0 is force-moved to another commit; pull must not take it."""
    t = net.theirs
    other = _commit(t, "evil")
    git(t, "tag", "-f", "-a", "v1.0", "-m", "moved", other)
    git(t, "push", "-q", "--force", "origin", "main", "refs/tags/v1.0")
    tag_before = git(net.ours, "rev-parse", "v1.0")
    vm(net.ours, "pull", "origin")
    assert git(net.ours, "rev-parse", "v1.0") == tag_before
    rc, rep = verify_json(net.ours, "v1.0")
    assert rc == 0, failures(rep)


def _moved_tag_pulled(net: Net) -> str:
    """The remote records release v9.0, then moves its tag v9.0 to other code and pushes both; we lack v9.0,
    so pull fetches it. Returns the tag object the receipt names."""
    t = net.theirs
    tag(t, "v9.0")
    vm_ok(t, "record", "v9.0")
    recorded = git(t, "rev-parse", "v9.0")
    evil = _commit(t, "evil")
    git(t, "tag", "-f", "-a", "v9.0", "-m", "moved", evil)
    git(t, "push", "-q", "--force", "origin", "main", "refs/tags/v9.0", *PUSH)
    assert "Traceback" not in vm(net.ours, "pull", "origin").stderr
    return recorded


def test_verify_refuses_a_pulled_tag_that_contradicts_its_receipt(net: Net) -> None:
    """Whatever pull left under refs/tags/v9.0 (nothing: the remote's tag is not the recorded object), verify
    judges it against the receipt and fails."""
    _moved_tag_pulled(net)
    rc, rep = verify_json(net.ours, "v9.0")
    assert rc == 1 and codes(rep) and codes(rep) <= {"VM-TAG-MISSING", "VM-TAG-MOVED"}, failures(rep)


def test_pull_installs_no_tag_that_contradicts_its_receipt(net: Net) -> None:
    """pull fetches an absent tag a receipt names only when it is the tag object that receipt records."""
    recorded = _moved_tag_pulled(net)
    installed = git(net.ours, "for-each-ref", "--format=%(objectname)", "refs/tags/v9.0")
    assert installed in ("", recorded)


def test_federated_peer_force_pushes_a_re_signed_rewrite(net: Net, tmp_path: Path) -> None:
    """A peer we witnessed replaces its log by a validly signed rewrite of the same log id (its key, its
    policy, every checkpoint consistent on its own): only consistency with what we witnessed catches it."""
    peer = make_repo(tmp_path / "peer")
    git(peer, "config", "vaultmesh.signingKey", net.mallory.fingerprint)  # another team's own key
    vm_ok(peer, "init")
    vm_ok(peer, "record", "v1.0", "--component", "peer")
    vm_ok(peer, "record", "HEAD", "--environment", "one")
    vm_ok(net.ours, "federate", "add", "peer", f"file://{peer}", "--trust-root", net.mallory.fingerprint)
    assert vm(net.ours, "federate", "sync", "peer", "--json").returncode == 0
    git(peer, "update-ref", LOG, git(peer, "rev-parse", f"{LOG}~1"))
    git(peer, "update-ref", NOTES, git(peer, "rev-parse", f"{NOTES}~1"))
    vm_ok(peer, "record", "HEAD", "--environment", "two")
    vm_ok(peer, "record", "HEAD", "--environment", "three")
    seen = git(net.ours, "rev-parse", "refs/vaultmesh/remotes/peer/log")
    ours = git(net.ours, "rev-parse", LOG)
    res = vm(net.ours, "federate", "sync", "peer", "--json")
    assert res.returncode == 1 and "Traceback" not in res.stderr
    out = json.loads(res.stdout)
    assert "VM-PEER-FORKED" in json.dumps(out), out
    assert git(net.ours, "rev-parse", "refs/vaultmesh/remotes/peer/log") == seen
    assert git(net.ours, "rev-parse", LOG) == ours


# --- notes edited by hand ----------------------------------------------------------------------------------


def test_note_added_by_hand_to_an_unrelated_commit(net: Net) -> None:
    """`git notes add` puts a validly signed (stolen key) release line, never appended to the log, on a commit
    no receipt names: `git log --notes=vaultmesh` would show a release. verify --all reports the notes, and
    `show` (which must read the log, not the notes) finds no receipt."""
    r = net.ours
    c0 = git(r, "rev-list", "--max-parents=0", "HEAD")
    body = dict(deploy_body(r, "never in the log"), subject={"commit": c0, "tree": git(r, "rev-parse", f"{c0}^{{tree}}")})
    ka = key(net.alice.fingerprint)
    from git_vaultmesh.signing import sign

    line = canonical({"v": 1, "body": body, "sigs": [{"format": "openpgp", "signer": ka.fingerprint,
                                                      "sig": sign(ka, canonical(body))}]}).decode()
    git(r, "notes", "--ref", "vaultmesh", "add", "-m", line, c0)
    rc, rep = verify_json(r, "--all")
    assert rc == 1 and "VM-NOTES-MISMATCH" in codes(rep), failures(rep)
    refused(vm(r, "show", c0), "VM-NOT-RECORDED")


def test_note_claiming_a_release_for_a_commit_that_has_none(net: Net) -> None:
    """The deployed commit has a deploy receipt; `git notes append` adds a release line claiming it is v9.0."""
    r = net.ours
    head = git(r, "rev-parse", "HEAD")
    rel = dict(deploy_body(r, "v9.0"), type="release", version="v9.0")
    rel.pop("environment", None)
    git(r, "notes", "--ref", "vaultmesh", "append", "-m", canonical({"v": 1, "body": rel, "sigs": []}).decode(), head)
    rc, rep = verify_json(r, "--all")
    assert rc == 1 and "VM-NOTES-MISMATCH" in codes(rep), failures(rep)
    shown = json.loads(vm_ok(r, "show", "HEAD", "--json"))
    assert "v9.0" not in json.dumps(shown)


def test_note_attached_to_a_tag_object(net: Net) -> None:
    """A note on v1.0's annotated tag object (not its commit): `git notes --ref=vaultmesh show v1.0` prints
    it. verify --all must see every note, not only those on recorded commits."""
    r = net.ours
    git(r, "notes", "--ref", "vaultmesh", "add", "-m", '{"v":1,"body":{"type":"release"},"sigs":[]}',
        git(r, "rev-parse", "v1.0"))
    rc, rep = verify_json(r, "--all")
    assert rc == 1 and "VM-NOTES-MISMATCH" in codes(rep), failures(rep)


def test_notes_tree_holding_a_path_that_is_no_object_id(net: Net) -> None:
    """A file `README` committed into the notes tree beside the notes (git ignores it, a reader may not)."""
    r = net.ours
    blob = git(r, "hash-object", "-w", "--stdin", input=b"release v1.0 approved\n")
    tree = git(r, "mktree", input=(git(r, "ls-tree", NOTES) + f"\n100644 blob {blob}\tREADME\n").encode())
    git(r, "update-ref", NOTES, git(r, "commit-tree", tree, "-p", NOTES, "-m", "notes"))
    rc, rep = verify_json(r, "--all")
    assert rc == 1 and "VM-NOTES-MISMATCH" in codes(rep), failures(rep)


# --- tags of tags, Unicode twins -------------------------------------------------------------------------


def test_tag_ref_pointing_at_another_tags_object(net: Net) -> None:
    """refs/tags/v2.0 is made to point at v1.0's tag object (whose header says `tag v1.0`): git describe and
    `git tag -v` name it v1.0. A release receipt for v2.0 would bind a tag object that is not v2.0's."""
    r = net.ours
    git(r, "update-ref", "refs/tags/v2.0", git(r, "rev-parse", "v1.0"))
    before = all_refs(r)
    res = vm(r, "record", "v2.0")
    assert "Traceback" not in res.stderr
    assert res.returncode == 1 and "error: VM-TAG-NAME-MISMATCH" in res.stderr, (res.stdout, res.stderr)
    assert all_refs(r) == before


def test_release_naming_the_inner_object_of_a_nested_tag(net: Net) -> None:
    """v3.0 is a tag of the tag v1.0 (a nested tag). Recorded honestly it verifies; a validly signed receipt
    whose subject.tag is the inner tag object (v1.0's) instead of v3.0's own is a moved tag."""
    r = net.ours
    git(r, "tag", "-a", "v3.0", "-m", "nested", "v1.0")
    vm_ok(r, "record", "v3.0")
    assert verify_json(r, "v3.0")[0] == 0
    real = entries(r)[-1]
    git(r, "tag", "-a", "v3.1", "-m", "nested", "v1.0")
    body = dict(real.body, recorded_at=now_rfc3339(), version="v3.1",
                subject=dict(real.body["subject"], ref="refs/tags/v3.1", tag=git(r, "rev-parse", "v1.0")))
    ka = key(net.alice.fingerprint)
    inject(r, body, [ka], ka)
    rc, rep = verify_json(r, "v3.1")
    assert rc == 1 and "VM-TAG-MOVED" in codes(rep), failures(rep)


NFC, NFD = unicodedata.normalize("NFC", "vé1"), unicodedata.normalize("NFD", "vé1")


def test_unicode_twin_of_a_recorded_tag_name(net: Net) -> None:
    """`vé1` recorded (NFC); its NFD twin — the same name to a reader, another ref to git — is made on other
    code. verify and show of the twin must not be satisfied by the NFC receipt."""
    r = net.ours
    assert NFC != NFD
    git(r, "tag", "-a", NFC, "-m", "nfc", "v1.0^{commit}")
    vm_ok(r, "record", NFC)
    git(r, "tag", "-a", NFD, "-m", "nfd", git(r, "rev-parse", "HEAD~2"))
    assert verify_json(r, NFC)[0] == 0
    rc, rep = verify_json(r, NFD)
    assert rc == 1 and codes(rep) == {"VM-NOT-RECORDED"}, failures(rep)
    refused(vm(r, "show", NFD), "VM-NOT-RECORDED")


def test_unicode_twin_of_an_artifact_name(net: Net, tmp_path: Path) -> None:
    """A release would name `café.tar` (NFC) and the attacker ship its NFD twin with other bytes. Artifact
    names are ASCII, so no twin can exist: `record` refuses the name, changing nothing, and a validly signed
    receipt naming it (either form) is malformed."""
    r = net.ours
    good = tmp_path / unicodedata.normalize("NFC", "café.tar")
    good.write_bytes(b"genuine\n")
    tag(r, "v4.0")
    before = all_refs(r)
    err = refused_usage(vm(r, "record", "v4.0", "--artifact", str(good)))
    assert "plain file name" in err
    assert all_refs(r) == before
    real = [e for e in entries(r) if e.type == "release"][0]
    ka = key(net.alice.fingerprint)
    for form in ("NFC", "NFD"):
        body = dict(real.body, recorded_at=now_rfc3339(), version=f"v4.0-{form}",
                    artifacts=[{"name": unicodedata.normalize(form, "café.tar"), "sha256": "00" * 32, "size": 8}],
                    subject=dict(real.body["subject"], ref=f"refs/tags/v4.0-{form}"))
        inject(r, body, [ka], ka)
    rc, rep = verify_json(r, "--all")
    malformed = [c for c in failures(rep) if c["code"] == "VM-ENTRY-MALFORMED"]
    assert rc == 1 and len(malformed) >= 2, failures(rep)


def refused_usage(res: subprocess.CompletedProcess[str]) -> str:
    assert res.returncode == 1 and "error: VM-USAGE: " in res.stderr and "Traceback" not in res.stderr, res.stderr
    return res.stderr


@pytest.mark.parametrize("name", ["app\x1b[2K.tar", "app\n.tar", "..\\evil.exe", "app\u202etxt.exe"])
def test_artifact_name_with_control_or_bidi_characters(net: Net, name: str) -> None:
    """A validly signed release naming an artifact with a terminal escape, a newline, a Windows traversal or a
    right-to-left override (what `show` prints is not what the name is): malformed."""
    r = net.ours
    real = [e for e in entries(r) if e.type == "release"][0]
    tag(r, "v5.0")
    body = dict(real.body, recorded_at=now_rfc3339(), version="v5.0",
                artifacts=[{"name": name, "sha256": "00" * 32, "size": 1}],
                subject=dict(real.body["subject"], ref="refs/tags/v5.0", tag=git(r, "rev-parse", "v5.0")))
    ka = key(net.alice.fingerprint)
    inject(r, body, [ka], ka)
    rc, rep = verify_json(r, "--all")
    assert rc == 1 and "VM-ENTRY-MALFORMED" in codes(rep), failures(rep)
