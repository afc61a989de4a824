"""record's tree digest runs ahead in a thread (recompute.DigestAhead) and reads its walk as one pipeline
(git.TreeObjects): the same bytes as the listing and the object reads they replace, processes reaped when a
reader stops early, a stop request honoured, and a record refused after the digest started still refused
with its own code and nothing appended."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from git_vaultmesh.evtag import Stopped, tree_digest
from git_vaultmesh.git import Repo
from git_vaultmesh.recompute import DigestAhead

from conftest import git, vm


def _wide(repo: Path) -> str:
    """A tree of a few hundred objects in nested directories (more than one pipe's worth of names)."""
    for d in range(12):
        sub = repo / f"d{d}" / "e"
        sub.mkdir(parents=True)
        for f in range(20):
            (sub / f"f{f}.txt").write_text(f"{d}/{f}\n" * (f + 1))
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", "wide")
    return git(repo, "rev-parse", "HEAD")


def test_tree_objects_match_the_listing_and_the_objects(repo: Path) -> None:
    head = _wide(repo)
    with Repo.discover(repo) as r:
        want = r.tree_walk(head)
        walk = r.tree_objects(head)
        got = list(walk)
        assert [item for item, _, _ in got] == want
        assert walk.listing() == want
        for item, typ, body in got:
            assert (typ, body) == r.read_object(item.oid)


def test_tree_objects_stopped_early_reap_their_processes(repo: Path) -> None:
    head = _wide(repo)
    with Repo.discover(repo) as r:
        walk = r.tree_objects(head)
        for n, _ in enumerate(walk):
            if n == 3:
                break
        walk.close()
        assert walk._cat.returncode is not None and walk._ls.returncode is not None


def test_tree_objects_of_a_non_tree_end_with_key_error(repo: Path) -> None:
    blob = git(repo, "rev-parse", "HEAD:file0.txt")
    with Repo.discover(repo) as r, pytest.raises(KeyError):
        list(r.tree_objects(blob))


def test_a_stopped_digest_stops(repo: Path) -> None:
    head = _wide(repo)
    stop = threading.Event()
    stop.set()
    with Repo.discover(repo) as r, pytest.raises(Stopped):
        tree_digest(r, head, stop=stop)


def test_digest_ahead_gives_the_digest(repo: Path) -> None:
    head = _wide(repo)
    with Repo.discover(repo) as r:
        ahead = DigestAhead(r, head)
        assert ahead.result() == tree_digest(r, head)
        ahead.cancel()  # after the result: nothing to stop


def test_digest_ahead_error_comes_at_result(repo: Path) -> None:
    blob = git(repo, "rev-parse", "HEAD:file0.txt")
    with Repo.discover(repo) as r:
        ahead = DigestAhead(r, blob)
        with pytest.raises(Exception) as err:
            ahead.result()
        assert getattr(err.value, "code", None) == "VM-BAD-REV"


def test_record_refused_after_the_digest_started_appends_nothing(ledger_repo: Path) -> None:
    before = git(ledger_repo, "rev-parse", "refs/vaultmesh/log")
    (ledger_repo / "dist").mkdir()
    res = vm(ledger_repo, "record", "v1.0", "--artifact", "dist")  # refused in the body, after the digest started
    assert res.returncode != 0 and "VM-ARTIFACT-UNREADABLE" in res.stderr, res.stderr
    assert "Traceback" not in res.stderr
    assert git(ledger_repo, "rev-parse", "refs/vaultmesh/log") == before
    ok = vm(ledger_repo, "record", "v1.0", "--json")
    assert ok.returncode == 0, ok.stderr
