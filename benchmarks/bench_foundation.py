#!/usr/bin/env python3
"""Foundation performance figures, as ratios against floors measured in the same run.

    python benchmarks/bench_foundation.py [--commits N] [--breakdown]

Builds (once, cached under the temp dir) a synthetic repository of N commits with `git fast-import`, clones it
with `--shared`, sets up a throwaway gpg key and a ledger, then times whole processes:

* floor            `git rev-list r2 | git cat-file --batch >/dev/null`: reading the history at git's own speed
* record r1        first release: the whole history up to r1 (N - 1000 commits)
* record r2        incremental release: 1000 commits on top of r1's compact range   target <= 0.5 s
* verify r2        full recompute: r1's history, then r2's on top of it               target <= 2x floor
* -h               `git vaultmesh -h` against `python3 -c pass`                      target <= 0.1 s

Wall times on a shared machine are noisy: every figure is a median, and a floor and the command compared to it
are run alternately so that both see the same load. This is a script, not a test: no test asserts a time.
"""

from __future__ import annotations

import argparse
import cProfile
import hashlib
import io
import os
import pstats
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

# --- the synthetic repository ----------------------------------------------------------------------------
GENERATOR_VERSION = 1  # bump when the generated history changes, so stale caches are not reused
MERGE_EVERY = 500  # every 500th commit merges a short side branch
SIDE_LEN = 3  # side-branch commits per merge
RELEASE_GAP = 1000  # commits r2 adds over r1
FILES = 100  # files in the tree (10 directories of 10), so the tree digest stays cheap
EPOCH = 1_700_000_000
AUTHOR = b"Bench Author <author@example.org>"
TAGGER = b"Bench Tagger <tagger@example.org>"

# Isolate git from the user's and the system's configuration; identities are fixed.
GIT_ENV = {
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_AUTHOR_NAME": "Bench Author", "GIT_AUTHOR_EMAIL": "author@example.org",
    "GIT_COMMITTER_NAME": "Bench Author", "GIT_COMMITTER_EMAIL": "author@example.org",
}


def file_path(i: int) -> bytes:
    k = i % FILES
    return f"d{k // 10}/f{k % 10}.txt".encode()


def fast_import_stream(commits: int) -> Iterator[bytes]:
    """A deterministic fast-import stream of exactly `commits` commits, all reachable from refs/heads/main.

    Commit i (0-based, mark i+1) is on main except at phases MERGE_EVERY-2-SIDE_LEN .. MERGE_EVERY-3 of each
    block, which form a side branch forked from main's tip; phase MERGE_EVERY-1 merges that branch."""
    side_first = MERGE_EVERY - 2 - SIDE_LEN
    main_tip = 0  # mark of main's tip (0: none yet)
    side_tip = 0
    yield b"feature done\n"
    for i in range(commits):
        phase = i % MERGE_EVERY
        mark = i + 1
        when = b"%d +0000" % (EPOCH + i)
        on_side = side_first <= phase < side_first + SIDE_LEN
        msg = b"commit %d\n" % i
        content = b"%d\n" % i
        out = [b"commit refs/heads/side\n" if on_side else b"commit refs/heads/main\n",
               b"mark :%d\n" % mark,
               b"author " + AUTHOR + b" " + when + b"\n",
               b"committer " + AUTHOR + b" " + when + b"\n",
               b"data %d\n" % len(msg), msg]
        if on_side:
            parent = main_tip if phase == side_first else side_tip
            if parent:
                out.append(b"from :%d\n" % parent)
            side_tip = mark
        else:
            if main_tip:
                out.append(b"from :%d\n" % main_tip)
            if phase == MERGE_EVERY - 1 and side_tip:
                out.append(b"merge :%d\n" % side_tip)
                side_tip = 0
            main_tip = mark
        out += [b"M 100644 inline " + file_path(i) + b"\n", b"data %d\n" % len(content), content, b"\n"]
        yield b"".join(out)
    r1_mark = commits - RELEASE_GAP  # commit index commits-RELEASE_GAP-1: a merge on main
    for name, mark in ((b"r1", r1_mark), (b"r2", main_tip)):
        when = b"%d +0000" % (EPOCH + mark)
        msg = b"release " + name + b"\n"
        yield (b"tag " + name + b"\nfrom :%d\ntagger " % mark + TAGGER + b" " + when + b"\n"
               + b"data %d\n" % len(msg) + msg)
    yield b"done\n"


def git(cwd: Path, *args: str, env: dict[str, str] | None = None, input: bytes | None = None) -> str:
    res = subprocess.run(["git", *args], cwd=cwd, env=env, input=input, capture_output=True)
    if res.returncode != 0:
        sys.exit(f"git {' '.join(args)} failed in {cwd}:\n{res.stderr.decode(errors='replace')}")
    return res.stdout.decode()


def cached_repo(commits: int, env: dict[str, str], rebuild: bool) -> Path:
    """The bare synthetic repository for these parameters, built with fast-import on first use."""
    params = f"v{GENERATOR_VERSION} n{commits} m{MERGE_EVERY} s{SIDE_LEN} g{RELEASE_GAP} f{FILES} e{EPOCH}"
    key = hashlib.sha256(params.encode()).hexdigest()[:12]
    root = Path(tempfile.gettempdir()) / "git-vaultmesh-bench"
    repo = root / f"{commits}-{key}.git"
    stamp = repo / "vaultmesh-bench-build-seconds"
    if rebuild and repo.exists():
        shutil.rmtree(repo)
    if stamp.exists():
        print(f"synthetic repo: {commits} commits, cached (built in {float(stamp.read_text()):.1f} s)")
        return repo
    root.mkdir(parents=True, exist_ok=True)
    building = Path(tempfile.mkdtemp(prefix=f"{commits}-building-", dir=root))
    t0 = time.perf_counter()
    git(building, "init", "--quiet", "--bare", "--initial-branch=main", ".", env=env)
    proc = subprocess.Popen(["git", "fast-import", "--quiet", "--done"], cwd=building, env=env,
                            stdin=subprocess.PIPE)
    assert proc.stdin is not None
    buf: list[bytes] = []
    for chunk in fast_import_stream(commits):
        buf.append(chunk)
        if len(buf) >= 4096:
            proc.stdin.write(b"".join(buf))
            buf.clear()
    proc.stdin.write(b"".join(buf))
    proc.stdin.close()
    if proc.wait() != 0:
        sys.exit("git fast-import failed")
    git(building, "update-ref", "-d", "refs/heads/side", env=env)
    seconds = time.perf_counter() - t0
    count = int(git(building, "rev-list", "--count", "r2", env=env))
    gap = int(git(building, "rev-list", "--count", "r1..r2", env=env))
    if count != commits or gap != RELEASE_GAP:
        sys.exit(f"generator bug: r2 reaches {count} commits (want {commits}), r1..r2 {gap} (want {RELEASE_GAP})")
    stamp_tmp = building / "vaultmesh-bench-build-seconds"
    stamp_tmp.write_text(f"{seconds:.3f}\n")
    if (repo / "vaultmesh-bench-build-seconds").exists():  # another run finished first: use its copy
        shutil.rmtree(building)
    else:
        shutil.rmtree(repo, ignore_errors=True)  # a half-built leftover
        building.rename(repo)
    print(f"synthetic repo: {commits} commits built with git fast-import in {seconds:.1f} s")
    return repo


# --- timing --------------------------------------------------------------------------------------------
@dataclass
class Sample:
    wall: float  # seconds, what the targets are about
    cpu: float  # user + system seconds of the process and the children it waited for: steadier under load


def run_timed(cmd: Sequence[str] | str, cwd: Path, env: dict[str, str]) -> Sample:
    """One whole process (a list: exec; a str: a /bin/sh pipeline), timed from spawn to exit."""
    with tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, shell=isinstance(cmd, str), stdout=subprocess.DEVNULL,
                                stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            err.seek(0)
            shown = cmd if isinstance(cmd, str) else " ".join(cmd)
            sys.exit(f"{shown} failed ({proc.returncode}):\n{err.read().decode(errors='replace')}")
    return Sample(wall, usage.ru_utime + usage.ru_stime)


def alternate(runs: int, *jobs: Callable[[], Sample]) -> list[list[Sample]]:
    """Run the jobs round-robin `runs` times: a floor and what is compared to it see the same load."""
    samples: list[list[Sample]] = [[] for _ in jobs]
    for _ in range(runs):
        for k, job in enumerate(jobs):
            samples[k].append(job())
    return samples


@dataclass
class Row:
    key: str
    name: str
    samples: list[Sample]
    floor: Row | None = None  # what the ratios are taken against
    target: str = ""
    ok: bool | None = None  # None: no target, for information

    @property
    def wall(self) -> float:
        return statistics.median(s.wall for s in self.samples)

    @property
    def cpu(self) -> float:
        return statistics.median(s.cpu for s in self.samples)


def print_table(rows: list[Row]) -> None:
    print()
    print(f"{'figure':<38} {'runs':>4} {'wall s':>7} {'ratio':>7} {'cpu s':>7} {'ratio':>7}  {'target':<13} result")
    for r in rows:
        ratio = f"{r.wall / r.floor.wall:6.2f}x" if r.floor else ""
        cpu_ratio = f"{r.cpu / r.floor.cpu:6.2f}x" if r.floor else ""
        result = "" if r.ok is None else ("PASS" if r.ok else "MISS")
        print(f"{r.name:<38} {len(r.samples):>4} {r.wall:>7.3f} {ratio:>7} {r.cpu:>7.3f} {cpu_ratio:>7}  "
              f"{r.target:<13} {result}")
    print("wall s: median wall-clock seconds; cpu s: median user+system seconds of the process tree;")
    print("ratio: against the floor row above it (the pipeline, or the bare interpreter for -h).")


def print_load(when: str) -> None:
    load, cores = os.getloadavg()[0], os.cpu_count() or 1
    busy = "  BUSY: wall times are unreliable, compare the cpu ratios" if load > cores else ""
    print(f"load average {when}: {load:.2f} on {cores} cores{busy}")


# --- the ledger --------------------------------------------------------------------------------------------
LEDGER_PREFIXES = ("refs/vaultmesh/", "refs/notes/vaultmesh")


def ledger_refs(work: Path, env: dict[str, str]) -> dict[str, str]:
    out = git(work, "for-each-ref", "--format=%(refname) %(objectname)", *LEDGER_PREFIXES, env=env)
    return dict(line.split(" ", 1) for line in out.splitlines() if line)


def restore_refs(work: Path, env: dict[str, str], saved: dict[str, str]) -> None:
    """Put the ledger refs back to `saved` so that `record` can run again on the same state.

    Benchmark only: the tool's rule is that ledger refs move forward by compare-and-swap and are never rewound
    (DESIGN §1). Here we rewind a throwaway clone on purpose, because a record cannot be repeated otherwise."""
    now = ledger_refs(work, env)
    lines = ["start"]
    for ref, oid in now.items():
        if ref not in saved:
            lines.append(f"delete {ref} {oid}")
        elif saved[ref] != oid:
            lines.append(f"update {ref} {saved[ref]} {oid}")
    lines += ["prepare", "commit"]
    git(work, "update-ref", "--stdin", env=env, input=("\n".join(lines) + "\n").encode())


def time_record(work: Path, env: dict[str, str], rev: str, runs: int) -> list[Sample]:
    """`record REV` `runs` times, each on the same ledger state; the last run's result is kept."""
    before = ledger_refs(work, env)
    times = []
    for k in range(runs):
        if k:
            restore_refs(work, env, before)
        times.append(run_timed(["git", "vaultmesh", "record", rev], work, env))
    return times


def gen_gpg_key(home: str, env: dict[str, str]) -> str:
    """An unprotected ed25519 signing key in `home`; returns its fingerprint."""
    genv = dict(env, GNUPGHOME=home)
    subprocess.run(["gpg", "--batch", "--pinentry-mode", "loopback", "--passphrase", "", "--quick-gen-key",
                    "Bench <b@example.org>", "ed25519", "sign", "never"], env=genv, check=True, capture_output=True)
    out = subprocess.run(["gpg", "--batch", "--with-colons", "--list-secret-keys"], env=genv, check=True,
                         capture_output=True, text=True).stdout
    return next(line.split(":")[9] for line in out.splitlines() if line.startswith("fpr:"))


def drop_gpg_home(home: str) -> None:
    subprocess.run(["gpgconf", "--kill", "all"], env=dict(os.environ, GNUPGHOME=home), capture_output=True)
    shutil.rmtree(home, ignore_errors=True)


# --- breakdowns ------------------------------------------------------------------------------------------
def verify_breakdown(work: Path, env: dict[str, str]) -> None:
    """Where `verify r2` spends its time, measured in this process (the same code the CLI runs)."""
    old_cwd, old_env = os.getcwd(), dict(os.environ)
    os.chdir(work)
    os.environ.update(env)
    try:
        from git_vaultmesh import history, merkle
        from git_vaultmesh.evtag import tree_digest
        from git_vaultmesh.git import Repo
        from git_vaultmesh.verification import Options, verify

        repo = Repo.discover()
        c1, c2 = repo.rev_parse("r1", "commit"), repo.rev_parse("r2", "commit")
        assert c1 is not None and c2 is not None

        def best(fn: Callable[[], object], n: int = 3) -> float:
            ts = []
            for _ in range(n):
                t0 = time.perf_counter()
                fn()
                ts.append(time.perf_counter() - t0)
            return statistics.median(ts)

        stream = repo.stream_commits(c1)
        parsed = history.parse_batch(stream)
        leaves = parsed.leaf_list(history.order(parsed))
        h1 = history.compute(repo, c1, None)
        base = history.Base("bench", c1, h1.size, h1.root, h1.frontier)
        phases = [
            ("stream_commits r1 (rev-list | cat-file)", best(lambda: repo.stream_commits(c1))),
            ("parse_batch r1 (parse + leaf sha256)", best(lambda: history.parse_batch(stream))),
            ("order r1 (Kahn, min-heap)", best(lambda: history.order(parsed))),
            ("CompactRange.extend r1", best(lambda: merkle.CompactRange.from_leaf_hashes(leaves))),
            ("history.compute r1 (all of the above)", best(lambda: history.compute(repo, c1, None))),
            ("history.compute r2 over r1's frontier", best(lambda: history.compute(repo, c2, base))),
            ("tree_digest r1 + r2 (evtag)", best(lambda: (tree_digest(repo, c1), tree_digest(repo, c2)))),
        ]
        opts = Options(target="r2", remember=False)
        phases.append(("verification.verify r2, in process", best(lambda: verify(repo, opts))))
        print("\nverify r2 breakdown (in process, median of 3):")
        for name, sec in phases:
            print(f"  {name:<44} {sec:8.3f} s")
        prof = cProfile.Profile()
        prof.enable()
        verify(repo, opts)
        prof.disable()
        text = io.StringIO()
        pstats.Stats(prof, stream=text).sort_stats("tottime").print_stats(12)
        print("\ncProfile of verification.verify r2, top 12 by own time:")
        body = text.getvalue().splitlines()
        start = next((i for i, line in enumerate(body) if line.lstrip().startswith("ncalls")), 0)
        for line in body[start:]:
            if line.strip():
                print("  " + line.rstrip())
        repo.close()
    finally:
        os.chdir(old_cwd)
        os.environ.clear()
        os.environ.update(old_env)


def help_breakdown(env: dict[str, str]) -> None:
    """The slowest imports of `git vaultmesh -h` (python -X importtime, cumulative microseconds)."""
    res = subprocess.run([sys.executable, "-X", "importtime", "-c",
                          "import sys; from git_vaultmesh.cli import main; sys.argv[0] = 'x'; main(['-h'])"],
                         env=env, capture_output=True, text=True)
    rows = []
    for line in res.stderr.splitlines():
        parts = line.split("|")
        if len(parts) == 3 and parts[1].strip().isdigit():
            rows.append((int(parts[1]), parts[2].rstrip()))
    rows.sort(reverse=True)
    print("\n-h breakdown: slowest imports (cumulative us, python -X importtime):")
    for us, name in rows[:12]:
        print(f"  {us:>8}  {name}")


# --- main ------------------------------------------------------------------------------------------------
def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--commits", type=int, default=100_000,
                    help=f"commits in the synthetic history, a multiple of {MERGE_EVERY} (default 100000)")
    ap.add_argument("--runs", type=int, default=5, help="runs per repeatable figure (default 5)")
    ap.add_argument("--record-runs", type=int, default=3, help="runs of each record (default 3)")
    ap.add_argument("--rebuild", action="store_true", help="rebuild the cached synthetic repository")
    ap.add_argument("--breakdown", action="store_true", help="print the breakdowns even when targets pass")
    args = ap.parse_args(argv)
    if args.commits % MERGE_EVERY or args.commits < 2 * RELEASE_GAP:
        ap.error(f"--commits must be a multiple of {MERGE_EVERY} and at least {2 * RELEASE_GAP}")
    if shutil.which("git-vaultmesh") is None and not Path(sys.executable).with_name("git-vaultmesh").exists():
        ap.error("git-vaultmesh is not installed: pip install -e . first")

    env = dict(os.environ, **GIT_ENV)
    # `git vaultmesh` must find the console script of this interpreter's environment first
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    env.pop("SOURCE_DATE_EPOCH", None)
    cache = cached_repo(args.commits, env, args.rebuild)

    scratch = Path(tempfile.mkdtemp(prefix="vaultmesh-bench-"))
    # directly under /tmp with a short name: gpg-agent's socket path is limited to ~100 bytes
    gnupghome = tempfile.mkdtemp(prefix="vmb", dir="/tmp")
    os.chmod(gnupghome, 0o700)
    env["GNUPGHOME"] = gnupghome
    try:
        fingerprint = gen_gpg_key(gnupghome, env)
        work = scratch / "bench"
        git(scratch, "clone", "--quiet", "--shared", str(cache), str(work), env=env)
        git(work, "config", "vaultmesh.signingKey", fingerprint, env=env)
        git(work, "vaultmesh", "init", env=env)
        print_load("before")
        rows = measure(work, env, args.runs, args.record_runs, args.commits)
        print_table(rows)
        print_load("after")
        by_key = {r.key: r for r in rows}
        if args.breakdown or by_key["verify"].ok is False:
            verify_breakdown(work, env)
        if args.breakdown or by_key["help"].ok is False:
            help_breakdown(env)
    finally:
        drop_gpg_home(gnupghome)
        shutil.rmtree(scratch, ignore_errors=True)
    return 0


def measure(work: Path, env: dict[str, str], runs: int, record_runs: int, commits: int) -> list[Row]:
    def floor() -> Sample:
        return run_timed("git rev-list r2 | git cat-file --batch >/dev/null", work, env)

    floor()  # warm the page cache and git's own start-up before anything is timed
    r1 = time_record(work, env, "r1", record_runs)
    r2 = time_record(work, env, "r2", record_runs)
    floors, verifies = alternate(runs, floor, lambda: run_timed(["git", "vaultmesh", "verify", "r2"], work, env))
    interp, helps = alternate(
        runs * 2,
        lambda: run_timed(["python3", "-c", "pass"], work, env),
        lambda: run_timed(["git", "vaultmesh", "-h"], work, env),
    )
    f = Row("floor", "floor: rev-list r2 | cat-file --batch", floors)
    py = Row("python", "interpreter: python3 -c pass", interp)
    rows = [
        f,
        Row("record1", f"record r1 (first: {commits - RELEASE_GAP} commits)", r1, f, "(information)"),
        Row("record2", f"record r2 (+{RELEASE_GAP} commits over r1)", r2, f, "<= 0.5 s"),
        Row("verify", "verify r2 (r1 and r2 recomputed)", verifies, f, "<= 2x floor"),
        py,
        Row("help", "git vaultmesh -h", helps, py, "<= 0.1 s"),
    ]
    by_key = {r.key: r for r in rows}
    by_key["record2"].ok = by_key["record2"].wall <= 0.5
    by_key["verify"].ok = by_key["verify"].wall <= 2 * f.wall
    by_key["help"].ok = by_key["help"].wall <= 0.1
    return rows


if __name__ == "__main__":
    sys.exit(main())
