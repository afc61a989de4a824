"""Helpers shared by test_cli.py, test_record.py and test_concurrency.py.

Includes an independent re-implementation of the history tree (RFC 6962 hashing over commits in
"vaultmesh-topo-v1" order) written from DESIGN.md §3 only, so the tests never trust git_vaultmesh's own code
to check git_vaultmesh's output.
"""

from __future__ import annotations

import hashlib
import heapq
import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from conftest import GpgKey as GpgKey  # re-exported: test files import from one place
from conftest import gen_gpg_key as gen_gpg_key
from conftest import git, vm

LEDGER_REFS = ("refs/vaultmesh/", "refs/notes/vaultmesh")


# --- running the CLI --------------------------------------------------------------------------------
def run(cwd: str | Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`vm` that also asserts no Python traceback ever reaches the user."""
    res = vm(cwd, *args, env=env)
    assert "Traceback" not in res.stderr, res.stderr
    assert "Traceback" not in res.stdout, res.stdout
    return res


def ok(cwd: str | Path, *args: str, env: dict[str, str] | None = None) -> str:
    res = run(cwd, *args, env=env)
    assert res.returncode == 0, f"vaultmesh {' '.join(args)} failed ({res.returncode}):\n{res.stdout}\n{res.stderr}"
    return res.stdout


def ok_json(cwd: str | Path, *args: str, env: dict[str, str] | None = None) -> Any:
    return json.loads(ok(cwd, *args, "--json", env=env))


def script_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """Environment in which `git vaultmesh` finds the console script of the Python running the tests."""
    env = dict(os.environ)
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    env.update(extra or {})
    return env


def git_vm(cwd: str | Path, *args: str, git_opts: Sequence[str] = (),
           env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run it the way users do: `git [opts] vaultmesh ARGS` (git finds git-vaultmesh on PATH)."""
    res = subprocess.run(["git", *git_opts, "vaultmesh", *args], cwd=cwd, capture_output=True, text=True,
                         env=script_env(env))
    assert "Traceback" not in res.stderr, res.stderr
    return res


def assert_error(res: subprocess.CompletedProcess[str], code: str) -> None:
    """A refusal: non-zero exit, exactly one `error: CODE: …` line on stderr, and a `hint:` line."""
    assert res.returncode != 0, f"expected {code}, got exit 0:\n{res.stdout}\n{res.stderr}"
    assert "Traceback" not in res.stderr, res.stderr
    lines = res.stderr.splitlines()
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1, res.stderr
    assert errors[0].startswith(f"error: {code}: "), f"expected {code}:\n{res.stderr}"
    assert len(errors[0]) > len(f"error: {code}: ") + 5, "the error line must say what went wrong"
    hints = [line for line in lines if line.startswith("hint: ")]
    assert hints and all(len(h) > len("hint: ") + 5 for h in hints), res.stderr


def ledger_refs(repo: str | Path) -> dict[str, str]:
    out = git(repo, "for-each-ref", "--format=%(refname) %(objectname)", *LEDGER_REFS)
    return dict(line.split(" ", 1) for line in out.splitlines() if line)


def git_config(repo: str | Path, key: str) -> str | None:
    res = subprocess.run(["git", "config", "--get", key], cwd=repo, capture_output=True, text=True)
    return res.stdout.strip() if res.returncode == 0 else None


def log_json(repo: str | Path) -> list[dict[str, Any]]:
    """`log --json`: newest first."""
    return ok_json(repo, "log")  # type: ignore[no-any-return]


# --- repositories -------------------------------------------------------------------------------------
def commit_file(repo: str | Path, name: str, content: str, message: str | None = None) -> str:
    (Path(repo) / name).write_text(content)
    git(repo, "add", name)
    git(repo, "commit", "-q", "-m", message or f"edit {name}")
    return git(repo, "rev-parse", "HEAD")


def merge_heavy_history(repo: str | Path, rounds: int = 3) -> None:
    """Feature branches forked from several points, merged back with --no-ff, plus an octopus merge.

    All commits share one committer date, so no ordering can lean on timestamps."""
    os.environ["GIT_COMMITTER_DATE"] = os.environ["GIT_AUTHOR_DATE"] = "@1700000000 +0000"
    try:
        for r in range(rounds):
            base = git(repo, "rev-parse", "HEAD")
            for b in ("a", "b"):
                git(repo, "checkout", "-q", "-b", f"f{r}{b}", base)
                for i in range(2):
                    commit_file(repo, f"{b}{r}_{i}.txt", f"{b} {r} {i}\n")
            git(repo, "checkout", "-q", "main")
            commit_file(repo, f"main{r}.txt", f"main {r}\n")
            git(repo, "merge", "-q", "--no-ff", "-m", f"merge f{r}a", f"f{r}a")
            git(repo, "merge", "-q", "--no-ff", "-m", f"merge f{r}b", f"f{r}b")
        base = git(repo, "rev-parse", "HEAD")
        for b in ("x", "y", "z"):
            git(repo, "checkout", "-q", "-b", f"oct{b}", base)
            commit_file(repo, f"oct{b}.txt", f"{b}\n")
        git(repo, "checkout", "-q", "main")
        git(repo, "merge", "-q", "--no-ff", "-m", "octopus", "octx", "octy", "octz")
    finally:
        del os.environ["GIT_COMMITTER_DATE"], os.environ["GIT_AUTHOR_DATE"]


# --- independent history tree (DESIGN §3) ---------------------------------------------------------
def topo_v1(repo: str | Path, tip: str, exclude: Sequence[str] = ()) -> list[str]:
    """Commits reachable from tip and not from `exclude`, parents first, ties by ascending id (Kahn + heap)."""
    out = git(repo, "rev-list", "--parents", tip, *[f"^{e}" for e in exclude])
    parents = {}
    for line in out.splitlines():
        oid, *ps = line.split()
        parents[oid] = ps
    indegree = {oid: sum(p in parents for p in ps) for oid, ps in parents.items()}
    children: dict[str, list[str]] = {}
    for oid, ps in parents.items():
        for p in ps:
            if p in parents:
                children.setdefault(p, []).append(oid)
    heap = [oid for oid, k in indegree.items() if k == 0]
    heapq.heapify(heap)
    order = []
    while heap:
        oid = heapq.heappop(heap)
        order.append(oid)
        for c in children.get(oid, []):
            indegree[c] -= 1
            if indegree[c] == 0:
                heapq.heappush(heap, c)
    assert len(order) == len(parents)
    return order


def raw_commit(repo: str | Path, oid: str) -> bytes:
    return subprocess.run(["git", "cat-file", "commit", oid], cwd=repo, capture_output=True, check=True).stdout


def history_leaves(repo: str | Path, tip: str, exclude: Sequence[str] = ()) -> list[bytes]:
    """RFC 6962 leaf hashes of the raw commit objects, in vaultmesh-topo-v1 order."""
    return [leaf(raw_commit(repo, oid)) for oid in topo_v1(repo, tip, exclude)]


def leaf(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def mth(leaves: Sequence[bytes]) -> bytes:
    """RFC 6962 §2.1 Merkle Tree Hash over leaf hashes."""
    n = len(leaves)
    if n == 0:
        return hashlib.sha256(b"").digest()
    if n == 1:
        return leaves[0]
    k = _split(n)
    return node(mth(leaves[:k]), mth(leaves[k:]))


def consistency_proof(m: int, leaves: Sequence[bytes]) -> list[bytes]:
    """RFC 6962 §2.1.2 PROOF(m, D[n])."""

    def sub(m: int, d: Sequence[bytes], complete: bool) -> list[bytes]:
        n = len(d)
        if m == n:
            return [] if complete else [mth(d)]
        k = _split(n)
        if m <= k:
            return sub(m, d[:k], complete) + [mth(d[k:])]
        return sub(m - k, d[k:], False) + [mth(d[:k])]

    return sub(m, leaves, True)
