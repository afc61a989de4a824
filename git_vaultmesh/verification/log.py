"""Log checks: the chain of log commits only appends, every checkpoint commits to its entries and is signed
by a policy signer, and the log is consistent with the checkpoint this clone verified last."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .. import ledger, merkle
from ..entry import seq_of_path
from ..errors import VaultMeshError
from ..git import log_chain
from ..policy import Policy
from .context import Context


@dataclass(frozen=True)
class LogCommit:
    oid: str
    size: int  # entries after this commit
    checkpoint: str | None  # blob oids in its tree
    signature: str | None
    note: str | None = None  # checkpoint.note: the checkpoint as a C2SP signed note


def _verb(status: str) -> str:
    return {"M": "modifies", "D": "deletes", "T": "changes the type of", "A": "adds"}.get(status, "changes")


def chain(ctx: Context) -> list[LogCommit]:
    """Each log commit only adds the next entries (no merge, no change or removal, nothing else in the tree)."""
    r = ctx.report
    assert ctx.repo is not None and ctx.view is not None
    try:
        commits = log_chain(ctx.repo, ctx.view.head)
    except VaultMeshError as exc:  # git log stops at a missing or corrupt log commit
        raise VaultMeshError("VM-LOG-CORRUPT", f"the chain of log commits cannot be read: {exc.cause}",
                             "restore refs/vaultmesh/log from a replica; run `git fsck`") from None
    size = 0
    ok = True
    out: list[LogCommit] = []
    cp_oid = sig_oid = note_oid = None
    for commit in commits:
        if len(commit.parents) > 1:
            r.failed("log.append-only", "VM-LOG-NOT-APPEND-ONLY",
                     f"log commit {commit.oid[:12]} is a merge; the log is a single chain")
            ok = False
        added = []
        for ch in commit.changes:
            if ch.path == ledger.CHECKPOINT:
                cp_oid = ch.new_oid if ch.status != "D" else None
            elif ch.path == ledger.CHECKPOINT_SIG:
                sig_oid = ch.new_oid if ch.status != "D" else None
            elif ch.path == ledger.CHECKPOINT_NOTE:
                note_oid = ch.new_oid if ch.status != "D" else None
            elif ch.path.startswith("entries/"):
                seq = seq_of_path(ch.path)
                if ch.status != "A" or seq is None:
                    r.failed("log.append-only", "VM-LOG-NOT-APPEND-ONLY",
                             f"log commit {commit.oid[:12]} {_verb(ch.status)} {ch.path}: an append may only add entries")
                    ok = False
                else:
                    added.append(seq)
            else:
                r.failed("log.layout", "VM-LOG-CORRUPT", f"log commit {commit.oid[:12]} adds {ch.path!r}",
                         "the log tree holds only entries/, checkpoint, checkpoint.sig and checkpoint.note")
                ok = False
        added.sort()
        if added and added != list(range(size, size + len(added))):
            r.failed("log.append-only", "VM-LOG-NOT-APPEND-ONLY",
                     f"log commit {commit.oid[:12]} adds entries {added[0]}..{added[-1]} after size {size}")
            ok = False
        size += len(added)
        out.append(LogCommit(commit.oid, size, cp_oid, sig_oid, note_oid))
    if ok:
        r.passed("log.append-only", f"{len(commits)} log commit(s), each only adds entries; size {size}")
    return out


def checkpoint_signed(ctx: Context, label: str, cp: bytes, sig: bytes, policies: Sequence[Policy | None],
                      code: str = "VM-CHECKPOINT-SIG") -> bool:
    """The one checkpoint-signature rule: a valid signature by a signer pinned by one of `policies`."""
    r = ctx.report
    sig_text = sig.decode(errors="replace")
    fmt = "ssh" if "BEGIN SSH SIGNATURE" in sig_text else "openpgp"
    res = ctx.verifier().verify(fmt, sig_text, cp, armored=True)
    if res.status != "valid":
        r.failed("log.checkpoint", code, f"{label}: checkpoint signature "
                 f"{'absent' if not sig.strip() else res.status}: {res.detail}")
        return False
    if not any(p is not None and p.signer(str(res.fingerprint)) is not None for p in policies):
        r.failed("log.checkpoint", code, f"{label}: checkpoint signed by {res.fingerprint}, not a policy signer")
        return False
    return True


def note_signed(ctx: Context, label: str, cp: bytes, note: bytes | None, policies: Sequence[Policy | None]) -> bool:
    """checkpoint.note is the checkpoint as a C2SP signed note, by a note key the policy pins; it is required
    once the policy in force after the commit pins one (`policy set-note-key`)."""
    from ..note import Verifier

    r = ctx.report
    pinned = [k for p in policies if p is not None for k in p.note_keys]
    if note is None:
        if policies[-1] is not None and policies[-1].note_keys:
            r.failed("log.checkpoint", "VM-CHECKPOINT-MISSING", f"{label}: the policy pins a note key, but the "
                     "checkpoint carries no C2SP note signature (checkpoint.note absent)")
            return False
        return True
    errors = []
    for vkey in pinned:
        try:
            if Verifier.parse(vkey).open_note(note.decode("utf-8", errors="replace")).encode() == cp:
                return True
            errors.append("the note's text is not the checkpoint")
        except VaultMeshError as exc:
            errors.append(exc.cause)
    r.failed("log.checkpoint", "VM-CHECKPOINT-SIG", f"{label}: checkpoint.note is not the checkpoint signed by a "
             f"note key the policy pins ({'; '.join(errors) or 'the policy pins none'})")
    return False


def checkpoints(ctx: Context, commits: Sequence[LogCommit]) -> None:
    """Each log commit's checkpoint commits to exactly the entries up to its size; the head's (every one's,
    for --all) is signed by a signer pinned before or after the entries that commit appends (an applied
    policy change may add the appender, or remove them while they still sign this append)."""
    r = ctx.report
    assert ctx.repo is not None and ctx.view is not None
    if not commits:
        r.failed("log.checkpoint", "VM-CHECKPOINT-MISSING", "no log commit carries a checkpoint")
        return
    oids = [o for c in commits for o in (c.checkpoint, c.signature, c.note) if o]
    try:
        blobs = dict(zip(oids, ctx.repo.read_blobs(oids)))
    except (KeyError, ValueError) as exc:  # ValueError: cat-file died mid-stream on a corrupt object
        r.failed("log.checkpoint", "VM-LOG-CORRUPT", f"checkpoint blob {exc} is missing or corrupt")
        return
    leaves = ctx.view.leaves
    rng = merkle.CompactRange.from_leaf_hashes([])
    bad = 0
    last = len(commits) - 1
    for idx, c in enumerate(commits):
        size = min(c.size, len(leaves))
        rng.extend(leaves[rng.size:size])
        label = f"log commit {c.oid[:12]}"
        if c.checkpoint is None or c.signature is None:
            r.failed("log.checkpoint", "VM-CHECKPOINT-MISSING",
                     f"{label}: checkpoint{' signature' if c.checkpoint else ''} absent")
            bad += 1
            continue
        try:
            cp = ledger.parse_checkpoint(blobs[c.checkpoint], f"checkpoint of {c.oid[:12]}")
        except VaultMeshError as exc:
            r.error("log.checkpoint", exc)
            bad += 1
            continue
        if cp.size != size or cp.root != rng.root() or cp.log_id != r.log_id:
            r.failed("log.checkpoint", "VM-CHECKPOINT-MISMATCH",
                     f"{label}: checkpoint says log {cp.log_id[:12]} size {cp.size} root {cp.root.hex()[:16]}…, the "
                     f"entries give log {str(r.log_id)[:12]} size {size} root {rng.root().hex()[:16]}…")
            bad += 1
            continue
        if not _policy_line_ok(ctx, label, cp, size):
            bad += 1
            continue
        if idx == last or (ctx.scope.everything and size > ctx.opts.known_size):
            prev = min(commits[idx - 1].size, len(leaves)) if idx else 0
            policies = [ctx.policy_at(n) for n in (prev, size)]
            if not checkpoint_signed(ctx, label, blobs[c.checkpoint], blobs[c.signature], policies):
                bad += 1
            elif not note_signed(ctx, label, blobs[c.checkpoint], blobs.get(c.note or ""), policies):
                bad += 1
    if bad == 0:
        r.passed("log.checkpoint", f"{len(commits)} checkpoint(s) match the entries; head checkpoint signed; "
                 f"size {len(leaves)} root {merkle.root_from_leaf_hashes(leaves).hex()}")


def _policy_line_ok(ctx: Context, label: str, cp: ledger.Checkpoint, size: int) -> bool:
    """A checkpoint's `policy` line (when present) commits to exactly the policy entries among its entries."""
    if cp.policies is None:
        return True
    assert ctx.view is not None
    want = ledger.policy_commitment(ctx.view.lines[:size], ctx.view.entries[:size])
    if cp.policies != want:
        ctx.report.failed("log.checkpoint", "VM-CHECKPOINT-MISMATCH",
                          f"{label}: checkpoint commits to {cp.policies[0]} policy entr(y/ies) with root "
                          f"{cp.policies[1].hex()[:16]}…, the entries hold {want[0]} with root {want[1].hex()[:16]}…")
        return False
    return True


def rollback(ctx: Context) -> None:
    """The log extends the checkpoint this clone verified last (a rewound or replaced log is reported)."""
    r = ctx.report
    assert ctx.repo is not None and ctx.view is not None
    stored = ledger.load_verified(ctx.repo)
    if not stored or not r.log_id:
        r.passed("log.rollback", "no checkpoint verified here before; this one will be remembered")
        return
    leaves = ctx.view.leaves
    problem = ledger.against_remembered(stored, r.log_id, len(leaves),
                                        lambda n: merkle.root_from_leaf_hashes(leaves[:n]).hex())
    if problem is not None:
        r.failed("log.rollback", *problem)
    else:
        r.passed("log.rollback", f"consistent with the checkpoint verified here before (size {stored['size']})")


def stale_locks(ctx: Context) -> None:
    """A lock on a ledger ref older than a live git would hold it: its holder died (kill -9, power loss)."""
    assert ctx.repo is not None
    locks = ledger.ref_locks(ctx.repo, older_than=ledger.STALE_LOCK_SECONDS)
    for lock in locks:
        ctx.report.failed("log.locks", "VM-REF-LOCKED", f"stale lock {lock}: a git process died holding it",
                          "remove it if no git process is running in this repository")
    if not locks:
        ctx.report.passed("log.locks", "no stale lock on the ledger refs")
