"""refs/notes/vaultmesh agrees with the log: the note on each subject commit in scope holds exactly the lines
of the entries about it (notes are an index derived from the log; `doctor --repair` rebuilds them)."""

from __future__ import annotations

from collections.abc import Sequence

from .. import ledger
from ..entry import Entry
from ..errors import VaultMeshError
from ..git import Repo
from .context import Context


def notes(ctx: Context, positions: Sequence[int]) -> None:
    r = ctx.report
    repo, view = ctx.repo, ctx.view
    assert repo is not None and view is not None
    entries = [e for e in view.entries if e is not None]
    expected = ledger.notes_for(entries)
    notes_head = repo.ref_oid(ledger.REF_NOTES)
    newer = _log_of_newer_notes(repo, view, notes_head)
    if newer is not None:  # an append landed while we verified: judge the notes by the log they derive from
        expected = ledger.notes_for(newer)
    subjects = {c for i in positions if (e := ctx.carried.get(i)) is not None and (c := e.subject_commit)}
    actual: dict[str, str] = {}
    doubled: set[str] = set()  # notes at two paths (flat and fanned out): git shows both, concatenated
    if notes_head is not None:
        try:
            for it in repo.ls_tree(notes_head):
                key = it.path.replace("/", "")
                if key in actual:
                    doubled.add(key)
                actual[key] = it.oid
        except VaultMeshError as exc:
            r.failed("notes", "VM-NOTES-MISMATCH", f"{ledger.REF_NOTES} ({notes_head[:12]}) is unreadable: {exc.cause}")
            return
    if ctx.scope.everything:
        subjects |= set(actual) | set(expected)
    oids = {s: actual[s] for s in subjects if s in actual}
    blobs = dict(zip(oids, repo.read_blobs(list(oids.values()))))
    wrong = []
    for s in sorted(x for x in subjects if x):
        if s in doubled:
            wrong.append(f"{s[:12]} (two notes, at the flat and the fan-out path)")
        elif expected.get(s, b"") != blobs.get(s, b""):
            wrong.append(f"{s[:12]} ({'absent' if s not in actual else 'differs'})")
    if wrong:
        r.failed("notes", "VM-NOTES-MISMATCH",
                 f"refs/notes/vaultmesh disagrees with the log for {len(wrong)} commit(s): {', '.join(wrong[:5])}")
    else:
        r.passed("notes", f"notes agree with the log for {len(subjects)} commit(s)")


def _log_of_newer_notes(repo: Repo, view: ledger.View, notes_head: str | None) -> list[Entry] | None:
    """The entries of the log `notes_head` says it was derived from, when that log is not the one verified
    but extends it and is still on the log ref (another process appended meanwhile: both refs moved in one
    transaction after we read the log). None otherwise: the notes are then judged against the verified log."""
    source = ledger.notes_source(repo, notes_head) if view.ref == ledger.REF_LOG else None
    if source is None or source == view.head:
        return None
    now = repo.ref_oid(ledger.REF_LOG)
    if now is None or not repo.is_ancestor(view.head, source) or not repo.is_ancestor(source, now):
        return None
    try:
        return ledger.read_entries(repo, source)
    except VaultMeshError:
        return None
