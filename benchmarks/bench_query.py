#!/usr/bin/env python3
"""The daily read path at ledger scale, as ratios against floors measured in the same run.

    python benchmarks/bench_query.py [--entries 100000] [--runs 21] [--rebuild]

The ledger (cached under /tmp/vm-bench-cache/query-<N>) is built by the bulk append (`ledger.append_bodies`: one
log commit and ONE signature per batch of 10k bodies): deploys, releases, ADRs and decisions over 40 components,
about 1 % of them mentioning "postgres". Release bodies carry a placeholder history (the index reads entries, it
does not verify them; `verify` would refuse these releases).

Whole-process medians, each command alternating with its floor, run by this interpreter (never a pyenv shim):

* floor             `python -c "import argparse, json, sqlite3"`: the least any indexed query in Python costs
* query/list/timeline  `git vaultmesh …` on a fresh index                                target: <= 1.5x floor
* old grep          the v4.1 Bash tool's query: `grep -i PATTERN` over its one file of the same N records,
                    `| tail -n 20`                                                       target: query <= it
* doctor --full     `git vaultmesh doctor --full`: every entry (one run)
* doctor            `git vaultmesh doctor` with its clean state remembered (after one warm-up run)
                                                                                         target: <= 100 ms
* append + doctor   `doctor` after an append of 100 entries (3 runs): only the new entries are checked
* cold rebuild      `query` with the index deleted (3 runs)                              target: <= 10 s
* extend            `query` after an append of 100 entries (3 runs)
* bulk append       each 10k-entry batch of the build                                    target: <= 10 s

This is a script, not a test: no test asserts a time.
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
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CACHE = Path("/tmp/vm-bench-cache")
BIN = os.path.dirname(sys.executable)
ENV = dict(os.environ, GIT_CONFIG_NOSYSTEM="1", GIT_AUTHOR_NAME="Bench", GIT_AUTHOR_EMAIL="b@example.org",
           GIT_COMMITTER_NAME="Bench", GIT_COMMITTER_EMAIL="b@example.org", PYTHONPATH=str(ROOT),
           PATH=BIN + os.pathsep + os.environ.get("PATH", ""))
ENV.pop("GIT_DIR", None)

BUILD = """
import json, random, sys, time
from git_vaultmesh import ledger
from git_vaultmesh.config import signing_key
from git_vaultmesh.git import Repo

total, batch = int(sys.argv[1]), int(sys.argv[2])
repo = Repo.discover()
key = signing_key(repo)
commit = repo.rev_parse("HEAD", "commit")
tree = repo.rev_parse("HEAD", "tree")
rng = random.Random(7)
components = [f"svc-{i:02d}" for i in range(39)] + ["postgres"]
words = ["rollout", "hotfix", "canary", "migration", "schema", "cache", "latency", "rollback", "cdn", "tls"]
adr = 0
records = open("old-tool-records.txt", "w")
head = ledger.read_head(repo)
done = head.size - 1
while done < total:
    bodies = []
    for i in range(done, min(total, done + batch)):
        when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(1_704_067_200 + i * 300))
        comp = "postgres" if rng.random() < 0.004 else rng.choice(components)
        msg = " ".join(rng.choice(words) for _ in range(6)) + f" #{i}"
        if rng.random() < 0.006:
            msg += " (postgres client bump)"
        r = rng.random()
        b = {"log": head.log_id, "recorded_at": when, "component": comp, "version": f"v{i // 1000}.{i % 1000}",
             "message": msg}
        if r < 0.01:
            b.update(type="release", subject={"ref": f"refs/tags/{comp}-{i}", "commit": commit, "tree": tree},
                     history={"alg": "rfc6962-sha256", "order": "vaultmesh-topo-v1", "size": 1, "root": "0" * 64})
        elif r < 0.012:
            adr += 1
            b.update(type="adr", number=adr, title=f"ADR about {comp} {msg.split()[0]}", status="accepted",
                     document="## Context\\n" + msg)
        elif r < 0.02:
            b.update(type="decision", title=f"decide {msg.split()[1]}", status="accepted")
        else:
            b.update(type="deploy", environment=rng.choice(["prod", "staging", "dev"]),
                     evidence=[f"ci run {i}"])
        bodies.append(b)
        records.write(f"{when} {b['type']} {comp} {b['version']} {msg}\\n")
    t = time.perf_counter()
    ledger.append_bodies(repo, key, bodies)
    print(json.dumps({"appended": len(bodies), "seconds": time.perf_counter() - t}), flush=True)
    done += len(bodies)
    head = ledger.read_head(repo)
"""

GROW = """
import sys, time
from git_vaultmesh import ledger
from git_vaultmesh.config import signing_key
from git_vaultmesh.git import Repo
repo = Repo.discover()
head = ledger.read_head(repo)
stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
ledger.append_bodies(repo, signing_key(repo), [
    {"type": "deploy", "log": head.log_id, "recorded_at": stamp, "component": "postgres", "version": f"grow-{i}",
     "message": "grown"} for i in range(int(sys.argv[1]))])
"""


def sh(cmd: list[str], cwd: Path, env: dict[str, str] | None = None, input: bytes | None = None) -> str:
    res = subprocess.run(cmd, cwd=cwd, env=env or ENV, input=input, capture_output=True)
    if res.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{res.stdout.decode()}\n{res.stderr.decode()}")
    return res.stdout.decode()


def build(where: Path, entries: int) -> list[float]:
    """The cached ledger; returns the seconds of each 10k-entry bulk append."""
    if where.exists():
        shutil.rmtree(where)
    repo = where / "repo"
    repo.mkdir(parents=True)
    home = Path(tempfile.mkdtemp(prefix="vmq", dir="/tmp"))  # gpg-agent's socket path must stay short
    (where / "gnupghome").write_text(str(home))
    env = dict(ENV, GNUPGHOME=str(home))
    sh(["git", "init", "-q", "-b", "main"], repo, env)
    sh(["git", "commit", "-q", "--allow-empty", "-m", "root"], repo, env)
    sh(["gpg", "--batch", "--pinentry-mode", "loopback", "--passphrase", "", "--quick-gen-key",
        "Bench <bench@example.org>", "ed25519", "sign", "never"], repo, env)
    fpr = [ln.split(":")[9] for ln in sh(["gpg", "--with-colons", "--list-secret-keys"], repo, env).splitlines()
           if ln.startswith("fpr:")][0]
    sh(["git", "config", "vaultmesh.signingKey", fpr], repo, env)
    sh([sys.executable, "-m", "git_vaultmesh", "init"], repo, env)
    out = sh([sys.executable, "-c", BUILD, str(entries), "10000"], repo, env)
    batches = [json.loads(line)["seconds"] for line in out.splitlines() if line.startswith("{")]
    sh(["git", "gc", "--quiet"], repo, env)  # what auto-gc (or a clone, which receives a pack) leaves
    (where / "append.json").write_text(json.dumps(batches))
    (where / ".done").write_text("ok")
    return batches


def timed(cmd: list[str], cwd: Path, env: dict[str, str] | None = None) -> tuple[float, float]:
    """(wall, cpu) seconds of one whole run; cpu = user + system of the process and every process it waited for
    (its git children), which a loaded machine inflates far less than wall time."""
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env or ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - t
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode not in (0, 1):
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode})")
    return elapsed, usage.ru_utime + usage.ru_stime


def paired(runs: int, cmd: list[str], floor: list[str], cwd: Path, env: dict[str, str]) -> list[float]:
    """Medians of (cmd wall, floor wall, wall ratio, cmd cpu, floor cpu, cpu ratio), the ratios taken pair by
    pair: A B A B …, so the machine's drift cancels."""
    timed(cmd, cwd, env)
    timed(floor, cwd, env)
    a, b = [], []
    for _ in range(runs):
        a.append(timed(cmd, cwd, env))
        b.append(timed(floor, cwd, env))
    med = statistics.median
    return [med(x[0] for x in a), med(x[0] for x in b), med(x[0] / y[0] for x, y in zip(a, b)),
            med(x[1] for x in a), med(x[1] for x in b), med(x[1] / max(y[1], 1e-6) for x, y in zip(a, b))]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--entries", type=int, default=100_000)
    ap.add_argument("--runs", type=int, default=21)
    ap.add_argument("--rebuild", action="store_true", help="build the cached ledger again")
    args = ap.parse_args()
    import compileall

    compileall.compile_dir(str(ROOT / "git_vaultmesh"), quiet=1)  # under PYTHONDONTWRITEBYTECODE each run recompiles
    where = CACHE / f"query-{args.entries}"
    if args.rebuild or not (where / ".done").exists():
        t = time.perf_counter()
        build(where, args.entries)
        print(f"built a ledger of {args.entries} entries by bulk append in {time.perf_counter() - t:.1f} s")
    repo = where / "repo"
    env = dict(ENV, GNUPGHOME=(where / "gnupghome").read_text())
    batches = json.loads((where / "append.json").read_text())
    vm = ["git", "vaultmesh"]
    floor = [sys.executable, "-c", "import argparse, json, sqlite3"]
    index = repo / ".git" / "vaultmesh" / "index.sqlite"

    print(f"ledger: {args.entries} entries + genesis, objects packed (git gc); {args.runs} runs each, medians; "
          f"interpreter {sys.executable}")
    cold = []
    for _ in range(3):
        for suffix in ("", "-wal", "-shm"):
            Path(str(index) + suffix).unlink(missing_ok=True)
        cold.append(timed([*vm, "query", "postgres", "--limit", "20"], repo, env))
    print(f"{'cold index rebuild':<34} {statistics.median(c[0] for c in cold):8.2f} s wall "
          f"{statistics.median(c[1] for c in cold):6.2f} s cpu   (target <= 10 s)")
    print(f"{'bulk append at build, per 10k':<34} {statistics.median(batches):8.2f} s wall "
          f"({len(batches)} batches, max {max(batches):.2f} s; the machine's load then, not now)")
    scratch = Path(tempfile.mkdtemp(prefix="vm-bq-"))
    try:  # on a copy, so the cached ledger keeps its size: 10k entries onto the full ledger, in this run
        shutil.copytree(repo, scratch / "repo", symlinks=True)
        bulk = [timed([sys.executable, "-c", GROW, "10000"], scratch / "repo", env) for _ in range(3)]
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print(f"{'bulk append of 10k, now':<34} {statistics.median(b[0] for b in bulk):8.2f} s wall "
          f"{statistics.median(b[1] for b in bulk):6.2f} s cpu   (target <= 10 s; 3 runs)")
    rows = [
        ("query postgres --limit 20", [*vm, "query", "postgres", "--limit", "20"]),
        ("query --component --since --until", [*vm, "query", "--component", "svc-07", "--since", "2024-03-01",
                                               "--until", "2024-03-02"]),
        ("list releases", [*vm, "list", "releases"]),
        ("list adrs", [*vm, "list", "adrs"]),
        ("timeline --since/--until (1 day)", [*vm, "timeline", "--since", "2024-02-01", "--until", "2024-02-01"]),
    ]
    print(f"{'':<34} {'wall':>8} {'floor':>8} {'ratio':>6}   {'cpu':>8} {'floor':>8} {'ratio':>6}")

    def show(name: str, m: list[float], target: str) -> None:
        print(f"{name:<34} {m[0] * 1000:6.1f}ms {m[1] * 1000:6.1f}ms {m[2]:5.2f}x   {m[3] * 1000:6.1f}ms "
              f"{m[4] * 1000:6.1f}ms {m[5]:5.2f}x  ({target})")

    for name, cmd in rows:
        show(name, paired(args.runs, cmd, floor, repo, env), "target <= 1.5x")
    grep = ["sh", "-c", "grep -i postgres old-tool-records.txt | tail -n 20"]
    show("query vs the old tool's grep", paired(args.runs, [*vm, "query", "postgres", "--limit", "20"], grep, repo,
                                                env), "target <= 1.0x")
    state = repo / ".git" / "vaultmesh" / "doctor-state.json"
    state.unlink(missing_ok=True)
    sweep = timed([*vm, "doctor", "--full"], repo, env)  # every entry: seconds at this size, so one run
    print(f"{'doctor --full (every entry)':<34} {sweep[0]:8.2f} s wall {sweep[1]:6.2f} s cpu")
    show("doctor (remembered clean state)", paired(args.runs, [*vm, "doctor"], floor, repo, env),
         "target <= 100 ms wall")  # paired() runs it once first: that run is the warm-up
    grown = []
    for _ in range(3):
        sh([sys.executable, "-c", GROW, "100"], repo, env)
        grown.append(timed([*vm, "query", "grown", "--limit", "1"], repo, env))
    size = sum(Path(str(index) + x).stat().st_size for x in ("", "-wal") if Path(str(index) + x).exists())
    print(f"{'index file':<34} {size / 2**20:6.1f} MiB")
    print(f"{'extend by 100 entries + query':<34} {statistics.median(g[0] for g in grown) * 1000:6.0f}ms wall "
          f"{statistics.median(g[1] for g in grown) * 1000:6.0f}ms cpu")
    after = []
    for _ in range(3):
        sh([sys.executable, "-c", GROW, "100"], repo, env)
        after.append(timed([*vm, "doctor"], repo, env))
    print(f"{'append 100 entries, then doctor':<34} {statistics.median(a[0] for a in after) * 1000:6.0f}ms wall "
          f"{statistics.median(a[1] for a in after) * 1000:6.0f}ms cpu  (checks the 100 new entries only)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
