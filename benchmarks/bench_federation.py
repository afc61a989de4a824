#!/usr/bin/env python3
"""Federation figures, as ratios against `git fetch` of the same refs measured in the same run.

    python benchmarks/bench_federation.py [--entries 10000] [--peers 3] [--runs 5]

Builds (once, cached under /tmp/vm-bench-cache) peer repositories whose ledgers hold N content entries each,
appended in bulk (`ledger.append_bodies`: one gpg signature per batch, when this version has it; one per entry
otherwise — the output says which), then times whole processes:

* fetch floor       `git fetch <peer> refs/vaultmesh/log` into a fresh repository
* sync (N new)      `git vaultmesh federate sync <peer>` in a fresh ledger: fetch, verify, witness      target <= 10 s and <= 3x
* merged view       `git vaultmesh federate status --json` over P peers x N entries                       target <= 2 s
* no-op fetch       `git fetch <peer> refs/vaultmesh/log` with nothing new
* sync, nothing new `git vaultmesh federate sync <peer>` again                                           target <= 1.5x

This is a script, not a test: no test asserts a time.
"""

from __future__ import annotations

import argparse
import os
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


def timed(cwd: Path, args: list[str], env: dict[str, str], before: list[list[str]] | None = None) -> float:
    for b in before or []:
        subprocess.run(b, cwd=cwd, env=env, check=True, capture_output=True)
    t = time.perf_counter()
    subprocess.run(args, cwd=cwd, env=env, check=True, capture_output=True)
    return time.perf_counter() - t


def fresh_ledger(path: Path, home: Path) -> None:
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
    subprocess.run([sys.executable, "-m", "git_vaultmesh", "init"], cwd=path, env=dict(ENV, GNUPGHOME=str(home)),
                   check=True, capture_output=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--entries", type=int, default=10_000)
    ap.add_argument("--peers", type=int, default=3)
    ap.add_argument("--runs", type=int, default=5)
    a = ap.parse_args()
    CACHE.mkdir(parents=True, exist_ok=True)
    home = CACHE / "g"
    home.mkdir(mode=0o700, exist_ok=True)
    ENV["GNUPGHOME"] = str(home)  # every git vaultmesh below signs with the throwaway keys made there
    env = dict(ENV)
    t0 = time.perf_counter()
    peers = {f"p{i}-{a.entries}": CACHE / f"p{i}-{a.entries}" for i in range(a.peers)}
    fprs = {n: build_peer(p, n, a.entries, home) for n, p in peers.items()}
    mode = (next(iter(peers.values())) / ".mode").read_text()
    print(f"peers: {a.peers} x {a.entries} entries ({mode} signatures), built or cached in "
          f"{time.perf_counter() - t0:.1f} s")
    first_name, first = next(iter(peers.items()))
    us = CACHE / "us"
    floor, sync = [], []
    for _ in range(a.runs):
        scratch = CACHE / "fetch-floor"
        shutil.rmtree(scratch, ignore_errors=True)
        run(CACHE, "git", "init", "-q", str(scratch))
        floor.append(timed(scratch, ["git", "fetch", "-q", f"file://{first}", "refs/vaultmesh/log:refs/x"], env))
        fresh_ledger(us, home)
        vm(us, "federate", "add", first_name, f"file://{first}", "--trust-root", fprs[first_name])
        sync.append(timed(us, [sys.executable, "-m", "git_vaultmesh", "federate", "sync", first_name], env))
    f, s = statistics.median(floor), statistics.median(sync)
    print(f"fetch floor (N new)            {f:8.3f} s")
    print(f"federate sync (N new)          {s:8.3f} s  {s / f:6.2f}x   target <= 10 s and <= 3x: "
          f"{'PASS' if s <= 10 and s / f <= 3 else 'MISS'}")
    noop_f = [timed(us, ["git", "fetch", "-q", f"file://{first}", "refs/vaultmesh/log"], env) for _ in range(a.runs)]
    noop_s = [timed(us, [sys.executable, "-m", "git_vaultmesh", "federate", "sync", first_name], env)
              for _ in range(a.runs)]
    nf, ns = statistics.median(noop_f), statistics.median(noop_s)
    print(f"no-op fetch                    {nf:8.3f} s")
    print(f"federate sync (nothing new)    {ns:8.3f} s  {ns / nf:6.2f}x   target <= 1.5x: {'PASS' if ns / nf <= 1.5 else 'MISS'}")
    for name, path in list(peers.items())[1:]:
        vm(us, "federate", "add", name, f"file://{path}", "--trust-root", fprs[name])
        subprocess.run([sys.executable, "-m", "git_vaultmesh", "federate", "sync", name], cwd=us, env=env, check=True,
                       capture_output=True)
    view = [timed(us, [sys.executable, "-m", "git_vaultmesh", "federate", "status", "--json"], env)
            for _ in range(a.runs)]
    v = statistics.median(view)
    print(f"merged view ({a.peers} x {a.entries})       {v:8.3f} s            target <= 2 s: {'PASS' if v <= 2 else 'MISS'}")
    print(f"per entry: sync {s / a.entries * 1e6:.0f} us, merged view {v / (a.entries * a.peers) * 1e6:.1f} us")
    return 0


if __name__ == "__main__":
    sys.exit(main())
