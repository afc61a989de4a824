"""Differential test: the lean RFC 3161 verifier (git_vaultmesh.rfc3161.tsa) against the previous one (reference_tsa).

reference_tsa is the asn1crypto + cryptography.x509 verifier that git_vaultmesh/tsa.py replaced. Both get the
same tokens, policy CAs, pins, data and nonces, and must give the same verdict for verify_token,
parse_response and token_gen_time:

* both accept, with equal fields (every TokenInfo / ParsedToken field, value and type; signer_subject too); or
* both reject with the same error code.

Allowed differences (the lead's rulings), all in one function, `_allowed(ref_out, lean_out)`, which returns the
name of the rule that allows a difference (tallied per rule and printed, with examples, at the end of the
module). Outside them every difference fails. A cause is matched by substring; "names DER" means DER/BER or
"encod" in the cause, not counting the generic prefix "well-formed DER but not an RFC 3161 TimeStampResp"
(which says the bytes ARE DER):

* R1 strict encoding/structure: the reference ACCEPTS, the lean verifier rejects with VM-TSA-NOT-DER,
  VM-TSA-SIGNATURE or VM-TSA-CHAIN, and its cause names DER/BER/the encoding or a structural requirement of
  the lean reader ("was required, found", "after its last field", "NULL or none was required", "(RFC 5280",
  "is not minimally encoded", "explicitly (not DER)", "elements inside an explicit tag", "which no field here
  uses"). asn1crypto parses
  lazily and never looked at those bytes.
* R2 earlier report of malformed structure: both reject, the lean code is VM-TSA-NOT-DER (the lean reader
  checks the whole TimeStampResp structure up front; the reference met the same damage later, as a
  signature/chain/status failure).
* R3 signer identifier: both reject; the reference VM-TSA-SIGNATURE "SignerInfo cannot be parsed", the lean
  VM-TSA-CHAIN "none matching its signer identifier" (the sid is not covered by the CMS signature; the lean
  reader finds no certificate it names).
* R4 certificate structure: both reject; the lean VM-TSA-CHAIN "a certificate in the token cannot be parsed"
  (the lean X.509 reader enforces RFC 5280 structure that cryptography loads anyway: inner/outer signature
  algorithm, empty RDN, extensions in a non-v3 certificate, unused bits in the key).
* R5 certificate bytes the lean reader accepts: both reject; the reference VM-TSA-CHAIN "cannot be parsed",
  the lean VM-TSA-SIGNATURE naming the signingCertificate(V2) hash or a key "of an unsupported kind", or the
  lean VM-TSA-CHAIN (the signature of the chain link fails).

Never allowed, whatever the rule: the lean verifier accepting (or parse_response / token_gen_time returning)
where the reference rejects; both accepting with different fields; a lean crash (an exception other than
VaultMeshError).

Oracle crashes: the reference lets three exceptions escape (cryptography's InvalidVersion for a certificate
version above v3, UnsupportedAlgorithm for a signer key of unknown type or curve, and a ValueError formatting a
name with an empty or duplicated RDN; see ORACLE_CRASHES). For those inputs there is no reference code to compare with; the
lean verifier must still reject them with a VaultMeshError. Counted apart ("oracle-crash"); any other
reference crash fails the test.

Corpus: valid EC/RSA tokens (offline and over a loopback TsaServer), RSA-PSS, subjectKeyIdentifier signer ids,
grantedWithMods, shared-CA leaves, openssl `ts -reply` tokens (ESS v1 SHA-1 and v2 SHA-256, through an
intermediate CA), every forged or tampered token of tests/test_tsa.py, unusual signer certificates and chains,
targeted DER-strictness encodings (re-signed, so the reference accepts them), policy CA and pin mutations;
then exhaustive sweeps (every bit-flip class, every truncation, structural TLV edits) and hypothesis-driven
mutations of valid tokens.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import dataclasses
import functools
import hashlib
import re
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from functools import cached_property
from pathlib import Path
from typing import Any

import pytest
from asn1crypto import core, tsp
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import git_vaultmesh.rfc3161.tsa as lean
from git_vaultmesh.errors import VaultMeshError
from git_vaultmesh.rfc3161.server import TsaIdentity, TsaServer, make_identity, sign_token

import reference_tsa as ref
import tsa_kit
from tsa_kit import DATA, OPENSSL, cert_der, token

# Byte flips reach certificate serial numbers: the oracle's cryptography warns on a non-positive one, which
# RFC 5280 4.1.2.2 asks users to handle gracefully (both verifiers then judge the certificate's signature).
pytestmark = pytest.mark.filterwarnings("ignore:Parsed a serial number which wasn't positive")

TOKEN_FIELDS = (
    "gen_time",
    "serial",
    "policy_oid",
    "nonce",
    "signer_not_before",
    "signer_not_after",
    "signer_subject",
    "spki_pin",
)
PARSED_FIELDS = (
    "status",
    "gen_time",
    "serial",
    "policy_oid",
    "nonce",
    "imprint_alg_oid",
    "imprint_alg_params",
    "imprint",
    "econtent",
    "certificates",
    "signer_count",
)

# --- outcomes and the agreement rule --------------------------------------------------------------------------

DER_WORDS = re.compile(r"\b(?:DER|BER)\b|encod", re.IGNORECASE)
# lean tsa._not_tsr's prefix: it says the bytes ARE DER, so it does not count as the cause naming DER.
NOT_TSR_PREFIX = "well-formed DER but not an RFC 3161 TimeStampResp"


def _names_der(cause: str) -> bool:
    return DER_WORDS.search(cause.replace(NOT_TSR_PREFIX, "")) is not None

# What the reference (the old production verifier) lets escape instead of a VaultMeshError: a certificate
# version above v3, a signer key of unknown type or curve, and a name it cannot format for a CHAIN message (an
# empty RDN, or an RDN holding one attribute twice).
ORACLE_CRASHES = (
    "InvalidVersion: ",
    "UnsupportedAlgorithm: ",
    "ValueError: a relative distinguished name cannot be empty",
    "ValueError: duplicate attributes are not allowed",
)
TALLY: Counter[str] = Counter()
ALLOWED_SEEN: dict[str, list[str]] = {}  # rule -> the differences it allowed


@dataclasses.dataclass(frozen=True)
class Outcome:
    value: Any = None
    code: str | None = None
    cause: str = ""
    crash: str | None = None  # "ExceptionType: message" when something other than VaultMeshError escaped

    @property
    def accepted(self) -> bool:
        return self.code is None and self.crash is None

    @property
    def verdict(self) -> str:
        """Short: ACCEPTS, the code (marked when the cause names DER), or the crash type."""
        if self.crash is not None:
            return f"CRASH {self.crash.split(':')[0]}"
        if self.code is not None:
            return self.code + (" (cause names DER)" if _names_der(self.cause) else "")
        return "ACCEPTS"

    def __str__(self) -> str:
        if self.crash is not None:
            return f"CRASH {self.crash}"
        if self.code is not None:
            return f"{self.code} ({self.cause})"
        return "ACCEPTS"


def run(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Outcome:
    try:
        return Outcome(value=fn(*args, **kwargs))
    except VaultMeshError as exc:
        return Outcome(code=exc.code, cause=exc.cause)
    except Exception as exc:  # noqa: BLE001 - a crash is a finding, reported with its type
        return Outcome(crash=f"{type(exc).__name__}: {str(exc)[:300]}")


def _same(a: Any, b: Any) -> bool:
    """Equal value AND type (a bytes field must not come back as a memoryview or list); datetimes also tz."""
    if type(a) is not type(b):
        return False
    if isinstance(a, tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, datetime):
        return a == b and a.utcoffset() == b.utcoffset() and a.utcoffset() is not None
    return bool(a == b)


def _public_fields(value: Any) -> set[str]:
    if isinstance(value, tuple) and hasattr(value, "_fields"):  # a NamedTuple (TokenInfo)
        return set(value._fields)
    if not dataclasses.is_dataclass(value):
        return set()
    return {f.name for f in dataclasses.fields(value) if not f.name.startswith("_")}


R1_CODES = frozenset({"VM-TSA-NOT-DER", "VM-TSA-SIGNATURE", "VM-TSA-CHAIN"})
R1_STRUCTURE = (
    "was required, found",
    "after its last field",
    "NULL or none was required",
    "(RFC 5280",
    "is not minimally encoded",
    "explicitly (not DER)",
    "elements inside an explicit tag",
    "which no field here uses",  # a high-tag-number form: legal DER, but no RFC 3161/5652/5280 field has one
)
R5_ESS_HASH = re.compile(r"the signingCertificate(?:V2)? attribute names a certificate with hash ")
RULES = {
    "R1 strict encoding/structure": "reference accepts; lean NOT-DER/SIGNATURE/CHAIN citing DER or a structural rule",
    "R2 earlier report of malformed structure": "both reject; lean VM-TSA-NOT-DER",
    "R3 signer identifier": "reference SIGNATURE (SignerInfo unparsable) vs lean CHAIN (no certificate matches the sid)",
    "R4 certificate structure": "both reject; lean CHAIN: a certificate in the token cannot be parsed",
    "R5 certificate bytes the lean reader accepts": "reference CHAIN (cannot be parsed) vs lean SIGNATURE (ESS hash, "
    "unsupported key) or CHAIN",
}


def _allowed(ref_out: Outcome, lean_out: Outcome) -> str | None:
    """The rule (a key of RULES) that allows this difference of verdicts, or None: it is a disagreement.

    Called only for verdicts that differ and where neither side crashed. Never allows the lean verifier to
    accept (or parse_response / token_gen_time to return) where the reference rejects.
    """
    if lean_out.accepted or lean_out.crash is not None or ref_out.crash is not None:
        return None
    lean_code, lean_cause = lean_out.code, lean_out.cause
    if ref_out.accepted:
        if lean_code in R1_CODES and (_names_der(lean_cause) or any(p in lean_cause for p in R1_STRUCTURE)):
            return "R1 strict encoding/structure"
        return None
    ref_code, ref_cause = ref_out.code, ref_out.cause
    if lean_code == "VM-TSA-NOT-DER":
        return "R2 earlier report of malformed structure"
    if (
        ref_code == "VM-TSA-SIGNATURE"
        and "SignerInfo cannot be parsed" in ref_cause
        and lean_code == "VM-TSA-CHAIN"
        and "none matching its signer identifier" in lean_cause
    ):
        return "R3 signer identifier"
    if lean_code == "VM-TSA-CHAIN" and "a certificate in the token cannot be parsed" in lean_cause:
        return "R4 certificate structure"
    if ref_code == "VM-TSA-CHAIN" and "cannot be parsed" in ref_cause:
        if lean_code == "VM-TSA-CHAIN" or (
            lean_code == "VM-TSA-SIGNATURE"
            and (R5_ESS_HASH.search(lean_cause) is not None or "unsupported kind" in lean_cause)
        ):
            return "R5 certificate bytes the lean reader accepts"
    return None


def disagreement(what: str, ref_out: Outcome, lean_out: Outcome, fields: tuple[str, ...] | None) -> str | None:
    """None when the two verdicts agree (tallied), else a description naming both codes and causes."""
    found = _disagreement(what, ref_out, lean_out, fields)
    if found is not None:
        function = what.split(" ", 1)[0]
        kind = "fields differ" if "fields differ" in found else f"reference {ref_out.verdict} vs lean {lean_out.verdict}"
        KINDS[found] = f"{function}: {kind}"
    return found


def _disagreement(what: str, ref_out: Outcome, lean_out: Outcome, fields: tuple[str, ...] | None) -> str | None:
    if lean_out.crash is not None:
        return f"{what}: lean CRASHED ({lean_out.crash}); reference: {ref_out}"
    if ref_out.crash is not None:
        if ref_out.crash.startswith(ORACLE_CRASHES) and lean_out.code is not None:
            TALLY["oracle-crash"] += 1
            return None
        return f"{what}: reference (oracle) CRASHED ({ref_out.crash}); lean: {lean_out}"
    if ref_out.accepted and lean_out.accepted:
        if fields is None:
            diffs = [] if _same(ref_out.value, lean_out.value) else [f"value {ref_out.value!r} vs {lean_out.value!r}"]
        else:
            diffs = []
            ref_names, lean_names = _public_fields(ref_out.value), _public_fields(lean_out.value)
            if ref_names != lean_names:
                diffs.append(f"public fields {sorted(ref_names)} vs {sorted(lean_names)}")
            for name in fields:
                a, b = getattr(ref_out.value, name, "<absent>"), getattr(lean_out.value, name, "<absent>")
                if not _same(a, b):
                    diffs.append(f"{name}: reference {a!r} ({type(a).__name__}) vs lean {b!r} ({type(b).__name__})")
        if diffs:
            return f"{what}: both accept but fields differ: " + "; ".join(diffs)
        TALLY["both-accept"] += 1
        return None
    if not ref_out.accepted and lean_out.code == ref_out.code:
        TALLY["both-reject-same-code"] += 1
        return None
    rule = _allowed(ref_out, lean_out)
    if rule is not None:
        TALLY[rule] += 1
        ALLOWED_SEEN.setdefault(rule, []).append(f"{what}: reference {ref_out} vs lean {lean_out}")
        return None
    return f"{what}: reference {ref_out} vs lean {lean_out}"


@dataclasses.dataclass(frozen=True)
class Case:
    """One verification input: the token and everything verify_token is given with it."""

    tsr: bytes
    ca_pem: str
    pin: str | None = None
    nonce: int | None = None
    data: bytes = DATA
    name: str = "test"

    def __repr__(self) -> str:  # short, for hypothesis' failure report (the bytes are in the message's offsets)
        return f"Case(<{len(self.tsr)}-byte token>, nonce={self.nonce}, pin={self.pin!r}, {len(self.data)}-byte data)"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:  # hypothesis' pretty printer
        printer.text(repr(self))

    def verify(self, mod: Any) -> Outcome:
        return run(mod.verify_token, self.tsr, self.data, mod.TsaTrust(self.name, self.ca_pem, self.pin), nonce=self.nonce)

    def with_tsr(self, tsr: bytes) -> Case:
        return dataclasses.replace(self, tsr=tsr)


def compare_all(what: str, case: Case) -> list[str]:
    """verify_token, parse_response and token_gen_time of both verifiers on one input; the disagreements."""
    found = [
        disagreement(f"verify_token [{what}]", case.verify(ref), case.verify(lean), TOKEN_FIELDS),
        disagreement(
            f"parse_response [{what}]", run(ref.parse_response, case.tsr), run(lean.parse_response, case.tsr), PARSED_FIELDS
        ),
        disagreement(
            f"token_gen_time [{what}]", run(ref.token_gen_time, case.tsr), run(lean.token_gen_time, case.tsr), None
        ),
    ]
    return [f for f in found if f is not None]


def _kind(problem: str) -> str:
    return KINDS.get(problem, "?")


KINDS: dict[str, str] = {}  # disagreement message -> "function: reference verdict vs lean verdict"


def summarize(problems: list[str], total: int) -> str:
    kinds = Counter(_kind(p) for p in problems)
    head = "\n".join(f"  {n:5d} x {k}" for k, n in kinds.most_common(40))
    detail = "\n".join(problems[:60])
    more = f"\n  ... and {len(problems) - 60} more" if len(problems) > 60 else ""
    return f"{len(problems)} disagreement(s) in {total} inputs; by kind:\n{head}\nfirst ones:\n{detail}{more}"


@pytest.fixture(scope="module", autouse=True)
def _report_tally(request: pytest.FixtureRequest) -> Iterator[None]:
    TALLY.clear()
    ALLOWED_SEEN.clear()
    yield
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is None or request.config.get_verbosity() < 0:  # -q: the README's test command stays quiet
        return
    parts = ", ".join(f"{k} {v}" for k, v in sorted(TALLY.items()) if k not in RULES)
    lines = [f"tsa differential: {sum(TALLY.values())} verdicts compared ({parts})"]
    for rule, meaning in RULES.items():
        lines.append(f"  allowed by {rule}: {TALLY[rule]} ({meaning})")
        lines += [f"      e.g. {line[:400]}" for line in ALLOWED_SEEN.get(rule, [])[:3]]
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    with capture.global_and_fixture_disabled() if capture is not None else contextlib.nullcontext():
        reporter.write_line("")
        for line in lines:
            reporter.write_line(line)


# --- a small DER tree, to edit tokens structurally ----------------------------------------------------------


@dataclasses.dataclass
class Node:
    tag: bytes
    content: bytes = b""
    children: list[Node] | None = None  # constructed, or an OCTET STRING that wraps DER
    length: bytes | None = None  # explicit length octets (non-minimal or indefinite); None = minimal
    trailer: bytes = b""  # end-of-contents octets after an indefinite length


def _length_octets(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(body)]) + body


def encode(node: Node) -> bytes:
    body = b"".join(encode(c) for c in node.children) if node.children is not None else node.content
    length = node.length if node.length is not None else _length_octets(len(body))
    return node.tag + length + body + node.trailer


def _decode_one(data: bytes, pos: int) -> tuple[Node, int]:
    start = pos
    first = data[pos]
    pos += 1
    if first & 0x1F == 0x1F:
        while data[pos] & 0x80:
            pos += 1
        pos += 1
    tag = data[start:pos]
    lead = data[pos]
    pos += 1
    if lead & 0x80:
        count = lead & 0x7F
        if not 0 < count <= 4:
            raise ValueError("unsupported length")
        length = int.from_bytes(data[pos : pos + count], "big")
        pos += count
    else:
        length = lead
    end = pos + length
    if end > len(data):
        raise ValueError("overrun")
    content = data[pos:end]
    node = Node(tag, content)
    if first & 0x20:
        node.children = decode_all(content)
    elif first == 0x04 and content[:1] == b"\x30":
        try:
            kids = decode_all(content)
        except (ValueError, IndexError):
            kids = None
        if kids is not None and b"".join(encode(k) for k in kids) == content:
            node.children = kids
    return node, end


def decode_all(data: bytes) -> list[Node]:
    nodes, pos = [], 0
    while pos < len(data):
        node, pos = _decode_one(data, pos)
        nodes.append(node)
    return nodes


def decode(data: bytes) -> Node:
    node, end = _decode_one(data, 0)
    assert end == len(data) and encode(node) == data, "the base token must be DER"
    return node


Path_ = tuple[int, ...]


def walk(node: Node, path: Path_ = (), offset: int = 0) -> Iterator[tuple[Path_, Node, int]]:
    """(path, node, offset in the encoding) of every node, parents first."""
    yield path, node, offset
    if node.children is not None:
        body_len = sum(len(encode(c)) for c in node.children)
        pos = offset + len(node.tag) + len(_length_octets(body_len))
        for i, child in enumerate(node.children):
            yield from walk(child, (*path, i), pos)
            pos += len(encode(child))


def at(root: Node, path: Path_) -> Node:
    node = root
    for i in path:
        assert node.children is not None
        node = node.children[i]
    return node


# Labels for the TimeStampResp skeleton, so a disagreement says which field an offset falls in.
_SD_LABELS = {b"\x02": "version", b"\x31": "set", b"\x30": "encapContentInfo", b"\xa0": "certificates", b"\xa1": "crls"}
_SI_LABELS = ["version", "sid", "digestAlgorithm", "signedAttrs", "signatureAlgorithm", "signature", "unsignedAttrs"]
_TST_LABELS = ["version", "policy", "messageImprint", "serialNumber", "genTime"]


def label(root: Node, path: Path_) -> str:
    """A readable name for a path in a TimeStampResp: status / SignedData fields / TSTInfo / SignerInfo."""
    names = []
    try:
        if not path:
            return "TimeStampResp"
        if path[0] == 0:
            return "status" + "".join(f".{i}" for i in path[1:])
        if path[:3] != (1, 1, 0) or len(path) < 4:
            return "ContentInfo" + "".join(f".{i}" for i in path[1:])
        sd = at(root, (1, 1, 0))
        assert sd.children is not None
        field = sd.children[path[3]]
        name = _SD_LABELS.get(field.tag, "?")
        if name == "set":
            name = "digestAlgorithms" if path[3] == 1 else "signerInfos"
        names.append(f"SignedData.{name}")
        rest = list(path[4:])
        if name == "encapContentInfo" and rest[:3] == [1, 0, 0]:  # [0] / eContent OCTET STRING / TSTInfo
            names = ["TSTInfo"]
            if len(rest) >= 4:
                idx = rest[3]
                names.append(_TST_LABELS[idx] if idx < len(_TST_LABELS) else f"[{idx}]")
            rest = rest[4:]
        elif name == "signerInfos" and len(rest) >= 2:
            names[-1] += f"[{rest[0]}].{_SI_LABELS[rest[1]] if rest[1] < len(_SI_LABELS) else rest[1]}"
            rest = rest[2:]
        elif name == "certificates" and rest:
            names[-1] += f"[{rest[0]}]"
            rest = rest[1:]
        return ".".join(names) + "".join(f"/{i}" for i in rest)
    except (AssertionError, IndexError):
        return "/".join(map(str, path))


@functools.lru_cache(maxsize=16)
def _spans(tsr: bytes) -> list[tuple[int, int, str]]:
    root = decode(tsr)
    return [(start, start + len(encode(n)), f"{label(root, p)} (tag {n.tag.hex()} at {start})") for p, n, start in walk(root)]


def locate(tsr: bytes, offset: int) -> str:
    """The innermost element an offset of a (base) token falls in."""
    best = "after the end"
    for start, end, desc in _spans(tsr):
        if start <= offset < end:
            best = desc
    return best


# --- structural mutations -----------------------------------------------------------------------------------


def _long_length(node: Node) -> None:
    body_len = len(b"".join(encode(c) for c in node.children)) if node.children is not None else len(node.content)
    minimal = _length_octets(body_len)
    if minimal[0] < 0x80:
        node.length = b"\x81" + minimal
    else:
        node.length = bytes([minimal[0] + 1, 0]) + minimal[1:]


def _indefinite(node: Node) -> None:
    node.length, node.trailer = b"\x80", b"\x00\x00"


def _ber_octets(node: Node) -> None:
    raw = b"".join(encode(c) for c in node.children) if node.children is not None else node.content
    half = max(1, len(raw) // 2)
    node.tag = b"\x24"
    node.children = [Node(b"\x04", raw[:half]), Node(b"\x04", raw[half:])] if len(raw) > 1 else [Node(b"\x04", raw)]


def _int_pad(node: Node) -> None:
    node.content = (b"\xff" if node.content[:1] >= b"\x80" else b"\x00") + node.content


def _bool_01(node: Node) -> None:
    node.content = b"\x01"


def _long_tag(node: Node) -> None:
    node.tag = bytes([node.tag[0] | 0x1F, node.tag[0] & 0x1F])


MUTATIONS: dict[str, tuple[Callable[[Node], bool], Callable[[Node], None]]] = {
    "non-minimal length": (lambda n: True, _long_length),
    "indefinite length": (lambda n: bool(n.tag[0] & 0x20) and n.children is not None, _indefinite),
    "BER constructed OCTET STRING": (lambda n: n.tag == b"\x04", _ber_octets),
    "non-minimal INTEGER": (lambda n: n.tag == b"\x02" and n.children is None and len(n.content) > 0, _int_pad),
    "BOOLEAN TRUE as 0x01": (lambda n: n.tag == b"\x01" and n.content == b"\xff", _bool_01),
    "high-tag-number form for a low tag": (lambda n: len(n.tag) == 1 and n.tag[0] & 0x1F != 0x1F, _long_tag),
}


def node_mutants(tsr: bytes) -> Iterator[tuple[str, bytes]]:
    """Every node-local re-encoding plus sibling swaps, drops and duplicates, each described."""
    base = decode(tsr)
    for path, node, offset in list(walk(base)):
        where = f"{label(base, path)} (tag {node.tag.hex()} at {offset})"
        for kind, (applies, edit) in MUTATIONS.items():
            if applies(node):
                root = copy.deepcopy(base)
                edit(at(root, path))
                yield f"{kind} at {where}", encode(root)
        if not path:
            continue
        parent = at(base, path[:-1])
        assert parent.children is not None
        i = path[-1]
        for kind in ("drop", "duplicate", "swap with next"):
            if kind == "swap with next" and i + 1 >= len(parent.children):
                continue
            root = copy.deepcopy(base)
            kids = at(root, path[:-1]).children
            assert kids is not None
            if kind == "drop":
                del kids[i]
            elif kind == "duplicate":
                kids.insert(i, copy.deepcopy(kids[i]))
            else:
                kids[i], kids[i + 1] = kids[i + 1], kids[i]
            mutated = encode(root)
            if mutated != tsr:
                yield f"{kind} {where}", mutated


# --- byte-level edits, signed again (asn1crypto-level forging: tests/tsa_kit.py) ----------------------------


def _oid(dotted: str) -> bytes:
    return bytes(core.ObjectIdentifier(dotted).contents)


OID_MESSAGE_DIGEST = _oid("1.2.840.113549.1.9.4")
OID_SIGNING_CERT_V2 = _oid("1.2.840.113549.1.9.16.2.47")
OID_SHA256 = _oid("2.16.840.1.101.3.4.2.1")


def _attr(signed_attrs: Node, oid: bytes) -> Node:
    assert signed_attrs.children is not None
    for attr in signed_attrs.children:
        assert attr.children is not None
        if attr.children[0].content == oid:
            return attr
    raise AssertionError("attribute not found")


def resign_tree(
    tsr: bytes,
    ident: TsaIdentity,
    *,
    tst: Callable[[Node], None] | None = None,
    attrs: Callable[[Node], None] | None = None,
    sort: bool = True,
) -> bytes:
    """Edit the TSTInfo and/or the signed attributes at the byte level, fix messageDigest, sign again.

    The signature covers the signed attributes exactly as encoded (re-tagged SET OF), so an unusual encoding
    made here is one a real signer could have produced: the reference accepts it.
    """
    root = decode(tsr)
    sd = at(root, (1, 1, 0))
    assert sd.children is not None
    econtent_node = at(sd, (2, 1, 0))
    signer_info = sd.children[-1].children[0]  # type: ignore[index]
    assert signer_info.children is not None
    signed_attrs = next(c for c in signer_info.children if c.tag == b"\xa0")
    if tst is not None:
        assert econtent_node.children is not None
        tst(econtent_node.children[0])
        econtent = encode(econtent_node.children[0])
        set_content(at(_attr(signed_attrs, OID_MESSAGE_DIGEST), (1, 0)), hashlib.sha256(econtent).digest())
    if attrs is not None:
        attrs(signed_attrs)
    if sort:
        assert signed_attrs.children is not None
        signed_attrs.children.sort(key=encode)
    to_sign = b"\x31" + encode(signed_attrs)[1:]
    key = serialization.load_pem_private_key(ident.key_pem, password=None)
    if isinstance(key, rsa.RSAPrivateKey):
        signature = key.sign(to_sign, padding.PKCS1v15(), hashes.SHA256())
    else:
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        signature = key.sign(to_sign, ec.ECDSA(hashes.SHA256()))
    set_content(signer_info.children[5], signature)
    return encode(root)


def with_certificates(tsr: bytes, ders: list[bytes], *, sort: bool = True) -> bytes:
    """Replace the token's certificate set (not signed: no re-signing needed)."""
    root = decode(tsr)
    sd = at(root, (1, 1, 0))
    assert sd.children is not None
    certs = next(c for c in sd.children if c.tag == b"\xa0")
    nodes = [decode(d) for d in (sorted(ders) if sort else ders)]
    certs.children = nodes
    return encode(root)


def set_content(node: Node, content: bytes) -> None:
    """New primitive content (an ECDSA signature or a hash may have looked like wrapped DER)."""
    node.children, node.content = None, content


def edit_tsr(tsr: bytes, path: Path_, edit: Callable[[Node], None]) -> bytes:
    root = decode(tsr)
    edit(at(root, path))
    return encode(root)


# --- certificates and identities ----------------------------------------------------------------------------


def _name(cn: str, org: str = "git-vaultmesh differential") -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, org), x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _pem_key(key: Any) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def _now() -> datetime:
    return datetime.now(timezone.utc).replace(microsecond=0)


def issue(
    subject: x509.Name,
    key: Any,
    issuer_cert: x509.Certificate | None,
    issuer_key: Any,
    *,
    ca: bool = False,
    eku: list[x509.ObjectIdentifier] | None = None,
    eku_critical: bool = True,
    key_usage: dict[str, bool] | None = None,
    not_before: datetime | None = None,
    not_after: datetime | None = None,
    extra: list[tuple[x509.ExtensionType, bool]] | None = None,
    sig_hash: Any = None,
    rsa_padding: Any = None,
    ski: bool = True,
) -> x509.Certificate:
    """A certificate with exactly the extensions asked for (None = leave the extension out)."""
    nb = not_before or _now() - timedelta(hours=1)
    na = not_after or nb + timedelta(days=365)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_cert.subject if issuer_cert is not None else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(nb)
        .not_valid_after(na)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if key_usage is not None:
        flags = dict.fromkeys(
            (
                "digital_signature",
                "content_commitment",
                "key_encipherment",
                "data_encipherment",
                "key_agreement",
                "key_cert_sign",
                "crl_sign",
                "encipher_only",
                "decipher_only",
            ),
            False,
        )
        flags.update(key_usage)
        builder = builder.add_extension(x509.KeyUsage(**flags), critical=True)
    if ski:
        builder = builder.add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    if eku is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage(eku), critical=eku_critical)
    for ext, critical in extra or []:
        builder = builder.add_extension(ext, critical=critical)
    kwargs = {"rsa_padding": rsa_padding} if rsa_padding is not None else {}
    return builder.sign(issuer_key, sig_hash if sig_hash is not None else hashes.SHA256(), **kwargs)


TSA_KU = {"digital_signature": True}
CA_KU = {"key_cert_sign": True, "crl_sign": True}
TS_EKU = [ExtendedKeyUsageOID.TIME_STAMPING]


def resign_cert(der: bytes, issuer_key: Any, edit: Callable[[Node], None]) -> bytes:
    """Edit a certificate's TBSCertificate at the byte level and sign it again (ECDSA/RSA SHA-256 issuers)."""
    cert = decode(der)
    assert cert.children is not None
    edit(cert.children[0])
    tbs = encode(cert.children[0])
    if isinstance(issuer_key, rsa.RSAPrivateKey):
        sig = issuer_key.sign(tbs, padding.PKCS1v15(), hashes.SHA256())
    else:
        sig = issuer_key.sign(tbs, ec.ECDSA(hashes.SHA256()))
    cert.children[2].content = b"\x00" + sig
    return encode(cert)


# --- the corpus -----------------------------------------------------------------------------------------------


class Kit:
    """Identities and tokens, made once per module and only when a case needs them."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.ec = make_identity("ec")
        self.rsa = make_identity("rsa")
        self.other = make_identity("ec")

    def token(self, ident: TsaIdentity, data: bytes = DATA, **kwargs: Any) -> tuple[bytes, int]:
        return token(ident, data, build=ref.build_request, **kwargs)  # the request as the reference builds it

    def case(self, ident: TsaIdentity, tsr: bytes, *, pin: bool = True, nonce: int | None = None, **kw: Any) -> Case:
        return Case(tsr, ident.ca_cert_pem.decode(), ref.spki_pin_of(ident.cert_pem) if pin else None, nonce, **kw)

    def valid(self, ident: TsaIdentity, **kw: Any) -> Case:
        tsr, nonce = self.token(ident)
        return self.case(ident, tsr, nonce=nonce, **kw)

    @cached_property
    def ec_valid(self) -> Case:
        return self.valid(self.ec)

    @cached_property
    def rsa_valid(self) -> Case:
        return self.valid(self.rsa)

    def custom(self, ca: TsaIdentity, cert: x509.Certificate | bytes, key: Any) -> TsaIdentity:
        der = cert if isinstance(cert, bytes) else cert.public_bytes(serialization.Encoding.DER)
        pem = x509.load_der_x509_certificate(der).public_bytes(serialization.Encoding.PEM)
        return TsaIdentity(ca.ca_cert_pem, ca.ca_key_pem, pem, _pem_key(key))

    @cached_property
    def ec_ca(self) -> tuple[x509.Certificate, Any]:
        return x509.load_pem_x509_certificate(self.ec.ca_cert_pem), serialization.load_pem_private_key(
            self.ec.ca_key_pem, None
        )

    def leaf(self, key: Any = None, **kw: Any) -> tuple[TsaIdentity, Any]:
        """A TSA leaf under the EC identity's CA, with the given certificate options."""
        key = key or ec.generate_private_key(ec.SECP256R1())
        subject = kw.pop("subject", _name("custom TSA"))
        kw.setdefault("key_usage", TSA_KU)
        kw.setdefault("eku", TS_EKU)
        ca_cert, ca_key = self.ec_ca
        cert = issue(subject, key, ca_cert, ca_key, **kw)
        return self.custom(self.ec, cert, key), key

    def leaf_case(self, **kw: Any) -> Case:
        ident, _ = self.leaf(**kw)
        return self.valid(ident)

    @cached_property
    def chain(self) -> tuple[list[tuple[x509.Certificate, Any]], TsaIdentity]:
        """root -> i1 -> ... -> i5, and a TSA leaf under each depth: (certs with keys, root identity)."""
        root_key = ec.generate_private_key(ec.SECP256R1())
        root = issue(_name("chain root"), root_key, None, root_key, ca=True, key_usage=CA_KU)
        certs = [(root, root_key)]
        for depth in range(1, 6):
            key = ec.generate_private_key(ec.SECP256R1())
            parent, parent_key = certs[-1]
            certs.append((issue(_name(f"chain i{depth}"), key, parent, parent_key, ca=True, key_usage=CA_KU), key))
        root_ident = TsaIdentity(root.public_bytes(serialization.Encoding.PEM), _pem_key(root_key), b"", b"")
        return certs, root_ident

    def chain_case(self, depth: int, *, trust_index: int = 0, carried: list[int] | None = None) -> Case:
        """A leaf below intermediate `depth` (0 = root); the token carries intermediates 1..depth."""
        certs, _ = self.chain
        parent, parent_key = certs[depth]
        key = ec.generate_private_key(ec.SECP256R1())
        leaf = issue(_name(f"chain TSA {depth}"), key, parent, parent_key, key_usage=TSA_KU, eku=TS_EKU)
        trust_cert = certs[trust_index][0]
        ident = TsaIdentity(trust_cert.public_bytes(serialization.Encoding.PEM), b"", leaf.public_bytes(serialization.Encoding.PEM), _pem_key(key))
        tsr, nonce = self.token(ident)
        indexes = carried if carried is not None else list(range(1, depth + 1))
        extra = [certs[i][0].public_bytes(serialization.Encoding.DER) for i in indexes]
        tsr = with_certificates(tsr, [leaf.public_bytes(serialization.Encoding.DER), *extra])
        return Case(tsr, ident.ca_cert_pem.decode(), ref.spki_pin_of(ident.cert_pem), nonce)

    # openssl: an RSA identity signing directly, and root -> intermediate -> TSA (P-384) made by openssl itself
    @cached_property
    def openssl_dir(self) -> Path:
        if OPENSSL is None:
            pytest.skip("openssl is not installed")
        d = self.tmp / "openssl"
        d.mkdir()
        tsa_kit.make_openssl_pki(d)
        for attr, filename in (("cert_pem", "rsa-tsa.pem"), ("key_pem", "rsa-tsa.key")):
            (d / filename).write_bytes(getattr(self.rsa, attr))
        return d

    def openssl_token(self, signer: str, key: str, *, chain: str | None = None, **kw: Any) -> tuple[bytes, int]:
        """openssl ts -reply with files of openssl_dir; kw: digest, ess, precision."""
        d = self.openssl_dir
        query, nonce = ref.build_request(DATA)
        tsr = tsa_kit.openssl_reply(d, query, d / signer, d / key, chain=d / chain if chain else None, **kw)
        return tsr, nonce

    @cached_property
    def openssl_intermediate(self) -> Case:
        tsr, nonce = self.openssl_token("tsa.pem", "tsa.key", digest="sha384", chain="inter.pem")
        d = self.openssl_dir
        return Case(tsr, (d / "root.pem").read_text(), ref.spki_pin_of((d / "tsa.pem").read_bytes()), nonce)


CaseBuilder = Callable[[Kit], Case]
CASES: dict[str, tuple[str | None, CaseBuilder]] = {}


def add(name: str, expect: str | None, build: CaseBuilder) -> None:
    """Register a corpus case; `expect` is the reference's verdict (None = accept), checked first."""
    assert name not in CASES, name
    CASES[name] = (expect, build)


def _ec_valid(k: Kit) -> Case:
    return k.ec_valid


# valid tokens
add("ec valid, pin and nonce", None, _ec_valid)
add("ec valid, no pin, no nonce", None, lambda k: dataclasses.replace(k.ec_valid, pin=None, nonce=None))
add("rsa valid, pin and nonce", None, lambda k: k.rsa_valid)
add("rsa-pss signature", None, lambda k: k.rsa_valid.with_tsr(tsa_kit.resigned(k.rsa_valid.tsr, k.rsa, pss=True)))
add("ec signer identified by subjectKeyIdentifier", None, lambda k: k.ec_valid.with_tsr(
    tsa_kit.resigned(k.ec_valid.tsr, k.ec, sid_ski=True)))  # fmt: skip
add("rsa signer identified by subjectKeyIdentifier", None, lambda k: k.rsa_valid.with_tsr(
    tsa_kit.resigned(k.rsa_valid.tsr, k.rsa, sid_ski=True)))  # fmt: skip
add("grantedWithMods", None, lambda k: k.case(k.ec, *k.token(k.ec, status_override=1)[:1]))
add("shared-CA ec sibling, CA trust only", None, lambda k: k.valid(make_identity("ec", ca=k.ec), pin=False))
add("shared-CA rsa sibling, CA trust only", None, lambda k: k.valid(make_identity("rsa", ca=k.ec), pin=False))
add("shared-CA sibling against the first leaf's pin", "VM-TSA-PIN", lambda k: dataclasses.replace(
    k.valid(make_identity("ec", ca=k.ec)), pin=ref.spki_pin_of(k.ec.cert_pem)))  # fmt: skip


def _expired_signer(k: Kit) -> Case:
    start = _now() - timedelta(days=30)
    ident = make_identity("ec", not_before=start, not_after=start + timedelta(days=2))
    tsr, nonce = k.token(ident, gen_time=start + timedelta(days=1))
    return k.case(ident, tsr, nonce=nonce)


add("expired signer, genTime inside its validity", None, _expired_signer)


def _no_nonce_request(k: Kit, cert_req: bool = True) -> bytes:
    return sign_token(k.ec, tsa_kit.request_der(cert_req=cert_req))


add("token without nonce, none asked", None, lambda k: k.case(k.ec, _no_nonce_request(k)))
add("token without nonce, nonce 7 asked", "VM-TSA-NONCE", lambda k: k.case(k.ec, _no_nonce_request(k), nonce=7))


def _over_http(k: Kit, ident: TsaIdentity) -> Case:
    req, nonce = ref.build_request(DATA)
    with TsaServer(ident, max_lifetime=30) as srv:
        status, _ctype, tsr = tsa_kit.post(srv.url, req, timeout=10)
    assert status == 200, status
    return k.case(ident, tsr, nonce=nonce)


add("ec token over loopback HTTP", None, lambda k: _over_http(k, k.ec))
add("rsa token over loopback HTTP", None, lambda k: _over_http(k, k.rsa))

# openssl as the TSA
def _openssl_rsa(k: Kit, **kw: Any) -> Case:
    tsr, nonce = k.openssl_token("rsa-tsa.pem", "rsa-tsa.key", **kw)
    return k.case(k.rsa, tsr, nonce=nonce)


add("openssl ESS v1 (sha1), rsa", None, lambda k: _openssl_rsa(k, ess="sha1"))
add("openssl ESS v2 (sha256), rsa, fractional genTime", None, lambda k: _openssl_rsa(k, precision=3))
add("openssl via intermediate, P-384/SHA-384, root trust", None, lambda k: k.openssl_intermediate)
add("openssl via intermediate, intermediate trust", None, lambda k: dataclasses.replace(
    k.openssl_intermediate, ca_pem=(k.openssl_dir / "inter.pem").read_text()))  # fmt: skip


def _openssl_inter_ess1(k: Kit) -> Case:
    tsr, nonce = k.openssl_token("tsa.pem", "tsa.key", digest="sha512", ess="sha1", precision=6, chain="inter.pem")
    return dataclasses.replace(k.openssl_intermediate, tsr=tsr, nonce=nonce)


add("openssl via intermediate, ESS v1, SHA-512, 6-digit genTime", None, _openssl_inter_ess1)
add("openssl via intermediate against another CA", "VM-TSA-CHAIN", lambda k: dataclasses.replace(
    k.openssl_intermediate, ca_pem=k.ec.ca_cert_pem.decode(), pin=None))  # fmt: skip
add("openssl without the intermediate in the token", "VM-TSA-CHAIN", lambda k: dataclasses.replace(
    k.openssl_intermediate, tsr=k.openssl_token("tsa.pem", "tsa.key", digest="sha384")[0], nonce=None))  # fmt: skip
add("openssl, trust bundle root+intermediate", "VM-POLICY-INVALID", lambda k: dataclasses.replace(
    k.openssl_intermediate,
    ca_pem=(k.openssl_dir / "root.pem").read_text() + (k.openssl_dir / "inter.pem").read_text()))  # fmt: skip

# rejections from tests/test_tsa.py, one code each
add("wrong imprint (other data)", "VM-TSA-IMPRINT", lambda k: dataclasses.replace(k.ec_valid, data=DATA + b"\n"))
add("empty data", "VM-TSA-IMPRINT", lambda k: dataclasses.replace(k.ec_valid, data=b""))


add("imprint with sha512", "VM-TSA-IMPRINT", lambda k: k.case(k.ec, sign_token(k.ec, tsa_kit.request_der("sha512"))))
add("empty token", "VM-TSA-EMPTY", lambda k: k.ec_valid.with_tsr(b""))
for _i, _blob in enumerate(
    [
        b"<!DOCTYPE html>\n<html><body>Service unavailable</body></html>",
        b"  <html>\r\n<head>",
        b"502 Bad Gateway\n",
        b"-----BEGIN CERTIFICATE-----\nMIIB\n",
        b"MIIGdTADAgEAMIIGbAYJKoZIhvcNAQcCoIIGXTCCBlkCAQMx",
        b"\x00\x01\x02garbage",
        b"\xff" + bytes(range(63)),
        b"\x30\x00",
        b"\x30\x03\x02\x01\x00",
        b"\x30\x80\x00\x00",
        b"\x30\x85\x01\x00\x00\x00\x00",
    ]
):
    add(f"not a TimeStampResp #{_i}: {_blob[:20]!r}", "VM-TSA-NOT-DER", lambda k, b=_blob: k.ec_valid.with_tsr(b))
add("a certificate instead of a token", "VM-TSA-NOT-DER", lambda k: k.ec_valid.with_tsr(cert_der(k.ec.cert_pem)))
add("bare TimeStampToken", "VM-TSA-NOT-DER", lambda k: k.ec_valid.with_tsr(
    tsp.TimeStampResp.load(k.ec_valid.tsr)["time_stamp_token"].dump()))  # fmt: skip
add("trailing byte", "VM-TSA-NOT-DER", lambda k: k.ec_valid.with_tsr(k.ec_valid.tsr + b"\x00"))
add("truncated to half", "VM-TSA-TRUNCATED", lambda k: k.ec_valid.with_tsr(k.ec_valid.tsr[: len(k.ec_valid.tsr) // 2]))
for _status in (2, 3, 4, 5):
    add(f"status {_status}", "VM-TSA-STATUS", lambda k, s=_status: k.case(k.ec, k.token(k.ec, status_override=s)[0]))
add("status 6 (unknown)", "VM-TSA-STATUS", lambda k: k.ec_valid.with_tsr(edit_tsr(
    k.ec_valid.tsr, (0, 0), lambda n: setattr(n, "content", b"\x06"))))  # fmt: skip
add("status granted without a token", "VM-TSA-STATUS", lambda k: k.ec_valid.with_tsr(b"\x30\x05\x30\x03\x02\x01\x00"))
add("server rejects a malformed request", "VM-TSA-STATUS", lambda k: k.ec_valid.with_tsr(
    sign_token(k.ec, b"\x30\x03\x02\x01\x07")))  # fmt: skip


add("server rejects an md5 imprint", "VM-TSA-STATUS", lambda k: k.ec_valid.with_tsr(
    sign_token(k.ec, tsa_kit.request_der("md5", cert_req=False))))  # fmt: skip
add("nonce mismatch (override)", "VM-TSA-NONCE", lambda k: k.case(
    k.ec, k.token(k.ec, nonce_override=12345)[0], nonce=54321))  # fmt: skip
add("nonce asked 0", "VM-TSA-NONCE", lambda k: dataclasses.replace(k.ec_valid, nonce=0))
add("nonce asked -1", "VM-TSA-NONCE", lambda k: dataclasses.replace(k.ec_valid, nonce=-1))
add("nonce asked 2**64", "VM-TSA-NONCE", lambda k: dataclasses.replace(k.ec_valid, nonce=2**64))
add("nonce override 0", None, lambda k: k.case(k.ec, k.token(k.ec, nonce_override=0)[0], nonce=0))
add("nonce override 2**160+1", None, lambda k: k.case(k.ec, k.token(k.ec, nonce_override=2**160 + 1)[0], nonce=2**160 + 1))
add("signer from another CA", "VM-TSA-CHAIN", lambda k: dataclasses.replace(k.valid(k.other), ca_pem=k.ec.ca_cert_pem.decode(), pin=None))
add("signer certificate absent", "VM-TSA-CHAIN", lambda k: k.case(k.ec, _no_nonce_request(k, cert_req=False)))
add("SKI naming a certificate the token does not carry", "VM-TSA-CHAIN", lambda k: k.ec_valid.with_tsr(
    tsa_kit.resigned(k.ec_valid.tsr, k.other, sid_ski=True)))  # fmt: skip


def _impostor_ca(k: Kit, *, ca: bool = True, not_after: datetime | None = None, same_key: bool = False) -> str:
    real, ca_key = k.ec_ca
    key = ca_key if same_key else ec.generate_private_key(ec.SECP256R1())
    constraints = [(x509.BasicConstraints(ca=ca, path_length=None), True)]
    not_before = real.not_valid_before_utc - timedelta(days=400)
    return tsa_kit.ca_lookalike(real, key, constraints, not_before=not_before, not_after=not_after)


add("CA with the same name but another key", "VM-TSA-CHAIN", lambda k: dataclasses.replace(k.ec_valid, ca_pem=_impostor_ca(k)))
add("CA with the same key but CA:FALSE", "VM-TSA-CHAIN", lambda k: dataclasses.replace(
    k.ec_valid, ca_pem=_impostor_ca(k, ca=False, same_key=True)))  # fmt: skip
add("CA with the same key, expired before genTime", "VM-TSA-CERT-VALIDITY", lambda k: dataclasses.replace(
    k.ec_valid, ca_pem=_impostor_ca(k, same_key=True, not_after=_now() - timedelta(days=1))))  # fmt: skip
add("without timestamping EKU", "VM-TSA-EKU", lambda k: k.valid(make_identity("ec", include_eku=False, ca=k.ec)))
add("EKU not critical", "VM-TSA-EKU", lambda k: k.valid(make_identity("ec", eku_critical=False, ca=k.ec)))
add("pin of another key", "VM-TSA-PIN", lambda k: dataclasses.replace(k.ec_valid, pin=ref.spki_pin_of(k.other.cert_pem)))


def _gen_time_outside(k: Kit, before: bool) -> Case:
    cert = x509.load_pem_x509_certificate(k.ec.cert_pem)
    when = cert.not_valid_before_utc - timedelta(days=1) if before else cert.not_valid_after_utc + timedelta(seconds=1)
    return k.case(k.ec, k.token(k.ec, gen_time=when)[0])


add("genTime before notBefore", "VM-TSA-CERT-VALIDITY", lambda k: _gen_time_outside(k, True))
add("genTime after notAfter", "VM-TSA-CERT-VALIDITY", lambda k: _gen_time_outside(k, False))
add("genTime at notAfter exactly", None, lambda k: k.case(k.ec, k.token(
    k.ec, gen_time=x509.load_pem_x509_certificate(k.ec.cert_pem).not_valid_after_utc)[0]))  # fmt: skip
add("genTime year 2050 (GeneralizedTime signingTime)", "VM-TSA-CERT-VALIDITY", lambda k: k.case(
    k.ec, k.token(k.ec, gen_time=datetime(2050, 1, 1, tzinfo=timezone.utc))[0]))  # fmt: skip
add("ESS hash byte flipped", "VM-TSA-SIGNATURE", lambda k: k.ec_valid.with_tsr(
    tsa_kit.flip(k.ec_valid.tsr, hashlib.sha256(cert_der(k.ec.cert_pem)).digest())))  # fmt: skip
add("signingTime altered and re-encoded", "VM-TSA-SIGNATURE", lambda k: k.ec_valid.with_tsr(
    tsa_kit.signing_time_shifted(k.ec_valid.tsr)))  # fmt: skip
add("TSTInfo serial altered", "VM-TSA-SIGNATURE", lambda k: k.ec_valid.with_tsr(tsa_kit.serial_plus_one(k.ec_valid.tsr)))
add("TSTInfo genTime digit flipped", "VM-TSA-SIGNATURE", lambda k: k.ec_valid.with_tsr(
    tsa_kit.gen_time_digit_flipped(k.ec_valid.tsr)))  # fmt: skip
add("rsa signature value flipped", "VM-TSA-SIGNATURE", lambda k: k.rsa_valid.with_tsr(
    tsa_kit.signature_flipped(k.rsa_valid.tsr)))  # fmt: skip

for _name_, _edit, _code in (
    ("content-type dropped", tsa_kit.drop_attr("content_type"), "VM-TSA-SIGNATURE"),
    ("content-type id-data", tsa_kit.content_type_data, "VM-TSA-SIGNATURE"),
    ("messageDigest dropped", tsa_kit.drop_attr("message_digest"), "VM-TSA-SIGNATURE"),
    ("messageDigest zero", tsa_kit.zero_message_digest, "VM-TSA-SIGNATURE"),
    ("signingCertificateV2 dropped", tsa_kit.drop_attr("signing_certificate_v2"), "VM-TSA-SIGNATURE"),
    ("signingTime dropped", tsa_kit.drop_attr("signing_time"), None),
    ("ESSCertIDv2 naming another certificate", tsa_kit.ess_v2_naming(b"\x11" * 32), "VM-TSA-SIGNATURE"),
    ("signed attributes unchanged, re-signed", lambda a: a, None),
):
    add(f"validly signed: {_name_}", _code, lambda k, e=_edit: k.ec_valid.with_tsr(
        tsa_kit.resigned(k.ec_valid.tsr, k.ec, attrs=e)))  # fmt: skip
add("validly signed: ESSCertIDv2 without issuerSerial", None, lambda k: k.ec_valid.with_tsr(tsa_kit.resigned(
    k.ec_valid.tsr, k.ec, attrs=tsa_kit.ess_v2_naming(hashlib.sha256(cert_der(k.ec.cert_pem)).digest()))))  # fmt: skip
add("two SignerInfos", "VM-TSA-SIGNATURE", lambda k: k.ec_valid.with_tsr(tsa_kit.rebuild(
    k.ec_valid.tsr, signer_infos=[tsa_kit.resign(k.ec_valid.tsr, k.ec), tsa_kit.resign(k.ec_valid.tsr, k.ec)])))  # fmt: skip
add("zero SignerInfos", "VM-TSA-SIGNATURE", lambda k: k.ec_valid.with_tsr(tsa_kit.rebuild(k.ec_valid.tsr, signer_infos=[])))

# unusual signer certificates (all under the EC identity's CA)
add("leaf: EKU timeStamping + serverAuth", "VM-TSA-EKU", lambda k: k.leaf_case(
    eku=[ExtendedKeyUsageOID.TIME_STAMPING, ExtendedKeyUsageOID.SERVER_AUTH]))  # fmt: skip
add("leaf: EKU codeSigning only", "VM-TSA-EKU", lambda k: k.leaf_case(eku=[ExtendedKeyUsageOID.CODE_SIGNING]))
add("leaf: EKU empty-ish anyExtendedKeyUsage", "VM-TSA-EKU", lambda k: k.leaf_case(
    eku=[ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE]))  # fmt: skip
add("leaf: keyUsage nonRepudiation only", None, lambda k: k.leaf_case(key_usage={"content_commitment": True}))
add("leaf: keyUsage digitalSignature + keyEncipherment", "VM-TSA-EKU", lambda k: k.leaf_case(
    key_usage={"digital_signature": True, "key_encipherment": True}))  # fmt: skip
add("leaf: keyUsage keyAgreement only", "VM-TSA-EKU", lambda k: k.leaf_case(key_usage={"key_agreement": True}))
add("leaf: no keyUsage", None, lambda k: k.leaf_case(key_usage=None))
add("leaf: no subjectKeyIdentifier", None, lambda k: k.leaf_case(ski=False))
add("leaf: basicConstraints CA:TRUE", None, lambda k: k.leaf_case(ca=True))
add("leaf: unknown critical extension", None, lambda k: k.leaf_case(
    extra=[(x509.UnrecognizedExtension(x509.ObjectIdentifier("1.2.3.4.5.6"), b"\x05\x00"), True)]))  # fmt: skip
add("leaf: P-384 key", None, lambda k: k.leaf_case(key=ec.generate_private_key(ec.SECP384R1())))
add("leaf: P-521 key", None, lambda k: k.leaf_case(key=ec.generate_private_key(ec.SECP521R1())))
add("leaf: secp256k1 key", "VM-TSA-SIGNATURE", lambda k: k.leaf_case(key=ec.generate_private_key(ec.SECP256K1())))
add("leaf: RSA-1024 key", "VM-TSA-SIGNATURE", lambda k: k.leaf_case(
    key=rsa.generate_private_key(public_exponent=65537, key_size=1024)))  # fmt: skip
add("leaf: RSA-3072 key", None, lambda k: k.leaf_case(key=rsa.generate_private_key(public_exponent=65537, key_size=3072)))
add("leaf: certificate signed with SHA-384", None, lambda k: k.leaf_case(sig_hash=hashes.SHA384()))
add("leaf: validity into 2051 (GeneralizedTime)", None, lambda k: k.leaf_case(
    not_after=datetime(2051, 6, 1, 12, 30, 15, tzinfo=timezone.utc)))  # fmt: skip
add("leaf: notBefore 1955 (UTCTime 55)", None, lambda k: k.leaf_case(not_before=datetime(1955, 1, 1, tzinfo=timezone.utc),
                                                                    not_after=_now() + timedelta(days=3)))  # fmt: skip
add("leaf: notBefore in the future", "VM-TSA-CERT-VALIDITY", lambda k: k.leaf_case(not_before=_now() + timedelta(days=1)))
for _i, _subject in enumerate(
    [
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, 'a,b+c"d\\e<f>g;h=i')]),
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, " leading and trailing space ")]),
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "#hash first")]),
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Zürich ✓ 日本")]),
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "nul\x00and\ncontrol")]),
        x509.Name(
            [
                x509.NameAttribute(NameOID.COUNTRY_NAME, "DE"),
                x509.NameAttribute(NameOID.STATE_OR_PROVINCE_NAME, "Berlin"),
                x509.NameAttribute(NameOID.LOCALITY_NAME, "Berlin"),
                x509.NameAttribute(NameOID.STREET_ADDRESS, "Str. 1"),
                x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "Unit"),
                x509.NameAttribute(NameOID.DOMAIN_COMPONENT, "example"),
                x509.NameAttribute(NameOID.USER_ID, "uid1"),
                x509.NameAttribute(NameOID.SERIAL_NUMBER, "12345"),
                x509.NameAttribute(NameOID.EMAIL_ADDRESS, "tsa@example.org"),
                x509.NameAttribute(NameOID.TITLE, "Title"),
                x509.NameAttribute(x509.ObjectIdentifier("1.2.3.4.5"), "private attr"),
            ]
        ),
        x509.Name.from_rfc4514_string("CN=multi+O=valued,C=US"),
        x509.Name([]),
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "printable", _type=x509.name._ASN1Type.PrintableString)]),
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bmp string ü", _type=x509.name._ASN1Type.BMPString)]),
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "universal", _type=x509.name._ASN1Type.UniversalString)]),
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "teletex", _type=x509.name._ASN1Type.T61String)]),
    ]
):
    add(f"leaf subject #{_i}: {_subject.rfc4514_string()[:40]!r}", None, lambda k, s=_subject: k.leaf_case(subject=s))


def _cert_edit_case(k: Kit, edit: Callable[[Node], None]) -> Case:
    """A signer certificate edited at the byte level and signed again by the CA, carried in a token whose
    signingCertificateV2 names it (so the signature and ESS checks pass and the certificate itself is judged)."""
    ident, _key = k.leaf()
    _ca_cert, ca_key = k.ec_ca
    der = resign_cert(cert_der(ident.cert_pem), ca_key, edit)
    tsr, nonce = k.token(ident)
    tsr = with_certificates(tsr, [der])
    ess_hash = lambda n: set_content(at(_attr(n, OID_SIGNING_CERT_V2), (1, 0, 0, 0, 0)), hashlib.sha256(der).digest())  # noqa: E731
    return k.case(ident, resign_tree(tsr, ident, attrs=ess_hash), pin=False, nonce=nonce)


def _extensions(tbs: Node) -> list[Node]:
    assert tbs.children is not None
    exts = next(c for c in tbs.children if c.tag == b"\xa3").children[0].children  # type: ignore[index]
    assert exts is not None
    return exts


add("leaf: duplicate subjectKeyIdentifier extension", "VM-TSA-CHAIN", lambda k: _cert_edit_case(
    k, lambda tbs: _extensions(tbs).append(copy.deepcopy(_extensions(tbs)[2]))))  # fmt: skip
add("leaf: EKU criticality encoded as explicit FALSE (DEFAULT)", "VM-TSA-CHAIN", lambda k: _cert_edit_case(
    k, lambda tbs: setattr(_extensions(tbs)[-1].children[1], "content", b"\x00")))  # type: ignore[index]  # fmt: skip


def _tbs(index: int) -> Callable[[Callable[[Node], None]], Callable[[Node], None]]:
    """An edit of TBSCertificate field `index` (0 version, 1 serial, 2 signature, 3 issuer, 4 validity,
    5 subject, 6 SPKI, 7 extensions)."""
    return lambda edit: lambda tbs: edit(tbs.children[index])  # type: ignore[index]


def _retag(tag: bytes, *path: int) -> Callable[[Node], None]:
    return lambda node: setattr(at(node, path), "tag", tag)


def _utc_without_seconds(validity: Node) -> None:
    first = at(validity, (0,))
    first.content = first.content[:10] + b"Z"


def _generalized_before_2050(validity: Node) -> None:
    first = at(validity, (0,))
    first.tag, first.content = b"\x18", b"20" + first.content


def _ku_unused_bits(ext_value_holder: Node) -> None:
    ku = next(e for e in _extensions_of(ext_value_holder) if e.children[0].content == _oid("2.5.29.15"))  # type: ignore[index]
    set_content(ku.children[-1], bytes.fromhex("03020080"))  # type: ignore[index]


def _extensions_of(ext_field: Node) -> list[Node]:
    assert ext_field.children is not None and ext_field.children[0].children is not None
    return ext_field.children[0].children


# validly signed (by the CA, with signingCertificateV2 naming the edited certificate) but malformed signers;
# the last column is the reference's verdict (cryptography.x509 refuses most of them: "cannot be parsed")
CHAIN = "VM-TSA-CHAIN"
for _name_, _edit, _code in (
    ("version INTEGER tagged BIT STRING", _tbs(0)(_retag(b"\x03", 0)), CHAIN),
    ("subject AttributeTypeAndValue tagged SET", _tbs(5)(_retag(b"\x31", 0, 0)), CHAIN),
    ("issuer AttributeTypeAndValue tagged SET", _tbs(3)(_retag(b"\x31", 0, 0)), CHAIN),
    ("issuer RDN tagged SEQUENCE", _tbs(3)(_retag(b"\x30", 0)), CHAIN),
    ("inner signature algorithm ecdsa-with-SHA384, outer SHA-256", _tbs(2)(
        lambda n: setattr(n.children[0], "content", _oid("1.2.840.10045.4.3.3"))), CHAIN),  # type: ignore[index]
    ("notBefore UTCTime without seconds", _tbs(4)(_utc_without_seconds), CHAIN),
    ("notBefore GeneralizedTime before 2050", _tbs(4)(_generalized_before_2050), None),
    ("keyUsage BIT STRING with undeclared trailing zero bits", _tbs(7)(_ku_unused_bits), None),
    ("extendedKeyUsage extension twice", _tbs(7)(lambda n: _extensions_of(n).append(copy.deepcopy(_extensions_of(n)[-1]))), CHAIN),
    ("an element after the extensions", lambda tbs: tbs.children.append(Node(b"\x05", b"")), CHAIN),  # type: ignore[union-attr]
):
    add(f"signer certificate, re-signed: {_name_}", _code, lambda k, e=_edit: _cert_edit_case(k, e))


def _edited_intermediate_case(k: Kit, edit: Callable[[Node], None]) -> Case:
    """root -> intermediate (edited at the byte level, re-signed by the root) -> TSA leaf, all carried."""
    certs, root_ident = k.chain
    root, root_key = certs[0]
    ikey = ec.generate_private_key(ec.SECP256R1())
    inter = issue(_name("edited intermediate"), ikey, root, root_key, ca=True, key_usage=CA_KU)
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = issue(_name("TSA under edited intermediate"), key, inter, ikey, key_usage=TSA_KU, eku=TS_EKU)
    ident = TsaIdentity(root_ident.ca_cert_pem, b"", leaf.public_bytes(serialization.Encoding.PEM), _pem_key(key))
    tsr, nonce = k.token(ident)
    inter_der = resign_cert(inter.public_bytes(serialization.Encoding.DER), root_key, edit)
    tsr = with_certificates(tsr, [leaf.public_bytes(serialization.Encoding.DER), inter_der])
    return Case(tsr, root_ident.ca_cert_pem.decode(), ref.spki_pin_of(ident.cert_pem), nonce)


for _name_, _edit in (
    ("subject AttributeTypeAndValue tagged SET", _tbs(5)(_retag(b"\x31", 0, 0))),
    ("subject RDN tagged SEQUENCE", _tbs(5)(_retag(b"\x30", 0))),
    ("version INTEGER tagged BIT STRING", _tbs(0)(_retag(b"\x03", 0))),
    ("basicConstraints extension twice", _tbs(7)(lambda n: _extensions_of(n).append(copy.deepcopy(_extensions_of(n)[0])))),
    ("an element after the extensions", lambda tbs: tbs.children.append(Node(b"\x05", b""))),  # type: ignore[union-attr]
):
    add(f"intermediate certificate, re-signed: {_name_}", CHAIN, lambda k, e=_edit: _edited_intermediate_case(k, e))


# chains below a root: depth = number of intermediates between the TSA leaf and the policy CA
add("chain: 2 intermediates", None, lambda k: k.chain_case(2))
add("chain: 4 intermediates (the limit)", None, lambda k: k.chain_case(4))
add("chain: 5 intermediates (over the limit)", "VM-TSA-CHAIN", lambda k: k.chain_case(5))
add("chain: 3 intermediates, one missing", "VM-TSA-CHAIN", lambda k: k.chain_case(3, carried=[1, 3]))
add("chain: 2 intermediates, trust the first", None, lambda k: k.chain_case(2, trust_index=1))
add("chain: 2 intermediates plus unrelated certs", None, lambda k: k.chain_case(2, carried=[1, 2, 4, 5]))
add("chain: certificate set unsorted", None, lambda k: k.ec_valid.with_tsr(with_certificates(
    k.ec_valid.tsr, [cert_der(k.other.cert_pem), cert_der(k.ec.cert_pem)][::-1], sort=False)))  # fmt: skip
add("chain: signer certificate carried twice", None, lambda k: k.ec_valid.with_tsr(with_certificates(
    k.ec_valid.tsr, [cert_der(k.ec.cert_pem)] * 2)))  # fmt: skip
add("chain: CA certificate carried too", None, lambda k: k.ec_valid.with_tsr(with_certificates(
    k.ec_valid.tsr, [cert_der(k.ec.cert_pem), cert_der(k.ec.ca_cert_pem)])))  # fmt: skip


def _inter_not_ca(k: Kit, **kw: Any) -> Case:
    certs, root_ident = k.chain
    root, root_key = certs[0]
    ikey = ec.generate_private_key(ec.SECP256R1())
    inter = issue(_name("bad intermediate"), ikey, root, root_key, **kw)
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = issue(_name("TSA under bad intermediate"), key, inter, ikey, key_usage=TSA_KU, eku=TS_EKU)
    ident = TsaIdentity(root_ident.ca_cert_pem, b"", leaf.public_bytes(serialization.Encoding.PEM), _pem_key(key))
    tsr, nonce = k.token(ident)
    tsr = with_certificates(tsr, [leaf.public_bytes(serialization.Encoding.DER), inter.public_bytes(serialization.Encoding.DER)])
    return Case(tsr, root_ident.ca_cert_pem.decode(), None, nonce)


add("chain: intermediate CA:FALSE", "VM-TSA-CHAIN", lambda k: _inter_not_ca(k, ca=False, key_usage=CA_KU))
add("chain: intermediate without keyCertSign", "VM-TSA-CHAIN", lambda k: _inter_not_ca(
    k, ca=True, key_usage={"crl_sign": True}))  # fmt: skip
add("chain: intermediate without keyUsage", None, lambda k: _inter_not_ca(k, ca=True))
add("chain: intermediate expired before genTime", "VM-TSA-CERT-VALIDITY", lambda k: _inter_not_ca(
    k, ca=True, key_usage=CA_KU, not_before=_now() - timedelta(days=10), not_after=_now() - timedelta(days=1)))  # fmt: skip

# policy CA PEM mutations (the valid EC token)


def _pem_body_cut(pem: str) -> str:
    lines = pem.strip().splitlines()
    return "\n".join([*lines[:-3], lines[-1]]) + "\n"


for _name_, _mutate, _code in (
    ("another CA", lambda k: k.other.ca_cert_pem.decode(), "VM-TSA-CHAIN"),
    ("the CA twice", lambda k: k.ec.ca_cert_pem.decode() * 2, "VM-POLICY-INVALID"),
    ("the CA and another CA", lambda k: (k.ec.ca_cert_pem + k.other.ca_cert_pem).decode(), "VM-POLICY-INVALID"),
    ("garbage text", lambda k: "not a certificate", "VM-POLICY-INVALID"),
    ("empty", lambda k: "", "VM-POLICY-INVALID"),
    ("PEM with a non-base64 body", lambda k: "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n", "VM-POLICY-INVALID"),
    ("PEM with a cut body", lambda k: _pem_body_cut(k.ec.ca_cert_pem.decode()), "VM-POLICY-INVALID"),
    ("PEM wrapping non-certificate DER", lambda k: "-----BEGIN CERTIFICATE-----\nMAMCAQA=\n-----END CERTIFICATE-----\n", "VM-POLICY-INVALID"),
    ("a private key PEM", lambda k: k.ec.ca_key_pem.decode(), "VM-POLICY-INVALID"),
    ("surrounded by text", lambda k: "Subject: test CA\n" + k.ec.ca_cert_pem.decode() + "trailing words\n", None),
    ("CRLF line ends", lambda k: k.ec.ca_cert_pem.decode().replace("\n", "\r\n"), None),
    ("the CA plus a private key block", lambda k: (k.ec.ca_cert_pem + k.ec.ca_key_pem).decode(), None),
    ("the signer's own certificate", lambda k: k.ec.cert_pem.decode(), "VM-TSA-CHAIN"),
    ("a sibling leaf certificate", lambda k: make_identity("ec", ca=k.ec).cert_pem.decode(), "VM-TSA-CHAIN"),
    ("DER bytes decoded as latin-1", lambda k: cert_der(k.ec.ca_cert_pem).decode("latin-1"), "VM-POLICY-INVALID"),
):
    add(f"policy CA: {_name_}", _code, lambda k, m=_mutate: dataclasses.replace(k.ec_valid, ca_pem=m(k)))


def _pin_variant(pin: str, how: str) -> str:
    raw = base64.b64decode(pin)
    return {
        "surrounding whitespace": f"  {pin}\n",
        "urlsafe alphabet": base64.urlsafe_b64encode(raw).decode() if set(pin) & {"+", "/"} else "-" + pin[1:],
        "padding stripped": pin.rstrip("="),
        "lowercased": pin.lower(),
        "hex instead of base64": raw.hex(),
        "31 bytes": base64.b64encode(raw[:31]).decode(),
        "33 bytes": base64.b64encode(raw + b"\x00").decode(),
        "newline inside": pin[:20] + "\n" + pin[20:],
        "not base64": "!!!!",
        "abc": "abc",
        "empty": "",
    }[how]


for _how, _code in (
    ("surrounding whitespace", None),
    ("urlsafe alphabet", "VM-POLICY-INVALID"),
    ("padding stripped", "VM-POLICY-INVALID"),
    ("lowercased", None),  # checked below: PIN unless the pin has no letters
    ("hex instead of base64", "VM-POLICY-INVALID"),
    ("31 bytes", "VM-POLICY-INVALID"),
    ("33 bytes", "VM-POLICY-INVALID"),
    ("newline inside", "VM-POLICY-INVALID"),
    ("not base64", "VM-POLICY-INVALID"),
    ("abc", "VM-POLICY-INVALID"),
    ("empty", "VM-POLICY-INVALID"),
):
    add(f"pin: {_how}", "VM-TSA-PIN" if _how == "lowercased" else _code, lambda k, h=_how: dataclasses.replace(
        k.ec_valid, pin=_pin_variant(ref.spki_pin_of(k.ec.cert_pem), h)))  # fmt: skip


# DER strictness, targeted: each re-signed (or in an unsigned field), so the reference accepts it; the lean
# verifier may accept it too, or refuse it citing DER / the encoding.


def _si_path(k: Kit, i: int) -> Path_:
    sd = at(decode(k.ec_valid.tsr), (1, 1, 0))
    assert sd.children is not None
    return (1, 1, 0, len(sd.children) - 1, 0, i)


def _ess_explicit_default(signed_attrs: Node) -> None:
    cert_id = at(_attr(signed_attrs, OID_SIGNING_CERT_V2), (1, 0, 0, 0))
    assert cert_id.children is not None
    cert_id.children.insert(0, Node(b"\x30", children=[Node(b"\x06", OID_SHA256)]))


def _insert_tst(index: int, node: Node) -> Callable[[Node], None]:
    def edit(tst: Node) -> None:
        assert tst.children is not None
        tst.children.insert(index, node)

    return edit


def _tst_field(index: int, edit: Callable[[Node], None]) -> Callable[[Node], None]:
    return lambda tst: edit(tst.children[index])  # type: ignore[index]


# (name, builder, the reference's verdict: None = accepts; asn1crypto refuses BER strings and long-form tags)
for _name_, _build, *_ref_code in (
    ("ESSCertIDv2 hashAlgorithm sha256 encoded explicitly (DEFAULT)", lambda k: resign_tree(k.ec_valid.tsr, k.ec, attrs=_ess_explicit_default)),
    ("TSTInfo ordering FALSE encoded explicitly (DEFAULT)", lambda k: resign_tree(k.ec_valid.tsr, k.ec, tst=_insert_tst(6, Node(b"\x01", b"\x00")))),
    ("TSTInfo ordering TRUE encoded as 0x01", lambda k: resign_tree(k.ec_valid.tsr, k.ec, tst=_insert_tst(6, Node(b"\x01", b"\x01")))),
    ("TSTInfo serialNumber with a leading zero octet", lambda k: resign_tree(k.ec_valid.tsr, k.ec, tst=_tst_field(3, _int_pad))),
    ("TSTInfo nonce with a leading zero octet", lambda k: resign_tree(k.ec_valid.tsr, k.ec, tst=_tst_field(6, _int_pad))),
    ("TSTInfo version with a leading zero octet", lambda k: resign_tree(k.ec_valid.tsr, k.ec, tst=_tst_field(0, _int_pad))),
    ("TSTInfo with a non-minimal length", lambda k: resign_tree(k.ec_valid.tsr, k.ec, tst=_long_length)),
    ("TSTInfo genTime with a non-minimal length", lambda k: resign_tree(k.ec_valid.tsr, k.ec, tst=_tst_field(4, _long_length))),
    ("TSTInfo messageImprint hash as BER constructed OCTET STRING", lambda k: resign_tree(
        k.ec_valid.tsr, k.ec, tst=_tst_field(2, lambda n: _ber_octets(n.children[1]))), "VM-TSA-NOT-DER"),  # type: ignore[index]
    ("signed attributes with a non-minimal length", lambda k: resign_tree(k.ec_valid.tsr, k.ec, attrs=_long_length)),
    ("signed attributes SET OF not sorted", lambda k: resign_tree(
        k.ec_valid.tsr, k.ec, attrs=lambda n: n.children.reverse(), sort=False)),  # type: ignore[union-attr]
    ("messageDigest value as BER constructed OCTET STRING", lambda k: resign_tree(
        k.ec_valid.tsr, k.ec, attrs=lambda n: _ber_octets(at(_attr(n, OID_MESSAGE_DIGEST), (1, 0)))), "VM-TSA-SIGNATURE"),
    ("ESSCertIDv2 issuerSerial serial with a leading zero octet", lambda k: resign_tree(
        k.ec_valid.tsr, k.ec, attrs=lambda n: _int_pad(at(_attr(n, OID_SIGNING_CERT_V2), (1, 0, 0, 0, 1, 1))))),
    ("status with a leading zero octet", lambda k: edit_tsr(k.ec_valid.tsr, (0, 0), _int_pad)),
    ("status PKIStatusInfo with a non-minimal length", lambda k: edit_tsr(k.ec_valid.tsr, (0,), _long_length)),
    ("TimeStampResp with a non-minimal length", lambda k: edit_tsr(k.ec_valid.tsr, (), _long_length)),
    ("SignedData version with a leading zero octet", lambda k: edit_tsr(k.ec_valid.tsr, (1, 1, 0, 0), _int_pad)),
    ("SignedData version in high-tag-number form", lambda k: edit_tsr(k.ec_valid.tsr, (1, 1, 0, 0), _long_tag), "VM-TSA-NOT-DER"),
    ("SignedData with a non-minimal length", lambda k: edit_tsr(k.ec_valid.tsr, (1, 1, 0), _long_length)),
    ("certificates with a non-minimal length", lambda k: edit_tsr(k.ec_valid.tsr, (1, 1, 0, 3), _long_length)),
    ("eContent OCTET STRING with a non-minimal length", lambda k: edit_tsr(k.ec_valid.tsr, (1, 1, 0, 2, 1, 0), _long_length)),
    ("eContent as BER constructed OCTET STRING", lambda k: edit_tsr(k.ec_valid.tsr, (1, 1, 0, 2, 1, 0), _ber_octets), "VM-TSA-NOT-DER"),
    ("SignerInfo version with a leading zero octet", lambda k: edit_tsr(k.ec_valid.tsr, _si_path(k, 0), _int_pad)),
    ("SignerInfo sid serial with a leading zero octet", lambda k: edit_tsr(k.ec_valid.tsr, (*_si_path(k, 1), 1), _int_pad)),
    ("SignerInfo signature as BER constructed OCTET STRING", lambda k: edit_tsr(k.ec_valid.tsr, _si_path(k, 5), _ber_octets), "VM-TSA-SIGNATURE"),
    ("SignerInfo signature with a non-minimal length", lambda k: edit_tsr(k.ec_valid.tsr, _si_path(k, 5), _long_length)),
    ("SignerInfo digestAlgorithm NULL as non-minimal length", lambda k: edit_tsr(k.ec_valid.tsr, (*_si_path(k, 2), 1), _long_length)),
):
    add(f"DER strictness: {_name_}", (_ref_code or [None])[0], lambda k, b=_build: k.ec_valid.with_tsr(b(k)))


# --- the corpus, case by case -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def kit(tmp_path_factory: pytest.TempPathFactory) -> Kit:
    return Kit(tmp_path_factory.mktemp("tsa-diff"))


@pytest.mark.parametrize("name", list(CASES))
def test_corpus_case_agrees(name: str, kit: Kit) -> None:
    expect, build = CASES[name]
    case = build(kit)
    got = case.verify(ref)
    assert got.code == expect and got.crash is None, f"corpus case {name!r} is not what it claims: reference {got}"
    problems = compare_all(name, case)
    assert not problems, "\n".join(problems)


def test_build_request_and_spki_pin_agree(kit: Kit) -> None:
    problems = []
    for nonce in (0, 1, 127, 128, 255, 256, 2**63, 2**64 - 1, 2**64, 2**200):
        for data in (b"", DATA):
            r, la = run(ref.build_request, data, nonce=nonce), run(lean.build_request, data, nonce=nonce)
            if (r.value, r.code) != (la.value, la.code) or la.crash:
                problems.append(f"build_request({data!r}, nonce={nonce}): reference {r} {r.value!r} vs lean {la} {la.value!r}")
    r, la = run(ref.build_request, DATA, nonce=-1), run(lean.build_request, DATA, nonce=-1)
    if not (r.crash and la.crash and r.crash.split(":")[0] == la.crash.split(":")[0] == "ValueError"):
        problems.append(f"build_request(nonce=-1): reference {r} vs lean {la}")
    pems = [kit.ec.cert_pem, kit.rsa.cert_pem, kit.ec.ca_cert_pem, kit.other.cert_pem]
    for blob in [*pems, *(cert_der(p) for p in pems), b"not a certificate", b"", b"\x30\x03\x02\x01\x00", b"  \n" + pems[0]]:
        d = disagreement(f"spki_pin_of({blob[:16]!r})", run(ref.spki_pin_of, blob), run(lean.spki_pin_of, blob), None)
        if d:
            problems.append(d)
    assert not problems, "\n".join(problems)


# --- exhaustive sweeps over valid tokens -------------------------------------------------------------------


@pytest.fixture(scope="module")
def bases(kit: Kit) -> list[tuple[str, Case]]:
    out = [
        ("ec", kit.ec_valid),
        ("rsa", kit.rsa_valid),
        ("rsa-pss", CASES["rsa-pss signature"][1](kit)),
        ("ec-ski", CASES["ec signer identified by subjectKeyIdentifier"][1](kit)),
    ]
    if OPENSSL is not None:
        out.append(("openssl-intermediate", kit.openssl_intermediate))
    for name, case in out:
        assert case.verify(ref).accepted, name
    return out


def _sweep(base_name: str, base: Case, mutants: Iterator[tuple[str, bytes]]) -> None:
    problems: list[str] = []
    total = 0
    for what, tsr in mutants:
        total += 1
        problems += compare_all(f"{base_name}: {what}", base.with_tsr(tsr))
    assert not problems, summarize(problems, total)


def _flips(tsr: bytes, xor: int) -> Iterator[tuple[str, bytes]]:
    for i in range(len(tsr)):
        yield f"byte {i} ^ 0x{xor:02x} in {locate(tsr, i)}", tsr[:i] + bytes([tsr[i] ^ xor]) + tsr[i + 1 :]


@pytest.mark.parametrize(("base_name", "xor"), [("ec", 0x01), ("ec", 0x80), ("ec", 0xFF), ("rsa", 0x01)])
def test_every_byte_flipped(base_name: str, xor: int, bases: list[tuple[str, Case]]) -> None:
    base = dict(bases)[base_name]
    _sweep(base_name, base, _flips(base.tsr, xor))


def test_every_truncation_and_extension(bases: list[tuple[str, Case]]) -> None:
    base = dict(bases)["ec"]
    tsr = base.tsr

    def mutants() -> Iterator[tuple[str, bytes]]:
        for n in range(len(tsr)):
            yield f"truncated to {n} bytes", tsr[:n]
        for extra in (b"\x00", b"\x00\x00", b"\x30\x00", tsr):
            yield f"followed by {extra[:4].hex()}… ({len(extra)} bytes)", tsr + extra

    _sweep("ec", base, mutants())


@pytest.mark.parametrize("base_name", ["ec", "rsa", "openssl-intermediate"])
def test_structural_edits(base_name: str, bases: list[tuple[str, Case]]) -> None:
    found = dict(bases)
    if base_name not in found:
        pytest.skip("openssl is not installed")
    base = found[base_name]
    _sweep(base_name, base, node_mutants(base.tsr))


# --- hypothesis: random mutations of valid tokens ------------------------------------------------------------


def _siblings(tsr: bytes) -> list[tuple[Path_, int]]:
    return [(p, len(n.children)) for p, n, _ in walk(decode(tsr)) if n.children is not None and len(n.children) >= 2]


@settings(
    max_examples=300,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(data=st.data())
def test_random_mutations_agree(data: st.DataObject, bases: list[tuple[str, Case]]) -> None:
    base_name = data.draw(st.sampled_from([name for name, _ in bases]), label="base")
    base = dict(bases)[base_name]
    tsr = base.tsr
    op = data.draw(st.sampled_from(["flip", "truncate", "insert", "delete", "swap", "two flips"]), label="op")
    root = decode(tsr)
    if op in ("flip", "two flips"):
        mutated = bytearray(tsr)
        where = []
        for _ in range(2 if op == "two flips" else 1):
            pos = data.draw(st.integers(0, len(tsr) - 1), label="pos")
            xor = data.draw(st.integers(1, 255), label="xor")
            mutated[pos] ^= xor
            where.append(f"byte {pos} ^ 0x{xor:02x} in {locate(tsr, pos)}")
        what, out = "; ".join(where), bytes(mutated)
    elif op == "truncate":
        n = data.draw(st.integers(0, len(tsr) - 1), label="length")
        what, out = f"truncated to {n} bytes", tsr[:n]
    elif op == "insert":
        pos = data.draw(st.integers(0, len(tsr)), label="pos")
        byte = data.draw(st.integers(0, 255), label="byte")
        what, out = f"byte 0x{byte:02x} inserted at {pos} ({locate(tsr, pos)})", tsr[:pos] + bytes([byte]) + tsr[pos:]
    elif op == "delete":
        pos = data.draw(st.integers(0, len(tsr) - 1), label="pos")
        what, out = f"byte {pos} deleted ({locate(tsr, pos)})", tsr[:pos] + tsr[pos + 1 :]
    else:
        parent, count = data.draw(st.sampled_from(_siblings(tsr)), label="parent")
        i = data.draw(st.integers(0, count - 1), label="i")
        j = data.draw(st.integers(0, count - 1).filter(lambda x: x != i), label="j")
        kids = at(root, parent).children
        assert kids is not None
        kids[i], kids[j] = kids[j], kids[i]
        what, out = f"children {i} and {j} of {label(root, parent)} swapped", encode(root)
    problems = compare_all(f"{base_name}: {what}", base.with_tsr(out))
    assert not problems, "\n".join(problems)
