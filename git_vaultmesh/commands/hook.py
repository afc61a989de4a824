"""`hook NAME`: what the installed hook scripts run. The hook that was there before runs first (chained).

pre-commit     fast checks: settings schema (git config and the staged .vaultmesh.toml), ledger refs not moved
               by hand (head checkpoint = its entries, notes derived from the log, no rewind below the checkpoint
               verified here); --covenants adds the Four Covenants (the pre-commit framework's hook)
pre-push       refuses a ledger ref that is not a fast-forward (even with --force) and a release tag that is
               unrecorded or does not verify; verifies the ledger being pushed
pre-receive    the same rules on the server, judged on the state the push would leave (authoritative)
reference-transaction   records new release tags when vaultmesh.autoRecord is set
post-rewrite   reports entries whose subject commits a rebase or amend rewrote; never moves an entry
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import timings
from ..config import Settings, toml_problems
from ..errors import VaultMeshError
from ..git import QUARANTINE_ENV, Repo, scratch_view

if TYPE_CHECKING:
    from ..verification import Check

CHAINED_SUFFIX = ".vaultmesh-chained"
STDIN_HOOKS = frozenset({"pre-push", "pre-receive", "reference-transaction", "post-rewrite"})
BLOCKING = frozenset({"pre-commit", "pre-push", "pre-receive"})  # their failure stops git
# refs that only ever move forward: the log, its notes, and the keep-refs holding recorded subjects.
# (Spelled out, not imported from ledger: a commit's hook imports only what it uses, to start fast.)
REF_LOG, REF_NOTES, KEEP_PREFIX = "refs/vaultmesh/log", "refs/notes/vaultmesh", "refs/vaultmesh/keep/"
FORWARD_ONLY = (REF_LOG, REF_NOTES)
PRECOMMIT_OK = "pre-commit.ok"  # under <git dir>/vaultmesh: the hook script's key of the last passing run


@dataclass(frozen=True)
class Update:
    """One ref a push changes: `ref` on the receiving side from `old` to `new` (None = absent / deleted);
    `source` is the name to read the new value by where the checks run (the local ref for pre-push)."""

    ref: str
    old: str | None
    new: str | None
    source: str


@dataclass(frozen=True)
class Finding:
    covenant: str
    ref: str
    check: Check


def _check(check: str, ok: bool, code: str | None, detail: str, hint: str | None = None) -> Check:
    from ..verification import Check

    return Check(check, ok, code, detail, hint)


# --- running the chained hook ----------------------------------------------------------------------------
def run_chained(name: str, chain: str | None, hook_args: Sequence[str], stdin: bytes) -> None:
    if not chain:
        return
    saved = Path(chain + CHAINED_SUFFIX)
    if not (saved.is_file() and os.access(saved, os.X_OK)):
        return
    res = subprocess.run([str(saved), *hook_args], input=stdin)
    if res.returncode != 0 and name in BLOCKING:
        raise VaultMeshError("VM-HOOK-CHAINED-FAILED",
                             f"your own {name} hook ({saved.name}) exited {res.returncode}",
                             "fix what it reported; it runs before git-vaultmesh's checks, as before install")


def _zero(oid: str) -> str | None:
    return None if not oid.strip("0") else oid


# --- pre-commit ------------------------------------------------------------------------------------------
PRECOMMIT_STATE = "pre-commit.state.json"  # under <git dir>/vaultmesh: the ledger the last pass judged
STATE_VERSION = 2


class _Undecided(Exception):
    """The incremental path cannot judge this from what it remembers: judge every entry."""


def fast_checks(repo: Repo, settings: Settings) -> list[Finding]:
    """What a commit can afford to check on every run: no signature, no history, and of the log only the
    entries the last passing run did not judge (all of them when it cannot tell)."""
    out: list[Finding] = []

    def fail(covenant: str, ref: str, code: str, detail: str, hint: str | None = None) -> None:
        out.append(Finding(covenant, ref, _check(f"pre-commit.{ref}", False, code, detail, hint)))

    for problem in settings.problems():
        fail("config", "config", "VM-CONFIG-INVALID", problem, "fix or remove the setting (git config --unset …)")
    if repo.work_tree is not None:
        staged = repo.staged_blob(".vaultmesh.toml")
        if staged is not None:
            for problem in toml_problems(staged.decode("utf-8", errors="replace")):
                fail("config", ".vaultmesh.toml", "VM-CONFIG-INVALID", f"staged .vaultmesh.toml: {problem}",
                     "fix the file and `git add` it again")
    return out + ledger_checks(repo)


def ledger_checks(repo: Repo) -> list[Finding]:
    """The ledger refs were not moved by hand: the head checkpoint is the root of its entries, the notes are
    derived from this log, and the log extends the checkpoint verified here (no rewind, no replacement).

    When the log only grew since the last pass (that pass's head is an ancestor, and the trees differ only by
    entries added after the ones it judged, and checkpoint files), only the new entries are read: the
    remembered compact range is extended by them. Anything else, and anything that path cannot pass, is
    judged again over every entry, so a failure is always reported by the full check."""
    from .. import ledger

    refs = repo.ref_values([REF_LOG, REF_NOTES])
    head_oid, notes = refs.get(REF_LOG), refs.get(REF_NOTES)
    if head_oid is None:
        return []
    seen = ledger.load_verified(repo)
    cached = _load_state(repo)
    if cached is not None:
        try:
            with timings.step("pre-commit ledger, new entries", unit="entries"):
                return _judge_ledger(repo, head_oid, notes, _appended(repo, head_oid, cached), seen, cached)
        except _Undecided:
            pass
    with timings.step("pre-commit ledger, all entries", unit="entries"):
        try:
            items = ledger.entry_items(repo, head_oid)
        except VaultMeshError as exc:
            return [_ledger_failure(REF_LOG, exc.code, exc.cause, exc.hint)]
        try:
            return _judge_ledger(repo, head_oid, notes, [oid for _, _, oid in items], seen, None)
        except _Undecided:  # pragma: no cover - the full path decides everything
            raise AssertionError("the full pre-commit check left a question open") from None


def _appended(repo: Repo, head_oid: str, cached: dict[str, Any]) -> list[str]:
    """The blobs of the entries appended since the pass `cached` remembers, in log order; _Undecided unless
    the log only grew (anything else changed in the tree, or the commits were rewritten)."""
    from .. import ledger

    if cached["log"] == head_oid:
        return []
    added = ledger.appended_entries(repo, cached["log"], cached["size"], head_oid)
    if added is None:
        raise _Undecided  # rewound or rewritten, an entry the last pass judged changed, something else added
    return [oid for _, oid in added]


def _judge_ledger(repo: Repo, head_oid: str, notes: str | None, entry_oids: Sequence[str],
                  seen: dict[str, Any] | None, cached: dict[str, Any] | None) -> list[Finding]:
    """One judgement of the ledger refs over the entries after those the last pass (`cached`) judged, or
    over every entry (`cached` None). With `cached` it raises _Undecided rather than report anything:
    failures are the full path's."""
    from .. import ledger, merkle

    out: list[Finding] = []
    start, frontier = 0, merkle.CompactRange.from_leaf_hashes([])
    if cached is not None:
        start = cached["size"]
        frontier = merkle.CompactRange.from_frontier(start, [bytes.fromhex(h) for h in cached["frontier"]])
    prefix_root = frontier.root().hex()
    new = len(entry_oids)
    try:
        # one cat-file for the entries not judged before, the head checkpoint and the notes commit (the
        # incremental path also reads the remembered head's checkpoint: the range must reproduce it)
        names = ([*entry_oids, f"{head_oid}:{ledger.CHECKPOINT}"]
                 + ([f"{cached['log']}:{ledger.CHECKPOINT}"] if cached is not None else [])
                 + ([notes] if notes else []))
        blobs = repo.read_blobs(names)
        leaves = [merkle.leaf_hash(_line(b)) for b in blobs[:new]]
        cp = ledger.parse_checkpoint(blobs[new])
        if cached is not None:
            was = ledger.parse_checkpoint(blobs[new + 1])
            if was.size != start or was.root.hex() != prefix_root:
                raise _Undecided  # the state file does not describe the head it names
    except (KeyError, ValueError):
        if cached is not None:
            raise _Undecided from None
        return [_ledger_failure(REF_LOG, "VM-LOG-CORRUPT", "a ledger object is missing or corrupt",
                                "restore the ledger from a replica; run `git fsck`")]
    except VaultMeshError as exc:
        if cached is not None:
            raise _Undecided from None
        vm_code = "VM-LOG-CORRUPT" if exc.code == "VM-GIT-FAILED" else exc.code
        return [_ledger_failure(REF_LOG, vm_code, exc.cause, exc.hint)]
    frontier.extend(leaves)
    size = start + new

    def fail(ref: str, code: str, detail: str, hint: str | None = None) -> None:
        if cached is not None:
            raise _Undecided
        out.append(_ledger_failure(ref, code, detail, hint))

    if cp.size != size or cp.root != frontier.root():
        fail(REF_LOG, "VM-CHECKPOINT-MISMATCH",
             f"the head checkpoint says size {cp.size}, the log holds {size} entries with another root: "
             "the log was edited by hand", "run `git vaultmesh verify --all`")
    if notes is not None:
        prefix = ledger.NOTES_MESSAGE.encode()
        named = [line[len(prefix):].decode(errors="replace") for line in blobs[-1].split(b"\n")
                 if line.startswith(prefix)]
        source = named[0] if len(named) == 1 else None
        if source is None or not (source == head_oid or repo.is_ancestor(source, head_oid)):
            fail(REF_NOTES, "VM-NOTES-MISMATCH",
                 f"{REF_NOTES} ({notes[:12]}) is not derived from this log "
                 f"(it names {source[:12] if source else 'no log'}): a ledger ref was moved by hand",
                 "run `git vaultmesh verify --all`; `git vaultmesh doctor --repair` rebuilds the notes")
    problem = ledger.against_remembered(seen, cp.log_id, size, lambda n: _root_of_first(
        n, start, cached["frontier"] if cached else (), leaves, seen, cached))
    if problem is not None:
        fail(REF_LOG, *problem)
    if not out:
        _save_state(repo, {"version": STATE_VERSION, "log": head_oid, "size": size,
                           "frontier": [h.hex() for h in frontier.hashes], "verified": seen,
                           "judged": "full" if cached is None else "incremental", "entries_read": new})
    return out


def _root_of_first(size: int, start: int, prefix: Sequence[str], leaves: Sequence[bytes],
                   seen: dict[str, Any] | None, cached: dict[str, Any] | None) -> str | None:
    """The root of the first `size` entries from what this judgement holds: every leaf (full path), or the
    remembered range of the first `start` and the leaves after them (incremental path). Below `start` only
    the verified checkpoint the last pass checked is known (on the same entries); anything else is undecided."""
    from .. import merkle

    if cached is None:
        return merkle.root_from_leaf_hashes(leaves[:size]).hex()
    if start <= size <= start + len(leaves):
        rng = merkle.CompactRange.from_frontier(start, [bytes.fromhex(h) for h in prefix])
        rng.extend(leaves[: size - start])
        return rng.root().hex()
    if seen is not None and seen == cached.get("verified"):
        return str(seen.get("root"))
    raise _Undecided


def _ledger_failure(ref: str, code: str, detail: str, hint: str | None) -> Finding:
    return Finding("Integrity", ref, _check(f"pre-commit.{ref}", False, code, detail, hint))


def _state_path(repo: Repo) -> Path:
    return repo.git_dir / "vaultmesh" / PRECOMMIT_STATE


def _load_state(repo: Repo) -> dict[str, Any] | None:
    """The last passing judgement of the ledger; anything unreadable or of another shape counts as none."""
    from .. import statefile

    data = statefile.read(_state_path(repo))
    if not (data is not None and data.get("version") == STATE_VERSION
            and isinstance(data.get("log"), str) and _is_oid(data["log"])
            and isinstance(data.get("size"), int) and data["size"] >= 0
            and isinstance(data.get("frontier"), list) and len(data["frontier"]) == data["size"].bit_count()
            and all(isinstance(h, str) and len(h) == 64 for h in data["frontier"])):
        return None
    try:
        for h in data["frontier"]:
            bytes.fromhex(h)
    except ValueError:
        return None
    return data


def _is_oid(text: str) -> bool:
    return len(text) in (40, 64) and all(c in "0123456789abcdef" for c in text)


def _save_state(repo: Repo, state: dict[str, Any]) -> None:
    """Atomic (a crash keeps the old state); a cache only: failing to write it costs the next commit time."""
    from .. import statefile

    try:
        statefile.write(_state_path(repo), state)
    except OSError:
        pass


def _line(blob: bytes) -> bytes:
    return blob[:-1] if blob.endswith(b"\n") else blob


def covenant_findings(repo: Repo, settings: Settings) -> list[Finding]:
    from ..covenants import Context, judge

    findings = []
    for result in judge(Context(repo, settings)):
        for check in result.checks:
            if not check.ok:
                findings.append(Finding(result.title, result.key, check))
    return findings


# --- pre-push / pre-receive ------------------------------------------------------------------------------
def release_tag(ref: str, globs: Sequence[str]) -> bool:
    return ref.startswith("refs/tags/") and any(fnmatchcase(ref[len("refs/tags/"):], g) for g in globs)


def judge_push(view: Repo, updates: Sequence[Update], globs: Sequence[str], where: str) -> list[Finding]:
    """The push rules, judged in `view` (where every update's `source` names its new value)."""
    from .. import ledger
    from ..verification import Options, verify

    out: list[Finding] = []

    def fail(covenant: str, ref: str, code: str, detail: str, hint: str | None = None) -> None:
        out.append(Finding(covenant, ref, _check(f"{where}.{ref}", False, code, detail, hint)))

    log_pushed: Update | None = None
    for u in updates:
        forward_only = u.ref in FORWARD_ONLY or u.ref.startswith(KEEP_PREFIX)
        if forward_only:
            if u.new is None:
                fail("Integrity", u.ref, "VM-PUSH-NOT-FAST-FORWARD", f"the push deletes {u.ref}",
                     "ledger refs are never deleted")
                continue
            if u.old is not None and u.old != u.new and not (view.has_object(u.old)
                                                              and view.is_ancestor(u.old, u.new)):
                fail("Integrity", u.ref, "VM-PUSH-NOT-FAST-FORWARD",
                     f"{u.ref}: {u.new[:12]} does not extend {u.old[:12]} on the receiving side "
                     "(--force does not help: ledger refs only move forward)",
                     "run `git vaultmesh pull` to re-append your entries onto theirs, then push again")
                continue
            if u.ref == REF_LOG and u.old != u.new:
                log_pushed = u
        elif release_tag(u.ref, globs):
            if u.new is None:
                head = ledger.read_head(view)
                if head.commit is not None and ledger.find_entries(view, head, {"ref": u.ref}):
                    fail("Integrity", u.ref, "VM-TAG-MISSING",
                         f"the push deletes {u.ref}, which the ledger records as a release",
                         "recorded release tags stay; tag a new version instead")
                continue
            report = verify(view, Options(target=u.source, remember=False))
            for c in report.checks:
                if not c.ok:
                    out.append(Finding("Integrity", u.ref, c))
    if log_pushed is not None:
        report = verify(view, Options(all=True, log_ref=log_pushed.source, remember=False, subjects=False))
        for c in report.checks:
            if not c.ok:
                out.append(Finding("Integrity", log_pushed.ref, c))
    return out


def pre_push_updates(repo: Repo, lines: Sequence[str]) -> list[Update]:
    updates = []
    for line in lines:
        parts = line.split()
        if len(parts) != 4:
            continue
        local_ref, local_oid, remote_ref, remote_oid = parts
        new = _zero(local_oid)
        source = local_ref if local_ref.startswith("refs/") and new is not None else (new or "")
        updates.append(Update(remote_ref, _zero(remote_oid), new, source))
    return updates


def framework_updates(repo: Repo, remote: str) -> list[Update]:
    """pre-commit (the framework) gives a pre-push hook no stdin, only the first ref of the push in its
    environment: check that ref, and the ledger against what the remote holds."""
    updates = []
    theirs = repo.ls_remote(remote, [REF_LOG, REF_NOTES])
    for ref in (REF_LOG, REF_NOTES):
        mine = repo.ref_oid(ref)
        if mine is not None and mine != theirs.get(ref):
            updates.append(Update(ref, theirs.get(ref), mine, ref))
    remote_ref = os.environ.get("PRE_COMMIT_REMOTE_BRANCH", "")
    local_ref = os.environ.get("PRE_COMMIT_LOCAL_BRANCH", "")
    to = os.environ.get("PRE_COMMIT_TO_REF", "")
    new = repo.ref_oid(local_ref) if local_ref.startswith("refs/") else (repo.rev_parse(to) if to else None)
    if remote_ref.startswith("refs/tags/") and new:
        old = repo.ls_remote(remote, [remote_ref]).get(remote_ref)
        updates.append(Update(remote_ref, old, new, local_ref if local_ref.startswith("refs/") else new))
    return updates


def pre_receive(repo: Repo, lines: Sequence[str], globs: Sequence[str]) -> list[Finding]:
    """Judge the refs as the push would leave them, in a scratch view (the pushed objects are quarantined)."""
    updates = []
    for line in lines:
        parts = line.split()
        if len(parts) == 3:
            updates.append(Update(parts[2], _zero(parts[0]), _zero(parts[1]), parts[2]))
    relevant = [u for u in updates if u.ref in FORWARD_ONLY or u.ref.startswith(KEEP_PREFIX)
                or release_tag(u.ref, globs)]
    if not relevant:
        return []
    object_dirs = [d for d in (os.environ.get("GIT_QUARANTINE_PATH"), str(repo.git_dir / "objects")) if d]
    for var in QUARANTINE_ENV:  # from here on git reads objects through the view's alternates
        os.environ.pop(var, None)
    refs = repo.refs("refs/")
    for u in updates:
        if u.new is None:
            refs.pop(u.ref, None)
        else:
            refs[u.ref] = u.new
    with tempfile.TemporaryDirectory(prefix="vm-receive-") as tmp:
        view = scratch_view(repo, Path(tmp) / "view.git", object_dirs, refs)
        try:
            return judge_push(view, relevant, globs, "pre-receive")
        finally:
            view.close()


# --- post-rewrite and reference-transaction ----------------------------------------------------------------
def post_rewrite(repo: Repo, lines: Sequence[str], how: str) -> list[str]:
    from .. import ledger

    rewritten = {p[0]: p[1] for p in (line.split() for line in lines) if len(p) >= 2}
    notes = repo.ref_oid(REF_NOTES)
    if not rewritten or notes is None:
        return []
    noted = {it.path.replace("/", "") for it in repo.ls_tree(notes)}
    hit = sorted(set(rewritten) & noted)
    if not hit:
        return []
    _, entries = ledger.load(repo)
    out = []
    for seq, e in enumerate(entries):
        if e.subject_commit in hit:
            old = str(e.subject_commit)
            out.append(f"entry #{seq} ({e.id[:12]}, {e.type}) names commit {old[:12]}, which {how} rewrote as "
                       f"{rewritten[old][:12]}; the entry still names the old commit (kept alive by "
                       f"{KEEP_PREFIX}{old[:12]}… or its tag). Record the new one: "
                       f"git vaultmesh record {rewritten[old][:12]}")
    return out


def auto_record(repo: Repo, lines: Sequence[str], globs: Sequence[str]) -> list[str]:
    """Record every release tag this (committed) transaction created; a failure is reported, never fatal."""
    notes = []
    for line in lines:
        parts = line.split()
        if len(parts) != 3 or _zero(parts[0]) is not None or _zero(parts[1]) is None:
            continue
        ref = parts[2]
        if not release_tag(ref, globs):
            continue
        env = {k: v for k, v in os.environ.items() if k != "GIT_INDEX_FILE"}
        res = subprocess.run([sys.executable, "-m", "git_vaultmesh", "record", ref, "--if-missing"],
                             capture_output=True, text=True, env=env, cwd=repo.work_tree or repo.git_dir)
        if res.returncode == 0:
            notes.append(f"vaultmesh: recorded {ref} (vaultmesh.autoRecord): {res.stdout.strip().splitlines()[0]}")
        else:
            err = res.stderr.strip().splitlines()
            notes.append(f"vaultmesh: could not record {ref}: {err[0] if err else 'exit ' + str(res.returncode)}; "
                         f"run `git vaultmesh record {ref}`")
    return notes


# --- the verb ----------------------------------------------------------------------------------------------
def report_findings(name: str, findings: Sequence[Finding]) -> None:
    """One line per failure naming the covenant and the code; then the error for the first (exit 1)."""
    for f in findings:
        print(f"vaultmesh {name}: FAIL {f.covenant} [{f.check.code}] {f.ref}: {f.check.detail}", file=sys.stderr)
    first = findings[0]
    raise VaultMeshError(str(first.check.code),
                         f"{name}: covenant {first.covenant} fails ({len(findings)} problem(s)): {first.check.detail}",
                         first.check.hint or "run `git vaultmesh covenant` for the whole picture")


def run(args: argparse.Namespace) -> int:
    name: str = args.name
    stdin = sys.stdin.buffer.read() if name in STDIN_HOOKS and not sys.stdin.isatty() else b""
    run_chained(name, args.chain, args.hook_args, stdin)
    repo = Repo.discover()
    settings = Settings(repo)
    lines = [line for line in stdin.decode(errors="replace").splitlines() if line.strip()]
    findings: list[Finding] = []
    if name == "pre-commit":
        findings = fast_checks(repo, settings)
        if args.covenants:  # the fast checks say what moved; the covenants say what it broke
            findings += covenant_findings(repo, settings)
        key = os.environ.get("VAULTMESH_PRECOMMIT_KEY")
        if key and not findings:  # the state the script hashed passed: the next commit may skip Python
            ok_file = repo.git_dir / "vaultmesh" / PRECOMMIT_OK
            ok_file.parent.mkdir(parents=True, exist_ok=True)
            ok_file.write_text(key + "\n", encoding="utf-8")
    elif name == "pre-push":
        if not settings.flag("verifypush", True):
            return 0
        remote = args.hook_args[0] if args.hook_args else os.environ.get("PRE_COMMIT_REMOTE_NAME", "origin")
        if not lines and os.environ.get("PRE_COMMIT_REMOTE_NAME"):
            updates = framework_updates(repo, remote)
        else:
            updates = pre_push_updates(repo, lines)
        findings = judge_push(repo, updates, settings.release_tag_globs(), "pre-push")
    elif name == "pre-receive":
        findings = pre_receive(repo, lines, settings.release_tag_globs())
    elif name == "post-rewrite":
        for text in post_rewrite(repo, lines, args.hook_args[0] if args.hook_args else "a rewrite"):
            print(f"vaultmesh: warning: {text}", file=sys.stderr)
    elif name == "reference-transaction":
        if args.hook_args and args.hook_args[0] == "committed":
            for text in auto_record(repo, lines, settings.auto_record_globs()):
                print(text, file=sys.stderr)
    if findings:
        report_findings(name, findings)
    return 0

