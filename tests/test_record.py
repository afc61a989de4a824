"""`init` and `record` on real repositories with real git and gpg: what is written, what is refused.

The history roots are checked against an independent implementation (cli_helpers.topo_v1 + mth), and every
refusal is checked for its exact code, a hint, and ledger refs left untouched.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

import pytest

from cli_helpers import (
    GpgKey,
    assert_error,
    commit_file,
    consistency_proof,
    gen_gpg_key,
    git,
    history_leaves,
    ledger_refs,
    log_json,
    merge_heavy_history,
    mth,
    ok,
    ok_json,
    run,
    topo_v1,
)


def body_of(row: dict[str, Any]) -> dict[str, Any]:
    return row["entry"]["body"]  # type: ignore[no-any-return]


def entries_by_seq(repo: Path) -> list[dict[str, Any]]:
    return sorted(log_json(repo), key=lambda r: r["seq"])


# --- init ----------------------------------------------------------------------------------------------
def test_init_writes_genesis_policy_and_pins_trust_root(repo: Path, gpg_key: GpgKey) -> None:
    git(repo, "config", "vaultmesh.signingKey", gpg_key.fingerprint)
    out = ok_json(repo, "init")
    assert out["ok"] is True and out["trust_root"] == gpg_key.fingerprint
    assert git(repo, "config", "--get", "vaultmesh.trustRoot") == gpg_key.fingerprint
    assert git(repo, "rev-parse", "refs/vaultmesh/log") == out["commit"]
    rows = log_json(repo)
    assert len(rows) == 1 and rows[0]["seq"] == 0 and rows[0]["id"] == out["entry"]
    genesis = body_of(rows[0])
    assert genesis["type"] == "policy" and genesis["log"] == out["log"]
    assert re.fullmatch(r"[0-9a-f]{32}", genesis["log"])
    assert [s["fingerprint"] for s in genesis["signers"]] == [gpg_key.fingerprint]
    assert [s["fingerprint"] for s in genesis["signers"]] == [s["signer"] for s in rows[0]["entry"]["sigs"]]
    # the log commit's tree: the genesis entry, a C2SP checkpoint of size 1, and its signature
    tree = git(repo, "ls-tree", "-r", "--name-only", "refs/vaultmesh/log").splitlines()
    assert sorted(tree) == ["checkpoint", "checkpoint.sig", "entries/000/000/000000000000.json"]
    cp = git(repo, "cat-file", "blob", "refs/vaultmesh/log:checkpoint").splitlines()
    assert cp[0] == f"vaultmesh/{out['log']}" and cp[1] == "1"
    assert ok(repo, "verify", "--all").rstrip().endswith("OK; pinned trust root")


# --- record: happy paths ----------------------------------------------------------------------------------
def test_record_release_history_tree_digest_and_artifacts(ledger_repo: Path, tmp_path: Path) -> None:
    art = tmp_path / "app-1.0.tar.gz"
    art.write_bytes(os.urandom(3000))
    other = "b" * 64
    out = ok_json(ledger_repo, "record", "v1.0", "--artifact", str(art), "--sha256", f"sbom.json={other.upper()}",
                  "--evidence", "ci run 42", "-m", "first release")
    body = out["body"]
    assert out["ok"] is True and out["type"] == "release" and out["seq"] == 1
    assert git(ledger_repo, "rev-parse", "refs/vaultmesh/log") == out["commit"]
    commit = git(ledger_repo, "rev-parse", "v1.0^{commit}")
    assert body["subject"] == {"ref": "refs/tags/v1.0", "tag": git(ledger_repo, "rev-parse", "v1.0"),
                               "commit": commit, "tree": git(ledger_repo, "rev-parse", "v1.0^{tree}")}
    assert body["version"] == "v1.0" and body["component"] == "repo"
    assert body["evidence"] == ["ci run 42"] and body["message"] == "first release"
    data = art.read_bytes()
    assert body["artifacts"] == [
        {"name": "app-1.0.tar.gz", "sha256": hashlib.sha256(data).hexdigest(), "size": len(data)},
        {"name": "sbom.json", "sha256": other},
    ]
    h = body["history"]
    n_commits = int(git(ledger_repo, "rev-list", "--count", "v1.0"))
    assert h["alg"] == "rfc6962-sha256" and h["order"] == "vaultmesh-topo-v1"
    assert h["size"] == n_commits == 3
    assert h["root"] == mth(history_leaves(ledger_repo, commit)).hex()
    assert "base" not in h
    assert re.fullmatch(r"[0-9a-f]{128}", body["tree_digest"])
    # the receipt is in the log, in the notes of the commit, and verifies
    rows = log_json(ledger_repo)
    assert rows[0]["id"] == out["entry"] and body_of(rows[0]) == body
    note = git(ledger_repo, "notes", "--ref=vaultmesh", "show", commit)
    assert json.loads(note)["body"] == body
    assert git(ledger_repo, "rev-parse", "refs/notes/vaultmesh")
    ok(ledger_repo, "verify", "v1.0", "--artifact", str(art))


def test_second_release_extends_the_first(ledger_repo: Path) -> None:
    first = ok_json(ledger_repo, "record", "v1.0")
    c1 = git(ledger_repo, "rev-parse", "v1.0^{commit}")
    leaves1 = history_leaves(ledger_repo, c1)
    for i in range(4):
        commit_file(ledger_repo, f"more{i}.txt", f"{i}\n")
    git(ledger_repo, "tag", "-a", "v2.0", "-m", "v2.0")
    c2 = git(ledger_repo, "rev-parse", "HEAD")
    out = ok_json(ledger_repo, "record", "v2.0")
    h1, h2 = first["body"]["history"], out["body"]["history"]
    new = history_leaves(ledger_repo, c2, exclude=[c1])
    assert len(new) == 4
    assert h2["size"] == h1["size"] + 4 == int(git(ledger_repo, "rev-list", "--count", "v2.0"))
    assert h2["base"] == {"entry": first["entry"], "size": h1["size"], "root": h1["root"]}
    assert h2["root"] == mth(leaves1 + new).hex()
    assert h2["consistency"] == [x.hex() for x in consistency_proof(h1["size"], leaves1 + new)]
    assert h2["consistency"], "a proof from 3 to 7 leaves is not empty"
    ok(ledger_repo, "verify", "v2.0")
    ok(ledger_repo, "verify", "--all")


def test_base_is_the_newest_ancestor_release_not_a_sibling(ledger_repo: Path) -> None:
    """A release on a side branch is no base for main's next release (it is no ancestor)."""
    r1 = ok_json(ledger_repo, "record", "v1.0")
    git(ledger_repo, "checkout", "-q", "-b", "side")
    commit_file(ledger_repo, "side.txt", "side\n")
    git(ledger_repo, "tag", "-a", "v1.1-side", "-m", "side")
    ok(ledger_repo, "record", "v1.1-side")
    git(ledger_repo, "checkout", "-q", "main")
    commit_file(ledger_repo, "main.txt", "main\n")
    git(ledger_repo, "tag", "-a", "v2.0", "-m", "v2.0")
    h = ok_json(ledger_repo, "record", "v2.0")["body"]["history"]
    assert h["base"]["entry"] == r1["entry"]
    c2 = git(ledger_repo, "rev-parse", "HEAD")
    assert h["root"] == mth(history_leaves(ledger_repo, c2)).hex()
    ok(ledger_repo, "verify", "--all")


def test_merge_heavy_history_roots_match_independent_order(ledger_repo: Path) -> None:
    ok(ledger_repo, "record", "v1.0")
    c1 = git(ledger_repo, "rev-parse", "v1.0^{commit}")
    merge_heavy_history(ledger_repo)
    git(ledger_repo, "tag", "-a", "v2.0", "-m", "v2.0")
    c2 = git(ledger_repo, "rev-parse", "HEAD")
    merges = git(ledger_repo, "rev-list", "--min-parents=2", "v2.0").split()
    assert len(merges) == 7
    order = topo_v1(ledger_repo, c2)
    # the order is topological: every parent before its children
    pos = {oid: i for i, oid in enumerate(order)}
    for line in git(ledger_repo, "rev-list", "--parents", c2).splitlines():
        oid, *parents = line.split()
        assert all(pos[p] < pos[oid] for p in parents)
    h = ok_json(ledger_repo, "record", "v2.0")["body"]["history"]
    leaves1 = history_leaves(ledger_repo, c1)
    new = history_leaves(ledger_repo, c2, exclude=[c1])
    assert h["size"] == len(order) == len(leaves1) + len(new)
    assert h["root"] == mth(leaves1 + new).hex()
    # a second tag on the same commit: its base is v2.0 itself, nothing new, an empty consistency proof
    git(ledger_repo, "tag", "-a", "v2.0-again", "-m", "again", "HEAD")
    again = ok_json(ledger_repo, "record", "v2.0-again")["body"]["history"]
    assert (again["size"], again["root"], again["base"]["root"]) == (h["size"], h["root"], h["root"])
    assert again["consistency"] == []
    ok(ledger_repo, "verify", "v2.0")
    ok(ledger_repo, "verify", "v2.0-again")
    ok(ledger_repo, "verify", "--all")


def test_merge_heavy_first_release_root(repo: Path, gpg_key: GpgKey) -> None:
    merge_heavy_history(repo)
    git(repo, "tag", "-a", "v9", "-m", "v9")
    git(repo, "config", "vaultmesh.signingKey", gpg_key.fingerprint)
    ok(repo, "init")
    h = ok_json(repo, "record", "v9")["body"]["history"]
    assert h["root"] == mth(history_leaves(repo, "v9^{commit}")).hex()
    assert h["size"] == int(git(repo, "rev-list", "--count", "v9"))
    ok(repo, "verify", "v9")


def test_deploys_of_one_commit_repeat(ledger_repo: Path) -> None:
    head = git(ledger_repo, "rev-parse", "HEAD")
    a = ok_json(ledger_repo, "record", "HEAD", "--environment", "prod", env={"SOURCE_DATE_EPOCH": "1700000000"})
    b = ok_json(ledger_repo, "record", "HEAD", "--environment", "prod", env={"SOURCE_DATE_EPOCH": "1700000600"})
    c = ok_json(ledger_repo, "record", "main", "--environment", "staging")
    assert [x["type"] for x in (a, b, c)] == ["deploy"] * 3
    assert (a["seq"], b["seq"], c["seq"]) == (1, 2, 3)
    assert a["body"]["subject"]["commit"] == b["body"]["subject"]["commit"] == head
    assert c["body"]["subject"]["ref"] == "refs/heads/main"
    assert "history" not in a["body"] and "version" not in a["body"]
    # a deploy of a commit no tag keeps alive pins it with a keep ref
    assert git(ledger_repo, "rev-parse", f"refs/vaultmesh/keep/{head}") == head
    notes = git(ledger_repo, "notes", "--ref=vaultmesh", "show", head).splitlines()
    assert [json.loads(n)["body"]["environment"] for n in notes] == ["prod", "prod", "staging"]
    ok(ledger_repo, "verify", "--all")
    ok(ledger_repo, "verify", "HEAD")


def test_identical_receipt_is_not_appended_twice(ledger_repo: Path) -> None:
    """Same body (same second) = same statement: appending it twice would make `verify` fail forever."""
    env = {"SOURCE_DATE_EPOCH": "1700000000"}
    first = ok_json(ledger_repo, "record", "HEAD", "--environment", "prod", env=env)
    refs = ledger_refs(ledger_repo)
    again = ok_json(ledger_repo, "record", "HEAD", "--environment", "prod", env=env)
    assert again["appended"] is False and again["entry"] == first["entry"] and again["seq"] == first["seq"]
    assert ledger_refs(ledger_repo) == refs
    text = ok(ledger_repo, "record", "HEAD", "--environment", "prod", env=env)
    assert "already entry #1" in text and "nothing appended" in text
    assert ledger_refs(ledger_repo) == refs
    ok(ledger_repo, "verify", "--all")


def test_source_date_epoch_sets_recorded_at(ledger_repo: Path) -> None:
    env = {"SOURCE_DATE_EPOCH": "1700000000"}
    out = ok_json(ledger_repo, "record", "v1.0", env=env)
    assert out["body"]["recorded_at"] == "2023-11-14T22:13:20Z"
    assert git(ledger_repo, "log", "-1", "--format=%ct %at", "refs/vaultmesh/log") == "1700000000 1700000000"
    dep = ok_json(ledger_repo, "record", "HEAD", env={"SOURCE_DATE_EPOCH": "0"})
    assert dep["body"]["recorded_at"] == "1970-01-01T00:00:00Z"
    ok(ledger_repo, "verify", "--all")


# --- refusals ------------------------------------------------------------------------------------------
def test_second_release_of_a_tag_is_refused(ledger_repo: Path) -> None:
    ok(ledger_repo, "record", "v1.0")
    refs = ledger_refs(ledger_repo)
    res = run(ledger_repo, "record", "v1.0")
    assert res.returncode == 1
    assert_error(res, "VM-ALREADY-RECORDED")
    assert ledger_refs(ledger_repo) == refs
    # also when spelled as the full ref, with other options, or asked for --json
    assert_error(run(ledger_repo, "record", "refs/tags/v1.0", "-m", "again"), "VM-ALREADY-RECORDED")
    res = run(ledger_repo, "record", "v1.0", "--json")
    assert_error(res, "VM-ALREADY-RECORDED")
    assert json.loads(res.stdout)["error"]["code"] == "VM-ALREADY-RECORDED"
    assert ledger_refs(ledger_repo) == refs
    # --if-missing: success, nothing appended
    res = run(ledger_repo, "record", "v1.0", "--if-missing")
    assert res.returncode == 0 and "already recorded" in res.stdout
    assert ledger_refs(ledger_repo) == refs
    assert len(log_json(ledger_repo)) == 2


def test_if_missing_records_when_missing(ledger_repo: Path) -> None:
    out = ok(ledger_repo, "record", "v1.0", "--if-missing")
    assert "recorded release" in out
    assert [r["entry"]["body"]["type"] for r in entries_by_seq(ledger_repo)] == ["policy", "release"]


def test_type_release_needs_a_tag(ledger_repo: Path) -> None:
    refs = ledger_refs(ledger_repo)
    for rev in ("HEAD", "main", git(ledger_repo, "rev-parse", "HEAD")):
        assert_error(run(ledger_repo, "record", rev, "--type", "release"), "VM-USAGE")
    assert_error(run(ledger_repo, "record", "v1.0", "--environment", "prod"), "VM-USAGE")
    assert ledger_refs(ledger_repo) == refs
    # a tag can be recorded as a deploy on request
    out = ok_json(ledger_repo, "record", "v1.0", "--type", "deploy", "--environment", "prod")
    assert out["type"] == "deploy" and out["body"]["subject"]["ref"] == "refs/tags/v1.0"


# --- bad input: exact code, a hint, ledger untouched -----------------------------------------------------
BAD_REVS = ["v9.9", "no-such-branch", "HEAD~10", "0" * 40, "HEAD:file0.txt", "treetag", "v1.0..HEAD",
            "@{upstream}"]


def test_unknown_rev(ledger_repo: Path) -> None:
    git(ledger_repo, "tag", "treetag", "HEAD^{tree}")  # a tag, but of a tree: no commit to record
    refs = ledger_refs(ledger_repo)
    for rev in BAD_REVS:
        assert_error(run(ledger_repo, "record", rev), "VM-BAD-REV")
    assert_error(run(ledger_repo, "record", "v9.9", "--type", "release"), "VM-BAD-REV")
    assert ledger_refs(ledger_repo) == refs


def test_unreadable_artifacts(ledger_repo: Path, tmp_path: Path) -> None:
    refs = ledger_refs(ledger_repo)
    cases = [str(tmp_path / "missing.tar.gz"), str(tmp_path)]
    for path in cases:
        res = run(ledger_repo, "record", "v1.0", "--artifact", path)
        assert_error(res, "VM-ARTIFACT-UNREADABLE")
        assert path in res.stderr
        assert ledger_refs(ledger_repo) == refs
    good = tmp_path / "good.bin"
    good.write_bytes(b"x")
    res = run(ledger_repo, "record", "v1.0", "--artifact", str(good), "--artifact", cases[0])
    assert_error(res, "VM-ARTIFACT-UNREADABLE")
    assert ledger_refs(ledger_repo) == refs


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root reads mode-000 files anyway")
def test_artifact_without_read_permission(ledger_repo: Path, tmp_path: Path) -> None:
    locked = tmp_path / "locked.bin"
    locked.write_bytes(b"secret")
    locked.chmod(0)
    refs = ledger_refs(ledger_repo)
    try:
        assert_error(run(ledger_repo, "record", "v1.0", "--artifact", str(locked)), "VM-ARTIFACT-UNREADABLE")
    finally:
        locked.chmod(0o600)
    assert ledger_refs(ledger_repo) == refs


BAD_DIGESTS = ["abc", "g" * 64, "a" * 63, "a" * 65, "name=" + "a" * 63, "name=", "", "sha256:" + "a" * 64,
               " " + "a" * 64]


def test_bad_sha256(ledger_repo: Path) -> None:
    refs = ledger_refs(ledger_repo)
    for value in BAD_DIGESTS:
        assert_error(run(ledger_repo, "record", "v1.0", "--sha256", value), "VM-BAD-DIGEST")
    assert ledger_refs(ledger_repo) == refs


def test_artifact_names_readers_would_refuse_are_refused(ledger_repo: Path) -> None:
    """An entry `verify`/`log` cannot parse must never be appended: the log can't drop it afterwards."""
    refs = ledger_refs(ledger_repo)
    for name in ("../evil", "a/b", "caf\u00e9.tar", ".", "..", " lead", "x\ty"):
        assert_error(run(ledger_repo, "record", "HEAD", "--sha256", f"{name}={'a' * 64}"), "VM-USAGE")
    assert ledger_refs(ledger_repo) == refs
    ok(ledger_repo, "verify", "--all")


def test_artifact_file_with_unusable_name(ledger_repo: Path, tmp_path: Path) -> None:
    odd = tmp_path / "r\u00e9sum\u00e9.pdf"
    odd.write_bytes(b"pdf")
    refs = ledger_refs(ledger_repo)
    assert_error(run(ledger_repo, "record", "v1.0", "--artifact", str(odd)), "VM-USAGE")
    assert ledger_refs(ledger_repo) == refs
    dup = tmp_path / "sub"
    dup.mkdir()
    (dup / "good.bin").write_bytes(b"1")
    (tmp_path / "good.bin").write_bytes(b"2")
    res = run(ledger_repo, "record", "v1.0", "--artifact", str(dup / "good.bin"), "--artifact",
              str(tmp_path / "good.bin"))
    assert_error(res, "VM-USAGE")
    assert ledger_refs(ledger_repo) == refs


def test_not_a_repository(tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    env = {"GIT_CEILING_DIRECTORIES": str(tmp_path)}
    for args in (["init"], ["record", "HEAD"], ["verify"], ["show", "v1.0"], ["log"], ["verify", "--json"]):
        res = run(plain, *args, env=env)
        assert_error(res, "VM-NOT-A-REPO")
        assert res.returncode == 1
    assert not (plain / ".git").exists()


def test_no_signing_key(repo: Path, gpg_key: GpgKey) -> None:
    assert_error(run(repo, "init"), "VM-NO-SIGNING-KEY")
    assert ledger_refs(repo) == {}
    git(repo, "config", "vaultmesh.signingKey", "0" * 40)  # names no key in the keyring
    assert_error(run(repo, "init"), "VM-NO-SIGNING-KEY")
    assert ledger_refs(repo) == {}
    res = run(repo, "verify")
    assert res.returncode == 1 and "[VM-NOT-INITIALIZED]" in res.stdout
    # user.signingkey is the fallback, as for git itself
    git(repo, "config", "--unset", "vaultmesh.signingKey")
    git(repo, "config", "user.signingkey", gpg_key.fingerprint)
    ok(repo, "init")
    git(repo, "config", "--unset", "user.signingkey")
    refs = ledger_refs(repo)
    assert_error(run(repo, "record", "v1.0"), "VM-NO-SIGNING-KEY")
    assert_error(run(repo, "record", "HEAD"), "VM-NO-SIGNING-KEY")
    assert ledger_refs(repo) == refs


def test_record_before_init(repo: Path, gpg_key: GpgKey) -> None:
    git(repo, "config", "vaultmesh.signingKey", gpg_key.fingerprint)
    for args in (["record", "v1.0"], ["record", "HEAD"], ["show", "v1.0"], ["log"]):
        assert_error(run(repo, *args), "VM-NOT-INITIALIZED")
    res = run(repo, "verify", "v1.0", "--json")
    assert res.returncode == 1
    assert [c["code"] for c in json.loads(res.stdout)["checks"]] == ["VM-NOT-INITIALIZED"]
    assert ledger_refs(repo) == {}


def test_init_twice(ledger_repo: Path, gpg_key: GpgKey) -> None:
    refs = ledger_refs(ledger_repo)
    assert_error(run(ledger_repo, "init"), "VM-ALREADY-INITIALIZED")
    assert ledger_refs(ledger_repo) == refs
    # a second init with another key must not re-pin the trust root either
    bob = gen_gpg_key(gpg_key.home, "Bob")
    git(ledger_repo, "config", "vaultmesh.signingKey", bob.fingerprint)
    assert_error(run(ledger_repo, "init", "--name", "bob"), "VM-ALREADY-INITIALIZED")
    assert git(ledger_repo, "config", "vaultmesh.trustRoot") == gpg_key.fingerprint
    assert ledger_refs(ledger_repo) == refs


def test_signer_not_in_policy(ledger_repo: Path, gpg_key: GpgKey, tmp_path: Path) -> None:
    bob = gen_gpg_key(gpg_key.home, "Bob")
    git(ledger_repo, "config", "vaultmesh.signingKey", bob.fingerprint)
    refs = ledger_refs(ledger_repo)
    res = run(ledger_repo, "record", "v1.0")
    assert_error(res, "VM-SIGNER-NOT-IN-POLICY")
    assert bob.fingerprint in res.stderr
    assert_error(run(ledger_repo, "record", "HEAD"), "VM-SIGNER-NOT-IN-POLICY")
    assert ledger_refs(ledger_repo) == refs
    git(ledger_repo, "config", "vaultmesh.signingKey", gpg_key.fingerprint)
    ok(ledger_repo, "record", "v1.0")
    ok(ledger_repo, "verify", "--all")


def _loose_path(repo: Path, oid: str) -> Path:
    return repo / ".git" / "objects" / oid[:2] / oid[2:]


def test_corrupt_ledger_objects_give_codes_not_tracebacks(ledger_repo: Path) -> None:
    ok(ledger_repo, "record", "v1.0")
    head = git(ledger_repo, "rev-parse", "refs/vaultmesh/log")
    loose = _loose_path(ledger_repo, head)
    assert loose.is_file(), "the fixture's ledger objects are loose"
    loose.unlink()
    refs = ledger_refs(ledger_repo)
    for args in (["record", "HEAD"], ["record", "v1.0", "--if-missing"], ["log"], ["show", "v1.0"]):
        assert_error(run(ledger_repo, *args), "VM-LOG-CORRUPT")
    for args in (["verify", "v1.0", "--json"], ["verify", "--all", "--json"]):
        res = run(ledger_repo, *args)
        assert res.returncode == 1
        report = json.loads(res.stdout)
        assert report["ok"] is False
        assert [c["code"] for c in report["checks"] if not c["ok"]] == ["VM-LOG-CORRUPT"]
    res = run(ledger_repo, "verify", "v1.0")
    assert res.returncode == 1 and "[VM-LOG-CORRUPT]" in res.stdout
    assert_error(run(ledger_repo, "init"), "VM-LOG-CORRUPT")
    assert ledger_refs(ledger_repo) == refs


def test_corrupt_entry_blob(ledger_repo: Path) -> None:
    """A missing entry blob (not the commit): readers report VM-LOG-CORRUPT too."""
    ok(ledger_repo, "record", "v1.0")
    blob = git(ledger_repo, "rev-parse", "refs/vaultmesh/log:entries/000/000/000000000001.json")
    _loose_path(ledger_repo, blob).unlink()
    refs = ledger_refs(ledger_repo)
    assert_error(run(ledger_repo, "log"), "VM-LOG-CORRUPT")
    assert_error(run(ledger_repo, "show", "#1"), "VM-LOG-CORRUPT")
    res = run(ledger_repo, "verify", "--all", "--json")
    assert res.returncode == 1
    assert "VM-LOG-CORRUPT" in [c["code"] for c in json.loads(res.stdout)["checks"]]
    assert ledger_refs(ledger_repo) == refs
