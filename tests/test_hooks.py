"""Hooks, install and the Four Covenants on real repositories: real git pushes to a real bare repo over file://,
real gpg, and the real `pre-commit` package installing our hooks from a local clone."""

from __future__ import annotations

import json
import os
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cli_helpers import assert_error, ok, run
from conftest import gen_gpg_key, git, make_repo, vm_ok
from hooks_kit import hooks_clone, pre_commit, pre_commit_config, pre_commit_home, push, shim

__all__ = ["hooks_clone", "pre_commit_home", "shim"]  # fixtures, imported for pytest

REPRO = "mkdir -p dist && git archive --format=tar -o dist/app.tar HEAD"
WALL_CLOCK = REPRO + " && date +%s%N > dist/built-at.txt"


def covenants(repo: Path, *args: str) -> tuple[int, dict[str, dict[str, object]]]:
    res = run(repo, "covenant", *args, "--json")
    data = json.loads(res.stdout)
    return res.returncode, {c["covenant"]: c for c in data["covenants"]}


def record_reproducible(repo: Path, tag: str, tmp: Path) -> Path:
    """Build the tag's artifact the way REPRO does (in a clean worktree), record the release with it."""
    wt = tmp / f"build-{tag}"
    git(repo, "worktree", "add", "-q", "--detach", str(wt), tag)
    epoch = git(repo, "show", "-s", "--format=%ct", tag)
    subprocess.run(["sh", "-c", REPRO], cwd=wt, check=True, env=dict(os.environ, SOURCE_DATE_EPOCH=epoch))
    art = tmp / f"{tag}-app.tar"
    (wt / "dist" / "app.tar").rename(art)
    git(repo, "worktree", "remove", "--force", str(wt))
    (art.parent / "app.tar").unlink(missing_ok=True)
    final = art.parent / "app.tar"
    art.rename(final)
    vm_ok(repo, "record", tag, "--artifact", str(final))
    return final


# --- covenant ---------------------------------------------------------------------------------------------
def test_covenants_on_a_clean_ledger(ledger_repo: Path, tmp_path: Path) -> None:
    vm_ok(ledger_repo, "record", "v1.0")
    code, cov = covenants(ledger_repo)
    assert code == 0
    assert [cov[k]["status"] for k in ("integrity", "reproducibility", "federation", "proof-chain")] == [
        "pass", "not configured", "not configured", "pass"]
    # not configured is not a pass: --strict fails on it
    res = run(ledger_repo, "covenant", "--strict")
    assert res.returncode == 1 and "not configured" in res.stdout
    # the Integrity badge carries the log root this very run verified
    badge = tmp_path / "badge.svg"
    ok(ledger_repo, "covenant", "integrity", "--badge", str(badge))
    state = json.loads((Path(git(ledger_repo, "rev-parse", "--absolute-git-dir")) / "vaultmesh"
                        / "verified-checkpoint.json").read_text())
    assert state["root"] in badge.read_text() and badge.read_text().startswith("<svg")


def test_badge_refused_unless_passing(ledger_repo: Path, tmp_path: Path) -> None:
    badge = tmp_path / "badge.svg"
    assert_error(run(ledger_repo, "covenant", "reproducibility", "--badge", str(badge)), "VM-BADGE-REFUSED")
    assert not badge.exists()
    git(ledger_repo, "update-ref", "refs/vaultmesh/log", "HEAD")  # the log now points at a source commit
    assert_error(run(ledger_repo, "covenant", "integrity", "--badge", str(badge)), "VM-BADGE-REFUSED")
    assert not badge.exists()
    assert run(ledger_repo, "covenant", "integrity", "federation", "--badge", str(badge)).returncode == 2
    assert run(ledger_repo, "covenant", "integrit").returncode == 2


def test_integrity_and_proof_chain_fail_on_tamper(ledger_repo: Path) -> None:
    vm_ok(ledger_repo, "record", "v1.0")
    git(ledger_repo, "tag", "-f", "-a", "v1.0", "-m", "moved", "HEAD~1")
    code, cov = covenants(ledger_repo)
    assert code == 1
    assert cov["integrity"]["status"] == "fail" and "VM-TAG-MOVED" in cov["integrity"]["codes"]  # type: ignore[operator]
    assert cov["proof-chain"]["status"] == "pass"  # signatures and tokens are untouched
    out = run(ledger_repo, "covenant").stdout
    assert "FAIL   I Integrity" in out and "VM-TAG-MOVED" in out


def test_federation_peers_configured_is_never_a_pass(ledger_repo: Path) -> None:
    git(ledger_repo, "config", "vaultmesh.peer.alpha.url", "https://example.invalid/alpha.git")
    code, cov = covenants(ledger_repo, "federation")
    assert code == 1 and cov["federation"]["codes"] == ["VM-PEER-UNREACHABLE"]  # never witnessed
    git(ledger_repo, "config", "--unset", "vaultmesh.peer.alpha.url")
    (ledger_repo / ".vaultmesh.toml").write_text('[vaultmesh.peer.beta]\nurl = "https://example.invalid/b"\n')
    code, cov = covenants(ledger_repo, "federation")
    assert code == 1 and "beta" in str(cov["federation"]["detail"])


def test_federation_passes_once_witnessed_and_fails_on_a_rewound_copy(ledger_repo: Path, gnupghome: str,
                                                                     tmp_path: Path) -> None:
    bob_key = gen_gpg_key(gnupghome, "Bob")
    bob = make_repo(tmp_path / "bob")
    git(bob, "config", "vaultmesh.signingKey", bob_key.fingerprint)
    vm_ok(bob, "init")
    vm_ok(bob, "record", "v1.0")
    ok(ledger_repo, "federate", "add", "bob", f"file://{bob}", "--trust-root", bob_key.fingerprint)
    code, cov = covenants(ledger_repo, "federation")
    assert code == 1 and cov["federation"]["codes"] == ["VM-PEER-UNREACHABLE"]  # configured, never witnessed
    ok(ledger_repo, "federate", "sync", "bob")
    vm_ok(bob, "record", "HEAD", "--environment", "prod")
    ok(ledger_repo, "federate", "sync", "bob")
    code, cov = covenants(ledger_repo, "federation")
    assert code == 0 and cov["federation"]["status"] == "pass", cov
    assert "bob at size" in str(cov["federation"]["detail"])
    # our copy of bob's log rewound below what we witnessed of it: Federation fails with the rollback
    copy = "refs/vaultmesh/remotes/bob/log"
    git(ledger_repo, "update-ref", copy, f"{copy}~1")
    code, cov = covenants(ledger_repo, "federation")
    assert code == 1 and cov["federation"]["codes"] == ["VM-PEER-ROLLBACK"], cov


def test_reproducibility_passes_a_reproducible_build(ledger_repo: Path, tmp_path: Path) -> None:
    record_reproducible(ledger_repo, "v1.0", tmp_path)
    (ledger_repo / ".vaultmesh.toml").write_text(f'[vaultmesh]\nbuildCommand = "{REPRO}"\n')
    code, cov = covenants(ledger_repo, "reproducibility")
    assert code == 0 and cov["reproducibility"]["status"] == "pass", cov
    assert git(ledger_repo, "worktree", "list").count("\n") == 0  # the clean checkouts are gone


def test_reproducibility_reports_each_failure(ledger_repo: Path, tmp_path: Path) -> None:
    record_reproducible(ledger_repo, "v1.0", tmp_path)
    git(ledger_repo, "config", "vaultmesh.buildCommand", WALL_CLOCK)
    code, cov = covenants(ledger_repo, "reproducibility")
    assert code == 1 and cov["reproducibility"]["codes"] == ["VM-REPRO-DIFFERS"]
    assert "built-at.txt" in str(cov["reproducibility"]["detail"])  # per file
    git(ledger_repo, "config", "vaultmesh.buildCommand", "mkdir -p dist && echo other > dist/app.tar")
    code, cov = covenants(ledger_repo, "reproducibility")
    assert cov["reproducibility"]["codes"] == ["VM-REPRO-MISMATCH"]
    git(ledger_repo, "config", "vaultmesh.buildCommand", "exit 3")
    code, cov = covenants(ledger_repo, "reproducibility")
    assert code == 1 and cov["reproducibility"]["codes"] == ["VM-REPRO-BUILD-FAILED"]
    git(ledger_repo, "commit", "-q", "--allow-empty", "-m", "c4")
    git(ledger_repo, "tag", "-a", "v2.0", "-m", "v2.0")
    vm_ok(ledger_repo, "record", "v2.0")  # no artifacts recorded
    git(ledger_repo, "config", "vaultmesh.buildCommand", REPRO)
    code, cov = covenants(ledger_repo, "reproducibility")
    assert cov["reproducibility"]["codes"] == ["VM-REPRO-NO-DIGESTS"]
    code, cov = covenants(ledger_repo, "reproducibility", "--release", "v1.0")
    assert code == 0, cov


# --- install / uninstall ------------------------------------------------------------------------------------
USER_HOOK = "#!/bin/sh\necho \"user $0 $*\" >> \"$(git rev-parse --absolute-git-dir)/user-hook.log\"\ncat >/dev/null\n"


def test_install_chains_and_uninstall_restores_exactly(ledger_repo: Path, tmp_path: Path) -> None:
    bare = tmp_path / "origin.git"
    git(tmp_path, "init", "-q", "--bare", str(bare))
    git(ledger_repo, "remote", "add", "origin", str(bare))
    hooks = ledger_repo / ".git" / "hooks"
    mine = hooks / "pre-push"
    mine.write_text(USER_HOOK)
    mine.chmod(0o750)
    before_config = git(ledger_repo, "config", "--list", "--local")
    before = (mine.read_bytes(), stat.S_IMODE(mine.stat().st_mode))
    out = ok(ledger_repo, "install")
    assert "pre-push.vaultmesh-chained" in out
    for name in ("pre-commit", "pre-push", "reference-transaction", "post-rewrite"):
        assert "git-vaultmesh hook" in (hooks / name).read_text() and os.access(hooks / name, os.X_OK)
    pushes = git(ledger_repo, "config", "--get-all", "remote.origin.push").splitlines()
    assert pushes[0] == "HEAD" and "refs/vaultmesh/log*:refs/vaultmesh/log*" in pushes  # plain push kept
    assert all(not s.startswith("+") for s in git(ledger_repo, "config", "--get-all", "remote.origin.fetch")
               .splitlines() if "vaultmesh" in s)  # never forced
    assert git(ledger_repo, "config", "notes.displayRef") == "refs/notes/vaultmesh"
    ok(ledger_repo, "install")  # again: nothing doubles
    assert git(ledger_repo, "config", "--get-all", "remote.origin.push").splitlines() == pushes
    ok(ledger_repo, "install", "--uninstall")
    assert (mine.read_bytes(), stat.S_IMODE(mine.stat().st_mode)) == before
    assert not (hooks / "pre-commit").exists() and not list(hooks.glob("*.vaultmesh-chained"))
    assert git(ledger_repo, "config", "--list", "--local") == before_config


def test_install_honours_core_hooks_path_and_refuses_to_clobber(ledger_repo: Path) -> None:
    git(ledger_repo, "config", "core.hooksPath", "githooks")
    ok(ledger_repo, "install", "--no-refspecs")
    assert (ledger_repo / "githooks" / "pre-push").exists()
    assert not (ledger_repo / ".git" / "hooks" / "pre-push").exists()
    ok(ledger_repo, "install", "--uninstall")
    # a hook of the user's where install keeps the chained one: nothing is overwritten
    (ledger_repo / "githooks" / "pre-commit").write_text(USER_HOOK)
    (ledger_repo / "githooks" / "pre-commit.vaultmesh-chained").write_text(USER_HOOK + "# other\n")
    assert_error(run(ledger_repo, "install", "--no-refspecs"), "VM-HOOK-CONFLICT")
    assert (ledger_repo / "githooks" / "pre-commit").read_text() == USER_HOOK


# --- pre-push and pre-receive -------------------------------------------------------------------------------
@pytest.fixture
def pushed(ledger_repo: Path, tmp_path: Path, shim: Path) -> Iterator[tuple[Path, Path]]:
    """ledger_repo with v1.0 recorded and everything installed, pushed to a bare file:// server that has the
    pre-receive hook; the user's own pre-push hook logs its runs."""
    vm_ok(ledger_repo, "record", "v1.0")
    bare = tmp_path / "server.git"
    git(tmp_path, "init", "-q", "--bare", str(bare))
    ok(bare, "install", "--server")
    git(ledger_repo, "remote", "add", "origin", f"file://{bare}")
    (ledger_repo / ".git" / "hooks" / "pre-push").write_text(USER_HOOK)
    (ledger_repo / ".git" / "hooks" / "pre-push").chmod(0o755)
    ok(ledger_repo, "install")
    res = push(ledger_repo)
    assert res.returncode == 0, res.stderr
    res = push(ledger_repo, "origin", "v1.0")
    assert res.returncode == 0, res.stderr
    yield ledger_repo, bare


def _user_runs(repo: Path) -> int:
    log = repo / ".git" / "user-hook.log"
    return len(log.read_text().splitlines()) if log.exists() else 0


def test_correct_pushes_go_through(pushed: tuple[Path, Path]) -> None:
    repo, bare = pushed
    assert git(bare, "rev-parse", "refs/vaultmesh/log") == git(repo, "rev-parse", "refs/vaultmesh/log")
    assert git(bare, "rev-parse", "refs/heads/main") == git(repo, "rev-parse", "HEAD")  # plain push: the branch
    assert git(bare, "rev-parse", "v1.0") == git(repo, "rev-parse", "v1.0")
    assert _user_runs(repo) == 2  # the user's own pre-push hook ran on both pushes
    git(repo, "fetch", "-q", "origin")  # the installed fetch refspecs bring the ledger refs in, beside ours
    assert git(repo, "rev-parse", "refs/vaultmesh/remotes/origin/log") == git(bare, "rev-parse", "refs/vaultmesh/log")
    assert git(repo, "rev-parse", "refs/vaultmesh/remotes/origin/notes") == git(bare, "rev-parse",
                                                                               "refs/notes/vaultmesh")


def test_pre_push_blocks_an_unrecorded_tag(pushed: tuple[Path, Path]) -> None:
    repo, bare = pushed
    git(repo, "tag", "-a", "v2.0", "-m", "v2.0")
    runs = _user_runs(repo)
    res = push(repo, "origin", "v2.0")
    assert res.returncode != 0 and "VM-NOT-RECORDED" in res.stderr and "Integrity" in res.stderr
    assert _user_runs(repo) == runs + 1
    assert git(bare, "tag", "-l") == "v1.0"
    res = push(repo, "--no-verify", "origin", "v2.0")  # the client hook skipped: the server refuses
    assert res.returncode != 0 and "pre-receive hook declined" in res.stderr and "VM-NOT-RECORDED" in res.stderr
    assert git(bare, "tag", "-l") == "v1.0"
    git(repo, "tag", "unrelated")  # not a release tag (vaultmesh.releaseTags default v*): no receipt needed
    assert push(repo, "origin", "unrelated").returncode == 0


def test_pre_push_blocks_a_non_fast_forward_ledger(pushed: tuple[Path, Path]) -> None:
    repo, bare = pushed
    on_server = git(bare, "rev-parse", "refs/vaultmesh/log")
    git(repo, "update-ref", "refs/vaultmesh/log", "refs/vaultmesh/log~1")  # rewind, then force
    res = push(repo, "--force", "origin", "refs/vaultmesh/log")
    assert res.returncode != 0 and "VM-PUSH-NOT-FAST-FORWARD" in res.stderr
    res = push(repo, "--force", "--no-verify", "origin", "refs/vaultmesh/log")
    assert res.returncode != 0 and "VM-PUSH-NOT-FAST-FORWARD" in res.stderr
    res = push(repo, "--no-verify", "origin", ":refs/vaultmesh/log")  # deleting the ledger
    assert res.returncode != 0 and "VM-PUSH-NOT-FAST-FORWARD" in res.stderr
    assert git(bare, "rev-parse", "refs/vaultmesh/log") == on_server


def test_pre_receive_rejects_a_ledger_that_does_not_verify(pushed: tuple[Path, Path]) -> None:
    repo, bare = pushed
    # a fast-forward whose new commit changes an entry: append-only fails, whatever the client skipped
    head = git(repo, "rev-parse", "refs/vaultmesh/log")
    path = git(repo, "ls-tree", "-r", "--name-only", head, "entries").splitlines()[-1]
    blob = git(repo, "hash-object", "-w", "--stdin", input=b"{}\n")
    git(repo, "update-index", "--add", "--cacheinfo", f"100644,{blob},x")  # any index will do: build a tree
    tree = git(repo, "mktree", input=_tree_with(repo, head, path, blob).encode())
    forged = git(repo, "commit-tree", tree, "-p", head, "-m", "forged", input=b"")
    git(repo, "update-ref", "refs/vaultmesh/log", forged)
    res = push(repo, "--no-verify", "origin", "refs/vaultmesh/log")
    assert res.returncode != 0 and "pre-receive hook declined" in res.stderr
    assert "VM-LOG-NOT-APPEND-ONLY" in res.stderr or "VM-CHECKPOINT-MISMATCH" in res.stderr, res.stderr
    assert git(bare, "rev-parse", "refs/vaultmesh/log") == head


def _tree_with(repo: Path, commit: str, path: str, blob: str) -> str:
    """`git mktree` input for the root of `commit` with `path` (entries/a/b/x.json) replaced by `blob`."""
    def subtree(prefix: str, tree: str) -> str:
        lines = []
        for line in git(repo, "ls-tree", tree).splitlines():
            meta, name = line.split("\t")
            mode, typ, oid = meta.split()
            full = f"{prefix}{name}"
            if full == path:
                oid = blob
            elif typ == "tree" and path.startswith(full + "/"):
                oid = git(repo, "mktree", input=subtree(full + "/", oid).encode())
            lines.append(f"{mode} {typ} {oid}\t{name}")
        return "\n".join(lines) + "\n"

    return subtree("", f"{commit}^{{tree}}")


def test_chained_hook_failure_stops_the_push(pushed: tuple[Path, Path]) -> None:
    repo, _ = pushed
    (repo / ".git" / "hooks" / "pre-push.vaultmesh-chained").write_text("#!/bin/sh\ncat >/dev/null\nexit 7\n")
    res = push(repo, "origin", "v1.0")
    assert res.returncode != 0 and "VM-HOOK-CHAINED-FAILED" in res.stderr


# --- pre-commit, post-rewrite, reference-transaction ------------------------------------------------------
def test_native_pre_commit_hook(ledger_repo: Path, shim: Path) -> None:
    ok(ledger_repo, "install", "--no-refspecs")
    (ledger_repo / "a.txt").write_text("a\n")
    git(ledger_repo, "add", "a.txt")
    git(ledger_repo, "commit", "-q", "-m", "clean ledger: the hook lets it through")
    (ledger_repo / ".vaultmesh.toml").write_text("[vaultmesh]\nbuildComand = 'make'\n")  # a typo
    git(ledger_repo, "add", ".vaultmesh.toml")
    res = _commit(ledger_repo, "typo")
    assert res.returncode != 0 and "VM-CONFIG-INVALID" in res.stderr and "buildComand" in res.stderr
    git(ledger_repo, "rm", "-q", "--cached", ".vaultmesh.toml")
    (ledger_repo / ".vaultmesh.toml").unlink()
    vm_ok(ledger_repo, "record", "v1.0")
    notes = git(ledger_repo, "rev-parse", "refs/notes/vaultmesh")
    git(ledger_repo, "update-ref", "refs/vaultmesh/log", "refs/vaultmesh/log~1")  # moved by hand
    res = _commit(ledger_repo, "after the tamper")
    assert res.returncode != 0 and "FAIL Integrity [VM-NOTES-MISMATCH]" in res.stderr, res.stderr
    assert notes


def _commit(repo: Path, message: str) -> subprocess.CompletedProcess[str]:
    (repo / f"{message}.txt").write_text(message)
    git(repo, "add", f"{message}.txt")
    return subprocess.run(["git", "commit", "-q", "-m", message], cwd=repo, capture_output=True, text=True)


def _state(repo: Path) -> dict[str, Any]:
    """What the last passing pre-commit run remembers of the ledger it judged (and how it judged it)."""
    data: dict[str, Any] = json.loads((repo / ".git" / "vaultmesh" / "pre-commit.state.json").read_text())
    return data


def test_pre_commit_judges_only_the_appended_entries(ledger_repo: Path, shim: Path) -> None:
    ok(ledger_repo, "install", "--no-refspecs")
    assert _commit(ledger_repo, "first").returncode == 0
    first = _state(ledger_repo)
    assert first["judged"] == "full" and first["entries_read"] == first["size"]
    vm_ok(ledger_repo, "record", "v1.0")
    vm_ok(ledger_repo, "record", "HEAD", "--environment", "prod")
    res = _commit(ledger_repo, "after two appends")
    assert res.returncode == 0, res.stderr
    after = _state(ledger_repo)
    size = len(git(ledger_repo, "ls-tree", "-r", "--name-only", "refs/vaultmesh/log", "entries").splitlines())
    assert after["judged"] == "incremental" and after["size"] == size == first["size"] + 2
    assert after["entries_read"] == 2  # only the two new entry blobs were read
    assert after["log"] == git(ledger_repo, "rev-parse", "refs/vaultmesh/log")
    # a checkpoint verified here between the last pass and now is placed on the incremental path too
    vm_ok(ledger_repo, "record", "HEAD", "--environment", "staging")
    ok(ledger_repo, "verify", "--all")
    vm_ok(ledger_repo, "record", "HEAD", "--environment", "dev")
    assert _commit(ledger_repo, "after an append, a verify and an append").returncode == 0
    assert _state(ledger_repo)["judged"] == "incremental" and _state(ledger_repo)["entries_read"] == 2
    # a remembered range that does not reproduce the remembered head's checkpoint is not used
    state = _state(ledger_repo)
    state["frontier"] = ["00" * 32 for _ in state["frontier"]]
    (ledger_repo / ".git" / "vaultmesh" / "pre-commit.state.json").write_text(json.dumps(state))
    vm_ok(ledger_repo, "record", "HEAD", "--environment", "qa")
    assert _commit(ledger_repo, "with a damaged state file").returncode == 0
    assert _state(ledger_repo)["judged"] == "full" and _state(ledger_repo)["entries_read"] == state["size"] + 1


def test_pre_commit_catches_a_rewrite_after_a_cached_pass(ledger_repo: Path, shim: Path) -> None:
    ok(ledger_repo, "install", "--no-refspecs")
    vm_ok(ledger_repo, "record", "v1.0")
    assert _commit(ledger_repo, "cached").returncode == 0
    head = git(ledger_repo, "rev-parse", "refs/vaultmesh/log")
    assert _state(ledger_repo)["log"] == head
    # a descendant of the cached head (so ancestry alone would pass it) whose tree replaces entry #0
    path = git(ledger_repo, "ls-tree", "-r", "--name-only", head, "entries").splitlines()[0]
    blob = git(ledger_repo, "hash-object", "-w", "--stdin", input=b'{"forged":1}\n')
    tree = git(ledger_repo, "mktree", input=_tree_with(ledger_repo, head, path, blob).encode())
    forged = git(ledger_repo, "commit-tree", tree, "-p", head, "-m", "forged", input=b"")
    git(ledger_repo, "update-ref", "refs/vaultmesh/log", forged)
    res = _commit(ledger_repo, "after the rewrite")
    assert res.returncode != 0 and "FAIL Integrity [VM-CHECKPOINT-MISMATCH]" in res.stderr, res.stderr
    assert _state(ledger_repo)["log"] == head  # a failing run remembers nothing
    # the same entries under rewritten log commits (not a descendant): judged in full, and it passes
    git(ledger_repo, "update-ref", "refs/vaultmesh/log", head)
    twin = git(ledger_repo, "commit-tree", f"{head}^{{tree}}", "-p", f"{head}~1", "-m", "rewritten", input=b"")
    git(ledger_repo, "update-ref", "refs/vaultmesh/log", twin)
    notes = git(ledger_repo, "rev-parse", "refs/notes/vaultmesh")
    renamed = git(ledger_repo, "commit-tree", f"{notes}^{{tree}}", "-m", f"vaultmesh notes derived from log {twin}",
                  input=b"")
    git(ledger_repo, "update-ref", "refs/notes/vaultmesh", renamed)
    res = _commit(ledger_repo, "same entries, other commits")
    assert res.returncode == 0, res.stderr
    assert _state(ledger_repo)["judged"] == "full" and _state(ledger_repo)["log"] == twin
    # rewound below the checkpoint verified here, after a cached pass: the full check reports the rollback
    git(ledger_repo, "update-ref", "refs/vaultmesh/log", head)
    git(ledger_repo, "update-ref", "refs/notes/vaultmesh", notes)
    assert _commit(ledger_repo, "restored").returncode == 0
    assert _state(ledger_repo)["judged"] == "full"  # the cached twin is no ancestor of the restored head
    vm_ok(ledger_repo, "record", "HEAD", "--environment", "prod")
    ok(ledger_repo, "verify", "--all")
    assert _commit(ledger_repo, "verified").returncode == 0
    assert _state(ledger_repo)["judged"] == "incremental"
    git(ledger_repo, "update-ref", "refs/vaultmesh/log", head)
    git(ledger_repo, "update-ref", "refs/notes/vaultmesh", notes)
    res = _commit(ledger_repo, "after the rewind")
    assert res.returncode != 0 and "FAIL Integrity [VM-LOG-ROLLBACK]" in res.stderr, res.stderr


def test_pre_commit_incremental_path_keeps_the_layout_rules(ledger_repo: Path, shim: Path, tmp_path: Path) -> None:
    """An appended entry that is not a plain file, under a checkpoint forged to match it: the new-entries
    path must not pass it (the full check names the layout problem)."""
    from git_vaultmesh import ledger, merkle
    from git_vaultmesh.entry import entry_path
    from git_vaultmesh.git import Repo

    ok(ledger_repo, "install", "--no-refspecs")
    assert _commit(ledger_repo, "cached").returncode == 0
    head = git(ledger_repo, "rev-parse", "refs/vaultmesh/log")
    r = Repo.discover(ledger_repo)
    items = ledger.entry_items(r, head)
    line = r.read_blobs([items[-1][2]])[0]  # a copy of the last entry: any line will do
    leaves = [merkle.leaf_hash(b[:-1]) for b in r.read_blobs([oid for _, _, oid in items])] + [
        merkle.leaf_hash(line[:-1])]
    cp = ledger.parse_checkpoint(r.read_blobs([f"{head}:{ledger.CHECKPOINT}"])[0])
    r.close()
    forged_cp = ledger.checkpoint_text(cp.log_id, len(leaves), merkle.root_from_leaf_hashes(leaves))
    env = dict(os.environ, GIT_INDEX_FILE=str(tmp_path / "forge.index"))

    def plumb(*args: str, input: bytes | None = None) -> str:
        res = subprocess.run(["git", *args], cwd=ledger_repo, env=env, input=input, capture_output=True, check=True)
        return res.stdout.decode().strip()

    plumb("read-tree", head)
    plumb("update-index", "--add", "--cacheinfo",
          f"100755,{plumb('hash-object', '-w', '--stdin', input=line)},{entry_path(len(items))}")
    plumb("update-index", "--cacheinfo", f"100644,{plumb('hash-object', '-w', '--stdin', input=forged_cp)},checkpoint")
    forged = plumb("commit-tree", plumb("write-tree"), "-p", head, "-m", "forged append", input=b"")
    git(ledger_repo, "update-ref", "refs/vaultmesh/log", forged)
    res = _commit(ledger_repo, "after the forged append")
    assert res.returncode != 0 and "FAIL Integrity [VM-LOG-CORRUPT]" in res.stderr, res.stderr
    assert "100755" in res.stderr


def test_post_rewrite_reports_rewritten_subjects(ledger_repo: Path, shim: Path) -> None:
    vm_ok(ledger_repo, "record", "HEAD", "--environment", "prod")
    old = git(ledger_repo, "rev-parse", "HEAD")
    ok(ledger_repo, "install", "--no-refspecs")
    res = subprocess.run(["git", "commit", "-q", "--amend", "-m", "amended"], cwd=ledger_repo,
                         capture_output=True, text=True)
    assert res.returncode == 0
    assert f"names commit {old[:12]}, which amend rewrote" in res.stderr
    assert git(ledger_repo, "rev-parse", f"refs/vaultmesh/keep/{old}") == old  # nothing moved


def test_reference_transaction_auto_records(ledger_repo: Path, shim: Path) -> None:
    ok(ledger_repo, "install", "--no-refspecs")
    git(ledger_repo, "tag", "-a", "v1.1", "-m", "no autoRecord yet")
    assert "v1.1" not in ok(ledger_repo, "log")
    git(ledger_repo, "config", "vaultmesh.autoRecord", "true")
    git(ledger_repo, "tag", "-a", "v1.2", "-m", "recorded by the hook")
    git(ledger_repo, "tag", "-a", "other", "-m", "not a release tag")
    log = ok(ledger_repo, "log")
    assert "v1.2" in log and "other" not in log
    ok(ledger_repo, "verify", "v1.2")


# --- the pre-commit framework ------------------------------------------------------------------------------
def test_pre_commit_framework(ledger_repo: Path, hooks_clone: Path, pre_commit_home: Path, tmp_path: Path) -> None:
    vm_ok(ledger_repo, "record", "v1.0")
    env = dict(os.environ, PRE_COMMIT_HOME=str(pre_commit_home))
    env["PATH"] = os.pathsep.join(p for p in env["PATH"].split(os.pathsep)
                                  if not os.access(os.path.join(p, "git-vaultmesh"), os.X_OK))
    res = pre_commit(ledger_repo, "try-repo", str(hooks_clone), "vaultmesh-covenants", "--all-files", env=env)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "vaultmesh covenants" in res.stdout and "Passed" in res.stdout
    pre_commit_config(ledger_repo, hooks_clone, "vaultmesh-covenants", "vaultmesh-verify-push")
    res = pre_commit(ledger_repo, "run", "--all-files", env=env)
    assert res.returncode == 0, res.stdout + res.stderr
    git(ledger_repo, "tag", "-f", "-a", "v1.0", "-m", "moved", "HEAD~1")
    res = pre_commit(ledger_repo, "run", "--all-files", env=env)
    assert res.returncode == 1 and "FAIL Integrity [VM-TAG-MOVED]" in res.stdout, res.stdout
    # the pre-push stage, installed by pre-commit itself, refuses to push the moved release tag
    bare = tmp_path / "server.git"
    git(tmp_path, "init", "-q", "--bare", str(bare))
    git(ledger_repo, "remote", "add", "origin", f"file://{bare}")
    assert pre_commit(ledger_repo, "install", "-t", "pre-push", env=env).returncode == 0
    res = push(ledger_repo, "origin", "v1.0")
    assert res.returncode != 0 and "VM-TAG-MOVED" in res.stdout + res.stderr

