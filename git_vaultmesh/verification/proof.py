"""Proof bundles (`vaultmesh-proof-v2`), checked offline with nothing but the bundle and the trust root.

A bundle carries every policy entry of the log up to its checkpoint, the release, its cosigns and timestamps,
each with an RFC 9162 inclusion proof against the signed checkpoint. The checkpoint's `policy` line commits
to the policy entries (their count and Merkle root), so a bundle that leaves one out is detected. Key material
comes only from the policy entries (every pinned copy), never from anything else in the bundle. Then the
entries are judged by verify's own entry checks, and the commit is tied to the release's history root.
"""

from __future__ import annotations

import base64
import hashlib
from typing import Any

from .. import ledger, merkle
from ..entry import Entry, parse_line
from ..errors import VaultMeshError
from . import entries, log, subjects, tokens
from .context import Context, Options, Scope
from .report import Report

FORMAT = "vaultmesh-proof-v2"
OLD_FORMATS = ("vaultmesh-proof-v1",)
_REGENERATE = "regenerate the bundle with `git vaultmesh prove`"


class _Malformed(Exception):
    pass


def _hashes(v: Any, what: str) -> list[bytes]:
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise _Malformed(f"{what} must be a list of hex hashes")
    try:
        out = [bytes.fromhex(x) for x in v]
    except ValueError:
        raise _Malformed(f"{what} holds a value that is not hex") from None
    if any(len(h) != 32 for h in out):
        raise _Malformed(f"{what} holds a hash that is not 32 bytes")
    return out


def _int(v: Any, what: str) -> int:
    if not isinstance(v, int) or isinstance(v, bool) or v < 0:
        raise _Malformed(f"{what} must be a non-negative integer")
    return v


def _keys(obj: dict[str, Any], required: set[str], optional: set[str], what: str) -> None:
    missing, extra = required - set(obj), set(obj) - required - optional
    if missing or extra:
        raise _Malformed(f"{what}: " + "; ".join(x for x in (f"missing {sorted(missing)}" if missing else "",
                                                            f"unknown {sorted(extra)}" if extra else "") if x))


def _shape(bundle: Any, r: Report) -> dict[str, Any] | None:
    """The schema: the format version first (an older bundle gets its own code), then every field's type."""
    if not isinstance(bundle, dict):
        r.failed("proof.format", "VM-PROOF-MALFORMED", "the bundle is not a JSON object", hint=_REGENERATE)
        return None
    fmt = bundle.get("format")
    if fmt in OLD_FORMATS:
        r.failed("proof.format", "VM-PROOF-VERSION",
                 f"a {fmt} bundle: that format took key material from the bundle and could not show that no policy "
                 f"entry was left out; this version reads {FORMAT} only",
                 "make a new bundle with `git vaultmesh prove` from a current version")
        return None
    if fmt != FORMAT:
        r.failed("proof.format", "VM-PROOF-MALFORMED", f"not a {FORMAT} bundle (format {str(fmt)[:40]!r})",
                 hint=_REGENERATE)
        return None
    try:  # exact shapes: a field nothing checks is a field an attacker can use
        _keys(bundle, {"format", "log", "checkpoint", "entries", "release", "commit"}, {"consistency"}, "the bundle")
        if not isinstance(bundle["log"], str):
            raise _Malformed("log must be the log id (a string)")
        cp = bundle["checkpoint"]
        if not isinstance(cp, dict) or not isinstance(cp.get("text"), str) or not isinstance(cp.get("sig"), str):
            raise _Malformed("checkpoint must be {text, sig} (strings)")
        _keys(cp, {"text", "sig"}, set(), "checkpoint")
        items = bundle["entries"]
        if not isinstance(items, list) or not items:
            raise _Malformed("entries must be a non-empty list")
        for it in items:
            if not isinstance(it, dict) or not isinstance(it.get("line"), str):
                raise _Malformed("each entry must be {index, line, inclusion}")
            _keys(it, {"index", "line", "inclusion"}, set(), "an entry")
            _int(it.get("index"), "entry index")
            _hashes(it.get("inclusion"), f"inclusion of entry #{it.get('index')}")
        indexes = [it["index"] for it in items]
        if len(set(indexes)) != len(indexes):
            raise _Malformed("two entries share an index")
        if indexes != sorted(indexes):  # the documented order: one bundle has one spelling
            raise _Malformed("entries must be in ascending index order")
        _int(bundle["release"], "release")
        c = bundle["commit"]
        if not isinstance(c, dict) or not isinstance(c.get("raw"), str) or not isinstance(c.get("oid"), str):
            raise _Malformed("commit must be {oid, raw, index, inclusion}")
        _keys(c, {"oid", "raw", "index", "inclusion"}, set(), "commit")
        _int(c.get("index"), "commit index")
        _hashes(c.get("inclusion"), "commit inclusion")
        if "consistency" in bundle:
            cons = bundle["consistency"]
            if not isinstance(cons, dict):
                raise _Malformed("consistency must be {from, proof}")
            _keys(cons, {"from", "proof"}, set(), "consistency")
            _int(cons.get("from"), "consistency.from")
            _hashes(cons.get("proof"), "consistency proof")
    except _Malformed as exc:
        r.failed("proof.format", "VM-PROOF-MALFORMED", str(exc), hint=_REGENERATE)
        return None
    return bundle


def check(bundle: Any, trust_root: str) -> Report:
    r = Report(trust="pinned")
    b = _shape(bundle, r)
    if b is None:
        return r
    try:
        cp = ledger.parse_checkpoint(b["checkpoint"]["text"].encode(), "bundle checkpoint")
    except (VaultMeshError, UnicodeEncodeError) as exc:
        r.failed("proof.format", "VM-PROOF-MALFORMED", exc.cause if isinstance(exc, VaultMeshError) else str(exc),
                 hint=_REGENERATE)
        return r
    if b["log"] != cp.log_id:
        r.failed("proof.format", "VM-PROOF-MALFORMED", f"the bundle names log {b['log'][:40]!r}, its checkpoint is "
                 f"of log {cp.log_id}", hint=_REGENERATE)
        return r
    carried, lines = _included(b, cp, r)
    if not _complete(cp, carried, lines, r):
        return r
    ctx = Context(r, Options(), carried, lines, cp.size, Scope(everything=True), trust_root=trust_root)
    try:
        for rule in entries.ENTRY_RULES:
            rule(ctx)
        if ctx.timeline is None:
            return r
        tokens.tokens(ctx)
        subjects.release_bases(ctx)
        _checkpoint(ctx, b, cp)
        release = _release(ctx, b)
        if release is not None:
            _commit(r, b, release)
            _consistency(ctx, b, release)
    finally:
        ctx.close()
    return r


def _included(b: dict[str, Any], cp: ledger.Checkpoint, r: Report) -> tuple[dict[int, Entry], dict[int, bytes]]:
    """Each carried entry is a leaf of the checkpoint's tree at its index (the proof binds index and size)."""
    carried: dict[int, Entry] = {}
    lines: dict[int, bytes] = {}
    bad = 0
    for it in sorted(b["entries"], key=lambda x: x["index"]):
        idx = it["index"]
        line = it["line"].encode("utf-8", errors="surrogateescape")
        if idx >= cp.size or not merkle.verify_inclusion(idx, cp.size, merkle.leaf_hash(line),
                                                         _hashes(it["inclusion"], "inclusion"), cp.root):
            r.failed("proof.inclusion", "VM-PROOF-INVALID",
                     f"entry #{idx} is not included in the checkpoint (size {cp.size}): its line or proof was altered",
                     "the bundle was altered or does not match the ledger")
            bad += 1
            continue
        lines[idx] = line
        try:
            carried[idx] = parse_line(line, f"bundle entry #{idx}")
        except VaultMeshError as exc:
            r.error(f"entry.{idx}.format", exc)
    if not bad:
        r.passed("proof.inclusion", f"{len(carried)} entries included in the checkpoint of log {cp.log_id} "
                 f"(size {cp.size})")
    return carried, lines


def _complete(cp: ledger.Checkpoint, carried: dict[int, Entry], lines: dict[int, bytes], r: Report) -> bool:
    """The bundle carries every policy entry the checkpoint commits to: none left out, none invented."""
    if cp.policies is None:
        r.failed("proof.policies", "VM-PROOF-INCOMPLETE",
                 "the checkpoint carries no policy commitment, so the bundle cannot show that it left no policy "
                 "entry out (a checkpoint written before this version)",
                 "append to the ledger with a current version (e.g. record or timestamp), then prove again")
        return False
    idx = sorted(carried)
    want = ledger.policy_commitment([lines[i] for i in idx], [carried[i] for i in idx])
    if want != cp.policies:
        r.failed("proof.policies", "VM-PROOF-INCOMPLETE",
                 f"the checkpoint commits to {cp.policies[0]} policy entr(y/ies) (root "
                 f"{cp.policies[1].hex()[:16]}…); the bundle carries {want[0]} (root {want[1].hex()[:16]}…): a "
                 "policy entry was left out or altered", _REGENERATE)
        return False
    r.passed("proof.policies", f"all {want[0]} policy entries of the log are in the bundle")
    return True


def _checkpoint(ctx: Context, b: dict[str, Any], cp: ledger.Checkpoint) -> None:
    """The checkpoint is this log's, signed by a signer pinned by the policy in force at its size (stricter than
    verify, which also accepts the appender of the head commit's own policy change: a bundle does not carry
    where the previous log commit ended)."""
    r = ctx.report
    if cp.log_id != ctx.log_id:
        r.failed("log.checkpoint", "VM-CHECKPOINT-MISMATCH",
                 f"the checkpoint is of log {cp.log_id}, the genesis policy of log {ctx.log_id}")
        return
    text, sig = b["checkpoint"]["text"].encode(), b["checkpoint"]["sig"].encode(errors="surrogateescape")
    if log.checkpoint_signed(ctx, "bundle checkpoint", text, sig, [ctx.policy_at(cp.size)]):
        r.passed("log.checkpoint", f"checkpoint of log {cp.log_id} size {cp.size} signed by a policy signer")


def _release(ctx: Context, b: dict[str, Any]) -> Entry | None:
    rel = ctx.carried.get(b["release"])
    if rel is None or rel.type != "release" or not isinstance(rel.body.get("history"), dict):
        ctx.report.failed("proof.release", "VM-PROOF-MALFORMED",
                          "release must be the index of a release entry the bundle carries", hint=_REGENERATE)
        return None
    return rel


def _history_of(e: Entry) -> tuple[int, bytes] | None:
    h = e.body.get("history")
    try:
        assert isinstance(h, dict)
        return int(h["size"]), bytes.fromhex(h["root"])
    except (AssertionError, KeyError, TypeError, ValueError):
        return None


def _commit(r: Report, b: dict[str, Any], rel: Entry) -> None:
    """The commit's bytes hash to its id, and are a leaf of the release's history tree at the given index."""
    c = b["commit"]
    hist = _history_of(rel)
    oid = c["oid"]
    try:
        raw = base64.b64decode(c["raw"], validate=True)
    except ValueError:
        r.failed("proof.commit", "VM-PROOF-MALFORMED", "commit.raw is not base64", hint=_REGENERATE)
        return
    algo = {40: "sha1", 64: "sha256"}.get(len(oid))
    if algo is None or hashlib.new(algo, b"commit %d\0" % len(raw) + raw).hexdigest() != oid:
        r.failed("proof.commit", "VM-PROOF-INVALID", f"commit.raw does not hash to {oid[:64]!r}",
                 "the bundle was altered or does not match the ledger")
        return
    if hist is None or not merkle.verify_inclusion(c["index"], hist[0], merkle.leaf_hash(raw),
                                                   _hashes(c["inclusion"], "commit inclusion"), hist[1]):
        r.failed("proof.commit", "VM-PROOF-INVALID", f"commit {oid[:12]} is not included in the release's history "
                 "root", "the bundle was altered or does not match the ledger")
        return
    r.passed("proof.commit", f"commit {oid} is #{c['index']} of {hist[0]} in the history of "
             f"{rel.subject_ref or rel.subject_commit}")


def _consistency(ctx: Context, b: dict[str, Any], rel: Entry) -> None:
    """An earlier release's history is a prefix of this release's (RFC 9162 consistency proof)."""
    if "consistency" not in b:
        return
    r = ctx.report
    cons = b["consistency"]
    old = ctx.carried.get(cons["from"])
    oh, nh = (_history_of(old) if old is not None and old.type == "release" else None), _history_of(rel)
    if old is None or oh is None or nh is None:
        r.failed("proof.consistency", "VM-PROOF-MALFORMED", "consistency.from must index a release entry in the "
                 "bundle", hint=_REGENERATE)
        return
    if not merkle.verify_consistency(oh[0], nh[0], oh[1], nh[1], _hashes(cons["proof"], "consistency proof")):
        r.failed("proof.consistency", "VM-PROOF-INVALID", f"the history of {old.subject_ref} is not a prefix of "
                 f"{rel.subject_ref}'s: the consistency proof fails", "the bundle was altered or does not match the ledger")
        return
    r.passed("proof.consistency", f"history of {old.subject_ref} is a prefix of {rel.subject_ref} (consistency proof)")
