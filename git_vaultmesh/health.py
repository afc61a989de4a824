"""`doctor`'s health areas: ledger, index, config, keys, TSAs, hooks — each {ok, detail}, cheap by default.

The ledger's derived state (subject objects, notes) is judged by the same checks as `doctor --full`
(subjects.subject_objects, notes.notes, log.stale_locks), but only over what changed since the state a doctor
last found clean, remembered in the git dir as "clean through log commit X, notes commit Y, keep refs K":

* the log only grew (ledger.appended_entries): the new entries are checked; their subjects' notes are judged
  against the remembered clean note plus the new lines, so an old entry is never read again;
* the notes moved, and every path that changed is a subject of a new entry: those notes are judged as above;
* anything else — no remembered state, another log id, a rewritten log, a notes path changed that no new entry
  explains (a hand edit), a keep ref gone or moved, an unreadable state — is a doubt: the whole log is swept.

Nothing here starts gpg or imports cryptography unless asked (`--full`, or a new policy/timestamp entry with
TSAs in the policy, whose expiry facts are then recomputed from the whole log).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from . import ledger
from .entry import Entry, parse_line
from .errors import VaultMeshError
from .git import Repo

if TYPE_CHECKING:
    from .config import Settings
    from .verification.report import Report

STATE_VERSION = 1
AREAS = ("ledger", "index", "config", "keys", "tsas", "hooks")
DERIVED = frozenset({"log.locks"})  # checks whose failure does not make the derived state unclean


class Health:
    """What doctor found: per area {ok, detail}, the problems (one line each, naming their code), warnings,
    and how the ledger was judged (mode "incremental" or "full", `checked` entries, `reason` for a sweep)."""

    def __init__(self) -> None:
        self.areas: dict[str, dict[str, Any]] = {}
        self.warnings: list[str] = []
        self.mode = "incremental"
        self.reason: str | None = None
        self.checked = 0
        self.ledger: list[tuple[str, bool, str | None, str]] = []  # (check, ok, code, detail) of the ledger

    @property
    def problems(self) -> list[str]:
        """Every area's problems, in the order of AREAS, each prefixed with its area."""
        return [f"{n}: {p}" for n in AREAS if n in self.areas for p in self.areas[n]["problems"]]

    @property
    def ok(self) -> bool:
        return not self.problems

    def area(self, name: str, ok: bool, detail: str, problems: Sequence[str] = (), **extra: Any) -> None:
        self.areas[name] = {"ok": ok and not problems, "detail": detail, "problems": list(problems), **extra}

    def take(self, report: Report) -> None:
        self.ledger.extend((c.check, c.ok, c.code, c.detail) for c in report.checks)

    def as_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "mode": self.mode, "reason": self.reason, "checked": self.checked,
                "areas": {n: self.areas[n] for n in AREAS if n in self.areas}, "problems": self.problems,
                "warnings": self.warnings}


def check(repo: Repo, *, full: bool = False) -> Health:
    """Every area; `full`: sweep the whole log, resolve the signing key with gpg."""
    h = Health()
    refs = repo.ref_values([ledger.REF_LOG, ledger.REF_NOTES, ledger.KEEP_PREFIX])
    origins = repo.config_origins(r"^(vaultmesh\.|user\.signingkey$|gpg\.format$)")  # one git for all settings
    config = _config_area(repo, h, origins)
    from .config import Settings

    read = {key: value for _, _, key, value in origins}  # git's reading order: the last value wins
    settings = Settings(repo, {k: v for k, v in read.items() if k.startswith("vaultmesh.")})
    facts = _ledger_area(repo, h, refs, full)
    _index_area(repo, h, refs.get(ledger.REF_LOG))
    _keys_area(repo, h, settings, read, full)
    _tsas_area(h, config, facts)
    _hooks_area(repo, h)
    return h


# --- ledger -------------------------------------------------------------------------------------------------

def _keep(refs: dict[str, str]) -> list[str]:
    return sorted(f"{k} {v}" for k, v in refs.items() if k.startswith(ledger.KEEP_PREFIX))


def _ledger_area(repo: Repo, h: Health, refs: dict[str, str], full: bool) -> dict[str, Any] | None:
    """The log's refs and head, then its derived state since the remembered clean state (or all of it)."""
    log_head, notes_head = refs.get(ledger.REF_LOG), refs.get(ledger.REF_NOTES)
    head: ledger.Head | None = None
    if log_head is not None:
        try:
            head = ledger.head_at(repo, log_head, notes_head)
        except VaultMeshError as exc:
            h.ledger.append(("log.head", False, exc.code, exc.cause))
    state = None if full or head is None else ledger.load_doctor_state(repo)
    plan = _plan(repo, state, log_head, notes_head, refs, head) if state is not None else (
        "--full was asked" if full else "no clean state remembered" if head is not None
        else "there is no log" if log_head is None else "the log head is unreadable")
    if isinstance(plan, str):
        h.mode, h.reason = "full", plan
        facts = _sweep(repo, h)
    else:
        assert state is not None and head is not None and log_head is not None
        facts = _since(repo, h, state, head, log_head, plan)
    clean = all(ok or check in DERIVED for check, ok, _, _ in h.ledger)
    if clean and head is not None and head.commit == log_head:
        new_state = {"v": STATE_VERSION, "log": log_head, "size": head.size, "log_id": head.log_id,
                     "notes": notes_head, "keep": _keep(refs), "tsa": facts}
        if new_state != state:
            now = repo.ref_values([ledger.REF_LOG, ledger.REF_NOTES, ledger.KEEP_PREFIX])
            if now.get(ledger.REF_LOG) == log_head and now.get(ledger.REF_NOTES) == notes_head \
                    and _keep(now) == _keep(refs):  # nothing moved while we judged: this is what was found clean
                ledger.save_doctor_state(repo, new_state)
    problems = [f"{detail} ({code})" for _, ok, code, detail in h.ledger if not ok]
    if head is not None and head.commit is not None:
        how = (f"{h.checked} new entr{'y' if h.checked == 1 else 'ies'} checked since the last clean doctor"
               if h.mode == "incremental" else f"all {h.checked} entries checked ({h.reason})")
        detail = f"log at {head.commit[:12]}, {head.size} entries; {how}"
    else:
        detail = "no readable log"
    h.area("ledger", True, detail, problems, size=head.size if head is not None else None,
           head=log_head, notes=notes_head)
    return facts


class _Since:
    """What changed since the remembered clean state: the entries appended, and the notes paths that moved."""

    def __init__(self, added: list[tuple[int, str]], notes_changed: set[str]) -> None:
        self.added, self.notes_changed = added, notes_changed


def _plan(repo: Repo, state: dict[str, Any], log_head: str | None, notes_head: str | None,
          refs: dict[str, str], head: ledger.Head | None) -> _Since | str:
    """_Since when the change since `state` is a plain append; otherwise why the whole log must be swept."""
    try:
        old_log, old_size, old_notes = str(state["log"]), int(state["size"]), state.get("notes")
        keep = state["keep"]
        if state.get("v") != STATE_VERSION or not isinstance(keep, list) or (old_notes is not None
                                                                            and not isinstance(old_notes, str)):
            raise ValueError
    except (KeyError, TypeError, ValueError):
        return "the remembered state is unreadable"
    assert log_head is not None and head is not None
    if state.get("log_id") != head.log_id:
        return "the log id differs from the one found clean"
    if not set(keep) <= set(_keep(refs)):
        return "a keep ref was removed or moved since the last clean doctor"
    if log_head == old_log:
        added: list[tuple[int, str]] | None = []
    else:
        added = ledger.appended_entries(repo, old_log, old_size, log_head)
    if added is None:
        return "the log does not simply extend the one found clean (rewritten or rewound)"
    if old_size + len(added) != head.size:
        return "the checkpoint's size is not the size of the entries found"
    changed: set[str] = set()
    if notes_head != old_notes:
        if notes_head is None:
            return "refs/notes/vaultmesh is gone"
        try:
            if old_notes is not None and not repo.has_object(old_notes):
                return "the notes commit found clean is gone"
            changed = {ch.path.replace("/", "") for ch in repo.diff_tree(old_notes, notes_head)}
        except VaultMeshError:
            return "the notes cannot be compared with the ones found clean"
    return _Since(added, changed)


def _sweep(repo: Repo, h: Health) -> dict[str, Any] | None:
    """The whole log, by the full doctor; returns the TSA expiry facts of the log it read."""
    from .verification import doctor_sweep

    report, view = doctor_sweep(repo)
    h.take(report)
    h.checked = view.size if view is not None else 0
    if view is None:
        return None
    from .rfc3161.timestamping import doctor_facts

    return doctor_facts(view.log_id, view.entries)


def _since(repo: Repo, h: Health, state: dict[str, Any], head: ledger.Head, log_head: str,
           plan: _Since) -> dict[str, Any] | None:
    """The derived-state checks over the appended entries only (and the notes of their subjects)."""
    carried: dict[int, Entry] = {}
    lines: dict[int, bytes] = {}
    for (seq, _), blob in zip(plan.added, repo.read_blobs([oid for _, oid in plan.added])):
        where = f"entry #{seq}"
        try:
            line = ledger.split_blob(blob, where)
            lines[seq] = line
            carried[seq] = parse_line(line, where)
        except VaultMeshError as exc:  # as read_view reports it for the full sweep
            h.ledger.append((f"entry.{seq}.format", False, exc.code, exc.cause))
    h.checked = len(plan.added)
    wanted = {c for e in carried.values() if (c := e.subject_commit)}
    unexplained = plan.notes_changed - wanted
    if unexplained:  # a note changed that no appended entry is about: edited by hand, or by a foreign tool
        h.mode, h.reason = "full", f"refs/notes/vaultmesh changed for {len(unexplained)} commit(s) no new entry names"
        h.ledger.clear()
        return _sweep(repo, h)
    if carried or plan.notes_changed or ledger.ref_locks(repo, older_than=ledger.STALE_LOCK_SECONDS):
        _derived(repo, h, state, log_head, head, carried, lines, wanted, bool(plan.notes_changed))
    else:  # nothing appended, notes as found clean, no lock: what log.stale_locks and notes would pass
        h.ledger.append(("notes", True, None, "notes unchanged since the last clean doctor"))
        h.ledger.append(("log.locks", True, None, "no stale lock on the ledger refs"))
    facts = state.get("tsa")
    kinds = {e.type for e in carried.values()}
    has_tsas = isinstance(facts, dict) and bool(facts.get("tsas"))
    if not isinstance(facts, dict) or "policy" in kinds or ("timestamp" in kinds and has_tsas):
        from .rfc3161.timestamping import doctor_facts

        view_all = ledger.read_view(repo)  # a new policy or timestamp entry: expiry facts from the whole log
        facts = doctor_facts(view_all.log_id, view_all.entries)
    return facts


def _derived(repo: Repo, h: Health, state: dict[str, Any], log_head: str, head: ledger.Head,
             carried: dict[int, Entry], lines: dict[int, bytes], wanted: set[str], notes_moved: bool) -> None:
    """subject_objects, notes and stale_locks — the full doctor's checks — over the appended entries. The notes
    of their subjects are judged whole: each subject's earlier entries are the lines of its note as the clean
    state held it (that note was found equal to them), then the new entries, in log order."""
    from .verification import derived
    from .verification.context import Context, Options, Scope
    from .verification.report import Report

    before: list[Entry] = []
    old_notes = state.get("notes")
    if wanted and old_notes:
        ordered = sorted(wanted)
        names = [f"{old_notes}:{p}" for s in ordered for p in ledger.note_paths(s)]
        for s, (flat, fanned) in zip(ordered, _pairs(repo.stream_objects(names))):
            for line in (flat if flat is not None else fanned or b"").splitlines():
                before.append(Entry(line, {"subject": {"commit": s}}))  # only its line and subject are read
    view = ledger.View(ledger.REF_LOG, log_head, [e.line for e in before] + list(lines.values()),
                       [*before, *carried.values()], [], [])
    report = Report()
    ctx = Context(report, Options(all=True, remember=False), carried, lines, head.size,
                  Scope(everything=False, positions=set(carried)), repo=repo, view=view)
    derived(ctx, sorted(carried), notes_moved=bool(wanted) or notes_moved)
    h.take(report)


def _pairs(items: Iterator[tuple[str, bytes | None]]) -> Iterator[tuple[bytes | None, bytes | None]]:
    """(flat, fanned-out) note blobs, from the stream of both paths of each subject."""
    for _, a in items:
        yield a, next(items)[1]


# --- index, config, keys, TSAs, hooks -------------------------------------------------------------------------

def _index_area(repo: Repo, h: Health, log_head: str | None) -> None:
    """The derived query index: a cache, rebuilt by the next query when it is not fresh (never a failure)."""
    from . import index

    state, size = index.freshness(repo, log_head)
    detail = {"fresh": f"fresh for the log head ({size} entries)",
              "behind": "built from another log head: the next query extends or rebuilds it",
              "absent": "not built yet: the next query builds it",
              "unreadable": "unreadable or of another schema: the next query rebuilds it"}[state]
    h.area("index", True, detail, state=state)


def _config_area(repo: Repo, h: Health, origins: list[tuple[str, str, str, str]]) -> list[dict[str, Any]]:
    """`config check`'s judgement of every vaultmesh.* setting (git config and .vaultmesh.toml)."""
    from .commands.config import _entries, problems

    entries = _entries(repo, origins)
    found = problems(entries)
    lines = [f"{p['where']}: {p['problem']} ({p['hint']}) (VM-CONFIG-INVALID)" for p in found]
    h.area("config", True, f"{len(entries)} setting(s), " + (f"{len(found)} invalid" if found else "all valid"), lines)
    return entries


def _keys_area(repo: Repo, h: Health, settings: Settings, read: dict[str, str], full: bool) -> None:
    """A signing key is configured (and, with --full, gpg or ssh-keygen can use it). Read as `record` reads
    them (config.Settings); a malformed value is the config area's problem, and here what cannot be used."""
    from .config import validated

    try:
        name = settings.get("signingkey") or read.get("user.signingkey")
        fmt = settings.get("signingformat") or validated("signingformat", read.get("gpg.format") or "openpgp")
    except VaultMeshError as exc:
        h.area("keys", False, "the signing key or format is malformed", [f"{exc.cause} ({exc.code})"])
        return
    try:
        trust = "trust root pinned" if settings.get("trustroot") else "no trust root pinned (trust on first use)"
    except VaultMeshError:
        trust = "the trust root setting is malformed (see config)"
    if not name:
        h.area("keys", True, f"no signing key configured: this clone verifies but cannot record "
               f"(git config vaultmesh.signingKey <fingerprint>); {trust}", configured=False)
        return
    problems: list[str] = []
    if fmt == "ssh" and not str(name).startswith(("key::", "ssh-")) and not os.path.exists(
            os.path.expanduser(str(name))):
        problems.append(f"ssh signing key {name} does not exist (VM-NO-SIGNING-KEY)")
    checked = "not opened (doctor --full asks gpg/ssh-keygen)"
    if full and not problems:
        from .config import signing_key

        try:
            signing_key(repo)
            checked = "usable"
        except VaultMeshError as exc:
            problems.append(f"{exc.cause} ({exc.code})")
    h.area("keys", True, f"{fmt} key {name}: {checked}; {trust}", problems, configured=True)


def _tsas_area(h: Health, entries: Sequence[dict[str, Any]], facts: dict[str, Any] | None) -> None:
    """Configured TSA URLs are http(s) URLs; the policy's TSAs have one; certificate expiry (warnings)."""
    urls: dict[str, Any] = {}
    for e in entries:
        key = e.get("key")
        if isinstance(key, str) and key.lower().startswith("tsa.") and key.lower().endswith(".url"):
            urls.setdefault(key[4:-4], e["value"])
    problems: list[str] = []
    if urls:
        from .rfc3161.client import url_problem  # what `record` would meet when it asks that TSA

        problems = [f"vaultmesh.tsa.{n}.url = {str(u)[:80]!r} {why} (VM-CONFIG-INVALID)"
                    for n, u in urls.items() if (why := url_problem(u)) is not None]
    policy = list(facts.get("tsas", [])) if facts else []
    unset = [n for n in policy if n not in urls]
    detail = (f"{len(urls)} configured, {len(policy)} in the policy" if urls or policy else "none configured, none in the policy")
    if unset:
        detail += f"; no URL here for {', '.join(unset)} (records stay pending until `tsa` or `timestamp` runs with one)"
    if facts and facts.get("items"):
        from .rfc3161.timestamping import verification_now, warnings_from_facts

        h.warnings.extend(warnings_from_facts(facts, verification_now()))  # VAULTMESH_NOW: "and on that date?"
    h.area("tsas", True, detail, problems)


def _hooks_area(repo: Repo, h: Health) -> None:
    """The hooks `git vaultmesh install` placed are still there, still ours, executable, where git runs hooks."""
    from .commands.install import is_ours, load_state

    placed = load_state(repo).get("hooks") or {}
    if not placed:
        h.area("hooks", True, "not installed (`git vaultmesh install` adds the pre-commit, pre-push, "
               "reference-transaction and post-rewrite hooks)", installed=False)
        return
    from pathlib import Path

    problems = []
    where = repo.hooks_dir()
    for path in sorted(placed):
        p = Path(path)
        if not p.exists():
            problems.append(f"hook {p.name} is missing ({path}): run `git vaultmesh install` again (VM-HOOK-MISSING)")
        elif not is_ours(p):
            problems.append(f"hook {p.name} was replaced by another ({path}) (VM-HOOK-MISSING)")
        elif not os.access(p, os.X_OK):
            problems.append(f"hook {p.name} is not executable ({path}): git skips it (VM-HOOK-MISSING)")
        elif p.parent.resolve() != where.resolve():
            problems.append(f"hook {p.name} is in {p.parent}, but git runs hooks from {where} (core.hooksPath) "
                            "(VM-HOOK-MISSING)")
    h.area("hooks", True, f"{len(placed)} installed in {where}", problems, installed=True)
