"""Several `record` processes appending to one ledger at once: compare-and-swap on both refs, re-read,
re-number, retry. Every append lands exactly once, the log stays valid, and no lock file is left behind.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from cli_helpers import assert_error, commit_file, git, ledger_refs, log_json, ok

ROUNDS = 10


def start(repo: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "git_vaultmesh", *args], cwd=repo, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=dict(os.environ, **(env or {})))


def race(repo: Path, *commands: list[str], env: dict[str, str] | None = None) -> list[subprocess.CompletedProcess[str]]:
    """Start all commands before waiting for any."""
    procs = [start(repo, *cmd, env=env) for cmd in commands]
    done = []
    for cmd, p in zip(commands, procs):
        out, err = p.communicate(timeout=120)
        assert "Traceback" not in err, err
        done.append(subprocess.CompletedProcess(cmd, p.returncode, out, err))
    return done


def assert_valid_log(repo: Path) -> list[dict[str, object]]:
    rows = log_json(repo)
    assert sorted(r["seq"] for r in rows) == list(range(len(rows)))  # type: ignore[type-var]
    assert len({r["id"] for r in rows}) == len(rows), "an entry landed twice"
    assert len({r["body_digest"] for r in rows}) == len(rows), "a statement landed twice"
    ok(repo, "verify", "--all")
    locks = [p for p in (repo / ".git").rglob("*.lock")]
    assert not locks, f"left-over lock files: {locks}"
    return rows


def test_two_recorders_race(ledger_repo: Path) -> None:
    """Different tags (even rounds) or two deploys of one commit (odd rounds), started together."""
    expected = []
    for r in range(ROUNDS):
        commit_file(ledger_repo, f"round{r}.txt", f"{r}\n")
        if r % 2 == 0:
            git(ledger_repo, "tag", "-a", f"r{r}a", "-m", "a")
            git(ledger_repo, "tag", "-a", f"r{r}b", "-m", "b")
            cmds = [["record", f"r{r}a"], ["record", f"r{r}b"]]
            expected += [("release", f"refs/tags/r{r}a"), ("release", f"refs/tags/r{r}b")]
        else:
            cmds = [["record", "HEAD", "--environment", f"east{r}"], ["record", "HEAD", "--environment", f"west{r}"]]
            expected += [("deploy", f"east{r}"), ("deploy", f"west{r}")]
        for res in race(ledger_repo, *cmds):
            assert res.returncode == 0, res.stdout + res.stderr
    rows = assert_valid_log(ledger_repo)
    got = []
    for row in rows:
        body = row["entry"]["body"]  # type: ignore[index]
        if body["type"] == "release":
            got.append(("release", body["subject"]["ref"]))
        elif body["type"] == "deploy":
            got.append(("deploy", body["environment"]))
    assert Counter(got) == Counter(expected)
    assert len(rows) == 1 + 2 * ROUNDS


def test_same_tag_race_records_one_release(ledger_repo: Path) -> None:
    for r in range(3):
        commit_file(ledger_repo, f"same{r}.txt", f"{r}\n")
        git(ledger_repo, "tag", "-a", f"s{r}", "-m", "s")
        results = race(ledger_repo, ["record", f"s{r}"], ["record", f"s{r}"])
        assert sorted(res.returncode for res in results) == [0, 1]
        assert_error(next(res for res in results if res.returncode), "VM-ALREADY-RECORDED")
    rows = assert_valid_log(ledger_repo)
    assert len(rows) == 1 + 3


def test_identical_deploys_race_lands_once(ledger_repo: Path) -> None:
    """Same statement from two processes (same SOURCE_DATE_EPOCH): both succeed, one entry."""
    for r in range(3):
        env = {"SOURCE_DATE_EPOCH": str(1700000000 + r)}
        refs = ledger_refs(ledger_repo)
        results = race(ledger_repo, ["record", "HEAD", "--json"], ["record", "HEAD", "--json"], env=env)
        assert [res.returncode for res in results] == [0, 0], [res.stderr for res in results]
        outs = [json.loads(res.stdout) for res in results]
        assert outs[0]["entry"] == outs[1]["entry"]
        assert sorted(o.get("appended", True) for o in outs) == [False, True]
        assert ledger_refs(ledger_repo) != refs
    rows = assert_valid_log(ledger_repo)
    assert len(rows) == 1 + 3


def test_four_writers_fifteen_deploys_each(ledger_repo: Path) -> None:
    workers, each = 4, 15
    before = len(log_json(ledger_repo))

    def worker(w: int) -> list[int]:
        codes = []
        for j in range(each):
            p = start(ledger_repo, "record", "HEAD", "--environment", f"w{w}", "-m", f"deploy {w}/{j}")
            out, err = p.communicate(timeout=120)
            assert "Traceback" not in err, err
            assert p.returncode == 0, out + err
            codes.append(p.returncode)
        return codes

    with ThreadPoolExecutor(workers) as pool:
        results = list(pool.map(worker, range(workers)))
    assert results == [[0] * each] * workers
    rows = assert_valid_log(ledger_repo)
    assert len(rows) - before == workers * each
    messages = Counter(r["entry"]["body"].get("message") for r in rows  # type: ignore[index]
                       if r["entry"]["body"]["type"] == "deploy")  # type: ignore[index]
    assert messages == Counter({f"deploy {w}/{j}": 1 for w in range(workers) for j in range(each)})
    head = git(ledger_repo, "rev-parse", "HEAD")
    notes = git(ledger_repo, "notes", "--ref=vaultmesh", "show", head).splitlines()
    assert len(notes) == workers * each
