"""`pull [REMOTE]`: take a colleague's ledger, re-append ours on top, so the next push fast-forwards.

Steps, each checked: fetch the remote's log into refs/vaultmesh/remotes/<remote>/log only if it extends
what we saw there last; verify it (same genesis, every signature, every checkpoint); then either
fast-forward, keep ours (we are ahead), or re-append our entries it lacks onto it — bodies carry no position,
so nothing is re-signed but the checkpoint. Every entry we had is in the result, or nothing changes.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

from .. import ledger, merkle
from ..config import signing_key
from ..entry import Entry, is_refname
from ..errors import VaultMeshError
from ..git import RefUpdate, Repo
from ..ui import print_json
from ..verification import Options, verify


def _remote_ref(remote: str) -> str:
    return f"{ledger.REMOTES_PREFIX}{remote}/log"


def _remote_notes(remote: str) -> str:
    return f"{ledger.REMOTES_PREFIX}{remote}/notes"


def fetch_remote_log(repo: Repo, remote: str) -> str:
    """Fetch into a scratch ref, accept only an extension of what we last saw; returns the new remote head."""
    tracking = _remote_ref(remote)
    scratch = f"{ledger.REMOTES_PREFIX}{remote}/incoming"
    last_seen = repo.ref_oid(tracking)
    repo.fetch(remote, [f"+{ledger.REF_LOG}:{scratch}"])
    # the remote's notes (absent while its log has no subject entries) become a parent of ours
    repo.try_fetch(remote, [f"+{ledger.REF_NOTES}:{_remote_notes(remote)}"])
    fetched = repo.ref_oid(scratch)
    if fetched is None:
        raise VaultMeshError("VM-REMOTE-FAILED", f"{remote} has no {ledger.REF_LOG}",
                             f"push the ledger there first: git push {remote} refs/vaultmesh/log "
                             "'refs/vaultmesh/keep/*' refs/notes/vaultmesh")
    try:
        if last_seen is not None and last_seen != fetched and not repo.is_ancestor(last_seen, fetched):
            raise VaultMeshError(
                "VM-REMOTE-DIVERGED",
                f"{remote}'s log {fetched[:12]} does not extend {last_seen[:12]}, which we fetched from it before",
                "the remote ledger was rewritten; compare with other replicas before trusting it",
            )
        if not repo.update_refs([RefUpdate(tracking, fetched, last_seen)]):
            raise VaultMeshError("VM-RACE-LOST", f"{tracking} moved during pull", "run pull again")
    finally:
        repo.delete_ref(scratch, fetched)  # compare-and-swap: a concurrent pull's scratch ref is its own
    # keep-refs hold the subjects the remote's receipts name; never overwrite ours
    repo.try_fetch(remote, ["refs/vaultmesh/keep/*:refs/vaultmesh/keep/*"])
    return fetched


def _fetch_recorded_tags(repo: Repo, remote: str, entries: list[Entry]) -> list[str]:
    """The tags the remote's releases name, when we lack them, each created only at the object its receipt
    records (fetched into our namespace first and compared): a tag the remote moved is not installed, so
    `git checkout TAG` never gives code no receipt names. Created, never moved: verify judges a tag we have."""
    expect = {e.subject_ref: str((e.body.get("subject") or {}).get("tag") or e.subject_commit)
              for e in entries if e.type == "release" and e.subject_ref and e.subject_ref.startswith("refs/tags/")
              and is_refname(e.subject_ref) and repo.ref_oid(e.subject_ref) is None}
    if not expect:
        return []
    staging = {ref: f"{ledger.REMOTES_PREFIX}{remote}/tags/{ref[len('refs/tags/'):]}" for ref in expect}
    repo.try_fetch(remote, [f"+{ref}:{tmp}" for ref, tmp in staging.items()])
    created: list[str] = []
    for ref, tmp in sorted(staging.items()):
        got = repo.ref_oid(tmp)
        if got is not None and got == expect[ref] and repo.update_refs([RefUpdate(ref, got, None)]):
            created.append(ref)
        if got is not None:
            repo.delete_ref(tmp, got)
    skipped = sorted(set(expect) - set(created))
    if skipped:
        from ..ui import warn

        warn(f"not created: {', '.join(skipped)} (the remote's tag is not the object its receipt records, or "
             "the remote lacks it); `git vaultmesh verify` reports those releases")
    return created


def _verified_remote(repo: Repo, remote: str) -> tuple[str, list[str]]:
    """Fetch the remote's log and verify it whole (its own policy, every signature and checkpoint). A refused
    remote leaves nothing behind: the tracking, notes and keep refs the fetch wrote are put back as they were."""
    scope = [f"{ledger.REMOTES_PREFIX}{remote}/", ledger.KEEP_PREFIX]
    before = repo.ref_values(scope)
    try:
        theirs_head = fetch_remote_log(repo, remote)
        # entries pending signatures or tokens are pulled (the cosigner must be able to get them) and reported
        report = verify(repo, Options(all=True, log_ref=_remote_ref(remote), remember=False, subjects=False,
                                      allow=frozenset({"pending"})))
        if not report.ok:
            first = next(c for c in report.checks if not c.ok)
            raise VaultMeshError(first.code or "VM-REMOTE-FAILED",
                                 f"{remote}'s ledger does not verify: {first.detail}",
                                 "nothing was changed locally (what the fetch wrote was removed again); check "
                                 "the trust root you pinned, then compare with other replicas")
    except VaultMeshError:
        _put_back(repo, before, repo.ref_values(scope))
        raise
    return theirs_head, report.pending


def _put_back(repo: Repo, before: dict[str, str], after: dict[str, str]) -> None:
    """Undo a refused fetch, ref by ref, each a compare-and-swap (a concurrent writer's change stays)."""
    for ref, oid in after.items():
        if ref not in before:
            repo.delete_ref(ref, oid)
        elif before[ref] != oid:
            repo.update_refs([RefUpdate(ref, before[ref], oid)])


def _fast_forward(repo: Repo, remote: str, ours: ledger.Head, theirs_head: str, theirs_entries: list[Entry],
                  notes_parents: list[str]) -> None:
    """Move our log to theirs, with their notes when they are exactly what the log implies (stay identical)."""
    remote_notes = repo.ref_oid(_remote_notes(remote))
    if (remote_notes is not None and (ours.notes is None or repo.is_ancestor(ours.notes, remote_notes))
            and repo.rev_parse(remote_notes, "tree") == ledger.notes_tree(repo, theirs_entries)):
        notes = remote_notes
    else:
        notes = ledger.rebuild_notes(repo, theirs_head, theirs_entries, notes_parents)
    if not repo.update_refs([RefUpdate(ledger.REF_LOG, theirs_head, ours.commit),
                             RefUpdate(ledger.REF_NOTES, notes, ours.notes)]):
        raise VaultMeshError("VM-RACE-LOST", "the local ledger moved during pull", "run pull again")


_SIGNER_CODES = frozenset({"VM-SIG-UNPINNED", "VM-SIG-NOT-AUTHORIZED", "VM-SIG-KEY-REVOKED", "VM-CHECKPOINT-SIG",
                           "VM-SIGNER-NOT-IN-POLICY"})


def _judge_merge(repo: Repo, remote: str, known: int) -> Callable[[str], None]:
    """The merged log commit, judged by verify before any ref moves: their prefix was verified whole just
    before (`known`), so only our re-appended entries and the new checkpoint are checked again."""

    def check(commit: str) -> None:
        report = verify(repo, Options(all=True, log_ref=commit, remember=False, subjects=False,
                                      allow=frozenset({"pending"}), known_size=known))
        if report.ok:
            return
        first = next(c for c in report.checks if not c.ok)
        if first.code in _SIGNER_CODES:
            raise VaultMeshError(
                "VM-PULL-SIGNER-REMOVED",
                f"{remote}'s policy no longer lets our key sign what we would re-append: {first.detail}",
                "nothing was changed locally and our entries are intact; ask a signer of the remote's policy to "
                "re-add (or co-sign for) our key, then pull again")
        raise VaultMeshError(first.code or "VM-REMOTE-FAILED",
                             f"our entries on top of {remote}'s log would not verify: {first.detail}",
                             "nothing was changed locally; our entries are intact")

    return check


def _reappend(repo: Repo, remote: str, ours: ledger.Head, theirs_head: str, theirs_entries: list[Entry],
              notes_parents: list[str], drop_archives: bool) -> tuple[list[Entry], int, int]:
    """Diverged: append our entries the remote lacks onto its log; (final entries, added, archives dropped)."""
    assert ours.commit is not None
    theirs = ledger.read_head(repo, _remote_ref(remote))
    ours_entries = ledger.read_entries(repo, ours.commit)
    have = {e.body_digest for e in theirs_entries}
    their_releases = {e.subject_ref for e in theirs_entries if e.type == "release"}
    missing: list[Entry] = [e for e in ours_entries if e.body_digest not in have]
    # an archive timestamp covers the checkpoint at a size of OUR log; re-appended at another position it
    # would stamp a checkpoint that no longer exists and fail verify forever. It is never silently lost:
    # without --drop-archives pull stops; with it, our old log head stays reachable under refs/vaultmesh/keep/
    dropped = [e for e in missing if e.type == "timestamp" and "checkpoint" in e.body]
    if dropped and not drop_archives:
        raise VaultMeshError(
            "VM-PULL-WOULD-DROP",
            f"{len(dropped)} archive timestamp(s) of our log cover checkpoints that the merge replaces "
            f"(entries {', '.join(e.id[:12] for e in dropped)})",
            "nothing was changed locally. Run `git vaultmesh pull --drop-archives` to merge anyway (our current "
            "log head is kept under refs/vaultmesh/keep/, so those entries stay in the repository), then "
            "`git vaultmesh timestamp --archive` to renew over the merged log")
    missing = [e for e in missing if e not in dropped]
    for e in missing:
        if e.type == "release" and e.subject_ref in their_releases:
            raise VaultMeshError("VM-ALREADY-RECORDED",
                                 f"both ledgers record a release of {e.subject_ref} (ours: {e.id[:12]})",
                                 "one release per tag: settle which receipt stands, then pull again")
    final_entries = theirs_entries + missing
    keep = [ours.commit] if dropped else []
    if missing:
        commit = ledger.append_onto(repo, signing_key(repo), theirs, missing, expected_log=ours.commit,
                                    all_entries=final_entries, notes_parents=notes_parents, keep=keep,
                                    check=_judge_merge(repo, remote, len(theirs_entries)))
    else:  # nothing of ours left to carry over: adopt theirs as is
        notes = ledger.rebuild_notes(repo, theirs_head, final_entries, notes_parents)
        ok = repo.update_refs([RefUpdate(ledger.REF_LOG, theirs_head, ours.commit),
                               RefUpdate(ledger.REF_NOTES, notes, ours.notes),
                               *[RefUpdate(ledger.KEEP_PREFIX + k, k, None) for k in keep]])
        commit = theirs_head if ok else None
    if commit is None:
        raise VaultMeshError("VM-RACE-LOST", "the local ledger moved during pull", "run pull again")
    if dropped:
        from ..ui import warn

        warn(f"{len(dropped)} archive timestamp(s) of our log were not re-appended (our old log head "
             f"{ours.commit[:12]} is kept as {ledger.KEEP_PREFIX}{ours.commit}); run `git vaultmesh timestamp "
             "--archive`")
    return final_entries, len(missing), len(dropped)


def run(args: argparse.Namespace) -> int:
    repo = Repo.discover()
    remote: str = args.remote
    theirs_head, pending = _verified_remote(repo, remote)
    ours = ledger.read_head(repo)
    theirs = ledger.read_head(repo, _remote_ref(remote))
    if ours.commit is not None and ours.log_id != theirs.log_id:
        raise VaultMeshError("VM-LOG-FORKED", f"{remote}'s ledger is log {theirs.log_id}, ours is {ours.log_id}",
                             "these are different ledgers; use `federate` for peers, not pull")
    added = 0
    notes_parents = [p for p in (repo.ref_oid(_remote_notes(remote)), ours.notes) if p]
    theirs_entries = ledger.read_entries(repo, theirs_head)
    # the tags their releases name, when we lack them: created, never moved (verify judges a tag we have), and
    # only under refs/tags/ — whatever an entry names, pull writes nothing else outside refs/vaultmesh/
    _fetch_recorded_tags(repo, remote, theirs_entries)
    if ours.commit is None or repo.is_ancestor(ours.commit, theirs_head):
        action = "up to date" if ours.commit == theirs_head else "fast-forward"
        if ours.commit != theirs_head:
            _fast_forward(repo, remote, ours, theirs_head, theirs_entries, notes_parents)
        final_entries = theirs_entries
    elif repo.is_ancestor(theirs_head, ours.commit):
        action = "ahead"
        final_entries = ledger.read_entries(repo, ours.commit)
    else:
        action = "re-appended"
        final_entries, added, _ = _reappend(repo, remote, ours, theirs_head, theirs_entries, notes_parents,
                                            args.drop_archives)
    # pull is the one sanctioned replacement of the local log: remember the merged checkpoint
    head = ledger.read_head(repo)
    if head.log_id:
        ledger.save_verified(repo, head.log_id, head.size,
                             merkle.root_from_leaf_hashes([merkle.leaf_hash(e.line) for e in final_entries]))
    result = {"ok": True, "remote": remote, "action": action, "remote_head": theirs_head,
              "head": head.commit, "size": head.size, "reappended": added, "pending": pending}
    if args.json:
        print_json(result)
    else:
        print(f"pull {remote}: {action}" + (f" ({added} of our entries re-appended)" if added else "")
              + f"; log size {head.size}")
        for what in pending:
            print(f"pending (pulled, not yet complete): {what}")
        if action in ("re-appended", "ahead"):
            print(f"next: git push {remote} refs/vaultmesh/log 'refs/vaultmesh/keep/*' refs/notes/vaultmesh")
    return 0
