#!/usr/bin/env python3
"""Hook costs, as ratios against floors measured in the same run.

    python benchmarks/bench_hooks.py [--entries 1000] [--runs 7] [--rebuild] [--no-push]

* commit       `git commit` with our hooks installed (pre-commit, reference-transaction) against `git commit`
               with no hooks, on a repository whose ledger holds N entries          target: <= 150 ms added
               three ways: nothing the hook reads changed (the script's one hash), one entry appended since
               the last commit (the incremental check reads the new entry only), and no remembered pass
               (the full fast check reads all N entries, as after a rewrite or on the first commit)
* pre-push     the installed pre-push hook, fed the line git gives it for a push of one new release tag,
               against `git vaultmesh verify TAG`                                   target: <= 1.2x

The repository (a 200-commit history from `git fast-import`, a ledger of N signed deploy entries appended in
batches of 100, releases v1.0 and v2.0) and its throwaway gpg home are cached under
/tmp/vm-bench-cache/hooks-<N>; each run works on a copy, so the cached ledger stays at N entries. Floors and
commands run alternately; figures are medians. This is a script, not a test: no test asserts a time.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CACHE = Path("/tmp/vm-bench-cache")
GIT_ENV = {
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_AUTHOR_NAME": "Bench Author", "GIT_AUTHOR_EMAIL": "author@example.org",
    "GIT_COMMITTER_NAME": "Bench Author", "GIT_COMMITTER_EMAIL": "author@example.org",
}
COMMITS = 200


def sh(cmd: list[str], cwd: Path, env: dict[str, str], input: bytes | None = None) -> bytes:
    res = subprocess.run(cmd, cwd=cwd, env=env, input=input, capture_output=True)
    if res.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{res.stdout.decode()}\n{res.stderr.decode()}")
    return res.stdout


def fast_import(commits: int) -> bytes:
    out = [b"reset refs/heads/main\n"]
    for i in range(commits):
        data = f"line {i}\n".encode()
        msg = f"commit {i}\n".encode()
        out.append(b"commit refs/heads/main\n")
        out.append(b"committer Bench Author <author@example.org> %d +0000\n" % (1_700_000_000 + i))
        out.append(b"data %d\n%s" % (len(msg), msg))
        out.append(b"M 100644 inline f%d.txt\ndata %d\n%s\n" % (i % 20, len(data), data))
    return b"".join(out)


def build(where: Path, entries: int, env: dict[str, str]) -> None:
    """The cached repository: source history, gpg key, ledger of `entries` entries, releases v1.0 and v2.0."""
    if where.exists():
        shutil.rmtree(where)
    repo, gnupg = where / "repo", where / "g"
    repo.mkdir(parents=True)
    gnupg.mkdir(mode=0o700)
    env = dict(env, GNUPGHOME=str(gnupg))
    sh(["git", "init", "-q", "-b", "main"], repo, env)
    sh(["git", "fast-import", "--quiet"], repo, env, input=fast_import(COMMITS))
    sh(["git", "reset", "-q", "--hard", "main"], repo, env)
    sh(["gpg", "--batch", "--pinentry-mode", "loopback", "--passphrase", "", "--quick-gen-key",
        "Bench <bench@example.org>", "ed25519", "sign", "never"], repo, env)
    fpr = [line.split(":")[9] for line in sh(["gpg", "--with-colons", "--list-secret-keys"], repo, env)
           .decode().splitlines() if line.startswith("fpr:")][0]
    sh(["git", "config", "vaultmesh.signingKey", fpr], repo, env)
    vm = [sys.executable, "-m", "git_vaultmesh"]
    sh([*vm, "init"], repo, env)
    sh(["git", "tag", "-a", "v1.0", "-m", "v1.0", "main~1"], repo, env)
    sh([*vm, "record", "v1.0"], repo, env)
    # the bulk of the ledger: signed deploy entries, appended 100 per commit (as a bulk import would)
    script = f"""
import sys
from git_vaultmesh import ledger
from git_vaultmesh.config import signing_key
from git_vaultmesh.entry import canonical, make_entry
from git_vaultmesh.git import Repo
from git_vaultmesh.signing import sign
repo = Repo.discover()
key = signing_key(repo)
head = ledger.read_head(repo)
commits = repo.run("rev-list", "main").decode().split()
todo = {entries} - head.size
n = 0
while n < todo:
    batch = []
    for _ in range(min(100, todo - n)):
        c = commits[n % len(commits)]
        body = {{"type": "deploy", "log": head.log_id, "recorded_at": "2030-01-01T00:00:00Z", "component": "bench",
                "environment": f"env-{{n}}", "subject": {{"commit": c, "tree": repo.rev_parse(c, "tree")}}}}
        batch.append(make_entry(body, [{{"format": key.format, "signer": key.fingerprint,
                                        "sig": sign(key, canonical(body))}}]))
        n += 1
    ledger.append(repo, key, batch, keep=[e.subject_commit for e in batch if e.subject_commit])
"""
    sh([sys.executable, "-c", script], repo, env)
    sh(["git", "tag", "-a", "v2.0", "-m", "v2.0", "main"], repo, env)
    sh([*vm, "record", "v2.0"], repo, env)
    sh([*vm, "verify", "--all"], repo, env)


def timed(cmd: list[str], cwd: Path, env: dict[str, str], input: bytes | None = None) -> tuple[float, float]:
    """(wall seconds, CPU seconds): user + system time of the command and every process it waited for. On a
    loaded machine wall time mostly measures the run queue; CPU time is what the hook itself costs."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    res = subprocess.run(cmd, cwd=cwd, env=env, input=input, capture_output=True)
    elapsed = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if res.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{res.stdout.decode()}\n{res.stderr.decode()}")
    return elapsed, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


class Figure:
    """The runs of one command: medians of wall and CPU time."""

    def __init__(self) -> None:
        self.wall: list[float] = []
        self.cpu: list[float] = []

    def add(self, run: tuple[float, float]) -> None:
        self.wall.append(run[0])
        self.cpu.append(run[1])

    @property
    def med(self) -> float:
        return statistics.median(self.wall)

    @property
    def cpu_ms(self) -> float:
        return statistics.median(self.cpu) * 1000


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--entries", type=int, default=1000)
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--rebuild", action="store_true")
    ap.add_argument("--no-push", action="store_true", help="skip the pre-push figure (verify takes seconds)")
    args = ap.parse_args()

    where = CACHE / f"hooks-{args.entries}"
    shim = where / "bin"
    env = dict(os.environ, **GIT_ENV)
    env.pop("GIT_CONFIG_PARAMETERS", None)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    if args.rebuild or not (where / "repo" / ".git").exists():
        t = time.perf_counter()
        build(where, args.entries, env)
        print(f"built {where} ({args.entries} ledger entries) in {time.perf_counter() - t:.1f} s")
    env["GNUPGHOME"] = str(where / "g")
    env["HOME"] = str(where)
    shim.mkdir(exist_ok=True)
    (shim / "git-vaultmesh").write_text(f'#!/bin/sh\nexec "{sys.executable}" -m git_vaultmesh "$@"\n')
    (shim / "git-vaultmesh").chmod(0o755)
    env["PATH"] = f"{shim}{os.pathsep}{env['PATH']}"
    repo = where / "work"
    if repo.exists():
        shutil.rmtree(repo)
    shutil.copytree(where / "repo", repo, symlinks=True)
    no_hooks = where / "no-hooks"
    no_hooks.mkdir(exist_ok=True)
    vm = [sys.executable, "-m", "git_vaultmesh"]
    sh([*vm, "install", "--no-refspecs"], repo, env)
    print(f"load average before: {os.getloadavg()[0]:.2f} (2 cores)")

    # 1. git commit without hooks vs with ours: nothing moved, one entry appended, nothing remembered
    floor, ours, appended, cold, python = Figure(), Figure(), Figure(), Figure(), Figure()
    state = repo / ".git" / "vaultmesh"
    judged = []
    for name in ("pre-commit.ok", "pre-commit.state.json"):  # what an earlier run left in the cached repo
        (state / name).unlink(missing_ok=True)
    (repo / "bench.txt").write_text("warm-up\n")  # the first pass after install judges every entry once
    sh(["git", "add", "bench.txt"], repo, env)
    sh(["git", "commit", "-q", "-m", "warm-up"], repo, env)
    for i in range(args.runs):
        for hooks, out in ((str(no_hooks), floor), (None, ours), (None, appended), (None, cold)):
            (repo / "bench.txt").write_text(f"{time.time_ns()} {i}\n")
            sh(["git", "add", "bench.txt"], repo, env)
            if out is appended:  # as after a record: the ledger grew by one entry since the last commit
                sh([*vm, "record", "HEAD", "--environment", f"bench-{i}"], repo, env)
            if out is cold:  # no pass remembered (first commit, or the ledger was rewritten): all N entries
                (state / "pre-commit.ok").unlink(missing_ok=True)
                (state / "pre-commit.state.json").unlink(missing_ok=True)
            pre = ["git"] + (["-c", f"core.hooksPath={hooks}"] if hooks else [])
            out.add(timed([*pre, "commit", "-q", "-m", f"bench {i}"], repo, env))
            if out is appended:
                judged.append(json.loads((state / "pre-commit.state.json").read_text())["judged"])
        python.add(timed([sys.executable, "-c", "pass"], repo, env))  # the interpreter's own start-up
    assert set(judged) == {"incremental"}, judged  # the figure is the path it names

    # 2. pre-push of one new release tag vs verify of that tag
    tag_oid = sh(["git", "rev-parse", "refs/tags/v2.0"], repo, env).decode().strip()
    line = f"refs/tags/v2.0 {tag_oid} refs/tags/v2.0 {'0' * 40}\n".encode()
    hook = str(repo / ".git" / "hooks" / "pre-push")
    verify_t, push_t = [], []
    for _ in range(0 if args.no_push else args.runs):
        verify_t.append(timed(["git", "vaultmesh", "verify", "v2.0"], repo, env)[0])
        push_t.append(timed([hook, "origin", "file:///nowhere"], repo, env, input=line)[0])
    v_med, p_med = (statistics.median(verify_t), statistics.median(push_t)) if verify_t else (0.0, 0.0)
    sh([*vm, "install", "--uninstall"], repo, env)
    shutil.rmtree(repo)

    print(f"load average after: {os.getloadavg()[0]:.2f}")
    print(f"{'figure':34} {'median s':>9} {'vs floor':>9}  {'CPU ms':>7}  target")

    def row(name: str, fig: Figure, target: bool = True) -> None:
        wall, cpu = (fig.med - floor.med) * 1000, fig.cpu_ms - floor.cpu_ms
        verdict = (f"+{wall:.0f} ms wall, +{cpu:.0f} ms CPU (<= 150 ms) {'OK' if wall <= 150 else 'MISSED'}"
                   if target else "")
        ratio = f"{fig.med / floor.med:8.2f}x" if fig is not floor else ""
        print(f"{name:34} {fig.med:9.3f} {ratio:>9}  {fig.cpu_ms:7.0f}  {verdict}")

    row("git commit, no hooks (floor)", floor, target=False)
    row("git commit, our hooks", ours)
    row("  one entry appended since", appended)
    row("  nothing remembered (full check)", cold)
    row("  (python -c pass, for scale)", python, target=False)
    if verify_t:
        print(f"{'git vaultmesh verify v2.0 (floor)':34} {v_med:9.3f}")
        print(f"{'pre-push hook, push of v2.0':34} {p_med:9.3f} {p_med / v_med:8.2f}x  (<= 1.2x) "
              f"{'OK' if p_med / v_med <= 1.2 else 'MISSED'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
