"""`import-v4`: bring an old VaultMesh v4.1 ("Remembrancer") receipt tree into the ledger as `import` entries.

The old tool's checks failed open: a missing `.asc` was "skipping", an empty or HTML `.tsr` was "timestamp
present", `verified_by: remembrancer-cli` was written by the tool about itself. So an import entry carries
the original bytes (and their SHA-256) as evidence and says, item by item, what this import could check
and what it could not; the importer's signature means "these bytes were read from this path", never that
the old claims are true. Nothing the old tool asserted becomes a verdict here.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import posixpath
import re
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..entry import no_duplicate_keys, reject_constant
from ..errors import VaultMeshError

if TYPE_CHECKING:
    from ..git import Repo
    from ..ledger import AppendResult

FORMAT = "vaultmesh-v4.1"
MAX_RECEIPT = 256 * 1024  # a receipt is a page of text; its base64 must fit in one entry (1 MiB)
MAX_EMBED = 64 * 1024  # .asc / .tsr files up to this size travel inside the entry; larger ones by digest only
MAX_DEPTH = 32
_JCS_SAFE_INT = 2**53  # beyond it, JCS (ECMAScript numbers) and Python disagree: kept as the source text
_HEX64 = re.compile(r"^[0-9a-fA-F]{64}\Z")
_DATETIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})\Z")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}\Z")
# Keys the importer interprets; any other key is kept in original.fields and reported as not interpreted.
KNOWN_KEYS = frozenset({"type", "schema_version", "component", "version", "timestamp", "evidence", "status",
                        "verified_by", "signatures", "timestamps", "image", "digest", "artifact", "sha256"})
ADR_KNOWN = frozenset({"date", "status"})
NEIGHBOUR_SUFFIXES = (".asc", ".tsr", ".tsq")  # read with their receipt (.tsq: the old request, not evidence)

_MALFORMED_HINT = ("fix or move the file out of the tree and import again; nothing was appended "
                   "(an import is all or nothing)")


def _malformed(rel: str, cause: str) -> VaultMeshError:
    return VaultMeshError("VM-IMPORT-MALFORMED", f"{rel}: {cause}", _MALFORMED_HINT)


# --- strict parsing of one receipt (pure: bytes in, fields out) ------------------------------------------------


@dataclass
class Parsed:
    """One old receipt as read: its shape, what kind of record it says it is, and its fields."""

    shape: str  # "yaml-front-matter" | "json" | "adr-markdown"
    kind: str  # the receipt's own `type` ("deployment", ...), "adr", or "unknown"
    fields: dict[str, Any]
    title: str | None = None


def parse(rel: str, data: bytes) -> Parsed:
    """Parse one receipt file strictly; anything a second reader might read differently is refused."""
    if len(data) > MAX_RECEIPT:
        raise _malformed(rel, f"more than {MAX_RECEIPT} bytes, the limit for one receipt")
    if data.startswith(b"\xef\xbb\xbf"):
        raise _malformed(rel, "starts with a UTF-8 byte order mark, which the old tool never wrote")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _malformed(rel, f"not UTF-8 (byte {exc.start})") from None
    if "\x00" in text:
        raise _malformed(rel, "contains a NUL byte")
    name = rel.rsplit("/", 1)[-1]
    if name.endswith(".md"):
        return _parse_adr(rel, text)
    head = text.lstrip()
    if head.startswith("{"):
        return _parse_json(rel, text)
    if name.endswith(".receipt") and text.split("\n", 1)[0].rstrip("\r") == "---":
        return _parse_front_matter(rel, text)
    if name.endswith(".json"):
        return _parse_json(rel, text)
    raise _malformed(rel, "neither YAML front matter (a first line '---') nor a JSON object")


def _depth_ok(value: Any, depth: int = 0) -> bool:
    if depth > MAX_DEPTH:
        return False
    if isinstance(value, dict):
        return all(_depth_ok(v, depth + 1) for v in value.values())
    if isinstance(value, list):
        return all(_depth_ok(v, depth + 1) for v in value)
    return True


def _int_or_text(text: str) -> Any:
    value = int(text)
    return value if abs(value) <= _JCS_SAFE_INT else text


def _parse_json(rel: str, text: str) -> Parsed:
    try:
        # a fraction or a huge integer is kept as its source text: entries hold integers only (docs/formats.md)
        obj = json.loads(text, object_pairs_hook=no_duplicate_keys, parse_constant=reject_constant,
                         parse_float=str, parse_int=_int_or_text)
    except RecursionError:
        raise _malformed(rel, f"nested deeper than {MAX_DEPTH} levels") from None
    except ValueError as exc:
        raise _malformed(rel, f"not valid JSON ({exc})") from None
    if not isinstance(obj, dict):
        raise _malformed(rel, f"a JSON receipt must be an object, not {type(obj).__name__}")
    if not obj:
        raise _malformed(rel, "an empty JSON object records nothing")
    if not _depth_ok(obj):
        raise _malformed(rel, f"nested deeper than {MAX_DEPTH} levels")
    kind = obj.get("type") if isinstance(obj.get("type"), str) else None
    return Parsed("json", kind or "unknown", obj)


def _parse_front_matter(rel: str, text: str) -> Parsed:
    lines = text.split("\n")
    end = next((i for i in range(1, len(lines)) if lines[i].rstrip("\r") in ("---", "...")), None)
    if end is None:
        raise _malformed(rel, "the YAML front matter opened by '---' on line 1 is never closed")
    fields = _strict_yaml(rel, "\n".join(lines[1:end]) + "\n")
    kind = fields.get("type") if isinstance(fields.get("type"), str) and fields.get("type") else None
    return Parsed("yaml-front-matter", kind or "unknown", fields)


def _strict_yaml(rel: str, text: str) -> dict[str, Any]:
    """YAML read with no implicit typing (every scalar stays the text it was: "2025-01-XX" is not a date
    error at parse time, 1.10 does not become 1.1), refusing duplicate keys, anchors, aliases and explicit
    tags, which the old tool never wrote and which let one document mean different things to different readers.

    Built from libyaml's event stream (PyYAML's C parser: ~0.05 ms a receipt, against ~3.5 ms for a pure-Python
    parser, which alone would spend 20 s of the 10 s budget for 10k receipts)."""
    import yaml

    loader = getattr(yaml, "CBaseLoader", yaml.BaseLoader)  # only its parser runs: no resolver, no constructor
    stack: list[Any] = []  # containers being built; a mapping's pending key rides as (dict, [key or None])
    root: Any = None
    docs = 0
    try:
        for ev in yaml.parse(text, Loader=loader):
            if isinstance(ev, yaml.AliasEvent) or getattr(ev, "anchor", None):
                raise _malformed(rel, "the front matter uses a YAML anchor or alias")
            tag = getattr(ev, "tag", None)
            if tag not in (None, "!"):
                raise _malformed(rel, f"the front matter uses an explicit YAML tag {tag}")
            if isinstance(ev, yaml.DocumentStartEvent):
                docs += 1
                if docs > 1:
                    raise _malformed(rel, "the front matter holds more than one YAML document")
            value: Any
            if isinstance(ev, yaml.ScalarEvent):
                value = ev.value
            elif isinstance(ev, yaml.MappingStartEvent):
                value = {}
            elif isinstance(ev, yaml.SequenceStartEvent):
                value = []
            elif isinstance(ev, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
                stack.pop()
                continue
            else:
                continue
            if len(stack) > MAX_DEPTH:
                raise _malformed(rel, f"the front matter is nested deeper than {MAX_DEPTH} levels")
            if not stack:
                root = value
            else:
                top = stack[-1]
                if isinstance(top, list):
                    top.append(value)
                else:
                    mapping, pending = top
                    if pending[0] is None:
                        if not isinstance(value, str):
                            raise _malformed(rel, "the front matter has a key that is not a plain string")
                        if value in mapping:
                            mark = ev.start_mark.line + 2  # +1: 0-based; +1: the '---' line
                            raise _malformed(rel, f"the front matter gives key {value!r} twice (line {mark})")
                        pending[0] = value
                        continue
                    mapping[pending[0]] = value
                    pending[0] = None
            if isinstance(value, dict):
                stack.append((value, [None]))
            elif isinstance(value, list):
                stack.append(value)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 2}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise _malformed(rel, f"the front matter is not valid YAML{where}: {problem}") from None
    if root is None or root == "":
        raise _malformed(rel, "the front matter is empty")
    if not isinstance(root, dict):
        raise _malformed(rel, f"the front matter must be a mapping of fields, not a {type(root).__name__}")
    return root


_ADR_TITLE = re.compile(r"^#\s+(\S.*?)\s*\Z")
_ADR_FIELD = re.compile(r"^(?:[-*]\s+)?\*{0,2}([A-Za-z][A-Za-z -]{0,39}?)(?::\*{0,2}|\*{0,2}:)\s*(.*?)\s*\Z")


def _parse_adr(rel: str, text: str) -> Parsed:
    """ADR Markdown: a `# title` first line, then header fields (`Date: …`, `**Status**: …`) up to the first
    section heading or rule. A second value for one header field is refused: which one would count?"""
    lines = text.split("\n")
    m = _ADR_TITLE.match(lines[0].rstrip("\r"))
    if m is None:
        raise _malformed(rel, "an ADR must start with a '# title' line")
    fields: dict[str, Any] = {}
    for n, raw in enumerate(lines[1:], start=2):
        line = raw.rstrip("\r").strip()
        if line.startswith("#") or line == "---":
            break
        fm = _ADR_FIELD.match(line)
        if line and fm is not None:
            key = fm.group(1).strip().lower()
            if key in fields:
                raise _malformed(rel, f"header field {fm.group(1).strip()!r} given twice (line {n})")
            fields[key] = fm.group(2).rstrip("*").strip()
    return Parsed("adr-markdown", "adr", fields, m.group(1))


# --- what can and cannot be checked about one receipt ----------------------------------------------------------


def _item(item: str, status: str, detail: str) -> dict[str, str]:
    return {"item": item, "status": status, "detail": detail}


def _inside(name: str) -> str | None:
    """`name` (as the old tool wrote it: relative to the tree's root) as a normalised path inside the tree, or
    None. A receipt can name any path; the importer reads none outside the tree it was given."""
    if not name or "\x00" in name or name.startswith("/") or os.path.isabs(name):
        return None
    norm = posixpath.normpath(name)
    return None if norm in (".", "..") or norm.startswith("../") else norm


def _locate(root: str, rel: str) -> tuple[str, str]:
    """("ok", full path) for a regular file really inside the tree (a symlink may not lead out of it),
    else ("missing" | "outside", full path). One stat for a file that is not there."""
    full = os.path.join(root, rel)
    try:
        st = os.stat(full)
    except (OSError, ValueError):
        return "missing", full
    if not stat.S_ISREG(st.st_mode):
        return "missing", full
    if not os.path.realpath(full).startswith(root + os.sep):
        return "outside", full
    return "ok", full


@dataclass
class _Assessment:
    verified: list[dict[str, str]] = field(default_factory=list)
    unverified: list[dict[str, str]] = field(default_factory=list)
    files: list[dict[str, Any]] = field(default_factory=list)


def _claims(p: Parsed, a: _Assessment) -> None:
    """Fields that are the old tool's word: kept, never judged."""
    f = p.fields
    if p.shape == "adr-markdown":
        date = f.get("date")
        if date is None:
            a.unverified.append(_item("date", "missing", "the ADR names no Date"))
        elif _DATE.match(str(date)) or _DATETIME.match(str(date)):
            a.unverified.append(_item("date", "claimed", f"Date {date} is the author's word; no token covers it"))
        else:
            a.unverified.append(_item("date", "malformed", f"Date {date!r} is not a date (YYYY-MM-DD)"))
        if "status" in f:
            a.unverified.append(_item("status", "claimed", f"Status {f['status']!r} is the author's word"))
        extra = sorted(set(f) - ADR_KNOWN)
        if extra:
            a.unverified.append(_item("fields", "not-interpreted",
                                      f"header field(s) {', '.join(extra)} kept as written, not interpreted"))
        return
    ts = f.get("timestamp")
    if ts is None:
        a.unverified.append(_item("timestamp", "missing", "the receipt names no timestamp"))
    elif isinstance(ts, str) and _DATETIME.match(ts):
        a.unverified.append(_item("timestamp", "claimed",
                                  f"timestamp {ts} is the old tool's clock; no token covers the receipt"))
    else:
        a.unverified.append(_item("timestamp", "malformed",
                                  f"timestamp {ts!r} is not an RFC 3339 date-time: the receipt's time is unknown"))
    for key in ("status", "verified_by"):
        if key in f:
            a.unverified.append(_item(key, "claimed",
                                      f"{key}: {f[key]!r} is the old tool's verdict about itself, not carried over"))
    digest = f.get("digest")
    if digest is not None:
        if isinstance(digest, str) and digest.startswith("sha256:") and _HEX64.match(digest[7:]):
            where = f" of {f['image']}" if isinstance(f.get("image"), str) else ""
            a.unverified.append(_item("digest", "claimed",
                                      f"image digest{where} {digest} not checked: the image is not in the tree"))
        else:
            a.unverified.append(_item("digest", "malformed", f"digest {digest!r} is not sha256:<64 hex>"))
    for key in ("component", "version"):
        if key not in f:
            a.unverified.append(_item(key, "missing", f"the receipt names no {key}"))
        elif not isinstance(f[key], str) or not f[key]:
            a.unverified.append(_item(key, "malformed", f"{key} {f[key]!r} is not a non-empty string"))
    extra = sorted(set(f) - KNOWN_KEYS)
    if isinstance(f.get("evidence"), dict):
        extra += sorted(f"evidence.{k}" for k in set(f["evidence"]) - {"artifact", "sha256"})
    if extra:
        a.unverified.append(_item("fields", "not-interpreted",
                                  f"unknown key(s) {', '.join(extra)} kept as written, not interpreted"))


def _artifact(root: str, p: Parsed, a: _Assessment) -> tuple[str | None, str | None]:
    """The artifact the receipt names and its claimed SHA-256; hashed if it is in the tree."""
    ev = p.fields.get("evidence")
    src = ev if isinstance(ev, dict) else p.fields
    name = src.get("artifact") if isinstance(src.get("artifact"), str) else None
    claimed = src.get("sha256")
    if claimed is not None and not (isinstance(claimed, str) and _HEX64.match(claimed)):
        a.unverified.append(_item("sha256", "malformed", f"sha256 {claimed!r} is not 64 hex characters"))
        claimed = None
    claimed = claimed.lower() if isinstance(claimed, str) else None
    if name is None:
        if claimed is not None:
            a.unverified.append(_item("artifact", "claimed", f"sha256 {claimed} names no artifact file"))
        return None, claimed
    rel = _inside(name)
    where, path = _locate(root, rel) if rel is not None else ("outside", "")
    if where == "outside":
        a.unverified.append(_item("artifact", "not-read", f"{name!r} lies outside the imported tree: not read"))
        return None, claimed
    if where == "missing":
        a.unverified.append(_item("artifact", "missing",
                                  f"{name} is not in the tree: its sha256 {claimed or '(none)'} is only claimed"))
        return rel, claimed
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    got = h.hexdigest()
    if claimed is None:
        a.unverified.append(_item("artifact", "claimed", f"{name} has sha256 {got}; the receipt claims no digest"))
    elif got == claimed:
        a.verified.append(_item("artifact", "matches",
                                f"{name} read at import has sha256 {got}, the digest the receipt claims"))
    else:
        a.unverified.append(_item("artifact", "mismatch",
                                  f"{name} read at import has sha256 {got}; the receipt claims {claimed}"))
    return name, claimed


def _read_neighbour(root: str, rel: str) -> bytes | None:
    where, full = _locate(root, rel)
    if where != "ok":
        return None
    with open(full, "rb") as fh:
        return fh.read()


def _signature(root: str, role_of: str, rel: str, a: _Assessment) -> bool:
    data = _read_neighbour(root, rel)
    if data is None:
        return False
    a.files.append(_file(rel, "signature", role_of, data))
    if not data.strip():
        a.unverified.append(_item("signature", "empty", f"{rel} is empty ({len(data)} bytes): not a signature"))
    elif not data.lstrip().startswith(b"-----BEGIN PGP SIGNATURE-----"):
        a.unverified.append(_item("signature", "not-a-signature",
                                  f"{rel} is not an armoured OpenPGP signature: kept as evidence only"))
    else:
        a.unverified.append(_item("signature", "not-checked",
                                  f"{rel} is an OpenPGP signature over the {role_of}; not checked: its signer is "
                                  "not a signer of this ledger's policy"))
    return True


def _token(root: str, role_of: str, rel: str, imprint_of: str | None, a: _Assessment) -> bool:
    from ..rfc3161.tsa import parse_response

    data = _read_neighbour(root, rel)
    if data is None:
        return False
    a.files.append(_file(rel, "token", role_of, data))
    try:
        token = parse_response(data)
    except VaultMeshError as exc:
        status = {"VM-TSA-EMPTY": "empty", "VM-TSA-STATUS": "not-granted"}.get(exc.code, "not-a-token")
        a.unverified.append(_item("token", status, f"{rel}: {exc.code}: {exc.cause}"))
        return True
    gen = token.gen_time.strftime("%Y-%m-%dT%H:%M:%SZ")
    match = ""
    if imprint_of is not None:
        same = token.imprint.hex() == imprint_of
        match = (f"; its imprint {'equals' if same else 'differs from'} the {role_of}'s sha256 {imprint_of}")
    a.unverified.append(_item("token", "not-checked",
                              f"{rel} is an RFC 3161 response, genTime {gen}{match}; its signature and TSA chain are "
                              "not checked: the old TSA is not in this ledger's policy"))
    return True


def _file(rel: str, role: str, of: str, data: bytes) -> dict[str, Any]:
    out: dict[str, Any] = {"path": rel, "role": role, "of": of, "sha256": hashlib.sha256(data).hexdigest(),
                           "size": len(data)}
    if len(data) <= MAX_EMBED:
        out["bytes"] = base64.b64encode(data).decode()
    return out


def _named_files(p: Parsed, key: str, attr: str) -> list[str]:
    items = p.fields.get(key)
    if not isinstance(items, list):
        return []
    return [str(it[attr]) for it in items if isinstance(it, dict) and isinstance(it.get(attr), str) and it[attr]]


def assess(root: str, rel: str, data: bytes, p: Parsed) -> _Assessment:
    a = _Assessment()
    receipt_digest = hashlib.sha256(data).hexdigest()
    a.verified.append(_item("original", "kept", f"{rel}: sha256 {receipt_digest} ({len(data)} bytes) read at "
                                                "import, kept in original.bytes"))
    _claims(p, a)
    artifact, claimed = _artifact(root, p, a) if p.shape != "adr-markdown" else (None, None)
    sigs: list[tuple[str, str]] = [("receipt", rel + ".asc")]
    toks: list[tuple[str, str, str | None]] = [("receipt", rel + ".tsr", receipt_digest)]
    if artifact is not None:
        sigs.append(("artifact", artifact + ".asc"))
        toks.append(("artifact", artifact + ".tsr", claimed))
    for name in _named_files(p, "signatures", "sig_file"):
        if (sp := _inside(name)) is not None:
            sigs.append(("artifact", sp))
    for name in _named_files(p, "timestamps", "token_file"):
        if (tp := _inside(name)) is not None:
            toks.append(("artifact", tp, claimed))
    seen: set[str] = set()
    found_sig = found_tok = False
    for of, path in sigs:
        if path not in seen:
            seen.add(path)
            found_sig = _signature(root, of, path, a) or found_sig
    for of, path, imprint in toks:
        if path not in seen:
            seen.add(path)
            found_tok = _token(root, of, path, imprint, a) or found_tok
    if not found_sig:
        where = f" (looked for {rel}.asc" + (f" and {artifact}.asc)" if artifact else ")")
        a.unverified.append(_item("signature", "missing", f"no signature file{where}: the receipt is unsigned"))
    if not found_tok:
        where = f" (looked for {rel}.tsr" + (f" and {artifact}.tsr)" if artifact else ")")
        a.unverified.append(_item("token", "missing", f"no RFC 3161 token file{where}: the time is only claimed"))
    return a


def import_body(root: str, rel: str, data: bytes, p: Parsed) -> dict[str, Any]:
    """The body of the `import` entry for one receipt, without `log` and `recorded_at`."""
    a = assess(root, rel, data, p)
    original: dict[str, Any] = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data),
                                "bytes": base64.b64encode(data).decode(), "fields": p.fields}
    if a.files:
        original["files"] = a.files
    kind = p.kind
    parts = rel.split("/")
    if kind == "unknown" and len(parts) > 3 and parts[:2] == ["ops", "receipts"]:
        kind = parts[2]  # no type of its own: the directory the old tool kept it in (deploy, incident, ...)
    body: dict[str, Any] = {"type": "import", "source": {"tool": FORMAT, "path": rel, "shape": p.shape,
                                                         "kind": kind}}
    for key in ("component", "version"):
        value = p.fields.get(key)
        if p.shape != "adr-markdown" and isinstance(value, str) and value and len(value) <= 200:
            body[key] = value
    what = p.title or f"{kind} receipt"
    body["message"] = f"imported from VaultMesh v4.1 {rel} ({what}); its claims are unverified"
    body["original"] = original
    body["verified"] = a.verified
    body["unverified"] = a.unverified
    return body


def identity(body: dict[str, Any]) -> tuple[Any, ...]:
    """What makes two imports the same: the receipt's path in the tree, its bytes, and the bytes of the
    signature and token files found beside it. A changed receipt, or a token that appeared since, is new."""
    src, orig = body.get("source"), body.get("original")
    if not isinstance(src, dict) or not isinstance(orig, dict):
        return ()
    files = orig.get("files")
    if not isinstance(files, list):
        files = []
    return (src.get("path"), orig.get("sha256"),
            tuple(sorted((str(f.get("path")), str(f.get("sha256"))) for f in files if isinstance(f, dict))))


# --- the tree -----------------------------------------------------------------------------------------------


def find_tree(path: str) -> tuple[str, list[str]]:
    """(root of the v4.1 tree, the paths relative to it of the files PATH covers). The root is the directory
    holding `ops/`, so a receipt's source path (ops/receipts/…) is the same whichever PATH inside it was given."""
    if not os.path.lexists(path):
        raise VaultMeshError("VM-IMPORT-NOT-V4", f"{path} does not exist",
                             "pass the old tree's root (the directory holding ops/receipts) or a path inside it")
    full = os.path.abspath(path)
    if os.path.isdir(os.path.join(full, "ops", "receipts")):
        root, top = full, os.path.join(full, "ops", "receipts")
    else:
        anc = full
        while os.path.basename(anc) != "receipts" or os.path.basename(os.path.dirname(anc)) != "ops":
            if os.path.dirname(anc) == anc:
                raise VaultMeshError("VM-IMPORT-NOT-V4", f"{path} is not a VaultMesh v4.1 tree: no ops/receipts "
                                     "directory in it or above it",
                                     "pass the directory that holds ops/receipts/ (or a file in it)")
            anc = os.path.dirname(anc)
        root, top = os.path.dirname(os.path.dirname(anc)), full
    real = os.path.realpath(root)
    if os.path.isdir(top) and not os.path.islink(top):
        rels: list[str] = []
        for dirpath, dirnames, filenames in os.walk(top):
            dirnames.sort()
            base = os.path.relpath(dirpath, root).replace(os.sep, "/")
            rels.extend(f"{base}/{name}" for name in sorted(filenames))
    else:
        rels = [os.path.relpath(top, root).replace(os.sep, "/")]
    return real, rels


def _is_neighbour(name: str) -> bool:
    return name.endswith(NEIGHBOUR_SUFFIXES)


def _is_receipt(rel: str) -> bool:
    """*.receipt and *.json anywhere under ops/receipts; Markdown only as ADRs (under an adr/ directory)."""
    parts = rel.split("/")
    return rel.endswith((".receipt", ".json")) or (rel.endswith(".md") and "adr" in parts[:-1])


@dataclass
class Planned:
    rel: str
    body: dict[str, Any]
    existing: tuple[int, str] | None = None  # (seq, entry id) of the identical import already in the log


def plan(path_args: list[str]) -> tuple[list[Planned], list[str]]:
    """Every receipt under the PATHs parsed and assessed, or the first malformed one raised (with a count
    of all of them, so one run shows how much needs fixing)."""
    planned: list[Planned] = []
    problems: list[VaultMeshError] = []
    skipped: list[str] = []
    seen: set[str] = set()
    for arg in path_args:
        root, rels = find_tree(arg)
        for rel in rels:
            if rel in seen:
                continue
            seen.add(rel)
            name = rel.rsplit("/", 1)[-1]
            if _is_neighbour(name):
                continue  # read with the receipt it belongs to
            if not _is_receipt(rel):
                skipped.append(rel)
                continue
            full = os.path.join(root, rel)
            if not stat.S_ISREG(os.lstat(full).st_mode):
                problems.append(_malformed(rel, "is not a regular file (a symlink or special file is not read)"))
                continue
            with open(full, "rb") as fh:
                data = fh.read(MAX_RECEIPT + 1)
            try:
                parsed = parse(rel, data)
            except VaultMeshError as exc:
                problems.append(exc)
                continue
            planned.append(Planned(rel, import_body(root, rel, data, parsed)))
    if problems:
        first = problems[0]
        more = f" (and {len(problems) - 1} more malformed receipt(s): " + ", ".join(
            p.cause.split(":", 1)[0] for p in problems[1:6]) + ("…" if len(problems) > 6 else "") + ")"
        raise VaultMeshError(first.code, first.cause + (more if len(problems) > 1 else ""), first.hint)
    if not planned:
        raise VaultMeshError("VM-IMPORT-NOT-V4", f"no receipts (*.receipt, *.json, ADR *.md) under "
                             f"{', '.join(path_args)}", "pass the directory that holds ops/receipts/")
    return planned, skipped


# --- the verb -----------------------------------------------------------------------------------------------


@contextmanager
def _import_lock(repo: Repo) -> Iterator[None]:
    """Imports into one repository take turns: the appender re-reads nothing between its precheck and the refs
    moving, so two imports of one tree in the same second would both append, and their identical bodies would
    be duplicate statements."""
    from .. import ledger

    with ledger.machine_turn(repo, "import.lock", None):
        yield


def run(args: argparse.Namespace) -> int:
    from ..git import Repo

    repo = Repo.discover()
    planned, skipped = plan(args.paths)
    if args.dry_run:
        result = _append_new(repo, planned, dry_run=True)
    else:
        with _import_lock(repo):
            result = _append_new(repo, planned, dry_run=False)
    return _report(args, planned, skipped, result)


def _append_new(repo: Repo, planned: list[Planned], *, dry_run: bool) -> AppendResult | None:
    """Mark what the log already holds; append the rest (unless dry_run). The AppendResult, or None."""
    from .. import ledger
    from ..config import signing_key
    from ..entry import MAX_LINE, now_rfc3339
    from ..policy import may_sign
    from .record import current_policy

    head = ledger.read_head(repo)
    if head.commit is None and not dry_run:
        raise VaultMeshError("VM-NOT-INITIALIZED", f"{ledger.REF_LOG} does not exist",
                             "run `git vaultmesh init` first")
    existing: dict[tuple[Any, ...], tuple[int, str]] = {}
    if head.commit is not None:
        for seq, e in enumerate(ledger.read_entries(repo, head.commit)):
            if e.type == "import":
                existing.setdefault(identity(e.body), (seq, e.id))
    for p in planned:
        p.existing = existing.get(identity(p.body))
    todo = [p for p in planned if p.existing is None]
    recorded_at = now_rfc3339()
    bodies = []
    for p in todo:
        body = {**p.body, "log": head.log_id or "0" * 32, "recorded_at": recorded_at}
        # compact JSON is as long as JCS give or take escapes; 16 KiB is room for those and the signature
        if len(json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()) > MAX_LINE - 16 * 1024:
            raise _malformed(p.rel, "its import entry would exceed the ledger's entry size limit")
        bodies.append(body)
    if not todo or dry_run:
        return None
    key = signing_key(repo)
    policy = current_policy(repo, head)
    may_sign(policy, key, "import")
    result = ledger.append_bodies(repo, key, bodies)
    if policy.tokens("import") > 0:  # the entries are pending until they carry the tokens policy requires
        from ..ui import note

        note(f"the policy requires {policy.tokens('import')} RFC 3161 token(s) per import entry: run "
             "`git vaultmesh timestamp --pending` (the tokens date the import, not the old receipts)")
    return result


def _report(args: argparse.Namespace, planned: list[Planned], skipped: list[str],
            result: AppendResult | None) -> int:
    from ..ui import print_json

    entries = result.entries if result is not None else []
    rows = []
    done = iter(zip(range(result.first_seq if result else 0, 1 << 62), entries))
    for p in planned:
        row: dict[str, Any] = {"path": p.rel, "shape": p.body["source"]["shape"], "kind": p.body["source"]["kind"],
                               "sha256": p.body["original"]["sha256"]}
        if p.existing is not None:
            row.update(status="already-imported", seq=p.existing[0], entry=p.existing[1])
        elif result is None:
            row.update(status="would-import", seq=None, entry=None)
        else:
            seq, e = next(done)
            row.update(status="imported", seq=seq, entry=e.id)
        row.update(verified=p.body["verified"], unverified=p.body["unverified"])
        rows.append(row)
    appended = len(entries)
    tally: dict[str, int] = {}
    for p in planned:
        for u in p.body["unverified"]:
            tally[f"{u['item']} {u['status']}"] = tally.get(f"{u['item']} {u['status']}", 0) + 1
    if args.json:
        print_json({"ok": True, "dry_run": bool(args.dry_run), "appended": appended,
                    "already_imported": sum(1 for p in planned if p.existing is not None),
                    "commit": result.commit if result else None, "unverified": tally, "receipts": rows,
                    "skipped": skipped})
        return 0
    for row in rows:
        where = f"entry #{row['seq']} ({row['entry'][:12]})" if row["entry"] else ""
        label = {"imported": f"imported as {where}", "already-imported": f"already imported as {where}",
                 "would-import": "would import"}[row["status"]]
        print(f"{row['path']}: {label}")
        if row["status"] == "already-imported":
            continue
        for v in row["verified"]:
            print(f"  verified    {v['item']}: {v['detail']}")
        for u in row["unverified"]:
            print(f"  UNVERIFIED  {u['item']} ({u['status']}): {u['detail']}")
    for rel in skipped:
        print(f"{rel}: skipped (not a receipt: *.receipt, *.json, or Markdown under adr/)")
    todo = [p for p in planned if p.existing is None]
    already = len(planned) - len(todo)
    verb = "would append" if args.dry_run else "appended"
    if tally:
        print(f"not verified, over {len(planned)} receipt(s): "
              + ", ".join(f"{k} {n}" for k, n in sorted(tally.items(), key=lambda kv: (-kv[1], kv[0]))))
    print(f"{verb} {len(todo) if args.dry_run else appended} import entr{'y' if len(todo) == 1 else 'ies'}"
          + (f"; {already} already imported, unchanged" if already else ""))
    return 0
