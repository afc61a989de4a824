#!/usr/bin/env python3
"""Reliability figures: concurrent appends, kill -9 at random points, and fuzzing of every parser.

    python benchmarks/reliability.py            # full size: 8 x 250 concurrent records, 100 crashes,
                                                # 500 fuzz examples per target (several minutes on 2 cores)
    python benchmarks/reliability.py --quick    # the sizes the tests use
    python benchmarks/reliability.py --only concurrency|crash|fuzz [--json]

Everything is real: git, gpg (a throwaway key in a short GNUPGHOME under /tmp), the CLI run as separate
processes (`python -m git_vaultmesh`, what `git vaultmesh` runs), SIGKILL. Nothing is mocked.

This module is also the library of those scenarios: tests/adversarial/test_races.py, test_crash.py and
test_fuzz.py run the same functions scaled down and assert on the figures they return. It needs the test
extras (hypothesis).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, str(ROOT))

from git_vaultmesh import ledger  # noqa: E402
from git_vaultmesh.entry import Entry, canonical  # noqa: E402
from git_vaultmesh.errors import VaultMeshError  # noqa: E402
from git_vaultmesh.git import Repo  # noqa: E402

# Isolate git from the user's and the system's configuration; identities are fixed.
GIT_ENV = {
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_AUTHOR_NAME": "Rel Author", "GIT_AUTHOR_EMAIL": "author@example.org",
    "GIT_COMMITTER_NAME": "Rel Author", "GIT_COMMITTER_EMAIL": "author@example.org",
}
FULL = {"procs": 8, "per_proc": 250, "crash_runs": 100, "fuzz_examples": 500}
QUICK = {"procs": 4, "per_proc": 10, "crash_runs": 10, "fuzz_examples": 200}
CRASH_SEED = 20240607


# --- a throwaway ledger ------------------------------------------------------------------------------------
def hermetic_env(home: str, gnupghome: str, base: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(base if base is not None else os.environ)
    env.update(GIT_ENV)
    env.update({"HOME": home, "GNUPGHOME": gnupghome})
    for k in ("GIT_CONFIG_PARAMETERS", "SOURCE_DATE_EPOCH", "GIT_DIR", "GIT_WORK_TREE"):
        env.pop(k, None)
    return env


def run_git(cwd: str | Path, *args: str, env: dict[str, str], check: bool = True) -> str:
    res = subprocess.run(["git", *args], cwd=cwd, capture_output=True, env=env)
    if check and res.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} failed: {res.stderr.decode(errors='replace')}")
    return res.stdout.decode().strip()


def vm(cwd: str | Path, *args: str, env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """The real CLI as its own process."""
    return subprocess.run([sys.executable, "-m", "git_vaultmesh", *args], cwd=cwd, capture_output=True,
                          text=True, env=env, timeout=timeout)


def gen_key(gnupghome: str, name: str = "Rel") -> str:
    env = dict(os.environ, GNUPGHOME=gnupghome)
    uid = f"{name} <{name.lower()}@example.org>"
    subprocess.run(["gpg", "--batch", "--pinentry-mode", "loopback", "--passphrase", "", "--quick-gen-key",
                    uid, "ed25519", "sign", "never"], check=True, env=env, capture_output=True)
    out = subprocess.run(["gpg", "--batch", "--with-colons", "--list-secret-keys", uid], check=True, env=env,
                         capture_output=True, text=True).stdout
    return [line.split(":")[9] for line in out.splitlines() if line.startswith("fpr:")][0]


@dataclass
class Ledger:
    """A repository with an initialised ledger, and the environment to run the CLI in it."""

    repo: Path
    env: dict[str, str]
    fingerprint: str
    owned_gnupghome: str | None = None  # removed (agent killed) by close()

    def vm(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return vm(self.repo, *args, env=self.env, timeout=timeout)

    def git(self, *args: str, check: bool = True) -> str:
        return run_git(self.repo, *args, env=self.env, check=check)

    def close(self) -> None:
        if self.owned_gnupghome:
            subprocess.run(["gpgconf", "--kill", "all"], env=dict(self.env, GNUPGHOME=self.owned_gnupghome),
                           capture_output=True)
            shutil.rmtree(self.owned_gnupghome, ignore_errors=True)
            self.owned_gnupghome = None


def make_ledger(root: Path, *, commits: int = 3, tags: dict[str, int] | None = None) -> Ledger:
    """A fresh repo under `root` with `commits` commits, annotated `tags` (name -> commit index), a new key in
    a new short GNUPGHOME, and `git vaultmesh init` run."""
    root.mkdir(parents=True, exist_ok=True)
    home = root / "home"
    home.mkdir(exist_ok=True)
    gnupghome = tempfile.mkdtemp(prefix="vmr", dir="/tmp")
    os.chmod(gnupghome, 0o700)
    fpr = gen_key(gnupghome)
    env = hermetic_env(str(home), gnupghome)
    repo = root / "repo"
    repo.mkdir()
    run_git(repo, "init", "-q", "-b", "main", env=env)
    for i in range(commits):
        (repo / f"file{i}.txt").write_text(f"content {i}\n")
        run_git(repo, "add", ".", env=env)
        run_git(repo, "commit", "-q", "-m", f"commit {i}", env=env)
        for name, at in (tags or {}).items():
            if at == i:
                run_git(repo, "tag", "-a", name, "-m", name, env=env)
    run_git(repo, "config", "vaultmesh.signingKey", fpr, env=env)
    led = Ledger(repo, env, fpr, gnupghome)
    res = led.vm("init")
    if res.returncode != 0:
        led.close()
        raise RuntimeError(f"init failed: {res.stderr}")
    return led


# --- looking at a ledger from outside ------------------------------------------------------------------------
@dataclass
class LogState:
    head: str | None
    notes: str | None
    lines: list[bytes]
    error: str | None = None  # the ledger could not be read at all (what a torn write would look like)


def log_state(repo: Path) -> LogState:
    """Every entry line of the log, read strictly by the package's own reader (it raises on any damage)."""
    with Repo(repo / ".git", repo) as r:
        try:
            head, entries = ledger.load(r)
        except VaultMeshError as exc:
            return LogState(r.ref_oid(ledger.REF_LOG), r.ref_oid(ledger.REF_NOTES), [], f"{exc.code}: {exc.cause}")
        return LogState(head.commit, head.notes, [e.line for e in entries])


def entries_of(lines: list[bytes]) -> list[Entry]:
    from git_vaultmesh.entry import parse_line

    return [parse_line(line) for line in lines]


def lock_files(repo: Path) -> list[str]:
    """Every *.lock under the git dir: git leaves one behind only when a process holding it died."""
    git_dir = repo / ".git"
    return sorted(str(p.relative_to(git_dir)) for p in git_dir.rglob("*.lock"))


def fsck(repo: Path, env: dict[str, str]) -> tuple[bool, str]:
    """`git fsck --full`: clean means exit 0 and nothing reported (dangling objects are not reported here)."""
    res = subprocess.run(["git", "fsck", "--full", "--no-dangling", "--no-progress"], cwd=repo, env=env,
                         capture_output=True, text=True)
    text = (res.stdout + res.stderr).strip()
    return res.returncode == 0 and not text, text


def verify_all(led: Ledger) -> tuple[bool, str]:
    res = led.vm("verify", "--all", "--json")
    try:
        data = json.loads(res.stdout)
    except ValueError:
        return False, res.stderr.strip()[-500:]
    bad = [c for c in data.get("checks", []) if not c.get("ok")]
    return res.returncode == 0 and bool(data.get("ok")), "; ".join(f"{c['code']}: {c['detail']}" for c in bad)


def doctor(led: Ledger, repair: bool = False) -> tuple[bool, list[str]]:
    res = led.vm("doctor", "--json", *(["--repair"] if repair else []))
    try:
        data = json.loads(res.stdout)
    except ValueError:
        return False, [res.stderr.strip()[-300:]]
    return bool(data.get("ok")) and res.returncode == 0, list(data.get("problems", []))


# --- 1. concurrency ------------------------------------------------------------------------------------------
@dataclass
class RecordRun:
    label: str
    rc: int
    seconds: float
    attempts: int | None
    seq: int | None
    error: str


def record_deploy(led: Ledger, label: str) -> RecordRun:
    """One `record HEAD --environment LABEL --json` (a distinct deploy statement per label)."""
    t0 = time.monotonic()
    res = led.vm("record", "HEAD", "--environment", label, "--json")
    seconds = time.monotonic() - t0
    attempts = seq = None
    err = res.stderr.strip()
    try:
        data = json.loads(res.stdout)
        attempts, seq = data.get("attempts"), data.get("seq")
    except ValueError:
        err = err or res.stdout.strip()
    return RecordRun(label, res.returncode, seconds, attempts, seq, err if res.returncode else "")


def run_concurrent(led: Ledger, procs: int, per_proc: int) -> dict[str, Any]:
    """`procs` recorders at once, each recording `per_proc` distinct deploys one after another."""
    before = log_state(led.repo)
    assert before.error is None, before.error
    labels = [[f"e{n}-i{m}" for m in range(per_proc)] for n in range(procs)]

    def worker(mine: list[str]) -> list[RecordRun]:
        return [record_deploy(led, label) for label in mine]

    t0 = time.monotonic()
    with ThreadPoolExecutor(procs) as pool:
        runs = [r for chunk in pool.map(worker, labels) for r in chunk]
    wall = time.monotonic() - t0
    after = log_state(led.repo)
    new_lines = after.lines[len(before.lines):]
    new = entries_of(new_lines) if after.error is None else []
    envs = [str(e.body.get("environment")) for e in new]
    expected = {label for mine in labels for label in mine}
    all_entries = entries_of(after.lines) if after.error is None else []
    digests = [e.body_digest for e in all_entries]
    ok, verify_detail = verify_all(led)
    attempts = [r.attempts for r in runs if r.attempts is not None]
    failed = [r for r in runs if r.rc != 0]
    seqs = [r.seq for r in runs if r.seq is not None]
    return {
        "procs": procs, "per_proc": per_proc,
        "expected": len(expected),
        "found": len(new),
        "succeeded": len(runs) - len(failed),
        "failed": len(failed),
        "errors": sorted({r.error.splitlines()[0] if r.error else "?" for r in failed})[:5],
        "tracebacks": [r.error for r in failed if "Traceback" in r.error][:3],
        "duplicates": (len(envs) - len(set(envs))) + (len(digests) - len(set(digests))),
        "lost": len(expected - set(envs)),
        "unexpected": len(set(envs) - expected),
        "prefix_intact": after.lines[:len(before.lines)] == before.lines,
        "seq_reported_twice": len(seqs) - len(set(seqs)),
        "seq_mismatches": sum(1 for r in runs if r.seq is not None and (
            r.seq >= len(all_entries) or all_entries[r.seq].body.get("environment") != r.label)),
        "read_error": after.error,
        "verify_ok": ok, "verify_detail": verify_detail,
        "locks_left": lock_files(led.repo),
        "attempts_reported": len(attempts),
        "retries": sum(a - 1 for a in attempts),
        "records_retried": sum(1 for a in attempts if a > 1),
        "max_attempts": max(attempts, default=0),
        "seconds": round(wall, 1),
        "median_record_s": round(statistics.median(r.seconds for r in runs), 3) if runs else 0.0,
    }


# --- 2. crash safety ---------------------------------------------------------------------------------------
def measure_record(led: Ledger, n: int = 3) -> float:
    """Median wall time of one uncontended record: the window the crashes are drawn from."""
    times = []
    for i in range(n):
        r = record_deploy(led, f"measure-{i}-{time.time_ns()}")
        if r.rc != 0:
            raise RuntimeError(f"record failed: {r.error}")
        times.append(r.seconds)
    return statistics.median(times)


def _wait_group_gone(pgid: int, timeout: float = 20.0) -> bool:
    """Wait until no process of the group is left (a killed recorder's git children may finish on their own)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return True
        time.sleep(0.01)
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    return False


@dataclass
class CrashFigures:
    runs: int = 0
    killed: int = 0  # the recorder was still running when SIGKILL came
    finished_first: int = 0  # it had already exited (the delay drawn was longer than this record)
    group_kills: int = 0  # SIGKILL to the recorder and its git/gpg children at once
    appended: int = 0  # the entry is in the log afterwards
    not_appended: int = 0
    fsck_clean: int = 0
    entries_lost: int = 0  # entries present before the crash that are gone or changed after it
    torn: int = 0  # the log grew by something other than 0 or 1 complete entry, or cannot be read
    checked: int = 0  # runs after which verify --all and doctor ran
    verify_ok: int = 0
    doctor_clean: int = 0
    doctor_repaired: int = 0
    stale_locks: int = 0  # runs after which a *.lock was left behind
    stale_lock_reported: int = 0  # ... and the next record failed with a coded error naming it
    next_record_ok: int = 0
    duration_s: float = 0.0
    seed: int = CRASH_SEED
    problems: list[str] = field(default_factory=list)


def run_crashes(led: Ledger, runs: int, seed: int = CRASH_SEED, next_every: int = 1,
                check_every: int = 1) -> CrashFigures:
    """Kill the recorder with SIGKILL after a random delay in [0, one record's duration), `runs` times.

    After each kill: `git fsck --full` must be clean, the log must hold every earlier entry unchanged plus
    either the whole new entry or nothing, `verify --all` must pass, `doctor` must find nothing (or
    `doctor --repair` must repair it), and - every `next_every` runs - the next record must work. fsck, the log
    comparison and the lock check run after every kill; `verify --all` and `doctor` every `check_every` runs
    (damage persists, so a later check still sees it) and after the last."""
    rng = random.Random(seed)
    fig = CrashFigures(seed=seed)
    fig.duration_s = round(measure_record(led), 3)
    for i in range(runs):
        fig.runs += 1
        before = log_state(led.repo)
        label = f"crash-{seed}-{i}"
        delay = rng.uniform(0, fig.duration_s)
        group = rng.random() < 0.5
        proc = subprocess.Popen([sys.executable, "-m", "git_vaultmesh", "record", "HEAD", "--environment", label],
                                cwd=led.repo, env=led.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)
        time.sleep(delay)
        if proc.poll() is None:
            fig.killed += 1
            if group:
                fig.group_kills += 1
                os.killpg(proc.pid, signal.SIGKILL)
            else:
                os.kill(proc.pid, signal.SIGKILL)
        else:
            fig.finished_first += 1
        proc.wait()
        _wait_group_gone(proc.pid)

        after = log_state(led.repo)
        clean, text = fsck(led.repo, led.env)
        fig.fsck_clean += clean
        if not clean:
            fig.problems.append(f"run {i}: fsck: {text[:200]}")
        if after.error is not None:
            fig.torn += 1
            fig.problems.append(f"run {i}: log unreadable: {after.error}")
        else:
            if after.lines[:len(before.lines)] != before.lines:
                fig.entries_lost += 1
                fig.problems.append(f"run {i}: an earlier entry changed or vanished")
            grown = after.lines[len(before.lines):]
            if not grown:
                fig.not_appended += 1
            elif len(grown) == 1 and entries_of(grown)[0].body.get("environment") == label:
                fig.appended += 1
            else:
                fig.torn += 1
                fig.problems.append(f"run {i}: log grew by {len(grown)} entries")
        check = (i % check_every == check_every - 1) or i == runs - 1
        if check:
            fig.checked += 1
            ok, detail = verify_all(led)
            fig.verify_ok += ok
            if not ok:
                fig.problems.append(f"run {i}: verify --all: {detail[:200]}")
        locks = lock_files(led.repo)
        if locks:
            fig.stale_locks += 1
            nxt = record_deploy(led, f"{label}-blocked")
            if nxt.rc != 0 and "error: VM-" in nxt.error and any(Path(p).name in nxt.error for p in locks):
                fig.stale_lock_reported += 1
            else:
                fig.problems.append(f"run {i}: stale {locks}; next record: rc {nxt.rc} {nxt.error[:200]}")
            for p in locks:  # what the hint tells the user to do once no git process runs
                (led.repo / ".git" / p).unlink(missing_ok=True)
        if check:
            clean_doc, found = doctor(led)
            if clean_doc:
                fig.doctor_clean += 1
            else:
                repaired, left = doctor(led, repair=True)
                if repaired:
                    fig.doctor_repaired += 1
                else:
                    fig.problems.append(f"run {i}: doctor: {found[:3]} -> after --repair: {left[:3]}")
        if next_every and (i % next_every == next_every - 1 or i == runs - 1):
            nxt = record_deploy(led, f"{label}-next")
            if nxt.rc == 0:
                fig.next_record_ok += 1
            else:
                fig.problems.append(f"run {i}: next record failed: {nxt.error[:200]}")
    return fig


# --- 3. fuzzing --------------------------------------------------------------------------------------------
class Unclean(AssertionError):
    """A fuzz input produced something other than a result or a clean, coded VaultMeshError."""


def expect_clean(fn: Callable[[], Any], allowed: Callable[[str], bool], what: str) -> tuple[str, Any]:
    """("ok", result) or ("rejected", code); anything else raises Unclean with the traceback."""
    try:
        return "ok", fn()
    except VaultMeshError as exc:
        if not allowed(exc.code):
            raise Unclean(f"{what}: unexpected code {exc.code}: {exc.cause}") from exc
        if not exc.cause or not exc.hint:
            raise Unclean(f"{what}: {exc.code} without a cause or a hint: {exc.render()}") from exc
        return "rejected", exc.code
    except Exception as exc:
        raise Unclean(f"{what}: {exc.__class__.__name__} escaped:\n{traceback.format_exc()}") from exc


def mutate(data: bytes, ops: list[tuple[int, int, int]]) -> bytes:
    """Apply byte-level mutations: (kind, position, value) triples; positions wrap around the data."""
    out = bytearray(data)
    interesting = b'"\\{}[],:0123456789-+.eE tfnul\x00\x7f\xc3\xa9\xed\xa0\x80\xff\n'
    for kind, pos, val in ops:
        n = len(out)
        p = pos % (n + 1)
        k = kind % 7
        if k == 0 and n:  # flip bits
            out[p % n] ^= (val % 255) + 1
        elif k == 1:  # insert a byte
            out.insert(p, val % 256)
        elif k == 2 and n:  # delete a run
            del out[p % n: p % n + 1 + val % 8]
        elif k == 3 and n:  # replace with a character that matters to JSON / DER
            out[p % n] = interesting[val % len(interesting)]
        elif k == 4 and n:  # duplicate a slice
            s = p % n
            out[s:s] = out[s: s + 1 + val % 16]
        elif k == 5:  # truncate
            del out[p:]
        elif k == 6 and n:  # set a byte to an extreme
            out[p % n] = (0x00, 0x7F, 0x80, 0xFF)[val % 4]
    return bytes(out)


@dataclass
class FuzzTarget:
    name: str
    strategy: Any  # a hypothesis SearchStrategy
    check: Callable[[Any], str]  # returns an outcome label; raises Unclean
    skipped: str | None = None
    outcomes: dict[str, int] = field(default_factory=dict)


@dataclass
class FuzzContext:
    """Real material the mutation fuzzers start from: a proof bundle from a real ledger, a real RFC 3161
    token from the loopback TSA's signer, a real work tree for `.vaultmesh.toml`."""

    bundle: dict[str, Any]
    trust_root: str
    tsr: bytes
    tsr_data: bytes
    tsa_trust: Any
    config_repo: Path
    checkpoint: bytes
    lines: list[bytes]
    ledger: Ledger | None = None

    def close(self) -> None:
        if self.ledger is not None:
            self.ledger.close()


def make_fuzz_context(root: Path, led: Ledger | None = None) -> FuzzContext:
    """Build the seeds: a ledger with two releases (v1.0 at commit 1, v1.1 at commit 3) and a deploy, a proof
    bundle with a consistency proof, and a TSA token over its release line."""
    from git_vaultmesh.rfc3161.server import make_identity, sign_token
    from git_vaultmesh.rfc3161.tsa import TsaTrust, build_request

    own = led is None
    if led is None:
        led = make_ledger(root / "fuzz-ledger", commits=5, tags={"v1.0": 1, "v1.1": 3})
    try:
        for args in (("record", "v1.0", "--sha256", "app.tar=" + "ab" * 32), ("record", "v1.1"),
                     ("record", "HEAD", "--environment", "prod", "-m", "fuzz seed")):
            res = led.vm(*args)
            if res.returncode != 0:
                raise RuntimeError(f"{args}: {res.stderr}")
        first = led.git("rev-list", "--max-parents=0", "HEAD")
        out = root / "bundle.json"
        res = led.vm("prove", first, "--in", "v1.1", "--from", "v1.0", "-o", str(out))
        if res.returncode != 0:
            raise RuntimeError(f"prove: {res.stderr}")
        bundle = json.loads(out.read_text())
        state = log_state(led.repo)
        with Repo(led.repo / ".git", led.repo) as r:
            cp_oid = r.path_oid(ledger.REF_LOG, ledger.CHECKPOINT)
            assert cp_oid is not None
            checkpoint = r.read_object(cp_oid)[1]
        ident = make_identity("ec")
        data = state.lines[1]
        req, _nonce = build_request(data)
        tsr = sign_token(ident, req)
        trust = TsaTrust("fuzz", ident.ca_cert_pem.decode())
        cfg = root / "config-repo"
        cfg.mkdir(exist_ok=True)
        run_git(cfg, "init", "-q", env=led.env)
        return FuzzContext(bundle, led.fingerprint, tsr, data, trust, cfg, checkpoint, state.lines,
                           led if own else None)
    except BaseException:
        if own:
            led.close()
        raise


def _json_values(max_leaves: int = 12) -> Any:
    from hypothesis import strategies as st

    scalars = (st.none() | st.booleans() | st.integers(-(2**60), 2**60)
               | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=20))
    return st.recursive(scalars, lambda kids: st.lists(kids, max_size=4)
                        | st.dictionaries(st.text(max_size=8), kids, max_size=4), max_leaves=max_leaves)


def _bundle_ops() -> Any:
    from hypothesis import strategies as st

    op = st.tuples(st.integers(0, 10_000), st.integers(0, 9), _json_values(6), st.integers(0, 10_000))
    return st.lists(op, min_size=1, max_size=4)


def _nodes(obj: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[tuple[Any, ...], Any]]:
    yield path, obj
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _nodes(v, (*path, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _nodes(v, (*path, i))


def mutate_json(doc: Any, ops: list[tuple[int, int, Any, int]]) -> Any:
    """Structure-aware mutations of a JSON document: replace, delete, duplicate, swap, nudge numbers, edit
    strings (including the base64/hex/armour inside them)."""
    keep = object()
    doc = json.loads(json.dumps(doc))
    for where, kind, value, n in ops:
        nodes = list(_nodes(doc))
        path, node = nodes[where % len(nodes)]
        parent = doc
        for p in path[:-1]:
            parent = parent[p]
        key = path[-1] if path else None
        repl: Any = keep
        if kind == 0:
            repl = value
        elif kind == 1 and key is not None:
            del parent[key]
        elif kind == 2 and isinstance(node, list) and node:
            node.append(json.loads(json.dumps(node[n % len(node)])))
        elif kind == 3 and isinstance(node, list) and len(node) > 1:
            i, j = n % len(node), (n // 7) % len(node)
            node[i], node[j] = node[j], node[i]
        elif kind == 4 and isinstance(node, bool):
            repl = not node
        elif kind == 4 and isinstance(node, int):
            repl = (node + 1, node - 1, -node, node * 2**40, 2**63, -1, 0)[n % 7]
        elif kind in (5, 6, 7) and isinstance(node, str):
            repl = mutate(node.encode(), [(kind + n, n // 3, n // 11)]).decode("utf-8", "replace")
        elif kind == 8 and isinstance(node, dict):
            node[str(value)[:10]] = value
        elif kind == 9 and isinstance(node, str):
            repl = node[: n % (len(node) + 1)]
        if repl is not keep:
            if key is None:
                doc = repl
            else:
                parent[key] = repl
    return doc


def _toml_docs() -> Any:
    """Random `.vaultmesh.toml` documents: schema keys and others, every TOML value type, top level or in a
    [vaultmesh] table, and a few shapes the file could plausibly be mangled into."""
    from hypothesis import strategies as st

    from git_vaultmesh.config import SCHEMA

    keys = st.sampled_from([*SCHEMA, "vaultmesh", "SigningKey", "gpgTimeout", "unknown", "a.b", "tsa", "fuzz",
                            "url"]) | st.text(
        st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=8)
    scalar = st.one_of(
        st.text(max_size=12).map(json.dumps),  # a basic string (JSON escapes are valid TOML escapes)
        st.integers(-(2**70), 2**70).map(str),
        st.sampled_from(["1e400", "-1e400", "inf", "-inf", "nan", "0.0", "-0.0", "3600.0", "3600.5", "1e-300",
                         "true", "false", "1979-05-27T07:32:00Z", "07:32:00", "1979-05-27", "0x7f", "'lit'",
                         '"""multi\nline"""', "''", "1_000"]),
        st.floats(allow_nan=False, allow_infinity=False).map(repr),
    )
    value = st.recursive(scalar, lambda kids: st.lists(kids, max_size=3).map(lambda xs: "[" + ", ".join(xs) + "]")
                         | st.lists(st.tuples(keys.filter(lambda k: k.isidentifier()), kids), max_size=2).map(
                             lambda kv: "{" + ", ".join(f"{k} = {v}" for k, v in kv) + "}"), max_leaves=4)
    line = st.tuples(keys, value).map(lambda kv: f"{json.dumps(kv[0]) if not kv[0].isidentifier() else kv[0]} = "
                                                 f"{kv[1]}")
    section = st.sampled_from(["", "[vaultmesh]\n", "[other]\n", "[[vaultmesh]]\n", "[vaultmesh.sub]\n",
                               "[vaultmesh.tsa]\n", "[vaultmesh.tsa.fuzz]\n", "[[vaultmesh.tsa.fuzz]]\n"])
    doc = st.tuples(st.lists(line, max_size=4), section, st.lists(line, max_size=4)).map(
        lambda t: "\n".join(t[0]) + "\n" + t[1] + "\n".join(t[2]) + "\n")
    return doc | st.text(max_size=200) | st.binary(max_size=100).map(lambda b: b.decode("latin-1"))


def fuzz_targets(ctx: FuzzContext) -> list[FuzzTarget]:
    from hypothesis import strategies as st

    from git_vaultmesh import entry as entry_mod
    from git_vaultmesh.commands import check_proof
    from git_vaultmesh.config import SCHEMA, Settings
    from git_vaultmesh.rfc3161 import tsa

    entry_codes = {"VM-ENTRY-MALFORMED", "VM-ENTRY-UNKNOWN-TYPE"}
    byte_ops = st.lists(st.tuples(st.integers(0, 2**16), st.integers(0, 2**16), st.integers(0, 255)),
                        min_size=1, max_size=6)

    def parse_entry(data: bytes) -> str:
        outcome, res = expect_clean(lambda: entry_mod.parse_line(data), lambda c: c in entry_codes, "parse_line")
        if outcome == "ok":  # accepted means canonical: the bytes are exactly what we would have written
            if res.line != data or canonical(res.as_json()) != data:
                raise Unclean(f"parse_line accepted a non-canonical line: {data!r}")
            return "accepted"
        return str(res)

    def jcs_roundtrip(value: Any) -> str:
        import rfc8785

        try:
            first = canonical(value)
        except rfc8785.CanonicalizationError:
            return "unrepresentable"  # NaN, infinities, integers beyond 2**53, lone surrogates: refused
        parsed = json.loads(first.decode("utf-8"))
        try:
            again = canonical(parsed)
        except rfc8785.IntegerDomainError:
            # rfc8785 writes an integral float >= 2**53 as digits, which JSON readers give back as an integer it
            # then refuses: such a line can never enter a log, parse_line refuses it (and record writes no floats)
            line = b'{"body":{"n":' + first + b'},"sigs":[],"v":1}'
            expect_clean(lambda: entry_mod.parse_line(line), lambda c: c in entry_codes, "parse_line")
            return "refused-on-reparse"
        if again != first:
            raise Unclean(f"JCS not stable: {value!r} -> {first!r} -> {again!r}")
        line = canonical({"v": 1, "body": {"type": "deploy", "log": "0" * 32, "recorded_at": "2024-01-01T00:00:00Z",
                                           "message": first.decode()}, "sigs": []})
        if entry_mod.parse_line(line).line != line:
            raise Unclean("a canonical line did not parse back to itself")
        return "stable"

    def body_of(value: Any) -> str:
        typ, fields = value
        body = {"type": typ, "log": "0123456789abcdef" * 2, "recorded_at": "2024-01-01T00:00:00Z", **fields}
        try:
            line = canonical({"v": 1, "body": body, "sigs": []})
        except ValueError:
            return "unrepresentable"
        return parse_entry(line)

    def proof(doc: Any) -> str:
        bundle, root = doc
        outcome, res = expect_clean(lambda: check_proof.check(bundle, root), lambda c: c.startswith("VM-"),
                                    "check_proof.check")
        if outcome == "ok" and json.dumps(bundle, sort_keys=True) != json.dumps(ctx.bundle, sort_keys=True):
            # accepted means unchanged in meaning: any mutation of a value, an added or a dropped field must be
            # refused, or some part of the bundle is not checked
            raise Unclean(f"check_proof accepted a mutated bundle: {json.dumps(bundle)[:300]}")
        return "accepted" if outcome == "ok" else str(res)

    def tsr_parse(data: bytes) -> str:
        outcome, res = expect_clean(lambda: tsa.parse_response(data), lambda c: c.startswith("VM-TSA-"),
                                    "parse_response")
        return "parsed" if outcome == "ok" else str(res)

    def tsr_verify(data: bytes) -> str:
        outcome, res = expect_clean(lambda: tsa.verify_token(data, ctx.tsr_data, ctx.tsa_trust),
                                    lambda c: c.startswith("VM-TSA-"), "verify_token")
        if outcome == "ok" and data != ctx.tsr:
            return "accepted-mutant"  # e.g. a change in an unsigned certificate field of the bag: counted
        return "verified" if outcome == "ok" else str(res)

    def checkpoint(data: bytes) -> str:
        outcome, res = expect_clean(lambda: ledger.parse_checkpoint(data), lambda c: c == "VM-CHECKPOINT-MALFORMED",
                                    "parse_checkpoint")
        if outcome == "ok":
            if ledger.checkpoint_text(res.log_id, res.size, res.root, res.policies) != data:
                raise Unclean(f"parse_checkpoint accepted a non-canonical checkpoint {data!r}")
            return "accepted"
        return str(res)

    toml_path = ctx.config_repo / ".vaultmesh.toml"
    config_repo = Repo(ctx.config_repo / ".git", ctx.config_repo)

    def config(doc: tuple[str, int]) -> str:
        text, which = doc
        toml_path.write_text(text, encoding="utf-8", errors="surrogateescape")
        s = Settings(config_repo)
        keys = list(SCHEMA)
        calls: list[Callable[[], Any]] = [
            lambda: s.get(keys[which % len(keys)]), lambda: s.timeout("gpgtimeout", 30.0),
            lambda: s.timeout("tsatimeout", 10.0), s.signing_format, s.signing_key_name,
        ]
        if hasattr(s, "tsa_url"):
            calls.append(lambda: s.tsa_url("fuzz"))
        outcome, res = expect_clean(calls[which % len(calls)], lambda c: c == "VM-CONFIG-INVALID", "Settings")
        if outcome == "ok" and which % len(calls) in (1, 2) and not (isinstance(res, float) and 0 < res <= 3600):
            raise Unclean(f"a timeout of {res!r} was accepted from {text!r}")
        return "value" if outcome == "ok" else str(res)

    line_seeds = st.sampled_from(ctx.lines)
    cp_text = st.tuples(st.text(max_size=40), st.text(max_size=12), st.text(max_size=50)).map(
        lambda t: f"{t[0]}\n{t[1]}\n{t[2]}\n".encode("utf-8", "surrogatepass"))
    body_fields = st.dictionaries(
        st.sampled_from(sorted(set().union(*entry_mod.ALLOWED_FIELDS.values()) | {"x", "v"})),
        _json_values(6) | st.just([{"name": "a", "sha256": "0" * 64, "size": 1}])
        | st.just({"commit": "a" * 40}), max_size=5)
    targets = [
        FuzzTarget("entry.parse_line: random bytes", st.binary(max_size=600), parse_entry),
        FuzzTarget("entry.parse_line: mutated real lines",
                   st.tuples(line_seeds, byte_ops).map(lambda t: mutate(t[0], t[1])), parse_entry),
        FuzzTarget("entry.parse_line: generated bodies",
                   st.tuples(st.sampled_from([*entry_mod.TYPES, "unknown", ""]), body_fields), body_of),
        FuzzTarget("JCS (rfc8785) round trip", _json_values(20), jcs_roundtrip),
        FuzzTarget("check_proof.check: mutated bundles",
                   st.tuples(_bundle_ops(), st.sampled_from([ctx.trust_root, ctx.trust_root.lower(), "", "SHA256:x",
                                                             "0" * 40])).map(
                       lambda t: (mutate_json(ctx.bundle, t[0]), t[1])), proof),
        FuzzTarget("tsa.parse_response: random bytes", st.binary(max_size=400)
                   | st.binary(max_size=60).map(lambda b: b"\x30\x82" + b), tsr_parse),
        FuzzTarget("tsa.verify_token: mutated real tokens",
                   st.tuples(st.just(ctx.tsr), byte_ops).map(lambda t: mutate(t[0], t[1])), tsr_verify),
        FuzzTarget("ledger.parse_checkpoint",
                   st.binary(max_size=120) | cp_text
                   | st.tuples(st.just(ctx.checkpoint), byte_ops).map(lambda t: mutate(t[0], t[1])), checkpoint),
        FuzzTarget(".vaultmesh.toml (config)", st.tuples(_toml_docs(), st.integers(0, 99)), config),
    ]
    targets.append(_importer_target(st, byte_ops))
    return targets


V4_FIXTURES = Path(__file__).resolve().parent.parent / "tests" / "vectors" / "v4" / "ops" / "receipts"


def _importer_target(st: Any, byte_ops: Any) -> FuzzTarget:
    """import_v4.parse on mutated real v4.1 receipts (front matter, JSON, ADR): a parsed receipt or
    VM-IMPORT-MALFORMED; what it accepts must become an entry body (JCS-representable, integers only)."""
    from git_vaultmesh.commands import import_v4
    from git_vaultmesh.entry import check_body

    seeds = sorted((p.relative_to(V4_FIXTURES.parent.parent).as_posix(), p.read_bytes())
                   for p in V4_FIXTURES.rglob("*") if p.is_file())

    def check(case: tuple[tuple[str, bytes], list[tuple[int, int, int]]]) -> str:
        (rel, data), ops = case
        mutant = mutate(data, ops)
        outcome, res = expect_clean(lambda: import_v4.parse(rel, mutant), lambda c: c == "VM-IMPORT-MALFORMED",
                                    "import_v4.parse")
        if outcome != "ok":
            return str(res)

        def body_ok() -> None:
            body = {"type": "import", "log": "0" * 32, "recorded_at": "2025-10-01T00:00:00Z",
                    "original": {"fields": res.fields, "sha256": "0" * 64}}
            check_body(body)
            canonical(body)
            if any(isinstance(v, float) for v in _leaves(res.fields)):
                raise Unclean(f"a float was kept from {mutant!r}")

        expect_clean(body_ok, lambda _c: False, "import body")
        return f"parsed ({res.shape})"

    return FuzzTarget("v4.1 importer", st.tuples(st.sampled_from(seeds), byte_ops), check)


def _leaves(value: Any) -> Iterator[Any]:
    if isinstance(value, dict):
        for v in value.values():
            yield from _leaves(v)
    elif isinstance(value, list):
        for v in value:
            yield from _leaves(v)
    else:
        yield value


@dataclass
class FuzzResult:
    name: str
    examples: int
    failure: str | None
    outcomes: dict[str, int]
    seconds: float
    skipped: str | None = None


def run_target(target: FuzzTarget, max_examples: int, *, derandomize: bool = False) -> FuzzResult:
    """Run one target under hypothesis; count the examples actually run and keep the (shrunk) failure."""
    from hypothesis import HealthCheck, given, settings

    if target.skipped:
        return FuzzResult(target.name, 0, None, {}, 0.0, target.skipped)
    outcomes: dict[str, int] = {}

    @settings(max_examples=max_examples, deadline=None, database=None, derandomize=derandomize,
              suppress_health_check=list(HealthCheck), print_blob=False)
    @given(target.strategy)
    def prop(x: Any) -> None:
        label = target.check(x)
        outcomes[label] = outcomes.get(label, 0) + 1

    t0 = time.monotonic()
    failure = None
    try:
        prop()
    except Exception as exc:  # noqa: BLE001 - the failure is the figure
        notes = "\n".join(getattr(exc, "__notes__", []))
        failure = f"{exc}\n{notes}".strip()
    return FuzzResult(target.name, sum(outcomes.values()), failure, outcomes, time.monotonic() - t0)


def run_fuzz(ctx: FuzzContext, max_examples: int, *, derandomize: bool = False) -> list[FuzzResult]:
    return [run_target(t, max_examples, derandomize=derandomize) for t in fuzz_targets(ctx)]


# --- the figures -------------------------------------------------------------------------------------------
@contextmanager
def workdir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="vm-reliability-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="the sizes the tests use")
    ap.add_argument("--only", choices=["concurrency", "crash", "fuzz"], action="append")
    ap.add_argument("--procs", type=int)
    ap.add_argument("--per-proc", type=int)
    ap.add_argument("--crash-runs", type=int)
    ap.add_argument("--fuzz-examples", type=int)
    ap.add_argument("--seed", type=int, default=CRASH_SEED, help="crash RNG seed")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    size = dict(QUICK if args.quick else FULL)
    for k in size:
        if getattr(args, k, None) is not None:
            size[k] = getattr(args, k)
    only = set(args.only or ["concurrency", "crash", "fuzz"])
    report: dict[str, Any] = {"size": size}
    failed = False
    with workdir() as tmp:
        if "concurrency" in only:
            led = make_ledger(tmp / "concurrency")
            try:
                c = run_concurrent(led, size["procs"], size["per_proc"])
            finally:
                led.close()
            report["concurrency"] = c
            failed |= not (c["found"] == c["expected"] and not c["duplicates"] and not c["lost"]
                           and c["verify_ok"] and not c["locks_left"] and not c["failed"])
            if not args.json:
                print(f"concurrency  {c['procs']} processes x {c['per_proc']} records in {c['seconds']} s "
                      f"(median record {c['median_record_s']} s)")
                print(f"  entries expected {c['expected']}, found {c['found']}; succeeded {c['succeeded']}, "
                      f"failed {c['failed']} {c['errors'] or ''}")
                print(f"  duplicates {c['duplicates']}, lost {c['lost']}, verify --all "
                      f"{'OK' if c['verify_ok'] else 'FAILED ' + c['verify_detail']}, locks left "
                      f"{len(c['locks_left'])} {c['locks_left'] or ''}")
                print(f"  retries {c['retries']} (records that retried {c['records_retried']}, "
                      f"max attempts {c['max_attempts']}, attempts reported by {c['attempts_reported']})")
                for tb in c["tracebacks"]:
                    print("  traceback:\n    " + tb.replace("\n", "\n    "))
        if "crash" in only:
            led = make_ledger(tmp / "crash")
            try:
                f = run_crashes(led, size["crash_runs"], seed=args.seed)
            finally:
                led.close()
            report["crash"] = f.__dict__
            failed |= bool(f.problems) or f.fsck_clean != f.runs or f.torn or f.entries_lost
            if not args.json:
                print(f"crash        {f.runs} runs, seed {f.seed}, SIGKILL after 0..{f.duration_s} s "
                      f"(killed {f.killed}, of which whole process group {f.group_kills}; finished first "
                      f"{f.finished_first})")
                print(f"  fsck clean {f.fsck_clean}/{f.runs}; entries lost {f.entries_lost}; torn entries "
                      f"{f.torn}; appended {f.appended}, not appended {f.not_appended}")
                print(f"  verify --all ok {f.verify_ok}/{f.checked}; doctor clean {f.doctor_clean}, repaired "
                      f"{f.doctor_repaired}; stale locks {f.stale_locks} (reported by the next record "
                      f"{f.stale_lock_reported}); next record ok {f.next_record_ok}")
                for p in f.problems[:10]:
                    print(f"  problem: {p}")
        if "fuzz" in only:
            ctx = make_fuzz_context(tmp / "fuzz")
            try:
                results = run_fuzz(ctx, size["fuzz_examples"])
            finally:
                ctx.close()
            report["fuzz"] = [r.__dict__ for r in results]
            failed |= any(r.failure for r in results)
            if not args.json:
                print(f"fuzz         hypothesis, max_examples {size['fuzz_examples']} per target")
                for r in results:
                    if r.skipped:
                        print(f"  {r.name:42} skipped: {r.skipped}")
                        continue
                    top = ", ".join(f"{k} {v}" for k, v in sorted(r.outcomes.items(), key=lambda kv: -kv[1])[:4])
                    print(f"  {r.name:42} examples {r.examples:4}  crashes {1 if r.failure else 0}  "
                          f"({r.seconds:.1f} s; {top})")
                    if r.failure:
                        print("    " + r.failure.replace("\n", "\n    ")[:3000])
    if args.json:
        print(json.dumps(report, indent=2, default=str))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
