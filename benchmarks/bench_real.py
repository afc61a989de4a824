#!/usr/bin/env python3
"""`verify` and `record` on a history shaped like a large public project, as ratios against floors measured in
the same run.

    python benchmarks/bench_real.py [--commits 70000] [--runs 5] [--before DIR] [--scaling 10000,100000]

The repository comes from `gen_repo.py` (git fast-import, cached under /tmp/vm-bench-cache): ~23 % merges,
some octopus, a 4.4k-file 42 MB tree with binary files and a gitlink (its repository present, so the tree
digest recurses into it), annotated tags every ~700 commits. TAG is the newest tag, BASE the one before it.
Every figure is a whole process, `git vaultmesh ...` as a user types it:

* history floor    `git rev-list TAG | git cat-file --batch >/dev/null`: reading the history at git's speed
* tree floor       `git ls-tree -r -t --format=%(objectname) TAG | git cat-file --batch --buffer | sha512sum`
* verify TAG       full recompute (BASE's history, TAG's on top of it, TAG's tree digest)
                   targets: <= 1.5x (history floor + tree floor), <= 2x history floor
* record BASE      the first release (its whole history and tree digest)   target <= 1.5x (history + tree floor)
* record TAG       incremental (~700 commits over BASE)                    target <= 1.5x tree floor

A floor and what is compared to it run in turn (floor, command, floor, command, ...) and each ratio is taken
round by round, then the median: pairing keeps a ratio meaningful while the machine's load drifts. `--before
DIR` also times `verify TAG` with the code of another checkout in the same rounds (before/after in one run).
`--scaling N,N,...` prints verify's cost per commit between sizes (linear means a flat column); `--synthetic
N,...` the history recompute's own CPU and peak memory on a synthetic stream of N commits (no repository: for
sizes too slow to build here). Peak RSS is the largest single process of the command, git's included. A
script, not a test: nothing asserts a time.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import gen_repo

HERE = Path(__file__).resolve().parent
LEDGER_PREFIXES = ("refs/vaultmesh/", "refs/notes/vaultmesh")


@dataclass
class Sample:
    wall: float
    cpu: float  # user + system of the process and every child it waited for
    rss_mb: float  # peak resident set of the largest single process among them


def run_timed(cmd: Sequence[str] | str, cwd: Path, env: dict[str, str]) -> Sample:
    """One whole process (a list: exec; a str: a /bin/sh pipeline), from spawn to exit."""
    with tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, shell=isinstance(cmd, str), stdout=subprocess.DEVNULL,
                                stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        code = os.waitstatus_to_exitcode(status)
        if code != 0:
            err.seek(0)
            shown = cmd if isinstance(cmd, str) else " ".join(cmd)
            sys.exit(f"{shown} failed ({code}):\n{err.read().decode(errors='replace')}")
    return Sample(wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024)


def git(cwd: Path, env: dict[str, str], *args: str, input: bytes | None = None) -> str:
    res = subprocess.run(["git", *args], cwd=cwd, env=env, input=input, capture_output=True)
    if res.returncode != 0:
        sys.exit(f"git {' '.join(args)} failed:\n{res.stderr.decode(errors='replace')}")
    return res.stdout.decode()


def ledger_refs(work: Path, env: dict[str, str]) -> dict[str, str]:
    out = git(work, env, "for-each-ref", "--format=%(refname) %(objectname)", *LEDGER_PREFIXES)
    return dict(line.split(" ", 1) for line in out.splitlines() if line)


def restore_refs(work: Path, env: dict[str, str], saved: dict[str, str]) -> None:
    """Benchmark only: put the ledger refs back so `record` can run again on the same state. The tool itself
    never rewinds a ledger ref; this is a throwaway clone."""
    lines = ["start"]
    for ref, oid in ledger_refs(work, env).items():
        if ref not in saved:
            lines.append(f"delete {ref} {oid}")
        elif saved[ref] != oid:
            lines.append(f"update {ref} {saved[ref]} {oid}")
    lines += ["prepare", "commit"]
    git(work, env, "update-ref", "--stdin", input=("\n".join(lines) + "\n").encode())


def shim(dest: Path, checkout: Path) -> Path:
    """A directory whose `git-vaultmesh` runs the code of `checkout` with this interpreter, so `git vaultmesh`
    (through git, as users type it) runs exactly that code."""
    dest.mkdir(parents=True)
    script = dest / "git-vaultmesh"
    script.write_text(f"#!{sys.executable}\nimport sys\nsys.path.insert(0, {str(checkout)!r})\n"
                      "from git_vaultmesh.cli import main\nsys.exit(main())\n")
    script.chmod(0o755)
    return dest


def gen_gpg_key(env: dict[str, str]) -> str:
    subprocess.run(["gpg", "--batch", "--pinentry-mode", "loopback", "--passphrase", "", "--quick-gen-key",
                    "Bench <b@example.org>", "ed25519", "sign", "never"], env=env, check=True, capture_output=True)
    out = subprocess.run(["gpg", "--batch", "--with-colons", "--list-secret-keys"], env=env, check=True,
                         capture_output=True, text=True).stdout
    return next(line.split(":")[9] for line in out.splitlines() if line.startswith("fpr:"))


@dataclass
class Figure:
    name: str
    samples: list[Sample]
    floors: list[list[Sample]] = field(default_factory=list)  # per round: the floor runs its ratio adds up
    target: float | None = None  # the ratio not to exceed

    @property
    def wall(self) -> float:
        return statistics.median(s.wall for s in self.samples)

    @property
    def cpu(self) -> float:
        return statistics.median(s.cpu for s in self.samples)

    @property
    def rss(self) -> float:
        return max(s.rss_mb for s in self.samples)

    def ratio(self, key: Callable[[Sample], float]) -> float | None:
        if not self.floors:
            return None
        return statistics.median(key(s) / sum(key(f) for f in fl) for s, fl in zip(self.samples, self.floors))


def rounds(runs: int, jobs: Sequence[Callable[[], Sample]]) -> list[list[Sample]]:
    out: list[list[Sample]] = [[] for _ in jobs]
    for _ in range(runs):
        for k, job in enumerate(jobs):
            out[k].append(job())
    return out


def print_table(title: str, figures: list[Figure]) -> None:
    print(f"\n{title}")
    print(f"{'figure':<46} {'runs':>4} {'wall s':>7} {'ratio':>7} {'cpu s':>7} {'ratio':>7} {'peak MB':>8}  "
          "target   result")
    for f in figures:
        w, c = f.ratio(lambda s: s.wall), f.ratio(lambda s: s.cpu)
        wr = f"{w:6.2f}x" if w is not None else ""
        cr = f"{c:6.2f}x" if c is not None else ""
        target = f"<= {f.target}x" if f.target is not None else ""
        result = "" if f.target is None or w is None else ("PASS" if w <= f.target else "MISS")
        print(f"{f.name:<46} {len(f.samples):>4} {f.wall:>7.3f} {wr:>7} {f.cpu:>7.3f} {cr:>7} {f.rss:>8.0f}  "
              f"{target:<8} {result}")


def print_load(when: str) -> None:
    load, cores = os.getloadavg()[0], os.cpu_count() or 1
    busy = "  BUSY: wall times are unreliable, compare the cpu ratios" if load > cores else ""
    print(f"load average {when}: {load:.2f} on {cores} cores{busy}")


class Bench:
    """One cached repository, cloned with its submodule, a throwaway key and an initialised ledger."""

    def __init__(self, commits: int, scratch: Path, env: dict[str, str], tool: Path) -> None:
        self.built = gen_repo.ensure(gen_repo.Params(commits=commits))
        self.env = env
        self.commits = commits
        self.work = gen_repo.checkout(self.built, Path(tempfile.mkdtemp(prefix=f"w{commits}-", dir=scratch)) / "repo",
                                      submodule=True)
        self.tag, self.base = self.built.tags[-1], self.built.tags[-2]
        self.tool_env = dict(env, PATH=f"{tool}{os.pathsep}{env['PATH']}")
        git(self.work, env, "config", "vaultmesh.signingKey", env["VM_BENCH_KEY"])
        git(self.work, self.tool_env, "vaultmesh", "init")
        self.before_incr: dict[str, str] = {}
        self.size = {t: int(git(self.work, env, "rev-list", "--count", t)) for t in (self.tag, self.base)}

    def sh(self, script: str) -> Callable[[], Sample]:
        return lambda: run_timed(script, self.work, self.env)

    def history_floor(self, tag: str) -> Callable[[], Sample]:
        return self.sh(f"git rev-list {tag} | git cat-file --batch >/dev/null")

    def tree_floor(self, tag: str) -> Callable[[], Sample]:
        return self.sh(f"git ls-tree -r -t --format='%(objectname)' {tag} | git cat-file --batch --buffer "
                       "| sha512sum >/dev/null")

    def vm(self, *args: str, env: dict[str, str] | None = None) -> Callable[[], Sample]:
        return lambda: run_timed(["git", "vaultmesh", *args], self.work, env or self.tool_env)

    def record(self, tag: str, floors: Sequence[Callable[[], Sample]], runs: int) -> Figure:
        """`record TAG` `runs` times from the same ledger state, each after its floors; the last one is kept."""
        before = ledger_refs(self.work, self.env)
        self.before_incr = before
        samples, per_round = [], []
        for k in range(runs):
            if k:
                restore_refs(self.work, self.env, before)
            per_round.append([f() for f in floors])
            samples.append(self.vm("record", tag)())
        return Figure(f"record {tag}", samples, per_round)

    def timings(self, *args: str) -> dict[str, float]:
        res = subprocess.run(["git", "vaultmesh", *args, "--timings", "--json"], cwd=self.work, env=self.tool_env,
                             capture_output=True, text=True)
        try:
            out = json.loads(res.stdout)
        except json.JSONDecodeError:
            return {}
        rss = out.get("peak_rss_mb")
        return {**out.get("timings", {}), **({"rss MB": rss} if rss is not None else {})}


def main_figures(b: Bench, runs: int, before: Path | None, scratch: Path, which: str = "all") -> None:
    hist, tree = b.history_floor(b.tag), b.tree_floor(b.tag)
    hist_base, tree_base = b.history_floor(b.base), b.tree_floor(b.base)
    hist(), tree()  # warm the page cache
    figures: list[Figure] = []
    first = incr = None
    if which in ("all", "record"):
        first = b.record(b.base, [hist_base, tree_base], runs)
        first.name = f"record {b.base} (first: {b.size[b.base]:,} commits)"
        first.target = 1.5
        incr = b.record(b.tag, [tree], runs)
        incr.name = f"record {b.tag} (+{b.size[b.tag] - b.size[b.base]:,} commits over {b.base})"
        incr.target = 1.5
    if which == "verify":  # verify judges receipts: record them once, untimed
        b.vm("record", b.base)()
        b.vm("record", b.tag)()
    if which in ("all", "verify"):
        jobs = [hist, tree, b.vm("verify", b.tag)]
        if before is not None:
            old_env = dict(b.tool_env, PATH=f"{shim(scratch / 'before-shim', before)}{os.pathsep}{b.env['PATH']}")
            jobs.append(b.vm("verify", b.tag, env=old_env))
        got = rounds(runs, jobs)
        hs, ts = got[0], got[1]
        pairs = [[h, t] for h, t in zip(hs, ts)]
        figures += [
            Figure(f"history floor: rev-list {b.tag} | cat-file --batch", hs),
            Figure(f"tree floor: ls-tree -r -t {b.tag} | cat-file | sha512sum", ts),
            Figure(f"verify {b.tag} vs history + tree floor", got[2], pairs, 1.5),
            Figure(f"verify {b.tag} vs history floor", got[2], [[h] for h in hs], 2.0),
        ]
        if before is not None:
            figures += [Figure(f"verify {b.tag}, BEFORE, vs history + tree floor", got[3], pairs, 1.5),
                        Figure(f"verify {b.tag}, BEFORE, vs history floor", got[3], [[h] for h in hs], 2.0)]
    if first is not None and incr is not None:
        figures += [first, incr]
    print_table(f"{b.commits:,} commits, {b.built.meta['merges']:,} merges; TAG {b.tag} over BASE {b.base} "
                f"({runs} rounds; ratios: median of the per-round ratios)", figures)
    if first is not None and incr is not None:
        print(f"  (record {b.base}'s floor: history + tree floor of {b.base}, median "
              f"{statistics.median(sum(s.wall for s in fl) for fl in first.floors):.3f} s wall, "
              f"{statistics.median(sum(s.cpu for s in fl) for fl in first.floors):.3f} s cpu; record {b.tag}'s: "
              f"tree floor, median {statistics.median(sum(s.wall for s in fl) for fl in incr.floors):.3f} s wall, "
              f"{statistics.median(sum(s.cpu for s in fl) for fl in incr.floors):.3f} s cpu)")
    print("\nsteps (--timings, one more run each; steps overlap, so they need not add up to the total; rss MB: the "
          "tool's own peak, git's processes apart):")
    if which in ("all", "verify"):
        t = b.timings("verify", b.tag)
        print(f"  verify {b.tag:<10} " + "  ".join(f"{k} {v:.3f}" for k, v in t.items()))
    if incr is not None:
        saved = ledger_refs(b.work, b.env)
        restore_refs(b.work, b.env, b.before_incr)
        t = b.timings("record", b.tag)
        restore_refs(b.work, b.env, saved)
        print(f"  record {b.tag:<10} " + "  ".join(f"{k} {v:.3f}" for k, v in t.items()))


def scaling(sizes: Sequence[int], runs: int, scratch: Path, env: dict[str, str], tool: Path) -> None:
    """verify's cost as the history grows, against both floors at each size. The tree digest and start-up
    do not grow with the history, so what must stay flat is the cost per commit between two sizes. CPU
    seconds (of the whole process tree) are printed beside wall seconds: on a busy machine they are the
    steadier of the two."""
    print("\nverify TAG as history grows (TAG the newest tag, BASE the one before; "
          f"{runs} rounds; the first record of BASE timed once):")
    print(f"{'commits':>9} {'verify s':>8} {'cpu s':>6} {'hist fl':>7} {'cpu s':>6} {'tree fl':>7} {'cpu s':>6} "
          f"{'ratio':>6} {'cpu':>6} {'vs hist':>7} {'cpu':>6} {'cpu us/c':>8} {'floor':>6} {'peak MB':>7} "
          f"{'floor':>6} {'rec BASE':>8} {'cpu s':>6} {'peak MB':>7}")
    prev: tuple[int, float, float] | None = None
    for n in sizes:
        b = Bench(n, scratch, env, tool)
        hist, tree = b.history_floor(b.tag), b.tree_floor(b.tag)
        hist()
        first = b.vm("record", b.base)()
        b.vm("record", b.tag)()
        hs, ts, vs = rounds(runs, [hist, tree, b.vm("verify", b.tag)])

        def med(xs: list[Sample], key: Callable[[Sample], float]) -> float:
            return statistics.median(key(x) for x in xs)

        def wall(x: Sample) -> float:
            return x.wall

        def cpu(x: Sample) -> float:
            return x.cpu

        sums = [Sample(a.wall + c.wall, a.cpu + c.cpu, 0) for a, c in zip(hs, ts)]
        ratios = [statistics.median(key(s) / key(f) for s, f in zip(vs, fl)) for fl in (sums, hs) for key in (wall, cpu)]
        size = b.size[b.tag]
        v_cpu, h_cpu = med(vs, cpu), med(hs, cpu)
        # per commit between this size and the previous one: the part of verify that grows with history
        per = f"{(v_cpu - prev[1]) / (size - prev[0]) * 1e6:8.2f}" if prev else f"{'-':>8}"
        per_floor = f"{(h_cpu - prev[2]) / (size - prev[0]) * 1e6:6.2f}" if prev else f"{'-':>6}"
        print(f"{size:>9,} {med(vs, wall):>8.3f} {v_cpu:>6.3f} {med(hs, wall):>7.3f} {h_cpu:>6.3f} "
              f"{med(ts, wall):>7.3f} {med(ts, cpu):>6.3f} " + " ".join(f"{r:>5.2f}x" for r in ratios[:2])
              + " " + " ".join(f"{r:>6.2f}x" if k == 0 else f"{r:>5.2f}x" for k, r in enumerate(ratios[2:]))
              + f" {per} {per_floor} {max(s.rss_mb for s in vs):>7.0f} {max(s.rss_mb for s in hs):>6.0f} "
              f"{first.wall:>8.3f} {first.cpu:>6.3f} {first.rss_mb:>7.0f}")
        prev = (size, v_cpu, h_cpu)
        shutil.rmtree(b.work, ignore_errors=True)
    print("ratio: verify / (history floor + tree floor), wall then cpu; vs hist: verify / history floor. cpu us/c: "
          "(verify's cpu at this size - at the previous) / commits added;\nfloor: the same for the history floor. "
          "peak MB: the largest single process, git's cat-file included (its pack is mapped in memory); floor: "
          "the floor's.")


_SYNTH_WRITE = """
import hashlib, random, sys
n, path = int(sys.argv[1]), sys.argv[2]
rng, ids, out = random.Random(15), [], []
for i in range(n):  # about 23 % merges, of a recent commit and one a few back, like gen_repo's topic branches
    parents = [] if i == 0 else [ids[-1], ids[-rng.randint(2, 8)]] if i > 10 and rng.random() < 0.23 else [ids[-1]]
    body = (b"tree 4b825dc642cb6eb9a060e54bf8d69288fbee4904\\n" + b"".join(b"parent " + p + b"\\n" for p in parents)
            + b"author A <a@example.org> %d +0000\\ncommitter A <a@example.org> %d +0000\\n\\nchange %d\\n" % (i, i, i)
            + b"x" * rng.randint(100, 600))
    oid = hashlib.sha1(b"commit %d\\0" % len(body) + body).hexdigest().encode()
    ids.append(oid)
    out.append(b"%s commit %d\\n" % (oid, len(body)) + body + b"\\n")
out.reverse()  # children first, as rev-list sends them
open(path, "wb").write(b"".join(out))
"""

_SYNTH_READ = """
import resource, sys, time
sys.path.insert(0, sys.argv[3])
from git_vaultmesh import history, merkle
def chunks():
    with open(sys.argv[2], "rb") as f:
        while c := f.read(1 << 20):
            yield c
t0 = time.process_time()
got = history.parse_chunks(chunks())
t1 = time.process_time()
positions = history.order(got)
t2 = time.process_time()
whole = bytes(got.leaves)
del got
tree = merkle.CompactRange.from_leaf_hashes([])
tree.extend(whole[32 * i:32 * i + 32] for i in positions)
t3 = time.process_time()
print(f"{int(sys.argv[1]):>10,} {t1 - t0:>8.2f} {t2 - t1:>8.2f} {t3 - t2:>8.2f} "
      f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:>8.0f}")
"""


def synthetic(sizes: Sequence[int], scratch: Path, code: Path) -> None:
    """The history recompute's own share at sizes no cached repository has: a synthetic `cat-file --batch`
    stream (real commit objects and ids, no git) goes through the parser, the order and the tree, in a fresh
    interpreter whose peak RSS is then history's alone (plus the interpreter's ~20 MB)."""
    print("\nhistory recompute, Python side only, on a synthetic stream (cpu seconds; peak RSS of the process):")
    print(f"{'commits':>10} {'parse':>8} {'order':>8} {'tree':>8} {'peak MB':>8}")
    for n in sizes:
        path = scratch / f"synthetic-{n}.batch"
        subprocess.run([sys.executable, "-c", _SYNTH_WRITE, str(n), str(path)], check=True)
        subprocess.run([sys.executable, "-c", _SYNTH_READ, str(n), str(path), str(code)], check=True)
        path.unlink()


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--commits", type=int, default=70_000, help="size of the main repository (default 70000)")
    ap.add_argument("--runs", type=int, default=5, help="rounds of each figure (default 5)")
    ap.add_argument("--before", type=Path, help="a checkout of older code: its verify runs in the same rounds")
    ap.add_argument("--code", type=Path, default=HERE.parent, help="the checkout to measure (default: this one)")
    ap.add_argument("--figures", choices=["all", "record", "verify"], default="all",
                    help="which main figures to time (default all)")
    ap.add_argument("--scaling", default="", help="comma-separated sizes for the per-commit cost (e.g. "
                    "10000,100000,1000000); 0 skips the main figures")
    ap.add_argument("--scaling-runs", type=int, default=3)
    ap.add_argument("--synthetic", default="", help="comma-separated sizes (e.g. 1000000) for the history "
                    "recompute's own cpu and memory on a synthetic stream, no repository needed")
    args = ap.parse_args(argv)
    for code in (args.code, args.before):
        if code is not None and not (code / "git_vaultmesh" / "cli.py").exists():
            ap.error(f"{code} is not a git-vaultmesh checkout")
    env = {**gen_repo.GIT_ENV, "PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    env.pop("SOURCE_DATE_EPOCH", None)
    env.pop("VAULTMESH_TIMINGS", None)
    scratch = Path(tempfile.mkdtemp(prefix="vaultmesh-bench-real-"))
    # as an installed package runs (pip compiles its bytecode): with PYTHONDONTWRITEBYTECODE in the caller's
    # environment every run compiled ~30 modules from source, ~0.1 s of each figure that no user pays. The
    # bytecode goes to the scratch directory, not into the checkout.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(scratch / "pycache")
    gnupghome = tempfile.mkdtemp(prefix="vmr", dir="/tmp")  # short: gpg-agent's socket path has a limit
    os.chmod(gnupghome, 0o700)
    env["GNUPGHOME"] = gnupghome
    try:
        env["VM_BENCH_KEY"] = gen_gpg_key(env)
        tool = shim(scratch / "shim", args.code.resolve())
        for code in {args.code.resolve(), *([args.before.resolve()] if args.before else [])}:
            subprocess.run([sys.executable, "-m", "compileall", "-q", str(code / "git_vaultmesh")], env=env,
                           check=True)
        sizes = [int(x) for x in args.scaling.split(",") if x]
        print_load("before")
        if args.commits:
            main_figures(Bench(args.commits, scratch, env, tool), args.runs,
                         args.before.resolve() if args.before else None, scratch, args.figures)
        if sizes:
            scaling(sizes, args.scaling_runs, scratch, env, tool)
        synth = [int(x) for x in args.synthetic.split(",") if x]
        if synth:
            synthetic(synth, scratch, args.code.resolve())
        print_load("after")
    finally:
        subprocess.run(["gpgconf", "--kill", "all"], env=env, capture_output=True)
        shutil.rmtree(gnupghome, ignore_errors=True)
        shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
