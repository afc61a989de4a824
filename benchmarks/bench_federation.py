#!/usr/bin/env python3
"""Federation figures, as ratios against `git fetch` of the same refs measured in the same run.

    python benchmarks/bench_federation.py [--entries 10000] [--peers 3] [--runs 3] [--baseline DIR]

Builds (once, cached under /tmp/vm-bench-cache) peer repositories whose ledgers hold N content entries each,
appended in bulk (`ledger.append_bodies`: one gpg signature per batch, when this version has it; one per entry
otherwise — the output says which), then times whole processes:

* fetch floor       `git fetch <peer> refs/vaultmesh/log` into a fresh repository
* sync (N new)      `git vaultmesh federate sync <peer>` in a fresh ledger: fetch, verify, witness      target <= 10 s and <= 3x
* 1 new entry       `federate sync` of a peer that appended one entry after the N we witnessed, against the fetch
                    of that increment
* no-op fetch       `git fetch <peer> refs/vaultmesh/log` with nothing new
* sync, nothing new `git vaultmesh federate sync <peer>` again                                           target <= 1.5x
* all peers no-op   `federate sync` of all P peers with nothing new, against P no-op fetches
* merged view       `git vaultmesh federate status --json` over P peers x N entries                       target <= 2 s

`python -m git_vaultmesh --version` is printed too: the interpreter and CLI start-up every figure above includes
(a no-op `git fetch` is a few milliseconds of C). With --baseline DIR (another checkout of git-vaultmesh, e.g. the
previous release) the same scenarios run with that code as well, in the same run, so before/after ratios compare.

This is a script, not a test: no test asserts a time.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
CACHE = Path("/tmp/vm-bench-cache/federation")
ENV = dict(os.environ, GIT_CONFIG_NOSYSTEM="1", GIT_AUTHOR_NAME="Bench", GIT_AUTHOR_EMAIL="b@example.org",
           GIT_COMMITTER_NAME="Bench", GIT_COMMITTER_EMAIL="b@example.org", PYTHONPATH=str(ROOT))


def run(cwd: Path, *args: str) -> str:
    return subprocess.run(args, cwd=cwd, env=ENV, check=True, capture_output=True, text=True).stdout.strip()


def vm(cwd: Path, *args: str) -> str:
    return run(cwd, sys.executable, "-m", "git_vaultmesh", *args)


def gpg_key(home: Path, name: str) -> str:
    env = dict(ENV, GNUPGHOME=str(home))
    subprocess.run(["gpg", "--batch", "--pinentry-mode", "loopback", "--passphrase", "", "--quick-gen-key",
                    f"{name} <{name}@example.org>", "ed25519", "sign", "never"], env=env, check=True,
                   capture_output=True)
    out = subprocess.run(["gpg", "--batch", "--with-colons", "--list-secret-keys", f"{name}@example.org"], env=env,
                         check=True, capture_output=True, text=True).stdout
    return next(line.split(":")[9] for line in out.splitlines() if line.startswith("fpr:"))


def build_peer(path: Path, name: str, entries: int, home: Path) -> str:
    """A repository whose ledger holds `entries` deploy entries; returns the signer's fingerprint."""
    if (path / ".done").exists():
        return (path / ".done").read_text().strip()
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    run(path, "git", "init", "-q", "-b", "main")
    (path / "f").write_text(name)
    run(path, "git", "add", ".")
    run(path, "git", "commit", "-qm", "one")
    fpr = gpg_key(home, name)
    run(path, "git", "config", "vaultmesh.signingKey", fpr)
    vm(path, "init")
    code = f"""
import sys
from git_vaultmesh import ledger
from git_vaultmesh.config import signing_key
from git_vaultmesh.entry import make_entry, canonical, now_rfc3339
from git_vaultmesh.git import Repo
from git_vaultmesh.signing import sign
repo = Repo.discover()
key = signing_key(repo)
head = ledger.read_head(repo)
bodies = [{{"type": "deploy", "log": head.log_id, "recorded_at": now_rfc3339(), "component": "{name}",
           "version": str(i), "environment": "prod", "message": "deploy %d of {name}" % i}}
          for i in range({entries})]
bulk = getattr(ledger, "append_bodies", None)
for start in range(0, len(bodies), 5000):
    chunk = bodies[start:start + 5000]
    if bulk is not None:
        bulk(repo, key, chunk)
    else:
        ledger.append(repo, key, [make_entry(b, [{{"format": key.format, "signer": key.fingerprint,
                                                   "sig": sign(key, canonical(b))}}]) for b in chunk])
print("bulk" if bulk is not None else "per-entry")
"""
    mode = subprocess.run([sys.executable, "-c", code], cwd=path, env=dict(ENV, GNUPGHOME=str(home)), check=True,
                          capture_output=True, text=True).stdout.strip()
    (path / ".mode").write_text(mode)
    (path / ".done").write_text(fpr)
    return fpr


class Clock:
    """Wall time, and CPU time (user + system of the process and every child it waited for): on a shared
    machine the CPU figure is the steadier one, so both are printed."""

    def __enter__(self) -> Clock:
        self.t, self.c = time.perf_counter(), self._cpu()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall, self.cpu = time.perf_counter() - self.t, self._cpu() - self.c

    @staticmethod
    def _cpu() -> float:
        ru = resource.getrusage(resource.RUSAGE_CHILDREN)
        return ru.ru_utime + ru.ru_stime


def timed(cwd: Path, args: list[str], env: dict[str, str]) -> tuple[float, float]:
    with Clock() as c:
        subprocess.run(args, cwd=cwd, env=env, check=True, capture_output=True)
    return c.wall, c.cpu


def fresh_ledger(path: Path, home: Path, env: dict[str, str]) -> None:
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    run(path, "git", "init", "-q", "-b", "main")
    (path / "f").write_text("us")
    run(path, "git", "add", ".")
    run(path, "git", "commit", "-qm", "one")
    fpr = (CACHE / "us.fpr").read_text().strip() if (CACHE / "us.fpr").exists() else None
    if fpr is None:
        fpr = gpg_key(home, "us")
        (CACHE / "us.fpr").write_text(fpr)
    run(path, "git", "config", "vaultmesh.signingKey", fpr)
    subprocess.run([sys.executable, "-m", "git_vaultmesh", "init"], cwd=path, env=env, check=True, capture_output=True)


def med(xs: list[tuple[float, float]]) -> tuple[float, float]:
    return statistics.median(x[0] for x in xs), statistics.median(x[1] for x in xs)


class Code:
    """One version of git-vaultmesh: `cur` (this checkout) or `base` (--baseline)."""

    def __init__(self, label: str, slug: str, root: Path) -> None:
        self.label, self.slug = label, slug
        self.env = dict(ENV, PYTHONPATH=str(root))

    @staticmethod
    def vm(*args: str) -> list[str]:
        return [sys.executable, "-m", "git_vaultmesh", *args]


def scenarios(code: Code, peers: dict[str, Path], fprs: dict[str, str], runs: int,
              home: Path) -> dict[str, tuple[float, float]]:
    """Every figure for one version of the code, each against its floor measured right before it."""
    env = code.env
    first_name, first = next(iter(peers.items()))
    us = CACHE / f"us-{code.slug}"
    r: dict[str, list[tuple[float, float]]] = {k: [] for k in ("floor", "sync", "noop_floor", "noop", "all_floor", "all",
                                                  "startup", "view")}
    for _ in range(runs):
        scratch = CACHE / "fetch-floor"
        shutil.rmtree(scratch, ignore_errors=True)
        run(CACHE, "git", "init", "-q", str(scratch))
        r["floor"].append(timed(scratch, ["git", "fetch", "-q", f"file://{first}", "refs/vaultmesh/log:refs/x"], env))
        fresh_ledger(us, home, env)
        subprocess.run(code.vm("federate", "add", first_name, f"file://{first}", "--trust-root", fprs[first_name]),
                       cwd=us, env=env, check=True, capture_output=True)
        r["sync"].append(timed(us, code.vm("federate", "sync", first_name), env))
    subprocess.run(code.vm("federate", "sync", first_name), cwd=us, env=env, check=True, capture_output=True)
    for _ in range(runs):
        r["noop_floor"].append(timed(us, ["git", "fetch", "-q", f"file://{first}", "refs/vaultmesh/log"], env))
        r["noop"].append(timed(us, code.vm("federate", "sync", first_name), env))
        r["startup"].append(timed(us, code.vm("--version"), env))
    for name, path in list(peers.items())[1:]:
        subprocess.run(code.vm("federate", "add", name, f"file://{path}", "--trust-root", fprs[name]), cwd=us,
                       env=env, check=True, capture_output=True)
    subprocess.run(code.vm("federate", "sync"), cwd=us, env=env, check=True, capture_output=True)
    subprocess.run(code.vm("federate", "sync"), cwd=us, env=env, check=True, capture_output=True)  # settles
    for _ in range(runs):
        with Clock() as c:
            for path in peers.values():
                subprocess.run(["git", "fetch", "-q", f"file://{path}", "refs/vaultmesh/log"], cwd=us, env=env,
                               check=True, capture_output=True)
        r["all_floor"].append((c.wall, c.cpu))
        r["all"].append(timed(us, code.vm("federate", "sync"), env))
        r["view"].append(timed(us, code.vm("federate", "status", "--json"), env))
    # one new entry after N witnessed: the witnessed prefix is not verified again
    inc = CACHE / "inc-peer"
    shutil.rmtree(inc, ignore_errors=True)
    shutil.copytree(first, inc, symlinks=True)
    scratch = CACHE / "fetch-floor"
    shutil.rmtree(scratch, ignore_errors=True)
    run(CACHE, "git", "init", "-q", str(scratch))
    run(scratch, "git", "fetch", "-q", f"file://{inc}", "refs/vaultmesh/log:refs/x")
    subprocess.run(code.vm("federate", "add", "inc", f"file://{inc}", "--trust-root", fprs[first_name]), cwd=us,
                   env=env, check=True, capture_output=True)
    subprocess.run(code.vm("federate", "sync", "inc"), cwd=us, env=env, check=True, capture_output=True)
    r["inc_floor"], r["inc"] = [], []
    for i in range(runs):
        subprocess.run(code.vm("record", "HEAD", "--environment", f"inc{i}"), cwd=inc, env=env, check=True,
                       capture_output=True)
        r["inc_floor"].append(timed(scratch, ["git", "fetch", "-q", f"file://{inc}", "refs/vaultmesh/log:refs/x"],
                                    env))
        r["inc"].append(timed(us, code.vm("federate", "sync", "inc"), env))
    return {k: med(v) for k, v in r.items()}


def report(label: str, f: dict[str, tuple[float, float]], n: int, p: int) -> None:
    def line(what: str, key: str, floor: str | None, target: str = "", limit: float = 0.0, ceiling: float = 0.0) -> None:
        (t, c), (ft, fc) = f[key], (f[floor] if floor else (0.0, 0.0))
        ratio = f"{t / ft:7.2f}x {c / fc:7.2f}x" if floor else " " * 17
        ok = (not limit or t / ft <= limit) and (not ceiling or t <= ceiling)
        verdict = f"  {target}: {'PASS' if ok else 'MISS'}" if target else ""
        print(f"  {what:<38} {t:8.3f} s {c:8.3f} s {ratio}{verdict}")

    print(f"[{label}]{'':<32}   wall      cpu       ratio (wall, cpu)")
    line("fetch floor (N new)", "floor", None)
    line("federate sync (N new)", "sync", "floor", "<= 10 s and <= 3x", 3, 10)
    line("fetch of 1 new entry", "inc_floor", None)
    line("federate sync (1 new after N witnessed)", "inc", "inc_floor")
    line("no-op fetch", "noop_floor", None)
    line("federate sync (nothing new)", "noop", "noop_floor", "<= 1.5x", 1.5)
    line("  CLI start-up alone (--version)", "startup", "noop_floor")
    line(f"{p} no-op fetches", "all_floor", None)
    line(f"federate sync, {p} peers, nothing new", "all", "all_floor")
    line(f"merged view ({p} x {n})", "view", None, "<= 2 s", 0, 2)
    print(f"  per entry: sync {f['sync'][0] / n * 1e6:.0f} us, merged view {f['view'][0] / (n * p) * 1e6:.1f} us")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--entries", type=int, default=10_000)
    ap.add_argument("--peers", type=int, default=3)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--baseline", type=Path, help="another git-vaultmesh checkout, timed in the same run")
    a = ap.parse_args()
    CACHE.mkdir(parents=True, exist_ok=True)
    home = CACHE / "g"
    home.mkdir(mode=0o700, exist_ok=True)
    ENV["GNUPGHOME"] = str(home)  # every git vaultmesh below signs with the throwaway keys made there
    t0 = time.perf_counter()
    peers = {f"p{i}-{a.entries}": CACHE / f"p{i}-{a.entries}" for i in range(a.peers)}
    fprs = {n: build_peer(p, n, a.entries, home) for n, p in peers.items()}
    mode = (next(iter(peers.values())) / ".mode").read_text()
    print(f"peers: {a.peers} x {a.entries} entries ({mode} signatures), built or cached in "
          f"{time.perf_counter() - t0:.1f} s; medians of {a.runs} run(s)")
    versions = [Code("this checkout", "cur", ROOT)]
    if a.baseline is not None:
        versions.append(Code(f"baseline {a.baseline.name}", "base", a.baseline.resolve()))
    for code in versions:
        report(code.label, scenarios(code, peers, fprs, a.runs, home), a.entries, a.peers)
    return 0


if __name__ == "__main__":
    sys.exit(main())
