"""Races: many recorders on one ledger, readers during appends, held and stale ref locks.

The full-size run (8 processes x 250 records) is `python benchmarks/reliability.py`; this file runs the same
scenario scaled down (benchmarks/reliability.py is the library of both). Real processes, real git, real gpg.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from .figures import rel
from conftest import GpgKey, vm


def _ledger(repo: Path, key: GpgKey) -> object:
    return rel.Ledger(repo, dict(os.environ), key.fingerprint)


def test_concurrent_records_land_exactly_once_while_readers_verify(ledger_repo: Path, gpg_key: GpgKey) -> None:
    """4 recorders x 10 distinct deploys, with `verify --all` and `doctor` running in a loop meanwhile: every
    record lands exactly once at the position it reported, and no reader ever sees a false failure (verify
    once reported VM-NOTES-MISMATCH when an append landed between its reads of the log and of the notes)."""
    led = _ledger(ledger_repo, gpg_key)
    stop = threading.Event()
    reader_failures: list[str] = []
    reads = {"verify": 0, "doctor": 0}

    def reader() -> None:
        while not stop.is_set():
            ok, detail = rel.verify_all(led)
            reads["verify"] += 1
            if not ok:
                reader_failures.append(f"verify --all: {detail}")
            ok, problems = rel.doctor(led)
            reads["doctor"] += 1
            if not ok:
                reader_failures.append(f"doctor: {problems}")

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        c = rel.run_concurrent(led, procs=4, per_proc=10)
    finally:
        stop.set()
        thread.join()
    figures = json.dumps(c, indent=1, default=str)
    assert c["failed"] == 0, figures
    assert c["found"] == c["expected"] == 40, figures
    assert c["duplicates"] == 0 and c["lost"] == 0 and c["unexpected"] == 0, figures
    assert c["prefix_intact"] and c["read_error"] is None, figures
    assert c["seq_reported_twice"] == 0 and c["seq_mismatches"] == 0, figures
    assert c["verify_ok"], figures
    assert c["locks_left"] == [], figures
    assert c["attempts_reported"] == 40 and c["max_attempts"] >= 1, figures  # record --json reports attempts
    assert reads["verify"] >= 1 and reader_failures == [], reader_failures


def test_concurrent_verifies_all_pass_and_remember_one_checkpoint(ledger_repo: Path) -> None:
    assert vm(ledger_repo, "record", "HEAD", "--environment", "one").returncode == 0
    procs = [subprocess.Popen([sys.executable, "-m", "git_vaultmesh", "verify", "--all"], cwd=ledger_repo,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(4)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0, 0], outs
    state = json.loads((ledger_repo / ".git" / "vaultmesh" / "verified-checkpoint.json").read_text())
    assert state["size"] == 2
    assert not list((ledger_repo / ".git" / "vaultmesh").glob("*.tmp")), "a temporary state file was left"


def test_a_ref_lock_held_briefly_is_waited_for(ledger_repo: Path) -> None:
    """Another git process holding the log's lock for a moment is a lost race: record retries and lands."""
    lock = ledger_repo / ".git" / "refs" / "vaultmesh" / "log.lock"
    lock.write_text("")
    proc = subprocess.Popen([sys.executable, "-m", "git_vaultmesh", "record", "HEAD", "--environment", "after-lock",
                             "--json"], cwd=ledger_repo, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while "dangling commit" not in subprocess.run(["git", "fsck", "--no-progress"], cwd=ledger_repo,
                                                      capture_output=True, text=True).stdout:
            assert time.monotonic() < deadline, "the recorder built no commit in 30 s"
            time.sleep(0.1)
        time.sleep(2)  # its first compare-and-swap, right after that commit, has met the lock by now
    finally:
        lock.unlink()
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert json.loads(out)["attempts"] > 1
    assert rel.lock_files(ledger_repo) == []


def test_a_stale_ref_lock_is_reported_with_its_path(ledger_repo: Path) -> None:
    """A lock left by a git killed while holding it never goes away by itself: record must say which file
    it is and what to do (not retry for long, not claim a busy ledger), doctor must report it, and the
    ledger must be untouched."""
    lock = ledger_repo / ".git" / "refs" / "vaultmesh" / "log.lock"
    lock.write_text("")
    old = time.time() - 120
    os.utime(lock, (old, old))
    before = rel.log_state(ledger_repo)
    t0 = time.monotonic()
    res = vm(ledger_repo, "record", "HEAD", "--environment", "blocked")
    elapsed = time.monotonic() - t0
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert "error: VM-REF-LOCKED" in res.stderr and str(lock) in res.stderr and "remove" in res.stderr
    assert elapsed < 20, f"took {elapsed:.1f} s"
    doc = vm(ledger_repo, "doctor", "--json")
    assert doc.returncode == 1 and any(str(lock) in p for p in json.loads(doc.stdout)["problems"])
    assert rel.log_state(ledger_repo).lines == before.lines
    lock.unlink()
    assert vm(ledger_repo, "record", "HEAD", "--environment", "unblocked").returncode == 0
    assert vm(ledger_repo, "doctor").returncode == 0
