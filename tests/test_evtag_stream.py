"""The streamed tree digest (git_vaultmesh.evtag) against the previous implementation (tests/evtag_oracle.py,
one cat-file round trip per object and its own tree parser) on random trees: nested directories, executables,
symlinks, empty files, odd names, and a gitlink to a submodule that has a submodule of its own - present,
absent, and half present."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import evtag_oracle
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from git_vaultmesh.errors import VaultMeshError
from git_vaultmesh.evtag import NOT_INCLUDED, TreeDigest, tree_digest
from git_vaultmesh.git import Repo

from conftest import git

NAMES = st.sampled_from(["a", "a.b", "a-b", "a0", "b", "Z", "dir", "dir.d", "ü", "sp ace", "x" * 40])
FILES = st.dictionaries(
    st.lists(NAMES, min_size=1, max_size=5).map(tuple),
    st.tuples(st.sampled_from(["100644", "100755", "120000"]), st.binary(max_size=300)),
    min_size=1, max_size=25,
)


def _fast_import(where: Path, commands: bytes) -> str:
    subprocess.run(["git", "fast-import", "--quiet"], cwd=where, input=commands, check=True)
    return git(where, "rev-parse", "refs/heads/main")


def _commit(files: dict[str, tuple[str, bytes]], gitlinks: dict[str, str]) -> bytes:
    out = [b"commit refs/heads/main\ncommitter T <t@example.org> 1700000000 +0000\ndata 2\nt\n"]
    for path, (mode, data) in files.items():
        out.append(b"M %s inline %s\ndata %d\n%s\n" % (mode.encode(), path.encode(), len(data), data))
    for path, oid in gitlinks.items():
        out.append(b"M 160000 %s %s\n" % (oid.encode(), path.encode()))
    return b"".join(out)


def _fields(td: TreeDigest | evtag_oracle.TreeDigest) -> tuple[object, ...]:
    """The two modules' TreeDigest are different classes: compare what they hold."""
    return td.digest, td.submodules, td.missing_submodules


def _bare(where: Path) -> Path:
    where.mkdir(parents=True)
    git(where, "init", "-q", "--bare", "-b", "main")
    return where


@pytest.fixture(scope="module")
def libs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, Path, str]:
    """A library repository whose tree has a gitlink to an inner one: (inner, its commit, lib, its commit)."""
    root = tmp_path_factory.mktemp("libs")
    inner = _bare(root / "inner.git")
    inner_commit = _fast_import(inner, _commit({"inner.txt": ("100644", b"innermost\n"),
                                                "deep/er/x": ("100755", b"#!/bin/sh\n")}, {}))
    lib = _bare(root / "lib.git")
    lib_commit = _fast_import(lib, _commit({"lib.c": ("100644", b"int lib;\n"), "link": ("120000", b"lib.c")},
                                           {"vendor/inner": inner_commit}))
    return inner, inner_commit, lib, lib_commit


def _paths(tree: dict[tuple[str, ...], tuple[str, bytes]]) -> dict[str, tuple[str, bytes]]:
    """Drop entries that a shorter one makes a file where the longer one needs a directory."""
    out: dict[str, tuple[str, bytes]] = {}
    taken: set[tuple[str, ...]] = set()
    for parts in sorted(tree, key=len):
        if any(parts[:i] in taken for i in range(1, len(parts))) or any(p[:len(parts)] == parts for p in taken):
            continue
        taken.add(parts)
        out["/".join(parts)] = tree[parts]
    return out


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(tree=FILES, at=st.sampled_from(["libs/lib", "lib", "z/y/x/lib"]))
def test_streamed_digest_equals_previous(tree: dict[tuple[str, ...], tuple[str, bytes]], at: str,
                                         libs: tuple[Path, str, Path, str], tmp_path_factory: pytest.TempPathFactory,
                                         ) -> None:
    inner, _, lib, lib_commit = libs
    files = {p: v for p, v in _paths(tree).items() if not (p == at or p.startswith(at + "/") or at.startswith(p + "/"))}
    top = _bare(tmp_path_factory.mktemp("top") / "top.git")
    commit = _fast_import(top, _commit(files, {at: lib_commit}))
    modules = top / "modules" / at
    modules.parent.mkdir(parents=True, exist_ok=True)
    git(top, "clone", "-q", "--bare", "--shared", str(lib), str(modules))
    nested = modules / "modules" / "vendor" / "inner"
    nested.parent.mkdir(parents=True)
    git(top, "clone", "-q", "--bare", "--shared", str(inner), str(nested))

    with Repo(top, None) as r:  # every submodule present
        new = tree_digest(r, commit, require_submodules=True)
        old = evtag_oracle.tree_digest(r, commit, require_submodules=True)
        assert _fields(new) == _fields(old) and new.submodules is None
        none = tree_digest(r, commit, include_submodules=False)
        assert _fields(none) == _fields(evtag_oracle.tree_digest(r, commit, include_submodules=False))
        assert none.digest != new.digest and none.missing_submodules == [at]

    shutil.rmtree(nested)  # the inner submodule absent: the digest holds no submodule at all
    with Repo(top, None) as r:
        half = tree_digest(r, commit)
        assert half.digest == none.digest and half.submodules == NOT_INCLUDED
        assert half.missing_submodules == [f"{at}/vendor/inner"]
        with pytest.raises(VaultMeshError) as exc:
            tree_digest(r, commit, require_submodules=True)
        assert exc.value.code == "VM-SUBMODULES-MISSING"

    shutil.rmtree(top / "modules")
    with Repo(top, None) as r:
        gone = tree_digest(r, commit)
        assert _fields(gone) == _fields(evtag_oracle.tree_digest(r, commit))
        assert gone.digest == none.digest and gone.missing_submodules == [at]
