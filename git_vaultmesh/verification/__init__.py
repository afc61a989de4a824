"""Every verdict of git-vaultmesh, composed from small checks that each own their error codes.

`verify` (a repository) and `check_bundle` (a proof bundle, no repository) build a Context and run the same
entry checks over it — genesis, trust root, statements, signatures, policy changes, cosigns, thresholds,
tokens — plus what only each can see: the chain of log commits, tags, histories, tree digests, notes and
rollback for a repository; inclusion, policy completeness, the commit and consistency proofs for a bundle.
Nothing is skipped because its input is missing: a missing input is itself a failure with its own code.
"""

from __future__ import annotations

from collections.abc import Sequence

from .. import ledger, merkle
from ..errors import VaultMeshError
from ..git import Repo
from . import entries, log, notes, subjects, tokens
from .context import Context, Options, Scope
from .report import Check, Report, summarize

__all__ = ["Check", "Options", "Report", "summarize", "verify", "check_bundle", "doctor", "doctor_sweep", "derived", "Scope"]


def _repository_context(repo: Repo, opts: Options, report: Report) -> Context | None:
    try:
        view = ledger.read_view(repo, opts.log_ref)
    except VaultMeshError as exc:
        report.failed("log.present" if exc.code == "VM-NOT-INITIALIZED" else "log.read", exc.code, exc.cause, exc.hint)
        return None
    for check, problem in view.problems:
        report.error(check, problem)
    from ..config import validated

    trust_root = validated("--trust-root", opts.trust_root) or (
        validated("vaultmesh.trustRoot", repo.config_get("vaultmesh.trustRoot")) if opts.own_log else None)
    return Context(report, opts, view.carried(), dict(enumerate(view.lines)), view.size,
                   subjects.scope_for(repo, opts, view.entries), repo=repo, view=view, trust_root=trust_root)


def verify(repo: Repo, opts: Options) -> Report:
    """The ledger at opts.log_ref, and what opts.target names (everything without a target, or with --all)."""
    report = Report()
    ctx = _repository_context(repo, opts, report)
    if ctx is None:
        return report
    try:
        commits = log.chain(ctx)
        entries.timeline(ctx)
        if ctx.timeline is not None:
            for rule in entries.ENTRY_RULES[1:]:
                rule(ctx)
            tokens.tokens(ctx)
            log.checkpoints(ctx, commits)
        positions = subjects.targets(ctx)
        if positions is not None and opts.subjects:
            for subject_rule in subjects.SUBJECT_RULES:
                subject_rule(ctx, positions)
            notes.notes(ctx, positions)
        if opts.remember:
            log.rollback(ctx)
    except VaultMeshError as exc:  # e.g. git log fails on a missing log commit: still a coded check
        report.error("log.read", exc)
    finally:
        ctx.close()
    if report.ok and opts.remember and report.log_id:
        assert ctx.view is not None
        ledger.save_verified(repo, report.log_id, ctx.view.size, merkle.root_from_leaf_hashes(ctx.view.leaves))
    return report


def doctor(repo: Repo) -> Report:
    """What is derived from the log and can be repaired: notes agree with it, every subject it names is
    present, no stale lock blocks the ledger refs. (The log itself is verify's: doctor does not judge trust.)"""
    return doctor_sweep(repo)[0]


def doctor_sweep(repo: Repo) -> tuple[Report, ledger.View | None]:
    """`doctor` over every entry of the log, and the view it read (None when there was no log to read).
    The default `git vaultmesh doctor` runs the same checks over the entries appended since (health.py)."""
    report = Report()
    ctx = _repository_context(repo, Options(all=True, remember=False), report)
    if ctx is None:
        return report, None
    derived(ctx, sorted(ctx.carried))
    return report, ctx.view


def derived(ctx: Context, positions: Sequence[int], *, notes_moved: bool = True) -> None:
    """doctor's checks, over the entries at `positions`: every subject they name is present, the notes agree
    with the log, no stale lock blocks the ledger refs. `notes_moved` False (the incremental doctor: no new
    entry names a commit and the notes are as found clean) passes the notes without reading them."""
    subjects.subject_objects(ctx, positions)
    if notes_moved:
        notes.notes(ctx, positions)
    else:
        ctx.report.passed("notes", "notes unchanged since the last clean doctor, and no new entry names a commit")
    log.stale_locks(ctx)


def check_bundle(bundle: object, trust_root: str) -> Report:
    """A proof bundle, offline: see proof.py for what it must carry and prove."""
    from . import proof

    return proof.check(bundle, trust_root)
