"""Shared fixtures: real git repositories, real gpg keys in throwaway GNUPGHOMEs, real ssh keys.

GNUPGHOME lives directly under /tmp with a short name: gpg-agent's socket path is limited to ~100 bytes.
Every gpg home made here has its agent killed at teardown so no process outlives the test run.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _children_run_this_checkout() -> None:
    """Every `python -m git_vaultmesh` / `git vaultmesh` a test starts imports the package from this checkout,
    not whatever copy happens to be installed (a stale install would be tested instead of the change), and
    from bytecode compiled once here: under PYTHONDONTWRITEBYTECODE each child would recompile every module."""
    import compileall

    compileall.compile_dir(str(ROOT / "git_vaultmesh"), quiet=1)
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)


_children_run_this_checkout()

GIT_ENV = {
    "GIT_AUTHOR_NAME": "Test Author",
    "GIT_AUTHOR_EMAIL": "author@example.org",
    "GIT_COMMITTER_NAME": "Test Author",
    "GIT_COMMITTER_EMAIL": "author@example.org",
    "GIT_CONFIG_NOSYSTEM": "1",
}


@dataclass
class GpgKey:
    home: str
    fingerprint: str
    uid: str


def make_gpg_home() -> str:
    home = tempfile.mkdtemp(prefix="vmg", dir="/tmp")
    os.chmod(home, 0o700)
    return home


def gen_gpg_key(home: str, name: str, expire: str = "never", algo: str = "ed25519") -> GpgKey:
    """Generate an unprotected signing key in `home`; return its primary fingerprint."""
    uid = f"{name} <{name.lower().replace(' ', '.')}@example.org>"
    env = dict(os.environ, GNUPGHOME=home)
    subprocess.run(
        ["gpg", "--batch", "--pinentry-mode", "loopback", "--passphrase", "", "--quick-gen-key", uid, algo, "sign", expire],
        check=True, env=env, capture_output=True,
    )
    out = subprocess.run(
        ["gpg", "--batch", "--with-colons", "--list-secret-keys", uid],
        check=True, env=env, capture_output=True, text=True,
    ).stdout
    fprs = [line.split(":")[9] for line in out.splitlines() if line.startswith("fpr:")]
    return GpgKey(home=home, fingerprint=fprs[0], uid=uid)


def kill_agent(home: str) -> None:
    subprocess.run(["gpgconf", "--kill", "all"], env=dict(os.environ, GNUPGHOME=home), capture_output=True)


@pytest.fixture
def gnupghome(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """An empty throwaway GNUPGHOME, exported to the process environment for the test."""
    with throwaway_gpg_home() as home:
        monkeypatch.setenv("GNUPGHOME", home)
        yield home


@contextmanager
def throwaway_gpg_home() -> Iterator[str]:
    """A short-path GNUPGHOME whose agent is killed and directory removed on the way out."""
    home = make_gpg_home()
    try:
        yield home
    finally:
        kill_agent(home)
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture
def gpg_key(gnupghome: str) -> GpgKey:
    """One ed25519 signing key ("Alice") in the test's GNUPGHOME."""
    return gen_gpg_key(gnupghome, "Alice")


@pytest.fixture(autouse=True)
def _git_identity(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Deterministic git identity; no user/system config leaks into tests."""
    for k, v in GIT_ENV.items():
        monkeypatch.setenv(k, v)
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("GIT_CONFIG_PARAMETERS", raising=False)
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)


def git(cwd: str | Path, *args: str, input: bytes | None = None) -> str:
    """Run the real git binary; return stdout as text (stripped)."""
    res = subprocess.run(["git", *args], cwd=cwd, input=input, capture_output=True, check=True)
    return res.stdout.decode().strip()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A non-bare repository with three commits on main and an annotated tag v1.0 on the last one."""
    return make_repo(tmp_path / "repo")


def make_repo(path: Path) -> Path:
    """Create the standard test repository at `path` (three commits, annotated tag v1.0)."""
    path.mkdir()
    git(path, "init", "-q", "-b", "main")
    for i in range(3):
        (path / f"file{i}.txt").write_text(f"content {i}\n")
        git(path, "add", ".")
        git(path, "commit", "-q", "-m", f"commit {i}")
    git(path, "tag", "-a", "v1.0", "-m", "v1.0")
    return path


def vm(cwd: str | Path, *args: str, env: dict[str, str] | None = None,
       input: bytes | None = None) -> subprocess.CompletedProcess[str]:
    """Run the real CLI as a separate process (as `git vaultmesh` would), never raising on failure."""
    import sys

    full_env = dict(os.environ, **(env or {}))
    return subprocess.run([sys.executable, "-m", "git_vaultmesh", *args], cwd=cwd, capture_output=True,
                          text=True, env=full_env, input=input.decode() if input else None)


def vm_ok(cwd: str | Path, *args: str, env: dict[str, str] | None = None) -> str:
    res = vm(cwd, *args, env=env)
    assert res.returncode == 0, f"vaultmesh {' '.join(args)} failed ({res.returncode}):\n{res.stdout}\n{res.stderr}"
    return res.stdout


@pytest.fixture
def ledger_repo(repo: Path, gpg_key: GpgKey) -> Path:
    """`repo` with vaultmesh.signingKey set to Alice's key and `git vaultmesh init` run."""
    git(repo, "config", "vaultmesh.signingKey", gpg_key.fingerprint)
    vm_ok(repo, "init")
    return repo
