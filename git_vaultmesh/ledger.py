"""The ledger: append entries to refs/vaultmesh/log and refs/notes/vaultmesh in one CAS transaction.

An append never rewrites: it adds entry blobs, a new checkpoint and its signature on top of the old tree,
then moves both refs with their old values checked. On a lost race it re-reads, re-numbers and retries;
entry bodies carry no position, so nothing is re-signed but the checkpoint.
"""

from __future__ import annotations

import base64
import os
import random
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from . import merkle, timings
from .entry import Entry, canonical, entry_path, parse_line, seq_of_path
from .errors import VaultMeshError
from .git import RefUpdate, Repo, grep_tree

if TYPE_CHECKING:  # signing is imported by what appends, not by every reader of the head (doctor, query)
    from .signing import SigningKey

REF_LOG = "refs/vaultmesh/log"
REF_NOTES = "refs/notes/vaultmesh"
KEEP_PREFIX = "refs/vaultmesh/keep/"
REMOTES_PREFIX = "refs/vaultmesh/remotes/"
CHECKPOINT = "checkpoint"
CHECKPOINT_SIG = "checkpoint.sig"
CHECKPOINT_NOTE = "checkpoint.note"  # the checkpoint as a C2SP signed note, when the policy pins a note key
FRONTIER_TRAILER = "Vaultmesh-Frontier:"
POLICY_TRAILER = "Vaultmesh-Policy-Frontier:"
MAX_ATTEMPTS = 64


def checkpoint_text(log_id: str, size: int, root: bytes, policies: tuple[int, bytes] | None = None) -> bytes:
    """C2SP tlog-checkpoint body: origin line, tree size, base64 root hash, and our one extension line
    `policy <n> <base64 root>` committing to the policy entries among those `size` entries (see policy_commitment)."""
    text = f"vaultmesh/{log_id}\n{size}\n{base64.b64encode(root).decode()}\n"
    if policies is not None:
        text += f"{POLICY_LINE} {policies[0]} {base64.b64encode(policies[1]).decode()}\n"
    return text.encode()


POLICY_LINE = "policy"


class Checkpoint(NamedTuple):
    log_id: str
    size: int
    root: bytes
    policies: tuple[int, bytes] | None = None  # (count, RFC 6962 root over the policy entries' lines)


def policy_commitment(lines: Sequence[bytes], entries: Sequence[Entry | None]) -> tuple[int, bytes]:
    """(n, root): the n policy entries among these, and the RFC 6962 root over their lines in log order.

    A checkpoint carrying it lets a proof bundle show that it left no policy entry out: a bundle carries
    every policy entry, and their count and root must be the signed ones."""
    leaves = [merkle.leaf_hash(line) for line, e in zip(lines, entries) if e is not None and e.type == "policy"]
    return len(leaves), merkle.root_from_leaf_hashes(leaves)


def _decimal(text: str) -> int | None:
    return int(text) if text.isdigit() and (text == "0" or not text.startswith("0")) else None


def parse_checkpoint(data: bytes, where: str = "checkpoint") -> Checkpoint:
    def bad(cause: str) -> VaultMeshError:
        return VaultMeshError("VM-CHECKPOINT-MALFORMED", f"{where}: {cause}",
                              "the log commit was not written by git-vaultmesh: "
                              "restore refs/vaultmesh/log from a replica (`verify --all` lists every damaged entry)")

    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        raise bad("not ASCII") from None
    lines = text.split("\n")
    if len(lines) not in (4, 5) or lines[-1] != "" or not lines[0].startswith("vaultmesh/"):
        raise bad("expected 'vaultmesh/<log_id>\\n<size>\\n<base64 root>\\n[policy <n> <base64 root>\\n]'")
    size = _decimal(lines[1])
    if size is None:
        raise bad(f"size {lines[1]!r} is not a decimal integer")

    def b64hash(field: str, what: str) -> bytes:
        try:
            raw = base64.b64decode(field, validate=True)
        except ValueError:
            raise bad(f"{what} is not base64") from None
        if len(raw) != 32 or base64.b64encode(raw).decode() != field:
            raise bad(f"{what} is not a base64 SHA-256 hash")
        return raw

    root = b64hash(lines[2], "root")
    policies = None
    if len(lines) == 5:
        parts = lines[3].split(" ")
        count = _decimal(parts[1]) if len(parts) == 3 and parts[0] == POLICY_LINE else None
        if count is None or count > size:
            raise bad(f"extension line {lines[3]!r} is not 'policy <n> <base64 root>' with n <= size")
        policies = (count, b64hash(parts[2], "policy root"))
    log_id = lines[0][len("vaultmesh/"):]
    if checkpoint_text(log_id, size, root, policies) != data:
        raise bad("extra lines or non-canonical encoding")
    return Checkpoint(log_id, size, root, policies)


def note_paths(oid: str) -> tuple[str, str]:
    """The two shapes a notes tree may use for `oid`: flat, and our 2/rest fan-out."""
    return oid, f"{oid[:2]}/{oid[2:]}"


class Head:
    """What an append needs of the current log, read without reading every entry. (This module's records are
    plain classes and NamedTuples: importing dataclasses is ~10 ms of every command's start-up.)"""

    def __init__(self, commit: str | None, tree: str | None, notes: str | None, log_id: str | None,
                 frontier: merkle.CompactRange, policy_frontier: merkle.CompactRange | None = None) -> None:
        self.commit, self.tree, self.notes, self.log_id = commit, tree, notes, log_id
        self.frontier = frontier
        self.policy_frontier = (policy_frontier if policy_frontier is not None
                                else merkle.CompactRange.from_leaf_hashes([]))

    def __repr__(self) -> str:
        return f"Head(commit={self.commit!r}, size={self.size}, log_id={self.log_id!r})"

    @property
    def size(self) -> int:
        return self.frontier.size


def read_head(repo: Repo, ref: str = REF_LOG) -> Head:
    return head_at(repo, repo.ref_oid(ref), repo.ref_oid(REF_NOTES))


def head_at(repo: Repo, commit: str | None, notes: str | None) -> Head:
    """read_head for ref values already read (doctor reads every ledger ref in one git process)."""
    if commit is None:
        return Head(None, None, notes, None, merkle.CompactRange.from_leaf_hashes([]))
    try:
        ctype, cbody = repo.read_object(commit)
    except KeyError:
        raise VaultMeshError("VM-LOG-CORRUPT", f"log commit {commit} is missing",
                             "fetch the ledger again (`git vaultmesh pull`) or restore from a replica") from None
    if ctype != "commit":
        raise VaultMeshError("VM-LOG-CORRUPT", f"{REF_LOG} points at a {ctype}, not a commit",
                             "restore refs/vaultmesh/log from a replica")
    header, _, message = cbody.partition(b"\n\n")
    tree = header.split(b"\n", 1)[0].split()[1].decode()
    try:  # through the open cat-file process: no rev-parse of its own
        cp_data = repo.read_object(f"{commit}:{CHECKPOINT}")[1]
    except KeyError:
        raise VaultMeshError("VM-CHECKPOINT-MISSING", f"log commit {commit} has no checkpoint",
                             "run `git vaultmesh verify --all` to see what was damaged") from None
    cp = parse_checkpoint(cp_data, f"checkpoint of {commit}")
    text = message.decode(errors="replace")
    frontier = _range_from_message(text, FRONTIER_TRAILER, cp.size, cp.root)
    policies = (_range_from_message(text, POLICY_TRAILER, *cp.policies) if cp.policies is not None else None)
    if frontier is None or policies is None:  # message lost or forged, or a checkpoint from before policy
        entries = read_entries(repo, commit)  # lines: recompute from the entries themselves
        frontier = merkle.CompactRange.from_leaf_hashes([merkle.leaf_hash(e.line) for e in entries])
        if frontier.size != cp.size or frontier.root() != cp.root:
            raise VaultMeshError("VM-CHECKPOINT-MISMATCH",
                                 f"checkpoint of {commit} says size {cp.size}, the tree holds {frontier.size} "
                                 "entries with another root",
                                 "run `git vaultmesh verify --all`; do not append to a damaged log")
        policies = merkle.CompactRange.from_leaf_hashes([merkle.leaf_hash(e.line) for e in entries
                                                         if e.type == "policy"])
    return Head(commit, tree, notes, cp.log_id, frontier, policies)


def _range_from_message(message: str, trailer: str, size: int, root: bytes) -> merkle.CompactRange | None:
    """A compact range the appender left in the commit message, trusted only if it reproduces the root."""
    for line in message.splitlines():
        if line.startswith(trailer):
            parts = line[len(trailer):].split()
            try:
                rng = merkle.CompactRange.from_frontier(int(parts[0]), [bytes.fromhex(h) for h in parts[1:]])
            except (ValueError, IndexError):
                return None
            if rng.size == size and rng.root() == root:
                return rng
    return None


def entry_items(repo: Repo, commit: str) -> list[tuple[int, str, str]]:
    """(seq, path, blob oid) of every entry in a log commit, in log order; layout problems raise."""
    items = []
    for it in repo.ls_tree(commit, "entries"):
        seq = seq_of_path(it.path)
        if seq is None or it.type != "blob" or it.mode != "100644":  # no symlink/executable/gitlink entries
            raise VaultMeshError("VM-LOG-CORRUPT", f"unexpected {it.mode} {it.path!r} in log commit {commit}",
                                 "the log tree holds only entries/<a>/<b>/<seq>.json files: "
                                 "restore refs/vaultmesh/log from a replica")
        items.append((seq, it.path, it.oid))
    items.sort()
    for expected, (seq, path, _) in enumerate(items):
        if seq != expected:
            raise VaultMeshError("VM-LOG-GAP", f"entry #{expected} is missing (next present: {path})",
                                 "an entry was removed from the log; restore it from a replica")
    return items


def split_blob(data: bytes, where: str) -> bytes:
    """An entry blob is exactly one canonical line plus its newline."""
    if not data.endswith(b"\n") or b"\n" in data[:-1] or b"\r" in data:
        raise VaultMeshError("VM-ENTRY-MALFORMED", f"{where}: an entry file must be one line ending in \\n",
                             "the ledger was written by something other than git-vaultmesh: "
                             "restore refs/vaultmesh/log from a replica")
    return data[:-1]


def read_entries(repo: Repo, commit: str) -> list[Entry]:
    """All entries of a log commit, strictly parsed (first problem raises)."""
    with timings.step("ledger read", unit="entries"):
        return _read_entries(repo, commit)


def _read_entries(repo: Repo, commit: str) -> list[Entry]:
    items = entry_items(repo, commit)
    try:
        blobs = repo.read_blobs([oid for _, _, oid in items])
    except (KeyError, ValueError) as exc:  # ValueError: cat-file died mid-stream on a corrupt object
        raise VaultMeshError("VM-LOG-CORRUPT", f"entry blob {exc} is missing or corrupt",
                             "restore the ledger from a replica") from None
    return [parse_line(split_blob(b, f"entry #{seq}"), f"entry #{seq}") for (seq, _, _), b in zip(items, blobs)]


def load(repo: Repo) -> tuple[Head, list[Entry]]:
    head = read_head(repo)
    if head.commit is None:
        raise VaultMeshError("VM-NOT-INITIALIZED", f"{REF_LOG} does not exist",
                             "run `git vaultmesh init` (or `git vaultmesh pull` to fetch a colleague's ledger)")
    return head, read_entries(repo, head.commit)


class View:
    """The log read once, tolerantly: every command that judges the ledger reads it through this.

    `entries[i]` is None where entry #i could not be parsed (its problem is in `problems`, with the check name
    it belongs to); a gap in the numbering is a problem too, and the entries present are still read so the
    rest can be judged."""

    def __init__(self, ref: str, head: str, lines: list[bytes], entries: list[Entry | None], leaves: list[bytes],
                 problems: list[tuple[str, VaultMeshError]] | None = None) -> None:
        self.ref, self.head, self.lines, self.entries, self.leaves = ref, head, lines, entries, leaves
        self.problems = [] if problems is None else problems

    def __repr__(self) -> str:
        return f"View(ref={self.ref!r}, head={self.head!r}, size={self.size}, problems={len(self.problems)})"

    @property
    def size(self) -> int:
        return len(self.lines)

    @property
    def log_id(self) -> str | None:
        e = self.entries[0] if self.entries else None
        return str(e.body.get("log")) if e is not None else None

    def carried(self) -> dict[int, Entry]:
        return {i: e for i, e in enumerate(self.entries) if e is not None}


def _objects_corrupt(what: str) -> VaultMeshError:
    return VaultMeshError("VM-LOG-CORRUPT", f"{what} in the object store",
                          "restore the ledger objects from a replica; run `git fsck`")


def read_view(repo: Repo, ref: str = REF_LOG) -> View:
    """Read every entry of the log at `ref` in one batch. Raises VM-NOT-INITIALIZED / VM-LOG-CORRUPT when
    there is no log to judge at all; anything less is recorded in `problems`."""
    head = repo.ref_oid(ref)
    if head is None:
        raise VaultMeshError("VM-NOT-INITIALIZED", f"{ref} is absent",
                             "run `git vaultmesh init`, or fetch the ledger refs from a peer")
    try:
        kind = repo.read_object(head)[0]
    except KeyError:
        kind = "missing object"
    if kind != "commit":
        raise VaultMeshError("VM-LOG-CORRUPT", f"{ref} points at a {kind} ({head}), not a commit",
                             "restore refs/vaultmesh/log from a replica (refs/vaultmesh/remotes/*) or a peer")
    problems: list[tuple[str, VaultMeshError]] = []
    try:
        items = entry_items(repo, head)
    except VaultMeshError as exc:
        if exc.code != "VM-LOG-GAP":
            raise
        problems.append(("log.layout", exc))
        items = sorted((seq, it.path, it.oid) for it in repo.ls_tree(head, "entries")
                       if (seq := seq_of_path(it.path)) is not None)
    lines: list[bytes] = []
    entries: list[Entry | None] = []
    # streamed: each entry is parsed while git reads the next ones (the other core), not after all of them
    stream = repo.stream_objects([oid for _, _, oid in items])
    try:
        for seq, _, oid in items:
            try:
                _, blob = next(stream)
            except VaultMeshError:  # cat-file died mid-stream on a corrupt object
                raise _objects_corrupt("an entry blob is corrupt") from None
            if blob is None:
                raise _objects_corrupt(f"entry blob {oid} is missing")
            where = f"entry #{seq}"
            try:
                line = split_blob(blob, where)
                lines.append(line)
                entries.append(parse_line(line, where))
            except VaultMeshError as exc:
                problems.append((f"entry.{seq}.format", exc))
                if len(lines) == len(entries):
                    lines.append(blob)
                entries.append(None)
    finally:
        stream.close()  # stops cat-file if we leave early
    return View(ref, head, lines, entries, [merkle.leaf_hash(x) for x in lines], problems)


def find_entries(repo: Repo, head: Head, needle: dict[str, Any]) -> list[tuple[int, Entry]]:
    """Entries whose canonical line contains `needle`'s JCS text (key order of JCS makes this exact)."""
    if head.commit is None:
        return []
    text = canonical(needle).decode()[1:-1]  # '"k":v' without braces
    paths = grep_tree(repo, head.commit, text, "entries")
    named = sorted((seq, path) for path in paths if (seq := seq_of_path(path)) is not None)
    try:  # every match in one cat-file round trip, not a rev-parse and a read per match (a record finds every
        # release of the log this way, to pick its base)
        blobs = repo.read_blobs([f"{head.commit}:{path}" for _, path in named])
    except KeyError as exc:  # git grep just read it from this commit: its object is missing or corrupt
        raise _objects_corrupt(f"entry blob {exc} is missing or corrupt") from None
    return [(seq, parse_line(split_blob(blob, f"entry #{seq}"), f"entry #{seq}")) for (seq, _), blob in zip(named, blobs)]


def read_note(repo: Repo, notes_commit: str | None, oid: str) -> bytes:
    if notes_commit is None:
        return b""
    for path in note_paths(oid):
        blob = repo.path_oid(notes_commit, path)
        if blob is not None:
            return repo.read_object(blob)[1]
    return b""


class AppendResult(NamedTuple):
    commit: str
    first_seq: int
    entries: list[Entry]
    attempts: int


Precheck = Callable[[Repo, Head], Sequence[Entry]]


class _Rebuild(Exception):
    """`confirm` withdrew the built commit: build again from what the precheck returns now."""


def append(
    repo: Repo, key: SigningKey, entries: Sequence[Entry] | Precheck, *,
    keep: Sequence[str] = (), max_attempts: int = MAX_ATTEMPTS, confirm: Callable[[], bool] | None = None,
) -> AppendResult:
    """Append entries as one log commit; `entries` may be a callable re-evaluated on every attempt
    (it sees the current head and may refuse, e.g. a tag that was recorded meanwhile).

    `confirm`, when given, is asked after the commit is built and before the refs move (the point of no
    return): False withdraws that commit, and the attempt starts again from `entries`. It lets a check run
    while the commit is built (record verifies fresh tokens that way) without anything unchecked landing."""
    with timings.step("ledger append"):
        return _append(repo, key, entries, keep, max_attempts, confirm)


def _append(
    repo: Repo, key: SigningKey, entries: Sequence[Entry] | Precheck, keep: Sequence[str], max_attempts: int,
    confirm: Callable[[], bool] | None,
) -> AppendResult:
    for attempt in range(1, max_attempts + 1):
        with _appender_turn(repo):
            head = read_head(repo)
            todo = list(entries(repo, head) if callable(entries) else entries)
            if not todo:
                raise VaultMeshError("VM-USAGE", "nothing to append",
                                     "the calling command passed no entry: please report this as a bug")
            torn: dict[str, Any] = {}
            if head.commit is not None and notes_source(repo, head.notes) != head.commit:
                # every append names its log head in the notes commit: a notes ref that names another one was
                # left behind by a kill inside git's ref transaction (files backend: one rename per ref), or
                # edited by hand. The log is the truth: rebuild the notes from it in this same transaction.
                torn = {"all_entries": [*read_entries(repo, head.commit), *todo],
                        "notes_parents": [head.notes] if head.notes else [], "expected_log": head.commit}
            try:
                result = _try_append(repo, key, head, todo, keep, confirm=confirm, **torn)
            except _Rebuild:
                continue
        if result is not None:
            return AppendResult(result, head.size, todo, attempt)
        stale = ref_locks(repo, older_than=STALE_LOCK_SECONDS)
        if stale:  # a live git holds a ref lock for milliseconds: this one's holder crashed (or hangs)
            raise locked_error(stale)
        time.sleep(random.uniform(0, 0.005 * min(attempt, 20)))  # jittered back-off
    locks = ref_locks(repo)
    if locks:
        raise locked_error(locks)
    raise VaultMeshError("VM-RACE-LOST", f"the ledger moved under us {max_attempts} times",
                         "another process is appending heavily; run the command again")


STALE_LOCK_SECONDS = 10.0
APPEND_TURN_WAIT = 60.0


def append_onto(
    repo: Repo, key: SigningKey, base: Head, entries: Sequence[Entry], *, expected_log: str | None,
    all_entries: Sequence[Entry], notes_parents: Sequence[str] = (), keep: Sequence[str] = (),
    check: Callable[[str], None] | None = None,
) -> str | None:
    """One attempt to append `entries` onto another log's head `base` (pull: onto the remote's log), moving
    REF_LOG only if it is still `expected_log`; the notes are rebuilt from `all_entries`, the whole result.
    `check(commit)` judges the built log commit before any ref moves (raising leaves everything in place).
    None when the local ledger moved meanwhile (no retry: the caller's merge was computed against it)."""
    with _appender_turn(repo):
        return _try_append(repo, key, base, list(entries), keep, expected_log=expected_log,
                           all_entries=all_entries, notes_parents=notes_parents, check=check)


@contextmanager
def _appender_turn(repo: Repo) -> Iterator[None]:
    """Appenders on this machine take turns, one attempt each (read the head, sign the checkpoint,
    compare-and-swap). Without it N local appenders race and each lost race costs a new checkpoint signature:
    8 processes x 250 records on 2 cores lost 52 records after 64 attempts each. The CAS still decides; the turn
    only stops the wasted work, so behind a holder that takes over APPEND_TURN_WAIT seconds we go ahead."""
    with machine_turn(repo, "append.turn", APPEND_TURN_WAIT):
        yield


@contextmanager
def machine_turn(repo: Repo, name: str, wait: float | None) -> Iterator[None]:
    """An advisory flock on <common git dir>/vaultmesh/<name>: processes on this machine take turns. `wait`
    None blocks until the turn comes; a number gives up after that many seconds and goes ahead. Best effort:
    without fcntl, with an unwritable git dir or without flock on the file system, go ahead. The kernel drops
    the lock when its holder dies: a crash leaves nothing to clean up."""
    try:
        import fcntl

        path = repo.common_dir / "vaultmesh" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except (ImportError, OSError):
        yield
        return
    try:
        deadline = None if wait is None else time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX if deadline is None else fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if deadline is None or time.monotonic() >= deadline:
                    break
                time.sleep(random.uniform(0.002, 0.02))
            except OSError:  # no flock on this file system
                break
        yield
    finally:
        os.close(fd)  # releases the lock


LEDGER_LOCKS = ("refs/vaultmesh/**/*.lock", "refs/notes/*.lock", "packed-refs.lock")


def ref_locks(repo: Repo, older_than: float = 0.0) -> list[str]:
    """Lock files on the ledger's refs (and packed-refs) at least `older_than` seconds old. git removes its
    lock when it exits, unless it was killed (SIGKILL, power loss): then the lock stays until removed by hand."""
    return repo.ref_locks(LEDGER_LOCKS, older_than)


def locked_error(locks: Sequence[str]) -> VaultMeshError:
    return VaultMeshError(
        "VM-REF-LOCKED", f"{locks[0]} exists: another git process holds a ledger ref, or one crashed holding it",
        f"if no git process is running in this repository, remove {' '.join(locks)} and run the command again",
    )


def _try_append(
    repo: Repo, key: SigningKey, head: Head, todo: list[Entry], keep: Sequence[str],
    *, expected_log: str | None | bool = False, all_entries: Sequence[Entry] | None = None,
    notes_parents: Sequence[str] = (), confirm: Callable[[], bool] | None = None,
    check: Callable[[str], None] | None = None,
) -> str | None:
    """Build the commit on `head` and CAS the refs. `expected_log` (when not False) is the value REF_LOG
    must still have — differs from head.commit only for pull, which appends onto the remote's log; then
    `all_entries` (the whole resulting log) is used to rebuild the notes from scratch."""
    log_id = head.log_id or str(todo[0].body.get("log"))
    for e in todo:
        if e.body.get("log") != log_id:
            raise VaultMeshError("VM-ENTRY-WRONG-LOG", f"entry names log {e.body.get('log')}, this log is {log_id}",
                                 "entries cannot move between ledgers")
    frontier = head.frontier.copy()
    policies = head.policy_frontier.copy()
    blobs: list[bytes] = []
    paths: list[str] = []
    for i, e in enumerate(todo):
        frontier.append(merkle.leaf_hash(e.line))
        if e.type == "policy":
            policies.append(merkle.leaf_hash(e.line))
        blobs.append(e.line + b"\n")
        paths.append(entry_path(head.size + i))
    cp = checkpoint_text(log_id, frontier.size, frontier.root(), (policies.size, policies.root()))
    from .signing import sign

    cp_sig = sign(key, cp, armor=True).encode()
    cp_note = _checkpoint_note(repo, head, log_id, todo, cp)
    # notes: the note on a subject commit is the lines of every entry about it, in log order
    by_subject: dict[str, list[bytes]] = {}
    for e in todo:
        if e.subject_commit:
            by_subject.setdefault(e.subject_commit, []).append(e.line + b"\n")
    note_blobs = [read_note(repo, head.notes, oid) + b"".join(lines) for oid, lines in by_subject.items()]
    oids = repo.write_blobs(blobs + [cp, cp_sig] + note_blobs + ([cp_note] if cp_note else []))
    add = dict(zip(paths, oids[: len(paths)]))
    add[CHECKPOINT] = oids[len(paths)]
    add[CHECKPOINT_SIG] = oids[len(paths) + 1]
    if cp_note:
        add[CHECKPOINT_NOTE] = oids[-1]
    tree = repo.build_tree(head.tree, add, remove=[] if cp_note else [CHECKPOINT_NOTE])
    message = (
        f"vaultmesh: append {len(todo)} entr{'y' if len(todo) == 1 else 'ies'} (size {frontier.size})\n\n"
        f"{FRONTIER_TRAILER} {frontier.size} {' '.join(h.hex() for h in frontier.hashes)}\n"
        f"{POLICY_TRAILER} {policies.size} {' '.join(h.hex() for h in policies.hashes)}\n"
    )
    commit = repo.commit_tree(tree, [head.commit] if head.commit else [], message)
    log_old = head.commit if expected_log is False else expected_log
    updates = [RefUpdate(REF_LOG, commit, log_old if isinstance(log_old, str) else None)]
    if all_entries is not None:
        rebuilt = rebuild_notes(repo, commit, all_entries, notes_parents)
        updates.append(RefUpdate(REF_NOTES, rebuilt, head.notes))
    elif by_subject:
        note_oids = oids[len(paths) + 2:]
        notes_tree_base = None
        if head.notes:
            notes_tree_base = repo.rev_parse(head.notes, "tree")
        flat_and_fanned = [p for oid in by_subject for p in note_paths(oid)]
        notes_tree = repo.build_tree(
            notes_tree_base,
            {note_paths(oid)[1]: blob for oid, blob in zip(by_subject, note_oids)},
            remove=flat_and_fanned,
        )
        notes_commit = repo.commit_tree(
            notes_tree, [head.notes] if head.notes else [],
            f"vaultmesh notes derived from log {commit}\n",
        )
        updates.append(RefUpdate(REF_NOTES, notes_commit, head.notes))
    elif head.notes is not None:  # same tree, a new commit naming the new log head: notes always name their log
        notes_commit = repo.commit_tree(repo.rev_parse(head.notes, "tree") or "", [head.notes],
                                        f"{NOTES_MESSAGE}{commit}\n")
        updates.append(RefUpdate(REF_NOTES, notes_commit, head.notes))
    for oid in keep:
        ref = KEEP_PREFIX + oid
        if repo.ref_oid(ref) is None:
            updates.append(RefUpdate(ref, oid, None))
    if confirm is not None and not confirm():
        raise _Rebuild
    if check is not None:
        check(commit)
    return commit if repo.update_refs(updates) else None


def note_key(repo: Repo, log_id: str, *, create: bool = False) -> Any:
    """This clone's C2SP note key for the log's checkpoints (git dir, vaultmesh/note.key; never committed)."""
    from .note import NoteKey

    path = Path(repo.git_dir) / "vaultmesh" / "note.key"
    try:
        return NoteKey.parse(path.read_text().strip())
    except FileNotFoundError:
        if not create:
            return None
    key = NoteKey.generate(f"vaultmesh/{log_id}")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(key.encode() + "\n")
    return key


def _checkpoint_note(repo: Repo, head: Head, log_id: str, todo: Sequence[Entry], cp: bytes) -> bytes | None:
    """The checkpoint as a C2SP signed note, when this clone holds a note key that the policy after these
    entries pins (the claimed reading: verify judges it with every signature checked)."""
    key = note_key(repo, log_id)
    if key is None:
        return None
    from .policy import claimed_judge, replay

    found = dict(find_entries(repo, head, {"type": "policy"}))
    found.update({head.size + i: e for i, e in enumerate(todo) if e.type == "policy"})
    try:
        pinned = replay({s: e for s, e in found.items() if e.type == "policy"}, claimed_judge).final.note_keys
    except VaultMeshError:
        return None
    return key.sign_note(cp.decode()).encode() if key.vkey() in pinned else None


def append_bodies(repo: Repo, key: SigningKey, bodies: Sequence[dict[str, Any]], keep: Sequence[str] = ()) -> AppendResult:
    """Append many bodies as one log commit under ONE batch signature (docs/formats.md, "Batch signatures"):
    the signer runs once for the batch, not once per entry."""
    from .entry import check_body, sign_batch

    if not bodies:
        raise VaultMeshError("VM-USAGE", "nothing to append",
                             "the calling command passed no entry: please report this as a bug")
    for i, b in enumerate(bodies):
        check_body(b, f"batch body #{i}")
    return append(repo, key, sign_batch(bodies, key), keep=keep)


NOTES_MESSAGE = "vaultmesh notes derived from log "


def notes_source(repo: Repo, notes_commit: str | None) -> str | None:
    """The log commit a notes commit says it was derived from (its message), or None."""
    if notes_commit is None:
        return None
    try:
        kind, body = repo.read_object(notes_commit)
    except KeyError:
        return None
    prefix = NOTES_MESSAGE.encode()
    named = [line[len(prefix):].decode(errors="replace") for line in body.split(b"\n") if line.startswith(prefix)]
    return named[0] if kind == "commit" and len(named) == 1 and len(named[0]) in (40, 64) else None


def load_consistent(repo: Repo, tries: int = 5) -> tuple[Head, list[Entry]]:
    """`load`, read again while the pair is torn: the log and the notes refs are two reads, and an append that
    lands between them moves both (doctor would report a note that "differs"). Torn = the log ref moved since,
    or the notes derive from a log that extends the one read. (Notes naming an older log are normal: an append
    of entries without a subject commit leaves the notes as they were.)"""
    for _ in range(tries - 1):
        head, entries = load(repo)
        source = notes_source(repo, head.notes)
        moved = repo.ref_oid(REF_LOG) != head.commit
        newer = source not in (None, head.commit) and repo.is_ancestor(str(head.commit), str(source))
        if not moved and not newer:
            return head, entries
        time.sleep(random.uniform(0.01, 0.05))
    return load(repo)


def notes_for(entries: Sequence[Entry]) -> dict[str, bytes]:
    """The notes the log implies: subject commit -> the lines of the entries about it."""
    notes: dict[str, bytes] = {}
    for e in entries:
        if e.subject_commit:
            notes[e.subject_commit] = notes.get(e.subject_commit, b"") + e.line + b"\n"
    return notes


def notes_tree(repo: Repo, entries: Sequence[Entry]) -> str:
    """The notes tree the log implies (our 2/rest fan-out), written to the object store."""
    notes = notes_for(entries)
    oids = repo.write_blobs(list(notes.values()))
    return repo.build_tree(None, {note_paths(s)[1]: o for s, o in zip(notes, oids)})


def rebuild_notes(repo: Repo, log_commit: str | None, entries: Sequence[Entry], parents: Sequence[str]) -> str:
    """Write a fresh notes commit derived from the log (doctor --repair, pull); returns it (refs untouched).

    `parents` are the notes commits it supersedes (ours, and the remote's on pull) so pushing it is a
    fast-forward everywhere."""
    tree = notes_tree(repo, entries)
    uniq = list(dict.fromkeys(p for p in parents if p))
    return repo.commit_tree(tree, uniq, f"vaultmesh notes derived from log {log_commit}\n")


def state_path(repo: Repo) -> str:
    return str(repo.git_dir / "vaultmesh" / "verified-checkpoint.json")


def load_verified(repo: Repo) -> dict[str, Any] | None:
    from . import statefile

    return statefile.read(state_path(repo))


def save_verified(repo: Repo, log_id: str, size: int, root: bytes) -> None:
    """Remember the checkpoint this clone verified last (atomic rename, so a crash keeps the old one)."""
    from . import statefile

    statefile.write(state_path(repo), {"log": log_id, "size": size, "root": root.hex()})


def against_remembered(stored: Mapping[str, Any] | None, log_id: str | None, size: int,
                       root_of_first: Callable[[int], str | None]) -> tuple[str, str] | None:
    """The rollback rule, for verify (verification/log.py) and the pre-commit hook (which holds a compact
    range, not every leaf): (code, detail) when the log `log_id` of `size` entries does not extend the
    checkpoint this clone verified last (`stored`), else None. `root_of_first(n)`: the hex root of the
    log's first n entries."""
    if not stored or not log_id:
        return None
    verified = int(stored.get("size", 0))
    if stored.get("log") != log_id:
        return "VM-LOG-FORKED", f"log id is {log_id}, the log verified here before was {stored.get('log')} (replaced)"
    if size < verified:
        return "VM-LOG-ROLLBACK", f"log has {size} entries, {verified} were verified here before (rewound)"
    if root_of_first(verified) != stored.get("root"):
        return ("VM-LOG-FORKED", f"the first {verified} entries no longer have the root verified here before "
                f"({str(stored.get('root'))[:16]}…): the log was replaced")
    return None


def appended_entries(repo: Repo, old: str, size: int, head: str) -> list[tuple[int, str]] | None:
    """(seq, blob) of the entries log commit `head` adds to `old` (a log of `size` entries), read from the tree
    diff without listing the unchanged entries; None when `head` does not simply extend `old` — rewound or
    rewritten, an earlier entry changed or removed, a gap, anything but plain entry files and checkpoint files
    added. The one reading of "what an append added" (the derived index and the pre-commit hook)."""
    try:
        if not old or not repo.has_object(old) or not repo.is_ancestor(old, head):
            return None
        changes = repo.diff_tree(old, head)
    except VaultMeshError:  # in doubt: the caller reads the whole log
        return None
    added: list[tuple[int, str]] = []
    for ch in changes:
        if ch.path in (CHECKPOINT, CHECKPOINT_SIG, CHECKPOINT_NOTE):
            continue
        seq = seq_of_path(ch.path)
        if ch.status != "A" or ch.new_mode != "100644" or seq is None or seq < size:
            return None
        added.append((seq, ch.new_oid))
    added.sort()
    if [s for s, _ in added] != list(range(size, size + len(added))):
        return None
    return added


def doctor_state_path(repo: Repo) -> Path:
    return Path(repo.git_dir) / "vaultmesh" / "doctor-state.json"


def load_doctor_state(repo: Repo) -> dict[str, Any] | None:
    """What the last clean doctor (or verify --all) found: "clean through log commit X / notes commit Y".
    None when absent or unreadable: the next doctor then sweeps the whole log."""
    from . import statefile

    return statefile.read(doctor_state_path(repo))


def save_doctor_state(repo: Repo, state: Mapping[str, Any]) -> None:
    """Remember a clean doctor state next to the verified checkpoint (atomic rename; best effort: a read-only
    git dir only costs the next doctor a full sweep)."""
    from . import statefile

    try:
        statefile.write(doctor_state_path(repo), state)
    except OSError:
        pass
