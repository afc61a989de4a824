"""Federation: separate logs (other teams, other organisations), each with its own signers, that watch each other.

A peer's log is fetched into a scratch ref and judged before anything of ours moves: verified by the same checks
as our own log (with the peer's policy and our pin of its trust root), then required to be consistent with the
last checkpoint of it we witnessed, and with every checkpoint of it that other peers witnessed (a peer showing
two views is equivocating). Only then does refs/vaultmesh/remotes/<peer>/log move (compare-and-swap) and a signed
`witness` entry in our log record what we saw, with a C2SP cosignature over the peer's checkpoint.

The merged view is the union of the content entries of our log and every verified peer's, de-duplicated and
ordered by body digest: its RFC 6962 root is the same on every peer that has seen the same content.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from . import ledger, merkle
from .entry import Entry, canonical, now_rfc3339, sha256_hex, sign_body
from .errors import VaultMeshError
from .git import RefUpdate, Repo

if TYPE_CHECKING:
    from .note import NoteKey  # cryptography's Ed25519: imported only when a witness entry is made

CONTENT_TYPES = ("release", "deploy", "adr", "decision", "import")
PEER_KEY = "vaultmesh.peer."
STATE_FILE = "federation.json"
_NAME_OK = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")


@dataclass(frozen=True)
class Peer:
    name: str
    url: str
    trust_root: str | None

    @property
    def ref(self) -> str:
        return f"{ledger.REMOTES_PREFIX}{self.name}/log"

    @property
    def scratch(self) -> str:
        return f"{ledger.REMOTES_PREFIX}{self.name}/incoming"


def check_name(name: str) -> None:
    if not name or not set(name) <= _NAME_OK or name.startswith((".", "-")) or len(name) > 64:
        raise VaultMeshError("VM-USAGE", f"peer name {name!r} is not a plain name",
                             "use letters, digits, '.', '_' and '-' (e.g. alice or team-billing)")


def peers(repo: Repo) -> list[Peer]:
    """Configured peers: vaultmesh.peer.<name>.url (git config, else .vaultmesh.toml) and, in git config,
    vaultmesh.peer.<name>.trustRoot, the pin of its genesis signer."""
    from .config import Settings, validated

    settings = Settings(repo)
    keys = settings.git_keys()  # one git process for every peer's settings, not one per peer
    out = []
    for name, url in sorted(settings.peers().items()):
        root = validated(f"{PEER_KEY}{name}.trustRoot", keys.get(f"{PEER_KEY}{name}.trustroot"))
        out.append(Peer(name, url, root))
    return out


def peer(repo: Repo, name: str) -> Peer:
    for p in peers(repo):
        if p.name == name:
            return p
    raise VaultMeshError("VM-PEER-UNKNOWN", f"no peer named {name!r} is configured",
                         f"add it: git vaultmesh federate add {name} URL [--trust-root FPR]")


# --- what our log says we witnessed --------------------------------------------------------------------------

@dataclass(frozen=True)
class Seen:
    """A checkpoint of some log, as a witness entry (ours, or a peer's) recorded it."""

    log_id: str
    size: int
    root: bytes
    text: str
    sig: str
    by: str  # who witnessed it: "us" or the peer whose log holds the witness entry
    seq: int
    name: str  # the peer name the witness used


def witnessed(entries: Sequence[Entry | None], by: str) -> list[Seen]:
    return _seen(enumerate(entries), by)


def _seen(pairs: Iterable[tuple[int, Entry | None]], by: str) -> list[Seen]:
    out = []
    for seq, e in pairs:
        if e is None or e.type != "witness":
            continue
        text, sig, who = e.body.get("checkpoint"), e.body.get("checkpoint_sig"), e.body.get("peer")
        if not isinstance(text, str) or not isinstance(who, dict):
            continue
        try:
            cp = ledger.parse_checkpoint(text.encode(), f"witness entry #{seq}")
        except (VaultMeshError, UnicodeEncodeError):
            continue
        out.append(Seen(cp.log_id, cp.size, cp.root, text, str(sig or ""), by, seq, str(who.get("name"))))
    return out


def _grep_entries(repo: Repo, commits: Sequence[str], needle: str) -> dict[str, list[tuple[int, Entry]]]:
    """The entries of the logs at `commits` whose line contains `needle`, strictly parsed: a superset of the
    witness entries sought (one git grep over every tree, then one cat-file), never a read of whole logs."""
    from .entry import parse_line, seq_of_path

    found = sorted((commit, seq, path) for commit, path in repo.grep_trees(commits, needle, "entries")
                   if (seq := seq_of_path(path)) is not None)
    try:
        blobs = repo.read_blobs([f"{commit}:{path}" for commit, _, path in found])
    except KeyError as exc:
        raise VaultMeshError("VM-LOG-CORRUPT", f"entry {exc} of a log cannot be read",
                             "restore the ledger from a replica; run `git fsck`") from None
    out: dict[str, list[tuple[int, Entry]]] = {c: [] for c in commits}
    for (commit, seq, _), b in zip(found, blobs):
        out[commit].append((seq, parse_line(ledger.split_blob(b, f"entry #{seq}"), f"entry #{seq}")))
    return out


def _our_witnesses(repo: Repo, p: Peer) -> list[Seen]:
    """Every witness entry of our log about peer p, in log order (JCS writes its name as "name":"<p>")."""
    head = repo.ref_oid(ledger.REF_LOG)
    if head is None:
        return []
    hits = _grep_entries(repo, [head], canonical({"name": p.name}).decode()[1:-1])[head]
    return [s for s in _seen(hits, "us") if s.name == p.name]


def _lines(repo: Repo, commit: str) -> list[bytes]:
    """The entry lines of a log commit, unparsed (enough for Merkle leaves); layout problems raise."""
    return _lines_of(repo, [commit])[0]


def _lines_of(repo: Repo, commits: Sequence[str]) -> list[list[bytes]]:
    """The entry lines of several log commits: one `git ls-tree` each, then ONE `git cat-file` for all."""
    items = [ledger.entry_items(repo, c) for c in commits]
    try:
        blobs = iter(repo.read_blobs([oid for its in items for _, _, oid in its]))
    except KeyError as exc:
        raise VaultMeshError("VM-LOG-CORRUPT", f"entry blob {exc} is missing or corrupt",
                             "restore the ledger from a replica; run `git fsck`") from None
    return [[ledger.split_blob(next(blobs), f"entry #{seq}") for seq, _, _ in its] for its in items]


# --- sync ----------------------------------------------------------------------------------------------------

@dataclass
class Outcome:
    peer: str
    ok: bool
    code: str | None = None
    detail: str = ""
    hint: str | None = None
    trust: str = "pinned"
    size: int | None = None
    root: str | None = None
    new_entries: int = 0
    witness_entry: str | None = None
    evidence: str | None = None
    unchanged: bool = False  # the peer's log is the one we witnessed last: nothing appended
    reverified: bool = False  # the peer's log was fetched and judged (False: our witness answered)

    def as_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _fail(out: Outcome, exc: VaultMeshError) -> Outcome:
    out.ok, out.code, out.detail, out.hint = False, exc.code, exc.cause, exc.hint
    return out


def _unreachable(out: Outcome, p: Peer, exc: VaultMeshError) -> Outcome:
    return _fail(out, VaultMeshError("VM-PEER-UNREACHABLE", f"peer {p.name} ({p.url}): {exc.cause}",
                                     "check the URL (git config vaultmesh.peer.NAME.url) and the network; "
                                     "nothing of ours was changed"))


def _copies(repo: Repo) -> dict[str, str]:
    """Our verified copies of every peer's log (ref -> commit), read with one git process."""
    return {ref: oid for ref, oid in repo.refs(ledger.REMOTES_PREFIX).items() if ref.endswith("/log")}


def sync(repo: Repo, key: Callable[[], Any], p: Peer) -> Outcome:
    """Fetch, judge and witness one peer; nothing of ours changes unless every check passed. `key` gives
    the signing key, asked for only when a witness entry is appended."""
    out = Outcome(p.name, False, trust="pinned" if p.trust_root else "tofu")
    record = load_state(repo).get(p.name)
    judged = record.get("judged") if isinstance(record, dict) and record.get("ok") else None
    if isinstance(judged, dict):
        # the cheap question first: is the peer's head the commit we judged and witnessed last?
        try:
            remote = repo.ls_remote(p.url, [ledger.REF_LOG]).get(ledger.REF_LOG)
        except VaultMeshError as exc:
            return _unreachable(out, p, exc)
        again = _unchanged(repo, p, judged, out) if remote is not None and remote == judged.get("head") else None
        if again is not None:
            _record(repo, p, out, again)
            return out
    try:
        repo.fetch(p.url, [f"+{ledger.REF_LOG}:{p.scratch}"])
    except VaultMeshError as exc:
        return _unreachable(out, p, exc)
    fetched = repo.ref_oid(p.scratch)
    assert fetched is not None
    copies = _copies(repo)  # what the cross-peer check reads, recorded for the next no-op sync
    others = {ref: oid for ref, oid in copies.items() if ref != p.ref}
    out.reverified = True
    try:
        j = _judge(repo, p, fetched, others)
    except VaultMeshError as exc:
        out.evidence = _keep_evidence(repo, p, fetched)
        _record(repo, p, _fail(out, exc))
        return out
    finally:
        repo.update_refs([RefUpdate(p.scratch, repo.zero_oid, fetched)])
    cp, previous = j.checkpoint, j.previous
    out.size, out.root = cp.size, cp.root.hex()
    last = previous.size if previous else 0
    out.new_entries = cp.size - last
    if previous is not None and previous.size == cp.size:
        if copies.get(p.ref) != fetched:  # e.g. our copy was moved back: the commit just judged replaces it
            repo.update_refs([RefUpdate(p.ref, fetched, copies.get(p.ref))])
        out.ok, out.unchanged = True, True
        out.detail = f"nothing new: {p.name} is at size {cp.size}, witnessed in our entry #{previous.seq}"
        _record(repo, p, out, _judged(fetched, previous.seq, others, p.trust_root))
        return out
    signer = key()
    body = _witness_body(repo, p, cp, j.checkpoint_sig, j, previous)
    entry = sign_body(body, signer)
    old = copies.get(p.ref)
    result = ledger.append(repo, signer, [entry])
    if not repo.update_refs([RefUpdate(p.ref, fetched, old)]):
        raise VaultMeshError("VM-RACE-LOST", f"{p.ref} moved during the sync", "run federate sync again")
    if not p.trust_root:
        repo.config_set(f"{PEER_KEY}{p.name}.trustRoot", j.genesis_signer)
        out.detail = f"trusted on first use: pinned {p.name}'s genesis signer {j.genesis_signer}; "
    out.ok, out.witness_entry = True, entry.id
    out.detail += f"witnessed {p.name} at size {cp.size} root {cp.root.hex()[:16]}… ({out.new_entries} new entries)"
    _record(repo, p, out, _judged(fetched, result.first_seq, others, p.trust_root or j.genesis_signer))
    return out


def _judged(head: str, witness: int, others: dict[str, str], trust_root: str | None) -> dict[str, Any]:
    """What a passed verdict depended on: the peer's commit, our witness entry of it, the other copies its
    witnesses were compared with, the trust root it was judged under, and the code that judged it."""
    from . import __version__

    return {"head": head, "witness": witness, "others": others, "trust_root": trust_root, "version": __version__}


def _unchanged(repo: Repo, p: Peer, judged: dict[str, Any], out: Outcome) -> dict[str, Any] | None:
    """The no-op sync: the peer serves the very commit we judged last, under the same trust root and code; our
    copy of it is that commit; our log's LAST witness entry about the peer records that commit's checkpoint;
    and the witness entries in any other peer's copy that moved since agree with it. Then the verdict is the
    one we reached and witnessed (what it was judged on is unchanged) and the new record is returned. Anything
    else, or anything unreadable: None, and the caller fetches and judges in full. The local record only says
    where to look; the answer is our log's."""
    from . import __version__
    from .entry import entry_path, parse_line

    head, seq, before = judged.get("head"), judged.get("witness"), judged.get("others")
    if not isinstance(head, str) or not isinstance(seq, int) or isinstance(seq, bool) or not isinstance(before, dict):
        return None
    if judged.get("trust_root") != p.trust_root or judged.get("version") != __version__:
        return None
    copies = _copies(repo)
    others = {r: o for r, o in copies.items() if r != p.ref}
    if copies.get(p.ref) != head:
        return None
    try:
        ours = ledger.read_head(repo)
        if ours.commit is None or not 0 <= seq < ours.size:
            return None
        names = [f"{ours.commit}:{entry_path(i)}" for i in range(seq, ours.size)]
        blobs = repo.read_blobs([*names, f"{head}:{ledger.CHECKPOINT}"])
        since = [(seq + i, parse_line(ledger.split_blob(b, f"entry #{seq + i}"), f"entry #{seq + i}"))
                 for i, b in enumerate(blobs[:-1])]
        cp = ledger.parse_checkpoint(blobs[-1], f"{p.name}'s checkpoint")
    except (KeyError, VaultMeshError):
        return None
    mine = [s for s in _seen(since, "us") if s.name == p.name]
    if [s.seq for s in mine] != [seq] or since[0][1].body.get("log") != ours.log_id:
        return None  # the recorded entry is not a witness of p, or a later one exists
    w = mine[0]
    if w.text.encode() != blobs[-1] or (w.log_id, w.size, w.root) != (cp.log_id, cp.size, cp.root):
        return None
    moved = {r: o for r, o in others.items() if before.get(r) != o}
    try:
        _agrees_with_other_witnesses(repo, p, cp, _Leaves(repo, head), moved)
    except VaultMeshError:
        return None  # the full judgement reports it, with its evidence
    out.ok, out.unchanged, out.size, out.root = True, True, cp.size, cp.root.hex()
    out.trust = "pinned" if p.trust_root else "tofu"
    out.detail = (f"unchanged: {p.name} still serves the log we judged and witnessed in our entry #{seq} "
                  f"(size {cp.size}); not fetched or re-verified")
    return _judged(head, seq, others, p.trust_root)


def _head_file(repo: Repo, commit: str, path: str) -> str:
    try:
        return repo.read_blobs([f"{commit}:{path}"])[0].decode(errors="replace")
    except KeyError:
        return ""


class _Leaves:
    """The Merkle leaves of a log commit, read only when a proof or a comparison needs them (a first sync
    with no other witness of the peer needs none: verify reads the log itself)."""

    def __init__(self, repo: Repo, commit: str) -> None:
        self.repo, self.commit = repo, commit
        self._leaves: list[bytes] | None = None

    def get(self) -> list[bytes]:
        if self._leaves is None:
            self._leaves = [merkle.leaf_hash(x) for x in _lines(self.repo, self.commit)]
        return self._leaves


@dataclass
class _Judged:
    checkpoint: ledger.Checkpoint
    checkpoint_sig: str
    previous: Seen | None  # our last witness entry about the peer
    genesis_signer: str
    leaves: _Leaves


def _judge(repo: Repo, p: Peer, fetched: str, others: dict[str, str]) -> _Judged:
    """The peer's log verifies under its own policy and our pin, and is consistent with everything witnessed."""
    from .entry import entry_path, parse_line
    from .verification import Options, verify

    previous = _our_witnesses(repo, p)
    last = previous[-1] if previous else None
    leaves = _Leaves(repo, fetched)
    # the prefix we witnessed, if unchanged, was verified then: only the entries after it are verified again
    known = last.size if last is not None and last.size <= len(leaves.get()) and \
        merkle.root_from_leaf_hashes(leaves.get()[:last.size]) == last.root else 0
    report = verify(repo, Options(log_ref=p.scratch, trust_root=p.trust_root, remember=False, subjects=False,
                                  known_size=known, own_log=False))
    if not report.ok:
        bad = next(c for c in report.checks if not c.ok)
        assert bad.code is not None
        raise VaultMeshError(bad.code, f"peer {p.name}'s log does not verify: {bad.detail}",
                             bad.hint or "the peer's log is damaged or forged; nothing of ours was changed")
    # verify passed: the log has a checkpoint, its signature and a genesis signed by the peer's root
    cp, sig, genesis = repo.read_blobs([f"{fetched}:{ledger.CHECKPOINT}", f"{fetched}:{ledger.CHECKPOINT_SIG}",
                                        f"{fetched}:{entry_path(0)}"])
    j = _Judged(ledger.parse_checkpoint(cp, f"{p.name}'s checkpoint"), sig.decode(errors="replace"), last,
                parse_line(ledger.split_blob(genesis, "entry #0"), "entry #0").sigs[0]["signer"], leaves)
    if last is not None:
        _consistent(p, last, j.checkpoint, leaves.get())
    _agrees_with_other_witnesses(repo, p, j.checkpoint, leaves, others)
    return j


def _agrees_with_other_witnesses(repo: Repo, p: Peer, cp: ledger.Checkpoint, leaves: _Leaves,
                                 others: dict[str, str]) -> None:
    """What other peers witnessed of this log (their witness entries, in our copies of their logs, name its id
    in the checkpoint they record): every view of it must be one and the same tree."""
    log_id = cp.log_id
    names = {f"{ledger.REMOTES_PREFIX}{o.name}/log": o.name for o in peers(repo)}
    trees = {oid: names[ref] for ref, oid in sorted(others.items()) if ref in names}
    # a witness entry records the checkpoint, whose first line is the origin: in JCS, "vaultmesh/<id>\n
    hits = _grep_entries(repo, sorted(trees), f'"checkpoint":"vaultmesh/{log_id}\\n')
    for oid, other in sorted(trees.items(), key=lambda t: t[1]):
        for s in _seen(hits[oid], other):
            if s.log_id != log_id or s.size > cp.size:
                continue
            mine = merkle.root_from_leaf_hashes(leaves.get()[:s.size])
            if mine != s.root:
                raise VaultMeshError("VM-PEER-EQUIVOCATION",
                                     f"peer {p.name} showed {other} a checkpoint of size {s.size} with root "
                                     f"{s.root.hex()[:16]}… (their entry #{s.seq}), and us a log whose first {s.size} "
                                     f"entries have root {mine.hex()[:16]}…",
                                     "two signed views of one log: keep both as evidence and contact the peer's operators")


def _consistent(p: Peer, last: Seen, cp: ledger.Checkpoint, leaves: Sequence[bytes]) -> None:
    """Append-only across syncs: the new checkpoint extends the last one we witnessed (RFC 9162 consistency)."""
    where = f"our witness entry #{last.seq}"
    if cp.log_id != last.log_id:
        raise VaultMeshError("VM-PEER-FORKED", f"peer {p.name} now serves log {cp.log_id}, we witnessed log "
                             f"{last.log_id} ({where}): the log was replaced", "do not trust the new log")
    if cp.size < last.size:
        raise VaultMeshError("VM-PEER-ROLLBACK", f"peer {p.name}'s log has {cp.size} entries, we witnessed {last.size} "
                             f"({where}): it was rewound", "the peer rewrote its log; keep the evidence and ask why")
    if cp.size == last.size and cp.root != last.root:
        raise VaultMeshError("VM-PEER-EQUIVOCATION", f"peer {p.name} signed two checkpoints of size {cp.size}: root "
                             f"{cp.root.hex()[:16]}… now, {last.root.hex()[:16]}… in {where}",
                             "two signed views of one log: keep both as evidence and contact the peer's operators")
    proof = merkle.consistency_proof(leaves, last.size)
    if not merkle.verify_consistency(last.size, cp.size, last.root, cp.root, proof):
        raise VaultMeshError("VM-PEER-FORKED", f"peer {p.name}'s log of size {cp.size} does not extend the checkpoint "
                             f"of size {last.size} we witnessed ({where}): its history was rewritten",
                             "the peer rewrote its log; keep the evidence and ask why")


def judge_copy(repo: Repo, p: Peer) -> Any:
    """Covenant III for one peer: our copy of its log is consistent with the last checkpoint we witnessed."""
    from .verification import Check

    seen = _our_witnesses(repo, p)
    head = repo.ref_oid(p.ref)
    if head is None or not seen:
        return Check(f"federation.{p.name}", False, "VM-PEER-UNREACHABLE", f"peer {p.name} was never witnessed",
                     f"git vaultmesh federate sync {p.name}")
    cp = ledger.parse_checkpoint(_head_file(repo, head, ledger.CHECKPOINT).encode(), f"{p.name}'s checkpoint")
    try:
        _consistent(p, seen[-1], cp, [merkle.leaf_hash(x) for x in _lines(repo, head)])
    except VaultMeshError as exc:
        return Check(f"federation.{p.name}", False, exc.code, exc.cause, exc.hint)
    return Check(f"federation.{p.name}", True, None, f"{p.name} at size {cp.size} extends our witness entry "
                 f"#{seen[-1].seq} (size {seen[-1].size})")


def _witness_body(repo: Repo, p: Peer, cp: ledger.Checkpoint, sig: str, j: _Judged,
                  previous: Seen | None) -> dict[str, Any]:
    ours = ledger.read_head(repo)
    assert ours.log_id is not None
    text = ledger.checkpoint_text(cp.log_id, cp.size, cp.root, cp.policies).decode()
    wkey = witness_key(repo, ours.log_id)
    body: dict[str, Any] = {
        "type": "witness", "log": ours.log_id, "recorded_at": now_rfc3339(),
        "peer": {"name": p.name, "log": cp.log_id},
        "checkpoint": text, "checkpoint_sig": sig,
        "cosignature": {"vkey": wkey.vkey(), "line": wkey.cosign(text, int(time.time()))},
    }
    if previous is not None:
        body["consistency"] = {"size": previous.size, "root": previous.root.hex(),
                               "proof": [h.hex() for h in merkle.consistency_proof(j.leaves.get(), previous.size)]}
    return body


def witness_key(repo: Repo, log_id: str) -> NoteKey:
    """Our Ed25519 witness key (C2SP note key), made on first use under the git dir, never in the repository.
    Its verifier key is in every witness entry, which a policy signer signs: that signature vouches for it."""
    from .note import NoteKey

    path = Path(repo.git_dir) / "vaultmesh" / "witness.key"
    try:
        return NoteKey.parse(path.read_text().strip())
    except FileNotFoundError:
        pass
    key = NoteKey.generate(f"vaultmesh/{log_id}/witness")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(key.encode() + "\n")
    return key


def _keep_evidence(repo: Repo, p: Peer, fetched: str) -> str:
    """A rejected view of a peer's log stays reachable (and pushable) as evidence, never merged."""
    ref = f"{ledger.REMOTES_PREFIX}{p.name}/evidence/{fetched}"
    repo.update_refs([RefUpdate(ref, fetched, repo.ref_oid(ref))])
    return ref


def _state_path(repo: Repo) -> Path:
    return Path(repo.git_dir) / "vaultmesh" / STATE_FILE


def load_state(repo: Repo) -> dict[str, Any]:
    from . import statefile

    return statefile.read(_state_path(repo)) or {}


def _record(repo: Repo, p: Peer, out: Outcome, judged: dict[str, Any] | None = None) -> None:
    """The last sync's verdict per peer (derived, local: `federate status` reads it, nothing trusts it). After
    a verdict that passed, `judged` says which peer commit, which of our witness entries and which other copies
    it was: the next sync looks there first and re-checks it against our log (see `_unchanged`)."""
    state = load_state(repo)
    state[p.name] = dict(out.as_json(), at=now_rfc3339(), **({"judged": judged} if judged and out.ok else {}))
    from . import statefile

    statefile.write(_state_path(repo), state, indent=1, sort_keys=True)


# --- the merged view -----------------------------------------------------------------------------------------

@dataclass
class Merged:
    entries: list[tuple[str, Content]]  # (source, entry), ordered by body digest
    root: bytes
    conflicts: list[dict[str, Any]] = field(default_factory=list)
    inputs: list[dict[str, Any]] = field(default_factory=list)

    @property
    def size(self) -> int:
        return len(self.entries)


def merged_view(repo: Repo, ours: ledger.View | None = None) -> Merged:
    """Our content entries and every verified peer's (the peer ref moves only after verification)."""
    ours = ours if ours is not None else ledger.read_view(repo)
    sources = [("us", ours.log_id, ours.lines, _read_copy([line if e is not None else b"" for line, e in
                                                           zip(ours.lines, ours.entries)]))]
    copies = _peer_copies(repo)
    for (p, _), lines in zip(copies, _lines_of(repo, [oid for _, oid in copies])):
        entries = _read_copy(lines)
        first = entries[0] if entries else None
        sources.append((p.name, str(first.body.get("log")) if first is not None else None, lines, entries))
    by_digest: dict[str, tuple[str, Content]] = {}
    inputs = []
    for name, log_id, lines, entries in sources:
        inputs.append({"name": name, "log": log_id, "size": len(lines),
                       "root": merkle.root_from_leaf_hashes([merkle.leaf_hash(x) for x in lines]).hex()})
        for item in entries:
            if item is not None and item.type in CONTENT_TYPES:
                by_digest.setdefault(sha256_hex(item.body_bytes), (name, item))
    pairs = [by_digest[d] for d in sorted(by_digest)]
    root = merkle.root_from_leaf_hashes([merkle.leaf_hash(c.body_bytes) for _, c in pairs])
    return Merged(pairs, root, _conflicts(pairs), inputs)


def _peer_copies(repo: Repo) -> list[tuple[Peer, str]]:
    copies = _copies(repo)
    return [(p, copies[p.ref]) for p in peers(repo) if p.ref in copies]


_BODY_START, _SIGS_KEY = b'{"body":', b',"sigs":['


class Content(NamedTuple):
    """An entry of a judged log as the merged view and the listing read it: its line (the leaf; its sha256 is
    the entry id), its body and JCS(body). Its signatures are not read again: they were judged when the copy
    was adopted (or, for our log, by the strict parse that read it)."""

    line: bytes
    body: dict[str, Any]
    body_bytes: bytes

    @property
    def id(self) -> str:
        return sha256_hex(self.line)

    @property
    def type(self) -> str:
        return str(self.body.get("type"))


def _read_copy(lines: Sequence[bytes]) -> list[Content | None]:
    """The entries of a judged log. Its lines were parsed strictly (RFC 8785 canonical) when the log was
    judged, so JCS(body) is the line's own `body` member, between `{"body":` and the last `,"sigs":[` (a
    string cannot hold an unescaped quote, and the signatures hold no key named sigs): it is sliced out and
    only it is parsed — the signatures with their batch proofs are most of a line's bytes. A line without
    that shape is parsed strictly (None if that fails)."""
    from .entry import parse_line

    out: list[Content | None] = []
    for seq, line in enumerate(lines):
        end = line.rfind(_SIGS_KEY)
        try:
            if not line.startswith(_BODY_START) or end < 0 or not line.endswith(b'],"v":1}'):
                raise ValueError("not an entry line")
            raw = line[len(_BODY_START):end]
            body = json.loads(raw)
            if not isinstance(body, dict):
                raise ValueError("body is not an object")
            out.append(Content(line, body, raw))
        except ValueError:
            try:
                e = parse_line(line, f"entry #{seq}")
            except VaultMeshError:
                out.append(None)
                continue
            out.append(Content(line, e.body, e.body_bytes))
    return out


@dataclass(frozen=True)
class Listed:
    source: str  # "us" or the peer's name
    seq: int
    entry: Entry | Content
    body_digest: str

    def as_json(self) -> dict[str, Any]:
        return {"source": self.source, "seq": self.seq, "id": self.entry.id, "body_digest": self.body_digest,
                "type": self.entry.type, "body": self.entry.body}


def all_entries(repo: Repo, all_peers: bool) -> list[Listed]:
    """Our entries and (all_peers) every verified peer copy's, every kind, oldest first (recorded_at, then
    our log before the peers', then position). Only copies count: a peer's log is never read unjudged."""
    ours = ledger.read_view(repo)
    rows = [Listed("us", seq, e, e.body_digest) for seq, e in enumerate(ours.entries) if e is not None]
    if all_peers:
        copies = _peer_copies(repo)
        for (p, _), lines in zip(copies, _lines_of(repo, [oid for _, oid in copies])):
            rows += [Listed(p.name, seq, item, sha256_hex(item.body_bytes))
                     for seq, item in enumerate(_read_copy(lines)) if item is not None]
    order = {"us": 0}
    rows.sort(key=lambda r: (str(r.entry.body.get("recorded_at", "")), order.get(r.source, 1), r.source, r.seq))
    return rows


def _conflicts(entries: list[tuple[str, Content]]) -> list[dict[str, Any]]:
    """Two statements about one (type, component, version) that name different subjects or artifacts: both are
    kept and reported — a conflict is data, not a contest with a winner."""
    groups: dict[tuple[str, str, str], list[tuple[str, Content]]] = {}
    for src, e in entries:
        comp, ver = e.body.get("component"), e.body.get("version")
        if isinstance(comp, str) and isinstance(ver, str):
            groups.setdefault((e.type, comp, ver), []).append((src, e))
    out = []
    # one statement (entries are de-duplicated by body digest) has nothing to be compared with
    for (typ, comp, ver), members in sorted((kv for kv in groups.items() if len(kv[1]) > 1), key=lambda kv: kv[0]):
        claims = {sha256_hex(canonical({"subject": e.body.get("subject"),
                                        "artifacts": sorted(a.get("sha256", "") for a in e.body.get("artifacts") or [])}))
                  for _, e in members}
        if len(claims) > 1:
            out.append({"type": typ, "component": comp, "version": ver,
                        "entries": [{"source": s, "entry": e.id, "subject": e.body.get("subject"),
                                     "artifacts": e.body.get("artifacts", [])} for s, e in members]})
    return out


def merge_body(repo: Repo, merged: Merged) -> dict[str, Any]:
    head = ledger.read_head(repo)
    assert head.log_id is not None
    return {"type": "merge", "log": head.log_id, "recorded_at": now_rfc3339(), "peer": merged.inputs,
            "entries": {"size": merged.size, "root": merged.root.hex(), "conflicts": len(merged.conflicts)}}
