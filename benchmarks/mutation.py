#!/usr/bin/env python3
"""Mutation testing, one module at a time, bounded in time: does every check have a test that needs it?

    pip install cosmic-ray            # not a test dependency: only this script uses it
    python benchmarks/mutation.py git_vaultmesh/merkle.py --tests tests/test_merkle.py
    python benchmarks/mutation.py git_vaultmesh/rfc3161/tsa.py --tests tests/test_tsa.py tests/test_der.py \\
        -k "not server and not serve_forever and not client" --sample 300 --budget 1800

cosmic-ray enumerates the mutants of the module (every operator it ships: comparison, boolean, arithmetic,
number and keyword replacement, `break`/`continue` swaps, ...). This script copies the checkout's package
and tests into a scratch directory (the working tree is never mutated, so editing or committing while it
runs is safe), applies one mutant at a time there, runs the chosen tests with `pytest -x` (a killed mutant
usually stops at its first failing test) and records each outcome in a cosmic-ray session database, so
`cr-report <workdir>/session.sqlite` also works. `--sample N` draws N mutants with a fixed seed; `--budget`
stops at a deadline with what it has. It prints, per module, killed / survived / incompetent (a mutant the
tests could not even import or that timed out) and the score killed / (killed + survived), and writes every
survivor's diff to `<workdir>/survivors.txt`.
"""

from __future__ import annotations

import argparse
import random
import shlex
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def _copy_checkout(dest: Path) -> None:
    """The package, the tests and pyproject (pytest's configuration) into `dest`."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".hypothesis")
    for name in ("git_vaultmesh", "tests"):
        shutil.copytree(ROOT / name, dest / name, ignore=ignore)
    shutil.copy2(ROOT / "pyproject.toml", dest / "pyproject.toml")


def run(module: str, tests: list[str], select: str | None, sample: int | None, seed: int, budget: float,
        timeout: float, workdir: Path) -> dict[str, Any]:
    import os

    from cosmic_ray.commands import init
    from cosmic_ray.mutating import mutate_and_test
    from cosmic_ray.work_db import WorkDB, use_db
    from cosmic_ray.work_item import TestOutcome, WorkerOutcome

    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    _copy_checkout(workdir)
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests]
    if select:
        cmd += ["-k", select]
    test_command = " ".join(shlex.quote(c) for c in cmd)
    counts = {"killed": 0, "survived": 0, "incompetent": 0, "no-test": 0}
    survivors: list[str] = []
    start = time.monotonic()
    old_cwd = os.getcwd()
    os.chdir(workdir)  # mutate_and_test works on paths relative to the copy
    try:
        with use_db(str(workdir / "session.sqlite"), WorkDB.Mode.create) as db:
            init([Path(module)], db, {})
            items = sorted(db.work_items, key=lambda w: (str(w.mutations[0].start_pos), w.mutations[0].operator_name,
                                                           w.mutations[0].occurrence))
            total = len(items)
            if sample is not None and sample < total:
                items = random.Random(seed).sample(items, sample)
            done = 0
            for item in items:
                if time.monotonic() - start > budget:
                    break
                result = mutate_and_test(item.mutations, test_command, timeout)
                db.set_result(item.job_id, result)
                done += 1
                if result.worker_outcome == WorkerOutcome.NO_TEST:
                    counts["no-test"] += 1
                elif result.test_outcome == TestOutcome.SURVIVED:
                    counts["survived"] += 1
                    m = item.mutations[0]
                    survivors.append(f"## {m.module_path}:{m.start_pos[0]} {m.operator_name} "
                                     f"(in {m.definition_name})\n{result.diff}\n")
                elif result.test_outcome == TestOutcome.KILLED:
                    counts["killed"] += 1
                else:
                    counts["incompetent"] += 1
                if done % 25 == 0:
                    print(f"  {module}: {done}/{len(items)} run, {counts}", file=sys.stderr, flush=True)
    finally:
        os.chdir(old_cwd)
    (workdir / "survivors.txt").write_text("\n".join(survivors))
    judged = counts["killed"] + counts["survived"]
    return {"module": module, "mutants": total, "sampled": len(items), "run": done, **counts,
            "score": round(counts["killed"] / judged, 4) if judged else None,
            "seconds": round(time.monotonic() - start, 1), "tests": test_command}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("module", help="the module to mutate, relative to the checkout (git_vaultmesh/merkle.py)")
    ap.add_argument("--tests", nargs="+", required=True, help="the test files that should kill its mutants")
    ap.add_argument("-k", dest="select", help="a pytest -k expression to leave slow, unrelated tests out")
    ap.add_argument("--sample", type=int, help="run only this many mutants, drawn with --seed")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--budget", type=float, default=1800.0, help="stop starting mutants after this many seconds")
    ap.add_argument("--timeout", type=float, default=120.0, help="a test run longer than this is 'incompetent'")
    ap.add_argument("--workdir", type=Path, help="scratch directory (default: a new one under the temp dir)")
    args = ap.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="vm-mutation-")) / "work"
    res = run(args.module, args.tests, args.select, args.sample, args.seed, args.budget, args.timeout, workdir)
    print(f"{res['module']}: {res['killed']} killed, {res['survived']} survived, {res['incompetent']} incompetent "
          f"of {res['run']} run ({res['sampled']} sampled of {res['mutants']} mutants) in {res['seconds']} s; "
          f"score {res['score']}")
    print(f"survivors: {workdir / 'survivors.txt'}; session: {workdir / 'session.sqlite'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
