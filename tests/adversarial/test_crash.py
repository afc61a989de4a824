"""Crash safety: SIGKILL the recorder at random points and at the worst deterministic point.

After any crash: `git fsck --full` is clean (dangling objects are allowed), the log holds every earlier entry
unchanged plus either the whole new entry or nothing, `verify --all` passes, `doctor` finds nothing, and the
next `record` works. The 100-run version is `python benchmarks/reliability.py --only crash`.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from .figures import rel
from conftest import GpgKey, vm


def test_kill_9_at_random_points(ledger_repo: Path, gpg_key: GpgKey) -> None:
    """10 seeded runs; the delay is drawn in [0, one record's measured duration); half the kills take the
    recorder's git and gpg children down with it (SIGKILL to the process group). fsck, the log and the locks
    are checked after every kill; verify --all, doctor and a next record after every 5th (damage persists)."""
    led = rel.Ledger(ledger_repo, dict(os.environ), gpg_key.fingerprint)
    f = rel.run_crashes(led, runs=10, seed=rel.CRASH_SEED, next_every=5, check_every=5)
    figures = json.dumps(f.__dict__, indent=1)
    assert f.problems == [], figures
    assert f.fsck_clean == f.runs == 10, figures
    assert f.entries_lost == 0 and f.torn == 0, figures
    assert f.appended + f.not_appended == f.runs, figures
    assert f.checked == 2 and f.verify_ok == f.checked, figures
    assert f.doctor_clean + f.doctor_repaired == f.checked, figures
    assert f.stale_locks == f.stale_lock_reported, figures
    assert f.next_record_ok == 2, figures


def test_kill_after_objects_before_the_ref_transaction(ledger_repo: Path) -> None:
    """The deterministic worst point: every object of the append is written, the refs are not moved yet (the
    log's lock is held by someone else, so the recorder is retrying). SIGKILL there leaves only dangling
    objects: the ledger is exactly as before, and the next record works."""
    before = rel.log_state(ledger_repo)
    objects_before = set(rel.run_git(ledger_repo, "rev-list", "--all", "--objects", env=dict(os.environ)).split())
    lock = ledger_repo / ".git" / "refs" / "vaultmesh" / "log.lock"
    lock.write_text("")
    proc = subprocess.Popen([sys.executable, "-m", "git_vaultmesh", "record", "HEAD", "--environment", "doomed"],
                            cwd=ledger_repo, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # wait until its checkpoint signature and commit are written
            res = subprocess.run(["git", "fsck", "--no-progress"], cwd=ledger_repo,
                                 capture_output=True, text=True)
            if "dangling commit" in res.stdout:
                break
            time.sleep(0.2)
        else:
            raise AssertionError("the recorder wrote no commit object in 30 s")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        lock.unlink()
    after = rel.log_state(ledger_repo)
    assert (after.head, after.notes, after.lines) == (before.head, before.notes, before.lines)
    clean, text = rel.fsck(ledger_repo, dict(os.environ))
    assert clean, text
    assert rel.lock_files(ledger_repo) == []
    objects_after = set(rel.run_git(ledger_repo, "rev-list", "--all", "--objects", env=dict(os.environ)).split())
    assert objects_after == objects_before, "a crashed append made something reachable"
    assert vm(ledger_repo, "verify", "--all").returncode == 0
    assert vm(ledger_repo, "doctor").returncode == 0
    res = vm(ledger_repo, "record", "HEAD", "--environment", "survivor", "--json")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["seq"] == len(before.lines)
