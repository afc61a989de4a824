"""A change in log commit k is blamed at k only: the append-only check names the commit, the entry and the
field; the checkpoint checks of the untouched commits before k (and of those after it that only carry the
change forward) stay quiet."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from git_vaultmesh.entry import entry_path

from conftest import GIT_ENV, gen_gpg_key, git, make_repo, throwaway_gpg_home, vm, vm_ok


def _log_commits(repo: Path) -> list[str]:
    return git(repo, "rev-list", "--reverse", "--first-parent", "refs/vaultmesh/log").split()


def _tree_with(repo: Path, commit: str, path: str, blob: str) -> str:
    index = repo / ".git" / "blame-index"
    env = dict(os.environ, GIT_INDEX_FILE=str(index))
    for args in (["read-tree", commit], ["update-index", "--cacheinfo", f"100644,{blob},{path}"]):
        subprocess.run(["git", *args], cwd=repo, env=env, check=True, capture_output=True)
    tree = subprocess.run(["git", "write-tree"], cwd=repo, env=env, check=True, capture_output=True,
                          text=True).stdout.strip()
    index.unlink()
    return tree


def _rewrite_from(repo: Path, k: int, seq: int) -> str:
    """Change one byte of entry #seq in log commit k (k == len(chain): a new commit on top) and rebuild the
    commits after k on top of it, each carrying the changed entry as an attacker's rewrite would.
    Returns the oid of the new commit k."""
    chain = _log_commits(repo)
    path = entry_path(seq)
    line = json.loads(git(repo, "cat-file", "blob", f"refs/vaultmesh/log:{path}"))
    env_value = line["body"]["environment"]
    line["body"]["environment"] = ("X" if env_value[0] != "X" else "Y") + env_value[1:]
    forged = (json.dumps(line, sort_keys=True, separators=(",", ":")) + "\n").encode()
    blob = git(repo, "hash-object", "-w", "--stdin", input=forged)
    parent = chain[k - 1]
    blamed = ""
    for i in range(k, max(k + 1, len(chain))):
        base = chain[i] if i < len(chain) else chain[-1]
        tree = _tree_with(repo, base, path, blob)
        message = "innocent-looking update" if i >= len(chain) else git(repo, "log", "-1", "--format=%B", base)
        parent = git(repo, "commit-tree", tree, "-p", parent, "-m", message)
        if i == k:
            blamed = parent
    git(repo, "update-ref", "refs/vaultmesh/log", parent)
    return blamed


@pytest.fixture(scope="module")
def _pristine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict[str, str]]]:
    """Built once: a ledger of five log commits (genesis + one deploy each); each case tampers a copy."""
    root = tmp_path_factory.mktemp("blame")
    with throwaway_gpg_home() as home, pytest.MonkeyPatch.context() as mp:
        key = gen_gpg_key(home, "Alice")
        env = {"GNUPGHOME": home, "HOME": str(root), **GIT_ENV}
        for k, v in env.items():  # the function-scoped identity fixture has not run yet
            mp.setenv(k, v)
        repo = make_repo(root / "repo")
        git(repo, "config", "vaultmesh.signingKey", key.fingerprint)
        vm_ok(repo, "init", env=env)
        for i in range(1, 5):
            vm_ok(repo, "record", "HEAD", "--environment", f"env{i}", env=env)
        assert len(_log_commits(repo)) == 5
        yield repo, env


@pytest.fixture
def five_commits(_pristine: tuple[Path, dict[str, str]], tmp_path: Path) -> tuple[Path, dict[str, str]]:
    repo, env = _pristine
    copy = tmp_path / "repo"
    shutil.copytree(repo, copy, symlinks=True)
    return copy, env


@pytest.mark.parametrize(("k", "seq"), [
    (5, 2),  # a commit on top changes an earlier entry (what `demo` does)
    (2, 1),  # a middle commit changes an entry an earlier commit appended; commits 3 and 4 carry it
    (3, 3),  # a middle commit's own entry is not what was signed into its checkpoint; commit 4 builds on it
    (4, 4),  # the top commit's own entry
])
def test_tamper_in_commit_k_is_blamed_at_k_only(five_commits: tuple[Path, dict[str, str]], k: int,
                                                seq: int) -> None:
    repo, env = five_commits
    before = _log_commits(repo)
    blamed = _rewrite_from(repo, k, seq)
    after = _log_commits(repo)
    res = vm(repo, "verify", "--all", "--json", env=env)
    assert res.returncode == 1, res.stdout + res.stderr
    failed = [c for c in json.loads(res.stdout)["checks"] if not c["ok"]]
    log_failures = [c for c in failed if c["check"].startswith("log.")]
    assert log_failures, failed
    named = {oid[:12] for oid in set(before) | set(after) for c in failed if oid[:12] in c["detail"]}
    assert named == {blamed[:12]}, "\n".join(f"{c['code']}: {c['detail']}" for c in failed)
    mismatches = [c for c in failed if c["code"] == "VM-CHECKPOINT-MISMATCH"]
    assert len(mismatches) <= 1, mismatches
    if k > seq:  # a change to an entry appended earlier: the append-only check names entry and field
        (append_only,) = [c for c in failed if c["check"] == "log.append-only"]
        assert f"entry #{seq}" in append_only["detail"] and "field body.environment" in append_only["detail"]
    else:  # the entry is the commit's own: its checkpoint is the first to disagree, the later ones fold in
        assert mismatches and blamed[:12] in mismatches[0]["detail"]
