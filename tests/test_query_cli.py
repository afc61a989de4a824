"""query, list, timeline, adr and `show ADR-…` through the real CLI on signed ledgers (real git, real gpg)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from git_vaultmesh import index
from git_vaultmesh.git import Repo

from cli_helpers import ok, ok_json, run
from conftest import git


def seqs(doc: dict[str, object]) -> list[int]:
    results = doc["results"]
    assert isinstance(results, list)
    return [r["seq"] for r in results]


def test_query_list_timeline_on_a_signed_ledger(ledger_repo: Path) -> None:
    ok(ledger_repo, "record", "v1.0", "-m", "first Postgres release, café édition")
    ok(ledger_repo, "record", "HEAD~1", "--environment", "staging", "-m", "try postgres on staging")
    doc = ok_json(ledger_repo, "query", "POSTGRES")
    assert doc["schema"] == "vaultmesh-query/1" and doc["verified"] is False
    assert seqs(doc) and all("postgres" in json.dumps(r["entry"]["body"]).lower() for r in doc["results"])
    assert seqs(doc) == sorted(seqs(doc), reverse=True)  # newest first
    release = ok_json(ledger_repo, "query", "postgres", "--type", "release")["results"]
    assert [r["entry"]["body"]["type"] for r in release] == ["release"]
    assert ok_json(ledger_repo, "query", "CAFÉ")["results"] == release  # unicode, case-folded
    assert ok_json(ledger_repo, "query", "postgres -staging")["results"] == release
    assert ok_json(ledger_repo, "query", "postgres", "--limit", "0")["results"] == []
    assert ok_json(ledger_repo, "query", "nothing-like-this")["results"] == []
    # the JSON items are those of show --json
    shown = ok_json(ledger_repo, "show", "v1.0")
    assert release == shown
    human = ok(ledger_repo, "query", "postgres")
    assert "release" in human and "deploy" in human and "\033[" not in human  # no colour off a terminal
    assert [r["entry"]["body"]["type"] for r in ok_json(ledger_repo, "list", "releases")["results"]] == ["release"]
    assert [r["entry"]["body"]["type"] for r in ok_json(ledger_repo, "list", "deploys")["results"]] == ["deploy"]
    everything = ok_json(ledger_repo, "list", "all")["results"]
    assert [r["seq"] for r in everything] == list(range(len(everything)))  # log order
    assert ok_json(ledger_repo, "list", "peers")["results"] == []
    timeline = ok(ledger_repo, "timeline", "--type", "deploy")
    day = timeline.splitlines()[0]
    assert len(day) == 10 and day[4] == "-" and "deploy" in timeline and "release" not in timeline
    assert ok_json(ledger_repo, "timeline", "--until", "2000-01-01")["results"] == []
    yaml = ok(ledger_repo, "list", "releases", "--yaml")
    assert "schema: vaultmesh-query/1" in yaml and "verified: false" in yaml


def test_bad_input_is_a_usage_error_with_its_code(ledger_repo: Path) -> None:
    for args in (["query", '"open'], ["timeline", "--since", "2025-02-30"], ["query", "--type", "relase"],
                 ["list", "all", "--limit", "-1"], ["timeline", "--since", "2025-10-02", "--until", "2025-10-01"]):
        res = run(ledger_repo, *args)
        assert res.returncode == 2, (args, res.stderr)
        assert "VM-QUERY-INVALID" in res.stderr and "hint:" in res.stderr
    res = run(ledger_repo, "query", "--type", "relase", "--json")
    assert json.loads(res.stdout)["error"]["code"] == "VM-QUERY-INVALID"


def test_empty_ledger_and_no_ledger(ledger_repo: Path, repo: Path, tmp_path: Path) -> None:
    assert [r["entry"]["body"]["type"] for r in ok_json(ledger_repo, "list", "all")["results"]] == ["policy"]
    assert ok_json(ledger_repo, "list", "adrs")["results"] == []
    assert ok(ledger_repo, "list", "releases") == ""
    other = tmp_path / "none"
    other.mkdir()
    git(other, "init", "-q")
    res = run(other, "query", "x")
    assert res.returncode == 1 and "VM-NOT-INITIALIZED" in res.stderr


def test_adrs_numbered_with_status_and_supersedes_links(ledger_repo: Path) -> None:
    first = ok_json(ledger_repo, "adr", "create", "Use PostgreSQL for persistent storage", "-m", "## Decision\nPG 16")
    assert first["id"] == "ADR-0001" and first["status"] == "proposed"
    ok(ledger_repo, "adr", "status", "ADR-0001", "accepted", "-m", "agreed in review")
    second = ok_json(ledger_repo, "adr", "create", "Use CockroachDB", "--supersedes", "ADR-1", "--status", "accepted",
                     "-m", "scale out")
    assert second["id"] == "ADR-0002"
    adrs = ok_json(ledger_repo, "list", "adrs")["results"]
    assert [(a["id"], a["status"], a["recorded_status"], a["supersedes"], a["superseded_by"]) for a in adrs] == [
        ("ADR-0001", "superseded", "accepted", [], ["ADR-0002"]),
        ("ADR-0002", "accepted", "accepted", ["ADR-0001"], []),
    ]
    assert len(adrs[0]["revisions"]) == 2
    text = ok(ledger_repo, "list", "adrs")
    assert "ADR-0001  superseded" in text and "superseded by ADR-0002" in text
    shown = ok_json(ledger_repo, "show", "ADR-0001")
    assert [s["entry"]["body"]["status"] for s in shown] == ["proposed", "accepted"]
    assert "PG 16" in ok(ledger_repo, "show", "adr-0001")
    assert ok_json(ledger_repo, "query", "cockroachdb", "--type", "adr")["results"][0]["entry"]["body"]["number"] == 2
    assert ok(ledger_repo, "verify", "--all")  # the entries are valid, signed ledger entries
    res = run(ledger_repo, "show", "ADR-0009")
    assert res.returncode == 1 and "VM-NOT-RECORDED" in res.stderr


def test_adr_errors(ledger_repo: Path) -> None:
    for args in (["adr", "create", "X", "--supersedes", "ADR-0042", "-m", "t"], ["adr", "create", "  ", "-m", "t"],
                 ["adr", "status", "ADR-7", "accepted"], ["adr", "status", "ADR-x", "accepted"],
                 ["adr", "create", "X", "--file", "/nonexistent/adr.md"]):
        res = run(ledger_repo, *args)
        assert res.returncode == 1 and "VM-ADR-INVALID" in res.stderr, (args, res.stderr)


def test_adr_text_from_the_editor(ledger_repo: Path, tmp_path: Path) -> None:
    editor = tmp_path / "ed.sh"
    editor.write_text('#!/bin/sh\nprintf "written in the editor\\n" >> "$1"\n')
    editor.chmod(editor.stat().st_mode | stat.S_IEXEC)
    ok(ledger_repo, "adr", "create", "Editor ADR", env={"GIT_EDITOR": str(editor)})
    body = ok_json(ledger_repo, "show", "ADR-0001")[0]["entry"]["body"]
    assert body["document"].startswith("# Editor ADR\n") and "written in the editor" in body["document"]


def test_index_follows_the_log_and_is_rebuilt_when_deleted_or_corrupt(ledger_repo: Path) -> None:
    ok(ledger_repo, "record", "v1.0")
    before = ok_json(ledger_repo, "list", "all")
    path = index.path_for(Repo.discover(ledger_repo))
    assert path.exists()
    ok(ledger_repo, "record", "HEAD~1", "-m", "after")  # the log grew: extended, the new entry is found
    grown = ok_json(ledger_repo, "list", "all")
    assert seqs(grown) == [*seqs(before), len(seqs(before))] and grown["log"]["head"] != before["log"]["head"]
    path.write_bytes(b"\0garbage" * 512)
    assert ok_json(ledger_repo, "list", "all") == grown
    path.unlink()
    assert ok_json(ledger_repo, "list", "all") == grown


def test_verified_flag_verifies_the_ledger_first(ledger_repo: Path) -> None:
    ok(ledger_repo, "record", "v1.0", "-m", "hello")
    doc = ok_json(ledger_repo, "query", "hello", "--verified")
    assert doc["verified"] is True and doc["trust"] == "pinned" and len(doc["results"]) == 1
    # a ledger that does not verify gives no --verified answer; the plain (unverified) index still answers
    git(ledger_repo, "tag", "-d", "v1.0")
    git(ledger_repo, "tag", "-a", "v1.0", "-m", "moved", "HEAD~1")
    res = run(ledger_repo, "query", "hello", "--verified")
    assert res.returncode == 1 and "VM-" in res.stderr and "--verified" in res.stderr
    assert ok_json(ledger_repo, "query", "hello")["verified"] is False


def test_fresh_read_path_imports_no_crypto_and_starts_no_gpg(ledger_repo: Path, tmp_path: Path) -> None:
    ok(ledger_repo, "record", "v1.0")
    ok(ledger_repo, "query", "v1.0")  # builds the index
    shims = tmp_path / "shims"
    shims.mkdir()
    marker = tmp_path / "gpg-started"
    for tool in ("gpg", "gpgv", "gpg2", "gpg-agent"):
        (shims / tool).write_text(f"#!/bin/sh\ntouch {marker}\nexit 2\n")
        (shims / tool).chmod(0o755)
    env = dict(os.environ, PATH=f"{shims}{os.pathsep}{os.environ['PATH']}")
    for args in (["query", "v1.0"], ["list", "releases"], ["timeline"], ["query", "v1.0", "--json"]):
        res = subprocess.run([sys.executable, "-X", "importtime", "-m", "git_vaultmesh", *args], cwd=ledger_repo,
                             env=env, capture_output=True, text=True)
        assert res.returncode == 0, res.stderr
        modules = {line.split("|")[-1].strip() for line in res.stderr.splitlines() if line.startswith("import time")}
        assert not {m for m in modules if m.split(".")[0] in ("gnupg", "cryptography")}, args
        assert "git_vaultmesh.signing" not in modules or args[-1] == "--json"
    assert not marker.exists()


def test_concurrent_readers_while_the_log_grows(ledger_repo: Path) -> None:
    ok(ledger_repo, "record", "v1.0")
    ok(ledger_repo, "list", "all")
    ok(ledger_repo, "record", "HEAD~1", "-m", "grown")  # the index is stale now: every reader wants to extend it
    procs = [subprocess.Popen([sys.executable, "-m", "git_vaultmesh", "list", "all", "--json"], cwd=ledger_repo,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(6)]
    outs = [p.communicate() for p in procs]
    assert all(p.returncode == 0 for p in procs), [e for _, e in outs]
    docs = [json.loads(o) for o, _ in outs]
    assert all(d == docs[0] for d in docs) and docs[0] == ok_json(ledger_repo, "list", "all")
    assert [r["entry"]["body"]["type"] for r in docs[0]["results"]] == ["policy", "release", "deploy"]


def test_read_path_finds_the_repository_from_anywhere(ledger_repo: Path, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Subdirectory, inside .git, -C, and a bare clone: the one-process discovery agrees with `Repo.discover`."""
    ok(ledger_repo, "record", "v1.0")
    want = ok_json(ledger_repo, "list", "releases")
    sub = ledger_repo / "a" / "b"
    sub.mkdir(parents=True)
    assert ok_json(sub, "list", "releases") == want
    assert ok_json(ledger_repo / ".git", "list", "releases") == want
    assert ok_json(tmp_path, "-C", str(sub), "list", "releases") == want
    bare = tmp_path / "bare.git"
    git(tmp_path, "clone", "-q", "--bare", str(ledger_repo), str(bare))
    git(bare, "fetch", "-q", str(ledger_repo), "refs/vaultmesh/log:refs/vaultmesh/log")
    assert ok_json(bare, "list", "releases")["results"] == want["results"]
    for where in (sub, bare, ledger_repo / ".git"):
        monkeypatch.chdir(where)
        repo, head = Repo.discover_with_ref("refs/vaultmesh/log")
        assert head == want["log"]["head"]
        assert repo.git_dir == Repo.discover(where).git_dir and repo.work_tree == Repo.discover(where).work_tree
    assert Repo.discover_with_ref("refs/vaultmesh/absent")[1] is None
    res = run(tmp_path, "query", "x")
    assert res.returncode == 1 and "VM-NOT-A-REPO" in res.stderr


def test_terminal_output_is_coloured_and_paged(ledger_repo: Path, tmp_path: Path) -> None:
    """On a terminal shorter than the output, the lines go through the pager, coloured; off a terminal neither."""
    import fcntl
    import pty
    import struct
    import termios

    for i in range(4):
        ok(ledger_repo, "adr", "create", f"decision {i}", "-m", "text")
    paged = tmp_path / "paged.txt"
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 3, 80, 0, 0))  # 3 rows: 5 lines must page
    env = dict(os.environ, PAGER=f"cat > {paged}", TERM="xterm")
    env.pop("NO_COLOR", None)
    env.pop("GIT_PAGER", None)
    res = subprocess.run([sys.executable, "-m", "git_vaultmesh", "list", "all"], cwd=ledger_repo, env=env,
                         stdout=slave, stderr=subprocess.PIPE, text=True)
    os.close(slave)
    os.close(master)
    assert res.returncode == 0, res.stderr
    text = paged.read_text()
    assert len(text.splitlines()) == 5 and "\033[35madr" in text
    assert "unverified" not in res.stderr  # stderr was not a terminal: no note
