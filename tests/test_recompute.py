"""recompute_all (histories and tree digests at the same time) and what `verify` asks of it: every history of a
chain of base releases, the tree digest of the releases it judges."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from git_vaultmesh.errors import VaultMeshError
from git_vaultmesh.evtag import tree_digest
from git_vaultmesh.git import Repo
from git_vaultmesh.history import Base, compute
from git_vaultmesh.recompute import Job, recompute_all

from cli_helpers import commit_file, git, ok, run


def _checks(out: str) -> list[dict[str, object]]:
    return json.loads(out)["checks"]  # type: ignore[no-any-return]


def test_recompute_all_matches_each_part_alone_and_keeps_failures_apart(repo: Path) -> None:
    v1 = git(repo, "rev-parse", "v1.0^{commit}")
    tip = commit_file(repo, "file0.txt", "changed\n")
    absent = "0" * len(v1)
    with Repo(repo / ".git", repo) as r:
        h1 = compute(r, v1, None)
        base = Base("e1", v1, h1.size, h1.root, h1.frontier)
        got = recompute_all(r, [
            Job(v1, None, digest=False),
            Job(tip, base, commits=1),
            Job(absent, None, history=False),  # its digest fails; the others must not
        ])
        assert got[0].history.root == h1.root and got[0].digest_error is None
        assert got[1].history == compute(r, tip, base)
        assert got[1].digest == tree_digest(r, tip)
        assert got[2].digest_error is not None and got[2].digest_error.code == "VM-SUBJECT-MISSING"
        with pytest.raises(VaultMeshError) as raised:  # reading a failed part raises its error
            _ = got[2].digest
        assert raised.value.code == "VM-SUBJECT-MISSING"


def _drop_loose_blob(repo: Path, content: bytes) -> None:
    oid = hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()
    assert git(repo, "cat-file", "-t", oid) == "blob"
    (repo / ".git" / "objects" / oid[:2] / oid[2:]).unlink()


def test_verify_tag_judges_its_tree_digest_and_the_history_of_its_base(ledger_repo: Path) -> None:
    repo = ledger_repo
    ok(repo, "record", "v1.0")
    commit_file(repo, "file0.txt", "rewritten\n")
    git(repo, "tag", "-a", "v1.1", "-m", "v1.1")
    ok(repo, "record", "v1.1")
    _drop_loose_blob(repo, b"content 0\n")  # in v1.0's tree, no longer in v1.1's

    checks = _checks(ok(repo, "verify", "v1.1", "--json"))
    histories = [c for c in checks if c["check"] == "release.history"]
    digests = [c for c in checks if c["check"] == "release.tree-digest"]
    assert len(histories) == 2 and all(c["ok"] for c in histories)  # v1.0's history is what v1.1's extends
    assert len(digests) == 1 and digests[0]["ok"] and "entry #2" in str(digests[0]["detail"])

    for target in ("v1.0", "--all"):  # v1.0's own tree digest is judged where v1.0 is judged
        res = run(repo, "verify", target, "--json")
        assert res.returncode == 1
        failed = [c for c in _checks(res.stdout) if not c["ok"]]
        assert [(c["check"], c["code"]) for c in failed] == [("release.tree-digest", "VM-SUBJECT-MISSING")]
