"""One pristine ledger repository per session, built with the real CLI; each row gets its own copy.

The pristine repo (main: c0..c4; annotated tags v1.0 at c2 and v1.1 at c3):
  #0 genesis policy (Alice, threshold 1), pinned as vaultmesh.trustRoot
  #1 release v1.0 with artifact app.tar
  #2 release v1.1 with artifact app-1.1.tar (base: #1)
  #3 deploy of c4 (an untagged commit, kept alive by refs/vaultmesh/keep/<c4>) to "prod"
Its GNUPGHOME holds Alice's key and Mallory's (a key in no policy); rows copy the repo, not the keys.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from .kit import TALLY, Ctx, Tamper, World, base_env, run_git
from conftest import gen_gpg_key, kill_agent, make_gpg_home, vm


def _vm_ok(cwd: Path, *args: str, env: dict[str, str]) -> str:
    res = vm(cwd, *args, env=env)
    assert res.returncode == 0, f"vaultmesh {' '.join(args)} failed:\n{res.stdout}\n{res.stderr}"
    return res.stdout


def _commit(repo: Path, env: dict[str, str], name: str, text: str, message: str) -> None:
    (repo / name).write_text(text)
    run_git(repo, "add", name, env=env)
    run_git(repo, "commit", "-q", "-m", message, env=env)


@pytest.fixture(scope="session")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = tmp_path_factory.mktemp("pristine")
    (root / "home").mkdir()
    gnupghome = make_gpg_home()
    try:
        alice = gen_gpg_key(gnupghome, "Alice")
        mallory = gen_gpg_key(gnupghome, "Mallory")
        env = base_env(str(root / "home"), gnupghome)
        repo, art = root / "repo", root / "art"
        repo.mkdir()
        art.mkdir()
        (art / "app.tar").write_bytes(b"release 1.0 payload\n" * 64)
        (art / "app-1.1.tar").write_bytes(b"release 1.1 payload\n" * 64)
        run_git(repo, "init", "-q", "-b", "main", env=env)
        for i in range(3):
            _commit(repo, env, f"file{i}.txt", f"content {i}\n", f"commit {i}")
        run_git(repo, "tag", "-a", "v1.0", "-m", "release 1.0", env=env)
        run_git(repo, "config", "vaultmesh.signingKey", alice.fingerprint, env=env)
        log_id = json.loads(_vm_ok(repo, "init", "--json", env=env))["log"]
        _vm_ok(repo, "record", "v1.0", "--artifact", str(art / "app.tar"), env=env)
        _commit(repo, env, "file3.txt", "content 3\n", "commit 3")
        run_git(repo, "tag", "-a", "v1.1", "-m", "release 1.1", env=env)
        _vm_ok(repo, "record", "v1.1", "--artifact", str(art / "app-1.1.tar"), env=env)
        _commit(repo, env, "file4.txt", "content 4\n", "commit 4 (hotfix)")
        _vm_ok(repo, "record", "HEAD", "--environment", "prod", env=env)
        yield World(root, gnupghome, alice, mallory, log_id, env)
    finally:
        kill_agent(gnupghome)
        shutil.rmtree(gnupghome, ignore_errors=True)


@pytest.fixture
def ctx(world: World, tmp_path: Path) -> Ctx:
    """A private copy of the pristine repo (same GNUPGHOME) and of its artifacts."""
    repo = tmp_path / "repo"
    shutil.copytree(world.repo, repo, symlinks=True)
    art = tmp_path / "art"
    shutil.copytree(world.art, art)
    work = tmp_path / "work"
    work.mkdir()
    return Ctx(world, repo, art, work, Tamper(repo, world.env, world.log_id), world.env)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not TALLY.tried or (terminalreporter.verbosity < 0 and not TALLY.problems):  # -q: only problems
        return
    terminalreporter.write_sep("-", "tamper matrix")
    terminalreporter.write_line(
        f"tamper rows tried: {len(TALLY.tried)}, rejected with the right code: {len(TALLY.rejected)}")
    for row_id, problem in sorted(TALLY.problems.items()):
        terminalreporter.write_line(f"  {row_id}: {problem}")
    if terminalreporter.verbosity > 0:  # -v: every row with the codes verify reported
        for row_id in TALLY.tried:
            terminalreporter.write_line(f"  {row_id:32} {' '.join(TALLY.got.get(row_id, ['-']))}")
