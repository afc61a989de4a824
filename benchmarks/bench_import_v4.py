#!/usr/bin/env python3
"""import-v4 figures: a synthetic VaultMesh v4.1 tree of N receipts, as ratios against a floor measured in the
same run.

    python benchmarks/bench_import_v4.py [--receipts 10000] [--runs 3]

The tree (cached under /tmp/vm-bench-cache/import-v4) mixes the shapes real trees hold: YAML front-matter
`.receipt` files (some with an artifact and `.asc`/`.tsr` beside it: empty, HTML, or a real RFC 3161 response),
JSON receipts with malformed timestamps, and ADR Markdown. Each run imports it into a fresh ledger:

* floor              a Python process that reads every file and SHA-256es it (what any importer must do)
* import (N new)     `git vaultmesh import-v4 TREE` into a fresh ledger: parse, assess, one batch signature, one
                     append                                                                    target <= 10 s
* re-import          the same command again: every receipt already imported, nothing appended

This is a script, not a test: no test asserts a time.
"""

from __future__ import annotations

import argparse
import hashlib
import json
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
CACHE = Path("/tmp/vm-bench-cache/import-v4")
ENV = dict(os.environ, GIT_CONFIG_NOSYSTEM="1", GIT_AUTHOR_NAME="Bench", GIT_AUTHOR_EMAIL="b@example.org",
           GIT_COMMITTER_NAME="Bench", GIT_COMMITTER_EMAIL="b@example.org", PYTHONPATH=str(ROOT))

FLOOR = """
import hashlib, os, sys
n = 0
for d, _, fs in os.walk(sys.argv[1]):
    for f in fs:
        with open(os.path.join(d, f), "rb") as fh:
            hashlib.sha256(fh.read()).hexdigest()
        n += 1
print(n)
"""


def run(cwd: Path, *args: str, env: dict[str, str] | None = None) -> str:
    return subprocess.run(args, cwd=cwd, env=env or ENV, check=True, capture_output=True, text=True).stdout.strip()


def build_tree(n: int) -> Path:
    tree = CACHE / f"tree-{n}"
    if (tree / ".done").exists():
        return tree
    shutil.rmtree(tree, ignore_errors=True)
    from git_vaultmesh.rfc3161 import tsa
    from git_vaultmesh.rfc3161.server import make_identity, sign_token

    ident = make_identity("ec")
    deploy, adr, dist = tree / "ops/receipts/deploy", tree / "ops/receipts/adr", tree / "dist"
    for d in (deploy, adr, dist):
        d.mkdir(parents=True)
    for i in range(n):
        kind = i % 10
        if kind < 6:
            art = f"app-{i}.tar.gz"
            data = f"artifact {i}\n".encode()
            if kind < 3:
                (dist / art).write_bytes(data)
            digest = hashlib.sha256(data).hexdigest()
            (deploy / f"app-{i}.receipt").write_text(
                f"---\ntype: deployment\ncomponent: app-{i % 97}\nversion: v{i}.0\ntimestamp: 2025-10-01T12:00:00Z\n"
                f"evidence:\n  artifact: dist/{art}\n  sha256: {digest}\nstatus: active\nverified_by: remembrancer-cli\n"
                f"---\n\nThis receipt attests to the deployment of app {i}.\n")
            if kind == 0:
                (dist / f"{art}.asc").write_bytes(b"")
                (dist / f"{art}.tsr").write_bytes(b"<html>502 Bad Gateway</html>\n")
            elif kind == 1 and i % 100 == 1:  # real tokens are signed here one by one: a few suffice
                (dist / f"{art}.tsr").write_bytes(sign_token(ident, tsa.build_request(data)[0]))
        elif kind < 9:
            (deploy / f"svc-{i}.json").write_text(json.dumps({
                "component": f"svc-{i % 53}", "version": f"v1.{i}", "timestamp": "2025-01-XX",
                "image": f"registry.example.org/svc:{i}", "digest": "sha256:" + hashlib.sha256(b"%d" % i).hexdigest(),
                "status": "operational", "covenant_seals": [1, 2], "proof_chain": "registry digest + receipt"},
                indent=2) + "\n")
        else:
            (adr / f"ADR-{i:05d}-decision.md").write_text(
                f"# ADR-{i:05d}: Decision {i}\n\n**Status**: Accepted\n**Date**: 2025-10-01\n\n## Context\n\nText.\n")
    (tree / ".done").write_text("ok\n")
    return tree


def fresh_ledger(home: Path, fpr: str) -> Path:
    repo = Path(tempfile.mkdtemp(prefix="vm-imp-", dir=CACHE))
    env = dict(ENV, GNUPGHOME=str(home))
    run(repo, "git", "init", "-q", env=env)
    run(repo, "git", "commit", "-q", "--allow-empty", "-m", "start", env=env)
    run(repo, "git", "config", "vaultmesh.signingKey", fpr, env=env)
    run(repo, sys.executable, "-m", "git_vaultmesh", "init", env=env)
    return repo


CPU: dict[str, list[float]] = {}


def timed(cwd: Path, *args: str, env: dict[str, str], label: str = "") -> float:
    """Wall seconds; the child's CPU seconds (user + system) are kept under `label`: on a shared machine the
    wall time also measures everyone else's load."""
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    run(cwd, *args, env=env)
    wall = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    CPU.setdefault(label, []).append(r1.ru_utime - r0.ru_utime + r1.ru_stime - r0.ru_stime)
    return wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--receipts", type=int, default=10000)
    ap.add_argument("--runs", type=int, default=3)
    a = ap.parse_args()
    CACHE.mkdir(parents=True, exist_ok=True)
    tree = build_tree(a.receipts)
    home = Path(tempfile.mkdtemp(prefix="vmb", dir="/tmp"))
    os.chmod(home, 0o700)
    env = dict(ENV, GNUPGHOME=str(home))
    try:
        subprocess.run(["gpg", "--batch", "--pinentry-mode", "loopback", "--passphrase", "", "--quick-gen-key",
                        "Bench <bench@example.org>", "ed25519", "sign", "never"], env=env, check=True,
                       capture_output=True)
        out = run(ROOT, "gpg", "--batch", "--with-colons", "--list-secret-keys", env=env)
        fpr = next(line.split(":")[9] for line in out.splitlines() if line.startswith("fpr:"))
        floors, imports, reimports = [], [], []
        for _ in range(a.runs):
            floors.append(timed(ROOT, sys.executable, "-c", FLOOR, str(tree), env=env, label="floor"))
            repo = fresh_ledger(home, fpr)
            try:
                imports.append(timed(repo, sys.executable, "-m", "git_vaultmesh", "import-v4", str(tree), env=env,
                                     label="import"))
                reimports.append(timed(repo, sys.executable, "-m", "git_vaultmesh", "import-v4", str(tree), env=env,
                                       label="re-import"))
            finally:
                shutil.rmtree(repo, ignore_errors=True)
        floor, floor_cpu = statistics.median(floors), statistics.median(CPU["floor"])
        for name, xs, label, target in (("import (N new)", imports, "import", "<= 10 s"),
                                        ("re-import (nothing new)", reimports, "re-import", "")):
            med, cpu = statistics.median(xs), statistics.median(CPU[label])
            print(f"{name:<26} wall {med:7.2f} s ({med / floor:5.1f}x floor)  cpu {cpu:6.2f} s "
                  f"({cpu / floor_cpu:5.1f}x floor)  {target}")
        print(f"{'floor (read + sha256)':<26} wall {floor:7.2f} s  cpu {floor_cpu:6.2f} s  ({a.receipts} receipts, "
              f"median of {a.runs}; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")
    finally:
        subprocess.run(["gpgconf", "--kill", "all"], env=env, capture_output=True)
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
