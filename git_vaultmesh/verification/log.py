"""Log checks: the chain of log commits only appends, every checkpoint commits to its entries and is signed
by a policy signer, and the log is consistent with the checkpoint this clone verified last."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from .. import ledger, merkle
from ..entry import Entry, parse_line, seq_of_path
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
    # entries this commit changed or removed (never legitimate): (seq, old blob, new blob or None)
    rewrites: tuple[tuple[int, str, str | None], ...] = ()


def _verb(status: str) -> str:
    return {"M": "modifies", "D": "deletes", "T": "changes the type of", "A": "adds"}.get(status, "changes")


def _first_difference(old: bytes, new: bytes) -> str:
    """Where an entry was changed, as a JSON path (`body.artifacts[0].sha256`), else the first byte offset."""
    import json

    def walk(a: object, b: object, path: str) -> str | None:
        if type(a) is not type(b):
            return path or "the whole entry"
        if isinstance(a, dict) and isinstance(b, dict):
            for k in sorted(set(a) | set(b)):
                if k not in a or k not in b:
                    return f"{path}.{k}".lstrip(".")
                hit = walk(a[k], b[k], f"{path}.{k}")
                if hit:
                    return hit.lstrip(".")
            return None
        if isinstance(a, list) and isinstance(b, list):
            for i, (x, y) in enumerate(zip(a, b)):
                hit = walk(x, y, f"{path}[{i}]")
                if hit:
                    return hit
            return f"{path}[{min(len(a), len(b))}]" if len(a) != len(b) else None
        return None if a == b else (path.lstrip(".") or "the whole entry")

    try:
        found = walk(json.loads(old), json.loads(new), "")
    except ValueError:
        found = None
    if found:
        return f"field {found}"
    at = next((i for i, (x, y) in enumerate(zip(old, new)) if x != y), min(len(old), len(new)))
    return f"byte {at}"


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
        rewrites: list[tuple[int, str, str | None]] = []
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
                    what = ch.path
                    if seq is not None and ch.status in ("M", "T", "D"):
                        new = None if ch.status == "D" else ch.new_oid
                        rewrites.append((seq, ch.old_oid, new))
                        what = f"entry #{seq} ({ch.path})"
                        if new is not None:
                            try:
                                what += ", " + _first_difference(*ctx.repo.read_blobs([ch.old_oid, new]))
                            except (KeyError, ValueError):
                                pass
                    r.failed("log.append-only", "VM-LOG-NOT-APPEND-ONLY",
                             f"log commit {commit.oid[:12]} {_verb(ch.status)} {what}: an append may only add entries")
                    ok = False
                else:
                    added.append(seq)
            else:
                r.failed("log.layout", "VM-LOG-CORRUPT", f"log commit {commit.oid[:12]} adds {ch.path!r}",
                         "the log tree holds only entries/, checkpoint, checkpoint.sig and checkpoint.note: "
                         "restore refs/vaultmesh/log from a replica")
                ok = False
        added.sort()
        if added and added != list(range(size, size + len(added))):
            r.failed("log.append-only", "VM-LOG-NOT-APPEND-ONLY",
                     f"log commit {commit.oid[:12]} adds entries {added[0]}..{added[-1]} after size {size}")
            ok = False
        size += len(added)
        out.append(LogCommit(commit.oid, size, cp_oid, sig_oid, note_oid, tuple(rewrites)))
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
    states = _States(ctx, commits)
    bad = 0
    first_mismatch: tuple[int, str] | None = None  # (index in report, detail) of the first root mismatch
    cascaded = 0
    last = len(commits) - 1
    for idx, c in enumerate(commits):
        size = states.advance(idx, c)
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
        root = states.root()
        as_appended = False
        if cp.size != size or cp.root != root or cp.log_id != r.log_id:
            if (cp.size, cp.root, cp.log_id) == (size, states.original_root(), r.log_id) and not c.rewrites:
                # the checkpoint commits to the entries as appended; they were changed by an earlier log
                # commit, which the append-only check names (with the entry and field): blame it there only
                as_appended = True
            elif first_mismatch is not None:
                cascaded += 1  # builds on entries whose first disagreeing checkpoint is already reported
                bad += 1
                continue
            else:
                changed = (f" (this commit changes entr{'y' if len(c.rewrites) == 1 else 'ies'} "
                           f"{', '.join(f'#{q}' for q, _, _ in c.rewrites)})" if c.rewrites else "")
                detail = (f"{label}: checkpoint says log {cp.log_id[:12]} size {cp.size} root {cp.root.hex()[:16]}…, "
                          f"the entries give log {str(r.log_id)[:12]} size {size} root {root.hex()[:16]}…{changed}")
                r.failed("log.checkpoint", "VM-CHECKPOINT-MISMATCH", detail)
                first_mismatch = (len(r.checks) - 1, detail)
                bad += 1
                continue
        if not _policy_line_ok(ctx, label, cp, states.lines(size, original=as_appended)):
            bad += 1
            continue
        if idx == last or (ctx.scope.everything and size > ctx.opts.known_size):
            prev = min(commits[idx - 1].size, len(leaves)) if idx else 0
            policies = [ctx.policy_at(n) for n in (prev, size)]
            if not checkpoint_signed(ctx, label, blobs[c.checkpoint], blobs[c.signature], policies):
                bad += 1
            elif not note_signed(ctx, label, blobs[c.checkpoint], blobs.get(c.note or ""), policies):
                bad += 1
    if first_mismatch is not None and cascaded:
        index, detail = first_mismatch
        r.checks[index] = replace(r.checks[index], detail=f"{detail}; the {cascaded} later checkpoint(s) build on "
                                  "these entries and disagree with them too")
    if bad == 0:
        r.passed("log.checkpoint", f"{len(commits)} checkpoint(s) match the entries; head checkpoint signed; "
                 f"size {len(leaves)} root {merkle.root_from_leaf_hashes(leaves).hex()}")


def _policy_line_ok(ctx: Context, label: str, cp: ledger.Checkpoint,
                    entries_there: tuple[list[bytes], list[Entry | None]]) -> bool:
    """A checkpoint's `policy` line (when present) commits to exactly the policy entries among its entries."""
    if cp.policies is None:
        return True
    want = ledger.policy_commitment(*entries_there)
    if cp.policies != want:
        ctx.report.failed("log.checkpoint", "VM-CHECKPOINT-MISMATCH",
                          f"{label}: checkpoint commits to {cp.policies[0]} policy entr(y/ies) with root "
                          f"{cp.policies[1].hex()[:16]}…, the entries hold {want[0]} with root {want[1].hex()[:16]}…")
        return False
    return True


class _States:
    """The entries as each log commit has them, and as they were first appended. They are the head's
    entries (ctx.view) unless some log commit changed or removed entries — never legitimate, and rare: only
    then are the other versions read. Judging each checkpoint against its own commit's entries blames a change
    at the commit that made it, not at every earlier one."""

    def __init__(self, ctx: Context, commits: Sequence[LogCommit]) -> None:
        assert ctx.repo is not None and ctx.view is not None
        self.view = ctx.view
        events = [(idx, seq, old, new) for idx, c in enumerate(commits) for seq, old, new in c.rewrites]
        self.rewritten = bool(events)
        n = max([len(self.view.lines)] + [seq + 1 for _, seq, _, _ in events])
        self.orig_lines: list[bytes | None] = [*self.view.lines, *([None] * (n - len(self.view.lines)))]
        blobs: dict[str, bytes] = {}
        if events:
            oids = sorted({o for _, _, old, new in events for o in (old, new) if o})
            try:
                blobs = dict(zip(oids, ctx.repo.read_blobs(oids)))
            except (KeyError, ValueError):
                blobs = {}
            first: dict[int, str] = {}
            for _, seq, old, _ in events:
                first.setdefault(seq, old)
            for seq, old in first.items():
                self.orig_lines[seq] = _line(blobs.get(old))
        self.cur_lines = list(self.orig_lines)
        self.events = events
        self.blobs = blobs
        self.orig = merkle.CompactRange.from_leaf_hashes([])
        self.cur = self.orig if not events else merkle.CompactRange.from_leaf_hashes([])
        self.size = 0

    def _leaf(self, line: bytes | None) -> bytes:
        return merkle.leaf_hash(line if line is not None else b"")

    def advance(self, idx: int, c: LogCommit) -> int:
        """Move to log commit `idx`; returns its size (bounded by the entries there are)."""
        size = min(c.size, len(self.orig_lines))
        if not self.rewritten:
            self.orig.extend(self.view.leaves[self.orig.size:size])
            self.size = size
            return size
        below = False
        for _, seq, _, new in (e for e in self.events if e[0] == idx):
            self.cur_lines[seq] = _line(self.blobs.get(new)) if new else None
            below = below or seq < self.cur.size
        self.orig.extend([self._leaf(x) for x in self.orig_lines[self.orig.size:size]])
        if below:
            self.cur = merkle.CompactRange.from_leaf_hashes([self._leaf(x) for x in self.cur_lines[:size]])
        else:
            self.cur.extend([self._leaf(x) for x in self.cur_lines[self.cur.size:size]])
        self.size = size
        return size

    def root(self) -> bytes:
        return self.cur.root()

    def original_root(self) -> bytes:
        return self.orig.root()

    def lines(self, size: int, original: bool = False) -> tuple[list[bytes], list[Entry | None]]:
        """The entry lines (and parsed entries) of the current commit, or as appended, for the policy line."""
        if not self.rewritten:
            return self.view.lines[:size], self.view.entries[:size]
        lines: list[bytes] = []
        entries: list[Entry | None] = []
        for i, line in enumerate((self.orig_lines if original else self.cur_lines)[:size]):
            same = i < len(self.view.lines) and line == self.view.lines[i]
            lines.append(line or b"")
            if same:
                entries.append(self.view.entries[i])
            else:
                try:
                    entries.append(parse_line(line or b"", f"entry #{i}"))
                except VaultMeshError:
                    entries.append(None)
        return lines, entries


def _line(blob: bytes | None) -> bytes | None:
    if blob is None:
        return None
    return blob[:-1] if blob.endswith(b"\n") else blob


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
