"""A kill inside git's ref transaction (files backend: one lock-file rename per ref) can move the notes ref and
not the log ref, or the other way round. The next record must repair the notes itself; verify then passes."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import git, vm


def test_notes_moved_without_the_log_are_rebuilt_by_the_next_record(ledger_repo: Path) -> None:
    assert vm(ledger_repo, "record", "v1.0").returncode == 0
    log_before = git(ledger_repo, "rev-parse", "refs/vaultmesh/log").strip()
    assert vm(ledger_repo, "record", "HEAD", "--environment", "doomed").returncode == 0
    # the torn state: notes of the newer append, log rewound to before it (as if only the notes rename landed)
    git(ledger_repo, "update-ref", "refs/vaultmesh/log", log_before)
    assert "VM-NOTES-MISMATCH" in vm(ledger_repo, "verify", "--all", "--json").stdout
    res = vm(ledger_repo, "record", "HEAD", "--environment", "survivor", "--json")
    assert res.returncode == 0, res.stderr
    ver = vm(ledger_repo, "verify", "--all", "--json")
    assert ver.returncode == 0 and json.loads(ver.stdout)["ok"], ver.stdout
    assert vm(ledger_repo, "doctor").returncode == 0


def test_notes_edited_by_hand_are_rebuilt_by_the_next_record(ledger_repo: Path) -> None:
    assert vm(ledger_repo, "record", "v1.0").returncode == 0
    head = git(ledger_repo, "rev-parse", "HEAD").strip()
    git(ledger_repo, "notes", "--ref=vaultmesh", "add", "-f", "-m", "forged receipt", head)
    assert vm(ledger_repo, "record", "HEAD", "--environment", "after").returncode == 0
    ver = vm(ledger_repo, "verify", "--all", "--json")
    assert ver.returncode == 0, ver.stdout
