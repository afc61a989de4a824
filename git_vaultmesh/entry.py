"""Entries: RFC 8785 (JCS) lines, their ids and body digests, and strict parsing.

An entry line is the only thing a verifier trusts byte for byte, so parsing refuses anything a second
implementation might read differently: duplicate keys, non-canonical encodings, unknown fields, unknown types.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from collections.abc import Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any

from .errors import VaultMeshError

if TYPE_CHECKING:
    from .signing import SigningKey

ENTRY_VERSION = 1
TYPES = ("policy", "release", "deploy", "adr", "decision", "cosign", "timestamp", "witness", "merge", "import")
# Types judged by a signing threshold of their own; these never need timestamp tokens (docs/formats.md).
NO_TOKEN_TYPES = frozenset({"timestamp", "cosign", "witness"})

_COMMON = {"type", "log", "recorded_at", "component", "version", "subject", "artifacts", "evidence", "message"}
ALLOWED_FIELDS: dict[str, frozenset[str]] = {
    "policy": frozenset(_COMMON | {"signers", "thresholds", "tsas", "tokens_required", "note_keys"}),
    "release": frozenset(_COMMON | {"history", "tree_digest", "submodules"}),
    "deploy": frozenset(_COMMON | {"environment"}),
    "adr": frozenset(_COMMON | {"title", "status", "document", "number", "supersedes"}),
    "decision": frozenset(_COMMON | {"title", "status", "number", "supersedes"}),
    "cosign": frozenset({"type", "log", "recorded_at", "entry", "message"}),
    "timestamp": frozenset({"type", "log", "recorded_at", "entry", "checkpoint", "tokens", "message"}),
    "witness": frozenset(_COMMON | {"peer", "checkpoint", "checkpoint_sig", "cosignature", "consistency"}),
    "merge": frozenset(_COMMON | {"peer", "entries"}),
    "import": frozenset(_COMMON | {"source", "original", "verified", "unverified"}),
}
MAX_LINE = 1 << 20  # 1 MiB: an entry is a statement, not a payload
_HEX64 = re.compile(r"^[0-9a-f]{64}\Z")
_HEX_RUN = re.compile(r"[0-9a-f]*")
_LOG_ID = re.compile(r"^[0-9a-f]{32}\Z")
_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z\Z")
_ARTIFACT_NAME = re.compile(r"^[A-Za-z0-9._+@-][A-Za-z0-9._+@ -]{0,254}\Z")


def canonical(obj: Any) -> bytes:
    """RFC 8785 bytes of a JSON value. (rfc8785 is imported here: commands that only read never need it.)"""
    import rfc8785

    return bytes(rfc8785.dumps(obj))


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def now_rfc3339() -> str:
    """UTC seconds; SOURCE_DATE_EPOCH wins so records can be reproduced bit for bit."""
    sde = os.environ.get("SOURCE_DATE_EPOCH")
    ts = int(sde) if sde and sde.isdigit() else int(time.time())
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def new_log_id() -> str:
    return os.urandom(16).hex()


class Entry:
    """One entry: its canonical line (the Merkle leaf data), body and signatures. Immutable. A plain class,
    not a dataclass: importing dataclasses (and inspect with it) is ~10 ms of every command's start-up."""

    __hash__ = None  # type: ignore[assignment]  # the body is a dict: like the frozen dataclass it was, unhashable

    line: bytes  # canonical JSON, no newline: the Merkle leaf data
    body: dict[str, Any]
    sigs: list[dict[str, str]]  # a batch signature also carries "batch"

    def __init__(self, line: bytes, body: dict[str, Any], sigs: list[dict[str, str]] | None = None) -> None:
        self.__dict__.update(line=line, body=body, sigs=[] if sigs is None else sigs)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"Entry is immutable (cannot set {name})")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Entry):
            return NotImplemented
        return (self.line, self.body, self.sigs) == (other.line, other.body, other.sigs)

    def __repr__(self) -> str:
        return f"Entry(line={self.line!r}, body={self.body!r}, sigs={self.sigs!r})"

    @property
    def id(self) -> str:
        return sha256_hex(self.line)

    @cached_property  # computed once: every check and the merged view ask for it
    def body_bytes(self) -> bytes:
        """What signatures cover: JCS(body)."""
        return canonical(self.body)

    @cached_property
    def body_digest(self) -> str:
        return sha256_hex(self.body_bytes)

    @property
    def type(self) -> str:
        return str(self.body.get("type"))

    @property
    def subject_commit(self) -> str | None:
        subj = self.body.get("subject")
        if isinstance(subj, dict) and isinstance(subj.get("commit"), str):
            return str(subj["commit"])
        return None

    @property
    def subject_ref(self) -> str | None:
        subj = self.body.get("subject")
        if isinstance(subj, dict) and isinstance(subj.get("ref"), str):
            return str(subj["ref"])
        return None

    def as_json(self) -> dict[str, Any]:
        return {"v": ENTRY_VERSION, "body": self.body, "sigs": self.sigs}


def make_entry(body: dict[str, Any], sigs: list[dict[str, str]]) -> Entry:
    obj = {"v": ENTRY_VERSION, "body": body, "sigs": sigs}
    return Entry(canonical(obj), body, sigs)


def no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """json object_pairs_hook: a repeated key is an error (readers disagree on which value wins)."""
    seen: dict[str, Any] = {}
    for k, v in pairs:
        if k in seen:
            raise ValueError(f"duplicate key {k!r}")
        seen[k] = v
    return seen


def reject_constant(name: str) -> Any:
    raise ValueError(f"non-JSON number {name}")


def _reject_float(text: str) -> Any:
    # Entries hold integers only; a fraction or exponent is where JCS number serialisation (ECMAScript
    # Number.toString) and a second implementation's float printing can disagree, so none is accepted.
    raise ValueError(f"non-integer number {text}")


def parse_line(line: bytes, where: str = "entry") -> Entry:
    """Strictly parse one entry line (without its newline)."""

    def bad(cause: str) -> VaultMeshError:
        return VaultMeshError("VM-ENTRY-MALFORMED", f"{where}: {cause}",
                              "the ledger was written by something other than git-vaultmesh: "
                              "restore refs/vaultmesh/log from a replica (`verify --all` lists every damaged entry)")

    if len(line) > MAX_LINE:
        raise bad(f"entry is {len(line)} bytes, over the {MAX_LINE}-byte limit")
    obj = _plain_parse(line)
    if obj is None:  # not plainly canonical ASCII: the strict reading, which also names what is wrong
        try:
            obj = json.loads(line.decode("utf-8"), object_pairs_hook=no_duplicate_keys,
                             parse_constant=reject_constant, parse_float=_reject_float, parse_int=_parse_int)
        except (UnicodeDecodeError, ValueError) as exc:
            raise bad(f"not valid JSON ({exc})") from None
        if not isinstance(obj, dict) or set(obj) != {"v", "body", "sigs"}:
            raise bad("top level must be exactly {v, body, sigs}")
        try:
            recanon = canonical(obj)
        except Exception as exc:  # rfc8785 rejects floats it cannot represent, huge ints, lone surrogates
            raise bad(f"cannot be canonicalised ({exc})") from None
        if recanon != line:
            raise bad("not in RFC 8785 canonical form (key order, spacing or number/string encoding differs)")
    if obj["v"] != ENTRY_VERSION or isinstance(obj["v"], bool):
        raise bad(f"version {obj['v']!r}, expected {ENTRY_VERSION}")
    body, sigs = obj["body"], obj["sigs"]
    if not isinstance(body, dict):
        raise bad("body is not an object")
    if not isinstance(sigs, list):
        raise bad("sigs is not a list")
    for s in sigs:
        plain = {k: v for k, v in s.items() if k != "batch"} if isinstance(s, dict) else None
        if plain is None or set(plain) != {"format", "signer", "sig"} or not all(
            isinstance(v, str) for v in plain.values()
        ):
            raise bad("each signature must be exactly {format, signer, sig} strings (and an optional batch)")
        if "batch" in s and not _batch_shape_ok(s["batch"]):
            raise bad("a signature's batch must be exactly {size, index, proof}: 1 <= size, 0 <= index < size, "
                      "proof a list of 64-hex hashes")
    check_body(body, where)
    return Entry(line, body, sigs)


_REF_FORBIDDEN = re.compile(r"[\x00-\x20\x7f~^:?*\[\\]")


def is_refname(name: str) -> bool:
    """A full refname by `git check-ref-format`'s rules (refs/ and at least one more level; no component
    starting with '.' or ending in '.lock'; no '..', '@{', control characters, space, ~ ^ : ? * [ or \\):
    what a receipt may name, and so all pull may ever create from a remote's entry."""
    if not name.startswith("refs/") or len(name) > 1024 or "@{" in name or ".." in name or name.endswith("."):
        return False
    if _REF_FORBIDDEN.search(name) or name == "@":
        return False
    parts = name.split("/")
    return len(parts) >= 3 and all(p and not p.startswith(".") and not p.endswith(".lock") for p in parts)


_SAFE_INT = (1 << 53) - 1


def _parse_int(text: str) -> int:
    value = int(text)
    if not -_SAFE_INT <= value <= _SAFE_INT:  # JCS prints exactly only these (RFC 8785 3.2.2.3)
        raise ValueError(f"integer {text} is outside +-(2^53 - 1)")
    return value


def _plain_parse(line: bytes) -> dict[str, Any] | None:
    """The entry object when `line` is plainly canonical ASCII (`_plainly_canonical`), else None, parsed without
    the duplicate-key hook (a Python call per object, a third of a whole-log read): a line with a repeated key
    cannot re-encode to itself, since the parsed object holds one member fewer than the line spells, so a line
    that does re-encode to itself has none. Anything else goes to the strict reading, which says what is wrong."""
    try:
        obj = json.loads(line.decode("ascii"), parse_constant=reject_constant, parse_float=_reject_float,
                         parse_int=_parse_int)
    except (UnicodeDecodeError, ValueError):
        return None
    if isinstance(obj, dict) and set(obj) == {"v", "body", "sigs"} and _plainly_canonical(obj, line):
        return obj
    return None


def _plainly_canonical(obj: Any, line: bytes) -> bool:
    """True only when `line` is certainly JCS(obj), checked with the C JSON encoder (several times faster than
    rfc8785, which is then skipped). Sound for ASCII lines: ASCII keys sort alike by code point and by UTF-16
    unit; Python escapes ASCII strings exactly as RFC 8785 does (short escapes for b t n f r, quote and
    backslash, a lower-case u00xx escape for the other controls); integers are already within +-(2^53 - 1)
    (`_parse_int`) and there are no floats. Anything else (non-ASCII text, escapes that decode to it, any
    difference at all) goes to rfc8785."""
    return line.isascii() and json.dumps(obj, ensure_ascii=False, sort_keys=True,
                                         separators=(",", ":")).encode() == line


def check_body(body: dict[str, Any], where: str = "entry") -> None:
    """Shape rules every body must meet, whatever its signatures say."""

    def bad(cause: str) -> VaultMeshError:
        return VaultMeshError("VM-ENTRY-MALFORMED", f"{where}: {cause}",
                              "the ledger was written by something other than git-vaultmesh: "
                              "restore refs/vaultmesh/log from a replica (`verify --all` lists every damaged entry)")

    typ = body.get("type")
    if not isinstance(typ, str):
        raise bad("body.type is missing")
    if typ not in ALLOWED_FIELDS:
        raise VaultMeshError("VM-ENTRY-UNKNOWN-TYPE", f"{where}: body.type {typ!r} is not one of {', '.join(TYPES)}",
                             "upgrade git-vaultmesh if a newer version wrote this entry; otherwise the log is forged")
    extra = set(body) - ALLOWED_FIELDS[typ]
    if extra:
        raise bad(f"unknown field(s) {sorted(extra)} in a {typ} body")
    if not isinstance(body.get("log"), str) or not _LOG_ID.match(body["log"]):
        raise bad("body.log must be a 32-hex log id")
    ra = body.get("recorded_at")
    if not isinstance(ra, str) or not _RFC3339.match(ra):
        raise bad("body.recorded_at must be RFC 3339 UTC seconds (YYYY-MM-DDTHH:MM:SSZ)")
    for key in ("component", "version", "message"):
        if key in body and not isinstance(body[key], str):
            raise bad(f"body.{key} must be a string")
    if "evidence" in body and not (isinstance(body["evidence"], list)
                                   and all(isinstance(e, str) for e in body["evidence"])):
        raise bad("body.evidence must be a list of strings")
    if "artifacts" in body:
        arts = body["artifacts"]
        if not isinstance(arts, list):
            raise bad("body.artifacts must be a list")
        for a in arts:
            if not isinstance(a, dict) or not {"name", "sha256"} <= set(a) <= {"name", "sha256", "size"}:
                raise bad("each artifact must be {name, sha256[, size]}")
            if not isinstance(a["name"], str) or not _ARTIFACT_NAME.match(a["name"]) or a["name"] in (".", ".."):
                raise bad(f"artifact name {a['name']!r} is not a plain file name")
            if not isinstance(a["sha256"], str) or not _HEX64.match(a["sha256"]):
                raise bad(f"artifact {a['name']!r}: sha256 must be 64 lowercase hex")
            if "size" in a and (not isinstance(a["size"], int) or isinstance(a["size"], bool) or a["size"] < 0):
                raise bad(f"artifact {a['name']!r}: size must be a non-negative integer")
    if "subject" in body:
        subj = body["subject"]
        if not isinstance(subj, dict) or not set(subj) <= {"ref", "tag", "commit", "tree"}:
            raise bad("body.subject must be an object of ref/tag/commit/tree")
        for k, v in subj.items():
            if not isinstance(v, str):
                raise bad(f"body.subject.{k} must be a string")
            if k != "ref" and not re.match(r"^[0-9a-f]{40}([0-9a-f]{24})?\Z", v):
                raise bad(f"body.subject.{k} must be a full object id")
        if "ref" in subj and not is_refname(subj["ref"]):
            raise bad(f"body.subject.ref {str(subj['ref'])[:80]!r} is not a full refname (refs/…)")
    if typ in ("cosign",) and not (isinstance(body.get("entry"), str) and _HEX64.match(body["entry"])):
        raise bad("a cosign body names the body digest it co-signs in body.entry")
    if typ == "timestamp":
        _check_timestamp(body, bad)
    if typ == "release" and ("subject" not in body or "history" not in body):
        raise bad("a release body needs subject and history")
    if typ == "witness":
        _check_witness(body, bad)
    if typ in ("adr", "decision"):
        _check_record(body, bad)


def _check_record(body: dict[str, Any], bad: Any) -> None:
    """ADRs and decisions: `number` (>= 1) names the record, several entries with one number are its revisions;
    `supersedes` lists the numbers it replaces; `title`, `status`, `document` are text."""
    def positive(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 999_999_999

    for key in ("title", "status", "document"):
        if key in body and not isinstance(body[key], str):
            raise bad(f"body.{key} must be a string")
    if "number" in body and not positive(body["number"]):
        raise bad("body.number must be an integer from 1 to 999999999")
    sup = body.get("supersedes")
    if sup is not None and not (isinstance(sup, list) and len(sup) <= 64 and all(positive(n) for n in sup)):
        raise bad("body.supersedes must be a list of at most 64 record numbers")


def _check_witness(body: dict[str, Any], bad: Any) -> None:
    """{"peer": {"name", "log"}, "checkpoint": <the peer's checkpoint body>, "checkpoint_sig": <its signature>,
    "cosignature": {"vkey", "line"}, "consistency": {"size", "root", "proof"}} — judged by federation."""
    peer = body.get("peer")
    if not isinstance(peer, dict) or set(peer) != {"name", "log"} or not all(isinstance(v, str) for v in peer.values()):
        raise bad("witness body.peer must be exactly {name, log} strings")
    for k in ("checkpoint", "checkpoint_sig"):
        if not isinstance(body.get(k), str):
            raise bad(f"witness body.{k} must be a string")
    cos = body.get("cosignature")
    if cos is not None and (not isinstance(cos, dict) or set(cos) != {"vkey", "line"}
                            or not all(isinstance(v, str) for v in cos.values())):
        raise bad("witness body.cosignature must be exactly {vkey, line} strings")
    cons = body.get("consistency")
    if cons is not None and (not isinstance(cons, dict) or set(cons) != {"size", "root", "proof"}
                             or not isinstance(cons["size"], int) or not isinstance(cons["proof"], list)):
        raise bad("witness body.consistency must be exactly {size, root, proof}")


_TSA_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")
_SIZE = re.compile(r"^[1-9][0-9]{0,15}\Z")


def _check_timestamp(body: dict[str, Any], bad: Any) -> None:
    """{"entry": <entry id>} or {"checkpoint": "<size>"} (an archive timestamp), and 1-64 tokens
    {"tsa": <policy TSA name>, "tsr": <base64 DER TimeStampResp>}; the tokens themselves are judged by verify."""
    has_entry, has_cp = "entry" in body, "checkpoint" in body
    if has_entry == has_cp:
        raise bad("a timestamp body names exactly one of entry (an entry id) and checkpoint (a log size)")
    if has_entry and not (isinstance(body["entry"], str) and _HEX64.match(body["entry"])):
        raise bad("timestamp body.entry must be the 64-hex id of the timestamped entry")
    if has_cp and not (isinstance(body["checkpoint"], str) and _SIZE.match(body["checkpoint"])):
        raise bad("timestamp body.checkpoint must be a log size as a decimal string (archive timestamp)")
    tokens = body.get("tokens")
    if not isinstance(tokens, list) or not 1 <= len(tokens) <= 64:
        raise bad("timestamp body.tokens must be a list of 1 to 64 tokens")
    for t in tokens:
        if not isinstance(t, dict) or set(t) != {"tsa", "tsr"} or not all(isinstance(v, str) for v in t.values()):
            raise bad("each timestamp token must be exactly {tsa, tsr} strings")
        if not _TSA_NAME.match(t["tsa"]):
            raise bad(f"timestamp token TSA name {t['tsa']!r} is invalid")


def hash_file(path: str) -> tuple[str, int]:
    """SHA-256 and size of an artifact file, streamed (what `record` writes and `verify` compares)."""
    h = hashlib.sha256()
    size = 0
    try:
        with open(path, "rb") as fh:
            while chunk := fh.read(1 << 20):
                h.update(chunk)
                size += len(chunk)
    except OSError as exc:
        raise VaultMeshError("VM-ARTIFACT-UNREADABLE", f"cannot read artifact {path}: {exc.strerror or exc}",
                             "check the path and its permissions") from None
    return h.hexdigest(), size


def entry_path(seq: int) -> str:
    """entries/<a>/<b>/<seq>.json: fan-out so no tree grows past 1000 entries; path order is log order."""
    return f"entries/{seq // 1_000_000:03d}/{(seq // 1000) % 1000:03d}/{seq:012d}.json"


_PATH_RE = re.compile(r"^entries/(\d{3})/(\d{3})/(\d{12})\.json\Z")


def seq_of_path(path: str) -> int | None:
    m = _PATH_RE.match(path)
    if not m:
        return None
    seq = int(m.group(3))
    return seq if entry_path(seq) == path else None


BATCH_TYPE = "vaultmesh-batch"


def _batch_shape_ok(b: Any) -> bool:
    def is_int(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool)

    return (isinstance(b, dict) and set(b) == {"size", "index", "proof"} and is_int(b["size"])
            and is_int(b["index"]) and 1 <= b["size"] and 0 <= b["index"] < b["size"]
            and isinstance(b["proof"], list) and len(b["proof"]) <= 64
            and all(isinstance(h, str) and len(h) == 64 for h in b["proof"])
            and _HEX_RUN.fullmatch("".join(b["proof"])) is not None)  # 64 characters each, all of them hex


def batch_statement(log_id: str, size: int, root: bytes) -> bytes:
    """What one batch signature covers: JCS of the batch statement (docs/formats.md, "Batch signatures")."""
    return canonical({"type": BATCH_TYPE, "log": log_id, "size": size, "root": root.hex()})


def _root_from_inclusion(index: int, size: int, leaf: bytes, proof: list[bytes]) -> bytes | None:
    """RFC 9162 §2.1.3.2 run forwards: the root the proof leads to, or None when its length is wrong."""
    from .merkle import node_hash

    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            return None
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return r if sn == 0 else None


def signed_message(sig: dict[str, Any], entry: Entry) -> bytes:
    """The bytes `sig` covers: JCS(body) for a plain signature; for a batch one, the batch statement rebuilt
    from this body's leaf and the inclusion proof (a changed body, proof or index gives another root)."""
    batch = sig.get("batch")
    if batch is None:
        return entry.body_bytes
    if not _batch_shape_ok(batch):
        raise VaultMeshError("VM-SIG-MALFORMED", f"entry {entry.id[:12]}: the batch of a signature is malformed",
                             "the entry was not written by git-vaultmesh")
    from .merkle import leaf_hash

    root = _root_from_inclusion(batch["index"], batch["size"], leaf_hash(entry.body_bytes),
                                [bytes.fromhex(h) for h in batch["proof"]])
    if root is None:
        raise VaultMeshError("VM-SIG-MALFORMED",
                             f"entry {entry.id[:12]}: batch proof has the wrong length for index "
                             f"{batch['index']} of {batch['size']}", "the entry was not written by git-vaultmesh")
    return batch_statement(str(entry.body.get("log")), batch["size"], root)


# --- the one place an entry is built and signed ----------------------------------------------------------

def _signature(key: SigningKey, message: bytes) -> dict[str, str]:
    """A signature item {format, signer, sig}: `sig` is the detached signature over `message`, base64."""
    from .signing import sign

    return {"format": key.format, "signer": key.fingerprint, "sig": sign(key, message)}


def sign_body(body: dict[str, Any], key: SigningKey) -> Entry:
    """An entry of `body` with one signature by `key` over JCS(body): every verb that writes an entry uses it,
    so what a signature covers (the rule `signed_message` checks) is decided here once."""
    return make_entry(body, [_signature(key, canonical(body))])


def add_signature(entry: Entry, key: SigningKey) -> Entry:
    """`entry` with one more signature by `key` over the same body (a staged policy change, `policy sign`)."""
    return make_entry(entry.body, [*entry.sigs, _signature(key, entry.body_bytes)])


def sign_batch(bodies: Sequence[dict[str, Any]], key: SigningKey) -> list[Entry]:
    """Entries for `bodies` under ONE signature by `key` over the batch statement (docs/formats.md, "Batch
    signatures"): each carries the same sig plus its inclusion proof, which `signed_message` rebuilds."""
    from . import merkle
    from .signing import sign

    if not bodies:
        return []
    log_id = str(bodies[0]["log"])
    leaves = [merkle.leaf_hash(canonical(b)) for b in bodies]
    sig = sign(key, batch_statement(log_id, len(bodies), merkle.root_from_leaf_hashes(leaves)))
    entries = []
    proofs = merkle.inclusion_proofs(leaves)  # all at once: one inclusion_proof per entry is O(n^2)
    for i, b in enumerate(bodies):
        proof = [h.hex() for h in proofs[i]]
        item: dict[str, Any] = {"format": key.format, "signer": key.fingerprint, "sig": sig,
                                "batch": {"size": len(bodies), "index": i, "proof": proof}}
        entries.append(make_entry(b, [item]))
    return entries
