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
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import ledger, merkle
from .entry import Entry, canonical, now_rfc3339, sha256_hex, sign_body
from .errors import VaultMeshError
from .git import RefUpdate, Repo
from .note import NoteKey

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

    out = []
    for name, url in sorted(Settings(repo).peers().items()):
        root = validated(f"{PEER_KEY}{name}.trustRoot", repo.config_get(f"{PEER_KEY}{name}.trustRoot"))
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
    out = []
    for seq, e in enumerate(entries):
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

    def as_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _fail(out: Outcome, exc: VaultMeshError) -> Outcome:
    out.ok, out.code, out.detail, out.hint = False, exc.code, exc.cause, exc.hint
    return out


def sync(repo: Repo, key: Any, p: Peer) -> Outcome:
    """Fetch, judge and witness one peer; nothing of ours changes unless every check passed."""
    out = Outcome(p.name, False, trust="pinned" if p.trust_root else "tofu")
    try:
        repo.fetch(p.url, [f"+{ledger.REF_LOG}:{p.scratch}"])
    except VaultMeshError as exc:
        return _fail(out, VaultMeshError("VM-PEER-UNREACHABLE", f"peer {p.name} ({p.url}): {exc.cause}",
                                         "check the URL (git config vaultmesh.peer.NAME.url) and the network; "
                                         "nothing of ours was changed"))
    fetched = repo.ref_oid(p.scratch)
    assert fetched is not None
    try:
        judged = _judge(repo, p, fetched, out)
    except VaultMeshError as exc:
        out.evidence = _keep_evidence(repo, p, fetched)
        _record(repo, p, _fail(out, exc))
        return out
    finally:
        repo.update_refs([RefUpdate(p.scratch, repo.zero_oid, fetched)])
    cp, view, previous = judged
    out.size, out.root = cp.size, cp.root.hex()
    last = previous.size if previous else 0
    out.new_entries = cp.size - last
    if previous is not None and previous.size == cp.size:
        out.ok, out.detail = True, f"nothing new: {p.name} is at size {cp.size}, witnessed in our entry #{previous.seq}"
        _record(repo, p, out)
        return out
    sig = _head_file(repo, fetched, ledger.CHECKPOINT_SIG)
    body = _witness_body(repo, p, cp, sig, view, previous)
    entry = sign_body(body, key)
    old = repo.ref_oid(p.ref)
    ledger.append(repo, key, [entry])
    if not repo.update_refs([RefUpdate(p.ref, fetched, old)]):
        raise VaultMeshError("VM-RACE-LOST", f"{p.ref} moved during the sync", "run federate sync again")
    if not p.trust_root:
        genesis = view.entries[0]
        assert genesis is not None
        root = genesis.sigs[0]["signer"]
        repo.config_set(f"{PEER_KEY}{p.name}.trustRoot", root)
        out.detail = f"trusted on first use: pinned {p.name}'s genesis signer {root}; "
    out.ok, out.witness_entry = True, entry.id
    out.detail += f"witnessed {p.name} at size {cp.size} root {cp.root.hex()[:16]}… ({out.new_entries} new entries)"
    _record(repo, p, out)
    return out


def _head_file(repo: Repo, commit: str, path: str) -> str:
    oid = repo.path_oid(commit, path)
    return repo.read_object(oid)[1].decode(errors="replace") if oid else ""


def _judge(repo: Repo, p: Peer, fetched: str, out: Outcome) -> tuple[ledger.Checkpoint, ledger.View, Seen | None]:
    """The peer's log verifies under its own policy and our pin, and is consistent with everything witnessed."""
    from .verification import Options, verify

    ours = ledger.read_view(repo)
    previous = [s for s in witnessed(ours.entries, "us") if s.name == p.name]
    last = previous[-1] if previous else None
    view = ledger.read_view(repo, p.scratch)
    known = last.size if last is not None and last.size <= view.size and \
        merkle.root_from_leaf_hashes(view.leaves[:last.size]) == last.root else 0
    report = verify(repo, Options(log_ref=p.scratch, trust_root=p.trust_root, remember=False, subjects=False,
                                  known_size=known, own_log=False))
    if not report.ok:
        bad = next(c for c in report.checks if not c.ok)
        assert bad.code is not None
        raise VaultMeshError(bad.code, f"peer {p.name}'s log does not verify: {bad.detail}",
                             bad.hint or "the peer's log is damaged or forged; nothing of ours was changed")
    cp = ledger.parse_checkpoint(_head_file(repo, fetched, ledger.CHECKPOINT).encode(), f"{p.name}'s checkpoint")
    if last is not None:
        _consistent(p, last, cp, view)
    # what other peers witnessed of this log: every view of it must be one and the same tree
    for other in peers(repo):
        if other.name == p.name or repo.ref_oid(other.ref) is None:
            continue
        theirs = ledger.read_view(repo, other.ref)
        for s in witnessed(theirs.entries, other.name):
            if s.log_id == cp.log_id and s.size <= view.size and \
                    merkle.root_from_leaf_hashes(view.leaves[:s.size]) != s.root:
                raise VaultMeshError("VM-PEER-EQUIVOCATION",
                                     f"peer {p.name} showed {other.name} a checkpoint of size {s.size} with root "
                                     f"{s.root.hex()[:16]}… (their entry #{s.seq}), and us a log whose first {s.size} "
                                     f"entries have root {merkle.root_from_leaf_hashes(view.leaves[:s.size]).hex()[:16]}…",
                                     "two signed views of one log: keep both as evidence and contact the peer's operators")
    return cp, view, last


def _consistent(p: Peer, last: Seen, cp: ledger.Checkpoint, view: ledger.View) -> None:
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
    proof = merkle.consistency_proof(view.leaves, last.size)
    if not merkle.verify_consistency(last.size, cp.size, last.root, cp.root, proof):
        raise VaultMeshError("VM-PEER-FORKED", f"peer {p.name}'s log of size {cp.size} does not extend the checkpoint "
                             f"of size {last.size} we witnessed ({where}): its history was rewritten",
                             "the peer rewrote its log; keep the evidence and ask why")


def judge_copy(repo: Repo, p: Peer) -> Any:
    """Covenant III for one peer: our copy of its log is consistent with the last checkpoint we witnessed."""
    from .verification import Check

    ours = ledger.read_view(repo)
    seen = [s for s in witnessed(ours.entries, "us") if s.name == p.name]
    if repo.ref_oid(p.ref) is None or not seen:
        return Check(f"federation.{p.name}", False, "VM-PEER-UNREACHABLE", f"peer {p.name} was never witnessed",
                     f"git vaultmesh federate sync {p.name}")
    view = ledger.read_view(repo, p.ref)
    cp = ledger.parse_checkpoint(_head_file(repo, view.head, ledger.CHECKPOINT).encode(), f"{p.name}'s checkpoint")
    try:
        _consistent(p, seen[-1], cp, view)
    except VaultMeshError as exc:
        return Check(f"federation.{p.name}", False, exc.code, exc.cause, exc.hint)
    return Check(f"federation.{p.name}", True, None, f"{p.name} at size {cp.size} extends our witness entry "
                 f"#{seen[-1].seq} (size {seen[-1].size})")


def _witness_body(repo: Repo, p: Peer, cp: ledger.Checkpoint, sig: str, view: ledger.View,
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
                               "proof": [h.hex() for h in merkle.consistency_proof(view.leaves, previous.size)]}
    return body


def witness_key(repo: Repo, log_id: str) -> NoteKey:
    """Our Ed25519 witness key (C2SP note key), made on first use under the git dir, never in the repository.
    Its verifier key is in every witness entry, which a policy signer signs: that signature vouches for it."""
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
    try:
        data = json.loads(_state_path(repo).read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _record(repo: Repo, p: Peer, out: Outcome) -> None:
    """The last sync's verdict per peer (derived, local: `federate status` reads it, nothing trusts it)."""
    state = load_state(repo)
    state[p.name] = dict(out.as_json(), at=now_rfc3339())
    path = _state_path(repo)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(state, indent=1, sort_keys=True))
    os.replace(tmp, path)


# --- the merged view -----------------------------------------------------------------------------------------

@dataclass
class Merged:
    entries: list[tuple[str, Entry]]  # (source, entry), ordered by body digest
    root: bytes
    conflicts: list[dict[str, Any]] = field(default_factory=list)
    inputs: list[dict[str, Any]] = field(default_factory=list)

    @property
    def size(self) -> int:
        return len(self.entries)


def merged_view(repo: Repo) -> Merged:
    """Our content entries and every verified peer's (the peer ref moves only after verification)."""
    sources: list[tuple[str, ledger.View]] = [("us", ledger.read_view(repo))]
    for p in peers(repo):
        if repo.ref_oid(p.ref) is not None:
            sources.append((p.name, ledger.read_view(repo, p.ref)))
    by_digest: dict[str, tuple[str, Entry]] = {}
    inputs = []
    for name, view in sources:
        inputs.append({"name": name, "log": view.log_id, "size": view.size,
                       "root": merkle.root_from_leaf_hashes(view.leaves).hex()})
        for e in view.entries:
            if e is not None and e.type in CONTENT_TYPES:
                by_digest.setdefault(e.body_digest, (name, e))
    ordered = [by_digest[d] for d in sorted(by_digest)]
    root = merkle.root_from_leaf_hashes([merkle.leaf_hash(e.body_bytes) for _, e in ordered])
    return Merged(ordered, root, _conflicts(ordered), inputs)


def _conflicts(entries: list[tuple[str, Entry]]) -> list[dict[str, Any]]:
    """Two statements about one (type, component, version) that name different subjects or artifacts: both are
    kept and reported — a conflict is data, not a contest with a winner."""
    groups: dict[tuple[str, str, str], list[tuple[str, Entry]]] = {}
    for src, e in entries:
        comp, ver = e.body.get("component"), e.body.get("version")
        if isinstance(comp, str) and isinstance(ver, str):
            groups.setdefault((e.type, comp, ver), []).append((src, e))
    out = []
    for (typ, comp, ver), members in sorted(groups.items()):
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
