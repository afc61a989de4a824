"""Shared by the hook tests: a `git-vaultmesh` shim on PATH, push helpers, and a pre-commit-ready clone.

The shim runs `python -m git_vaultmesh` with the interpreter running the tests (PYTHONPATH, set by conftest,
makes it this checkout's code), so installed hook scripts find `git-vaultmesh` as they would after pip install.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, git


def make_shim(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    shim = directory / "git-vaultmesh"
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m git_vaultmesh "$@"\n')
    shim.chmod(0o755)
    return directory


@pytest.fixture
def shim(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """`git-vaultmesh` first on PATH for this test (and every git and hook it starts)."""
    d = make_shim(tmp_path / "shim")
    monkeypatch.setenv("PATH", f"{d}{os.pathsep}{os.environ['PATH']}")
    return d


def push(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    res = subprocess.run(["git", "push", *args], cwd=repo, capture_output=True, text=True)
    assert "Traceback" not in res.stderr, res.stderr
    return res


def snapshot_checkout(dest: Path) -> Path:
    """A git repository holding this checkout's files as one commit: what `pre-commit try-repo` and a
    `repo: <path>` config clone (pre-commit installs the package from it into its own virtualenv)."""
    ignore = shutil.ignore_patterns(".git", "__pycache__", "*.pyc", ".mypy_cache", ".ruff_cache",
                                    ".pytest_cache", "*.egg-info", "build", "dist", "site")
    shutil.copytree(ROOT, dest, ignore=ignore)
    git(dest, "init", "-q", "-b", "main")
    git(dest, "add", "-A")
    git(dest, "commit", "-q", "-m", "snapshot for pre-commit")
    return dest


def pre_commit_config(project: Path, hooks_repo: Path, *ids: str) -> None:
    rev = git(hooks_repo, "rev-parse", "HEAD")
    lines = ["repos:", f"  - repo: {hooks_repo}", f"    rev: {rev}", "    hooks:"]
    lines += [f"      - id: {i}" for i in ids]
    (project / ".pre-commit-config.yaml").write_text("\n".join(lines) + "\n")
    git(project, "add", ".pre-commit-config.yaml")


def pre_commit(cwd: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The real pre-commit, as a user runs it."""
    exe = shutil.which("pre-commit") or os.path.join(os.path.dirname(sys.executable), "pre-commit")
    res = subprocess.run([exe, *args], cwd=cwd, capture_output=True, text=True, env=env)
    return res


@pytest.fixture(scope="session")
def hooks_clone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return snapshot_checkout(tmp_path_factory.mktemp("clone") / "git-vaultmesh")


@pytest.fixture(scope="session")
def pre_commit_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One pre-commit cache for the session: its virtualenv (pip-installing this package) is built once."""
    return tmp_path_factory.mktemp("pre-commit-home")
