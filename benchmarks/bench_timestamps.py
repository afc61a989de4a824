#!/usr/bin/env python3
"""Timestamp performance figures against the built-in RFC 3161 server on 127.0.0.1.

    python benchmarks/bench_timestamps.py [--runs 15] [--pending 1000]

* record overhead   `git vaultmesh record HEAD --environment eN` (a deploy; a fresh statement every run) in a
                    ledger WITHOUT a TSA and in one WITH a TSA in policy, whole processes, run alternately so
                    both see the same load; the figure is the difference of the medians.   target <= 50 ms
* timestamp --pending   N entries made pending in ONE append through the ledger API (the TSA is in the
                    policy, so each needs a token), then `git vaultmesh timestamp --pending` is timed as a
                    whole process: N requests in parallel batches, N tokens verified, N timestamp entries
                    signed, one append.                                                  target <= 30 s

The TSA runs in this process (a thread), the commands in their own processes, which import the INSTALLED
package (as users run it, with its bytecode compiled by pip): the script refuses to run when that package is
not this checkout (`pip install .` first). This is a script, not a test: no test asserts a time.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from git_vaultmesh import ledger  # noqa: E402
from git_vaultmesh.config import signing_key  # noqa: E402
from git_vaultmesh.entry import now_rfc3339  # noqa: E402
from git_vaultmesh.git import Repo  # noqa: E402
from git_vaultmesh.rfc3161.server import TsaServer, make_identity  # noqa: E402
from git_vaultmesh.rfc3161.timestamping import sign_bodies  # noqa: E402

GIT_ENV = {
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_AUTHOR_NAME": "Bench Author", "GIT_AUTHOR_EMAIL": "author@example.org",
    "GIT_COMMITTER_NAME": "Bench Author", "GIT_COMMITTER_EMAIL": "author@example.org",
}


def sh(args: list[str], cwd: Path, env: dict[str, str]) -> str:
    res = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)
    if res.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed ({res.returncode}):\n{res.stdout}\n{res.stderr}")
    return res.stdout


def vm(cwd: Path, env: dict[str, str], *args: str) -> float:
    return vm_cpu(cwd, env, *args)[0]


def vm_cpu(cwd: Path, env: dict[str, str], *args: str) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the process and everything it waited for: git, gpg — not gpg-agent)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    sh([sys.executable, "-m", "git_vaultmesh", *args], cwd, env)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def require_installed_checkout(cwd: Path, env: dict[str, str]) -> str:
    """The installed git_vaultmesh's directory, after checking it holds this checkout's code: timing a stale
    install (or a checkout without bytecode, under PYTHONDONTWRITEBYTECODE) gives figures of other code."""
    where = Path(sh([sys.executable, "-c", "import git_vaultmesh, os; print(os.path.dirname(git_vaultmesh.__file__))"],
                    cwd, env).strip())
    stale = [f.name for f in sorted((ROOT / "git_vaultmesh").rglob("*.py"))
             if not (where / f.relative_to(ROOT / "git_vaultmesh")).is_file()
             or (where / f.relative_to(ROOT / "git_vaultmesh")).read_bytes() != f.read_bytes()]
    if stale:
        raise SystemExit(f"the git_vaultmesh that commands import ({where}) differs from this checkout in "
                         f"{', '.join(stale[:5])}: run `pip install .` first")
    return str(where)


def new_ledger(base: Path, name: str, env: dict[str, str], fpr: str) -> Path:
    path = base / name
    path.mkdir()
    sh(["git", "init", "-q", "-b", "main"], path, env)
    (path / "f.txt").write_text("x\n")
    sh(["git", "add", "."], path, env)
    sh(["git", "commit", "-q", "-m", "one"], path, env)
    sh(["git", "config", "vaultmesh.signingKey", fpr], path, env)
    vm(path, env, "init")
    return path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=15, help="record runs per variant (default 15)")
    ap.add_argument("--pending", type=int, default=1000, help="pending entries for timestamp --pending")
    opts = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="vmbts-", dir="/tmp"))
    gnupg = work / "g"
    gnupg.mkdir(mode=0o700)
    env = dict(os.environ, GNUPGHOME=str(gnupg), HOME=str(work), **GIT_ENV)
    env.pop("GIT_CONFIG_PARAMETERS", None)
    env.pop("SOURCE_DATE_EPOCH", None)
    env.pop("VAULTMESH_NOW", None)
    old_env = dict(os.environ)
    os.environ.update({k: v for k, v in env.items() if k in ("GNUPGHOME", "HOME", *GIT_ENV)})
    try:
        sh(["gpg", "--batch", "--pinentry-mode", "loopback", "--passphrase", "", "--quick-gen-key",
            "Bench <bench@example.org>", "ed25519", "sign", "never"], work, env)
        listing = sh(["gpg", "--batch", "--with-colons", "--list-secret-keys"], work, env)
        fpr = next(line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr:"))
        print(f"timing the installed package in {require_installed_checkout(work, env)}")
        ident = make_identity("ec")
        (work / "ca.pem").write_bytes(ident.ca_cert_pem)
        with TsaServer(ident, max_lifetime=3600) as srv:
            plain = new_ledger(work, "plain", env, fpr)
            stamped = new_ledger(work, "stamped", env, fpr)
            vm(stamped, env, "tsa", "add", "bench", "--url", srv.url, "--ca-cert", str(work / "ca.pem"))
            for path in (plain, stamped):  # warm caches (bytecode, gpg-agent)
                vm(path, env, "record", "HEAD", "--environment", "warm")
            without: list[tuple[float, float]] = []
            with_tsa: list[tuple[float, float]] = []
            for i in range(opts.runs):
                without.append(vm_cpu(plain, env, "record", "HEAD", "--environment", f"e{i}"))
                with_tsa.append(vm_cpu(stamped, env, "record", "HEAD", "--environment", f"e{i}"))
            a, b = statistics.median(w for w, _ in without), statistics.median(w for w, _ in with_tsa)
            ca, cb = statistics.median(c for _, c in without), statistics.median(c for _, c in with_tsa)
            load = os.getloadavg()[0]
            print(f"record without TSA   median {a * 1000:7.1f} ms wall, {ca * 1000:6.1f} ms CPU  (n={opts.runs}, "
                  f"min {min(w for w, _ in without) * 1000:.1f} ms)")
            print(f"record with TSA      median {b * 1000:7.1f} ms wall, {cb * 1000:6.1f} ms CPU  (n={opts.runs}, "
                  f"min {min(w for w, _ in with_tsa) * 1000:.1f} ms)")
            print(f"timestamping adds    {(b - a) * 1000:7.1f} ms wall per record (difference of medians; "
                  f"target <= 50 ms)  {'OK' if b - a <= 0.050 else 'OVER'}; {(cb - ca) * 1000:.1f} ms CPU "
                  f"[load average {load:.1f} on {os.cpu_count()} CPUs]")
            vm(stamped, env, "verify", "--all")

            # --- timestamp --pending over N entries made pending in one append -------------------------
            n = opts.pending
            with Repo.discover(stamped) as repo:
                key = signing_key(repo)
                head = ledger.read_head(repo)
                assert head.log_id is not None
                when = now_rfc3339()
                bodies = [{"type": "decision", "log": head.log_id, "recorded_at": when, "title": f"decision {i}",
                           "status": "accepted"} for i in range(n)]
                started = time.perf_counter()
                made = sign_bodies(key, bodies, jobs=4)
                ledger.append(repo, key, made)
                setup = time.perf_counter() - started
            print(f"setup: {n} pending entries signed and appended in one append in {setup:.1f} s")
            before = int(sh(["git", "rev-list", "--count", "refs/vaultmesh/log"], stamped, env))
            took = vm(stamped, env, "timestamp", "--pending")
            after = int(sh(["git", "rev-list", "--count", "refs/vaultmesh/log"], stamped, env))
            print(f"timestamp --pending  {took:7.2f} s for {n} entries ({after - before} append; "
                  f"{took / n * 1000:.1f} ms per entry; target <= 30 s)  {'OK' if took <= 30 else 'OVER'}")
            t = vm(stamped, env, "verify", "--all")
            print(f"verify --all         {t:7.2f} s over {n} tokens (and every signature)")
    finally:
        subprocess.run(["gpgconf", "--kill", "all"], env=env, capture_output=True)
        os.environ.clear()
        os.environ.update(old_env)
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
