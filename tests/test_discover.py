"""Repo.discover in one git process: the work tree where there is one, none in a bare repository or inside
the git dir, and the current directory's repository found once per command."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from git_vaultmesh.errors import VaultMeshError
from git_vaultmesh.git import Repo, forget_discovered

from cli_helpers import git


def test_work_tree_bare_and_git_dir(repo: Path, tmp_path: Path) -> None:
    (repo / "sub").mkdir()
    found = Repo.discover(repo / "sub")
    assert found.work_tree == repo.resolve() and found.git_dir == (repo / ".git").resolve()
    assert Repo.discover(repo / ".git").work_tree is None
    bare = tmp_path / "bare.git"
    git(tmp_path, "init", "-q", "--bare", str(bare))
    got = Repo.discover(bare)
    assert got.work_tree is None and got.git_dir == bare.resolve()
    with pytest.raises(VaultMeshError) as exc:
        Repo.discover(tmp_path)
    assert exc.value.code == "VM-NOT-A-REPO"


def test_current_directory_found_once_per_command(repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(repo)
    forget_discovered()
    first = Repo.discover()
    assert Repo.discover() is first  # the start-up settings check and the verb share it
    other = tmp_path / "other"
    git(tmp_path, "init", "-q", str(other))
    monkeypatch.chdir(other)
    assert Repo.discover().git_dir == (other / ".git").resolve()  # another directory: found afresh
    monkeypatch.setenv("GIT_DIR", str(repo / ".git"))
    assert Repo.discover().git_dir == (repo / ".git").resolve()  # GIT_DIR is part of what was asked
    monkeypatch.delenv("GIT_DIR")
    monkeypatch.chdir(repo)
    forget_discovered()
    assert Repo.discover() is not first


def test_config_read_once_and_forgotten_on_write(repo: Path) -> None:
    r = Repo.discover(repo)
    assert "vaultmesh.component" not in r.config_get_all(r"^vaultmesh\.")
    r.config_set("vaultmesh.component", "web")
    assert r.config_get_all(r"^vaultmesh\.")["vaultmesh.component"] == "web"
    assert os.path.isdir(r.git_dir)
