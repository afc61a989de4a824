"""`pre-commit run --all-files` with our hooks, through the real pre-commit package: it passes on the pristine
ledger and fails, naming the covenant and the code, after tampers of the tamper matrix.

A representative subset runs by default: one or two rows per threat of the matrix (each run starts pre-commit,
which starts our hook, ~1 s). VAULTMESH_HOOKS_ALL_ROWS=1 runs every row that judges the repository alone
(rows whose verify arguments name artifact files or a --trust-root flag judge inputs a hook does not have)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from .kit import Ctx, Row, run_git
from .test_tamper_matrix import ROWS
from hooks_kit import hooks_clone, pre_commit, pre_commit_home

__all__ = ["hooks_clone", "pre_commit_home"]  # fixtures, imported for pytest

SUBSET = ("body-byte-on-top", "sig-byte-flip", "resign-untrusted", "remove-entry-gap", "duplicate-entry",
          "replay-other-ledger", "rollback", "replace-log-other-key", "checkpoint-untrusted-signer",
          "tag-moved", "history-rewritten-retag", "deploy-subject-missing", "notes-swapped", "pack-corrupted", "merge-commit", "artifact-dotdot",
          "checkpoint-other-log", "oversized")
ELIGIBLE = [r for r in ROWS if not any("{" in a or a == "--trust-root" for a in r.args)
            and r.id not in ("unrecorded-tag", "unknown-rev")]
CHOSEN = ELIGIBLE if os.environ.get("VAULTMESH_HOOKS_ALL_ROWS") else [r for r in ELIGIBLE if r.id in SUBSET]


def _run_hooks(ctx: Ctx, clone: Path, home: Path) -> tuple[int, str]:
    rev = run_git(clone, "rev-parse", "HEAD", env=ctx.vm_env).decode().strip()
    (ctx.repo / ".pre-commit-config.yaml").write_text(
        f"repos:\n  - repo: {clone}\n    rev: {rev}\n    hooks:\n      - id: vaultmesh-covenants\n")
    run_git(ctx.repo, "add", ".pre-commit-config.yaml", env=ctx.vm_env)
    res = pre_commit(ctx.repo, "run", "--all-files", env=dict(ctx.vm_env, PRE_COMMIT_HOME=str(home)))
    assert "Traceback" not in res.stdout + res.stderr, res.stdout + res.stderr
    return res.returncode, res.stdout + res.stderr


def test_pristine_ledger_passes(ctx: Ctx, hooks_clone: Path, pre_commit_home: Path) -> None:
    code, out = _run_hooks(ctx, hooks_clone, pre_commit_home)
    assert code == 0 and "Passed" in out, out


def test_subset_covers_every_threat() -> None:
    assert {r.id for r in CHOSEN} >= set(SUBSET)  # no id of the subset went missing from the matrix
    assert {r.threat for r in CHOSEN} == {r.threat for r in ELIGIBLE}


@pytest.mark.parametrize("row", CHOSEN, ids=[r.id for r in CHOSEN])
def test_tamper_fails_naming_covenant_and_code(row: Row, ctx: Ctx, hooks_clone: Path, pre_commit_home: Path) -> None:
    row.attack(ctx)  # rows about a remembered checkpoint verify once first, inside the attack
    code, out = _run_hooks(ctx, hooks_clone, pre_commit_home)
    assert code == 1, f"{row.id}: pre-commit passed after the tamper:\n{out}"
    named = re.findall(r"FAIL (Integrity|Reproducibility|Federation|Proof-chain|config) \[(VM-[A-Z0-9-]+)\]", out)
    assert named, f"{row.id}: no covenant and code named:\n{out}"
    codes = {c for _, c in named}
    missing = [want for want in row.expect if not set(want.split("|")) & codes]
    assert not missing, f"{row.id}: expected {missing} among {sorted(codes)}:\n{out}"
