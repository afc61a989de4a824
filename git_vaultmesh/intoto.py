"""in-toto Statements of receipts, Verification Summary Attestations, and their DSSE envelopes.

Signing goes through securesystemslib (its DSSE `Envelope` and `CryptoSigner`), so what we write is what
the in-toto tooling reads. Checking an envelope is our own code (`verify_envelope`): a second, independent
reading of the PAE, held to the DSSE spec's test vectors, so a bug in one implementation cannot hide in both.
Keys are PEM files, ECDSA P-256 (DER signatures, SHA-256) or Ed25519: what slsa-verifier, cosign and
in-toto accept. The envelope's keyid is the key's SSH SHA-256 fingerprint, which is the keyid the Go DSSE
verifier (slsa-verifier) derives from a public key when it is given none.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from . import __version__
from .entry import Entry, entry_path
from .errors import VaultMeshError

if TYPE_CHECKING:
    from securesystemslib.signer import CryptoSigner

    from .git import Repo
    from .verification import Report

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PAYLOAD_TYPE = "application/vnd.in-toto+json"
# Our own predicate: a git-vaultmesh receipt. A type identifier of this project (it need not resolve).
RECEIPT_PREDICATE = "https://git-vaultmesh.dev/receipt/v1"
VSA_PREDICATE = "https://slsa.dev/verification_summary/v1"
VERIFIER_ID = "https://git-vaultmesh.dev/verifier/v1"
CHECKS_FIELD = "https://git-vaultmesh.dev/vsa/v1#checks"  # extension fields are URIs (VSA parsing rules)
LEVELS_FIELD = "https://git-vaultmesh.dev/vsa/v1#levelsPassed"
TRUST_FIELD = "https://git-vaultmesh.dev/vsa/v1#trust"

# Our verifiedLevels (never SLSA_…): a level is reached when its group has at least one check and all passed.
LEVELS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("VAULTMESH_LOG_INTACT", ("log.",)),
    ("VAULTMESH_SIGNED", ("entry.signatures", "entry.threshold", "entry.log", "entry.unique", "entry.refs",
                          "policy.")),
    ("VAULTMESH_TIMESTAMPED", ("entry.tokens",)),
    ("VAULTMESH_SOURCE_MATCHES", ("release.", "subject.present", "subject.tree", "subject.replaced", "notes")),
    ("VAULTMESH_ARTIFACTS_MATCH", ("artifact",)),
)
TRUST_PINNED = "VAULTMESH_TRUST_PINNED"


def pae(payload_type: str, body: bytes) -> bytes:
    """DSSE v1 Pre-Authentication Encoding; lengths are byte lengths (of UTF-8 for the type)."""
    t = payload_type.encode("utf-8")
    return b"DSSEv1 %d %b %d %b" % (len(t), t, len(body), body)


def _b64decode(text: Any) -> bytes:
    """Standard or URL-safe base64 (DSSE verifiers must accept either), canonical only: a re-encoding must
    give the same text back, so no two texts (e.g. differing in unused padding bits) carry one payload."""
    import binascii

    if not isinstance(text, str):
        raise ValueError("not a string")
    std = text.replace("-", "+").replace("_", "/")
    try:
        data = base64.b64decode(std, validate=True)
    except binascii.Error as exc:
        raise ValueError(str(exc)) from None
    if base64.b64encode(data).decode() != std:
        raise ValueError("non-canonical base64")
    return data


# --- keys ----------------------------------------------------------------------------------------
def ssh_keyid(public_key: Any) -> str:
    """`SHA256:<base64>` of the key's SSH wire blob: what `ssh-keygen -l` prints and Go's DSSE derives."""
    from cryptography.hazmat.primitives import serialization

    line = public_key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    blob = base64.b64decode(line.split()[1])
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def _check_key_type(key: Any, path: str) -> None:
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519

    if isinstance(key, (ed25519.Ed25519PrivateKey, ed25519.Ed25519PublicKey)):
        return
    if isinstance(key, (ec.EllipticCurvePrivateKey, ec.EllipticCurvePublicKey)) and key.curve.name == "secp256r1":
        return
    kind = type(key).__name__.lstrip("_")
    curve = getattr(getattr(key, "curve", None), "name", None)
    raise VaultMeshError("VM-KEY-UNSUPPORTED", f"{path} holds a {kind}{f' ({curve})' if curve else ''} key",
                         "use an ECDSA P-256 or Ed25519 key: openssl genpkey -algorithm ed25519 -out signer.pem")


def load_signer(path: str) -> CryptoSigner:
    """A securesystemslib signer for an unencrypted PEM private key (PKCS#8 or traditional)."""
    from cryptography.hazmat.primitives import serialization
    from securesystemslib.signer import CryptoSigner, SSlibKey

    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        raise VaultMeshError("VM-FILE-UNREADABLE", f"cannot read key {path}: {exc.strerror}",
                             "pass the path of a PEM private key") from None
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise VaultMeshError("VM-FILE-UNREADABLE", f"{path} is not an unencrypted PEM private key ({exc})",
                             "pass a PEM private key without a passphrase (openssl pkey -in k.pem -out plain.pem)"
                             ) from None
    _check_key_type(key, path)
    public = SSlibKey.from_crypto(key.public_key(), keyid=ssh_keyid(key.public_key()))
    return CryptoSigner(key, public)


def load_public_key(path: str) -> Any:
    """A PEM public key (SubjectPublicKeyInfo) or the public half of a PEM private key."""
    from cryptography.hazmat.primitives import serialization

    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        raise VaultMeshError("VM-FILE-UNREADABLE", f"cannot read key {path}: {exc.strerror}",
                             "pass the path of a PEM public key") from None
    try:
        key: Any = serialization.load_pem_public_key(data)
    except ValueError:
        try:
            key = serialization.load_pem_private_key(data, password=None).public_key()
        except (ValueError, TypeError):
            raise VaultMeshError("VM-FILE-UNREADABLE", f"{path} is not a PEM public key",
                                 "export it with: openssl pkey -in signer.pem -pubout -out signer.pub") from None
    _check_key_type(key, path)
    return key


def public_pem(signer: CryptoSigner) -> bytes:
    from cryptography.hazmat.primitives import serialization

    key: Any = signer.public_key._crypto_key()  # noqa: SLF001 - the documented way back to a cryptography key
    return bytes(key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))


# --- envelopes -----------------------------------------------------------------------------------
def sign_statement(statement: dict[str, Any], signer: CryptoSigner) -> dict[str, Any]:
    """A DSSE envelope (dict) over the statement's compact JSON, signed through securesystemslib."""
    from securesystemslib.dsse import Envelope

    payload = json.dumps(statement, separators=(",", ":"), sort_keys=True, ensure_ascii=False).encode()
    env = Envelope(payload, PAYLOAD_TYPE, {})
    env.sign(signer)
    return dict(env.to_dict())


def envelope_line(envelope: dict[str, Any]) -> str:
    """One line of a `.intoto.jsonl` file."""
    return json.dumps(envelope, separators=(",", ":"), sort_keys=True)


class EnvelopeError(ValueError):
    """A DSSE envelope that does not verify (tests and library callers; the CLI only writes envelopes)."""


def open_envelope(envelope: Any, public_key: Any, payload_type: str = PAYLOAD_TYPE) -> bytes:
    """Our own DSSE check: the payload, if some signature verifies over PAE(type, payload) with `public_key`.

    Strict on shape (exactly the envelope's three fields, a signature holds only keyid and sig) and on
    base64; a signature whose keyid hint names another key is not tried (DSSE lets a verifier filter by it)."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519

    if not isinstance(envelope, dict) or set(envelope) != {"payload", "payloadType", "signatures"}:
        raise EnvelopeError("not a DSSE envelope: exactly payload, payloadType and signatures are expected")
    if envelope["payloadType"] != payload_type:
        raise EnvelopeError(f"payloadType is {envelope['payloadType']!r}, expected {payload_type!r}")
    try:
        body = _b64decode(envelope["payload"])
    except ValueError:
        raise EnvelopeError("payload is not canonical base64") from None
    message = pae(envelope["payloadType"], body)
    sigs = envelope["signatures"]
    if not isinstance(sigs, list) or not sigs:
        raise EnvelopeError("the envelope carries no signature")
    mine = ssh_keyid(public_key)
    for s in sigs:
        if not isinstance(s, dict) or not {"sig"} <= set(s) <= {"sig", "keyid"}:
            raise EnvelopeError("a signature object holds other fields than keyid and sig")
        if s.get("keyid") not in (None, "", mine):
            continue
        try:
            raw = _b64decode(s["sig"])
            if isinstance(public_key, ed25519.Ed25519PublicKey):
                public_key.verify(raw, message)
            else:
                public_key.verify(raw, message, ec.ECDSA(hashes.SHA256()))
        except (InvalidSignature, ValueError):
            continue
        return body
    raise EnvelopeError(f"none of the {len(sigs)} signature(s) verifies with the given key")


def verify_envelope(envelope: Any, public_key: Any) -> dict[str, Any]:
    """`open_envelope`, then the payload must be an in-toto Statement v1."""
    body = open_envelope(envelope, public_key)
    try:
        statement = json.loads(body)
    except (UnicodeDecodeError, ValueError):
        raise EnvelopeError("the signed payload is not JSON") from None
    if not isinstance(statement, dict) or statement.get("_type") != STATEMENT_TYPE:
        raise EnvelopeError(f"the signed payload is not an in-toto Statement v1 ({STATEMENT_TYPE})")
    return statement


# --- statements ----------------------------------------------------------------------------------
def subjects_of(e: Entry) -> list[dict[str, Any]]:
    """The receipt's subjects: artifacts by SHA-256, then the tag and tagged commit by their git ids."""
    out: list[dict[str, Any]] = [{"name": a["name"], "digest": {"sha256": a["sha256"]}}
                                 for a in e.body.get("artifacts", [])]
    subj = e.body.get("subject") or {}
    ref = subj.get("ref") or subj.get("commit") or ""
    if subj.get("tag"):
        out.append({"name": ref, "digest": {"gitTag": subj["tag"]}})
    if subj.get("commit"):
        out.append({"name": f"{ref}^{{commit}}" if ref != subj["commit"] else ref,
                    "digest": {"gitCommit": subj["commit"]}})
    return out


def policy_before(entries: Sequence[Entry], seq: int) -> tuple[int, Entry] | None:
    """The last policy entry before position `seq`: the policy in force there whenever verify passes
    (a policy entry that was not adopted is itself a failure, VM-POLICY-UNAUTHORIZED)."""
    for i in range(min(seq, len(entries)) - 1, -1, -1):
        if entries[i].type == "policy":
            return i, entries[i]
    return None


def _ref(seq: int, e: Entry) -> dict[str, Any]:
    return {"entry": e.id, "seq": seq, "bodyDigest": e.body_digest}


def timestamps_of(entries: Sequence[Entry], e: Entry) -> list[dict[str, Any]]:
    """Tokens over the entry's line, as recorded (export does not judge them: verify does)."""
    from .rfc3161.tsa import token_gen_time

    out: list[dict[str, Any]] = []
    for seq, t in enumerate(entries):
        if t.type != "timestamp" or t.body.get("entry") != e.id:
            continue
        for tok in t.body.get("tokens", []):
            try:
                gen: str | None = token_gen_time(base64.b64decode(tok["tsr"])).astimezone(
                    timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
            except (VaultMeshError, ValueError, KeyError, TypeError):
                gen = None
            out.append({"tsa": tok.get("tsa"), "genTime": gen, "timestampEntry": t.id, "seq": seq,
                        "tsr": tok.get("tsr")})
    return out


def receipt_statement(entries: Sequence[Entry], seq: int) -> dict[str, Any]:
    """An in-toto Statement v1 of one receipt with our predicate (documented in docs/interop.md)."""
    e = entries[seq]
    b = e.body
    pred: dict[str, Any] = {
        "log": b.get("log"),
        "receipt": {**_ref(seq, e), "type": e.type, "line": e.line.decode(),
                    "signers": [{"format": s.get("format"), "signer": s.get("signer")} for s in e.sigs]},
        "recordedAt": b.get("recorded_at"),
        "subject": b.get("subject"),
    }
    for key, name in (("component", "component"), ("version", "version"), ("environment", "environment")):
        if key in b:
            pred[name] = b[key]
    if "history" in b:
        h = b["history"]
        pred["history"] = {"alg": h.get("alg"), "order": h.get("order"), "size": h.get("size"),
                           "root": h.get("root")}
        if h.get("base"):
            pred["history"]["base"] = h["base"]
    if "tree_digest" in b:
        pred["treeDigest"] = {"alg": "Git-EVTag-v0-SHA512", "value": b["tree_digest"]}
        if "submodules" in b:
            pred["treeDigest"]["submodules"] = b["submodules"]
    pol = policy_before(entries, seq)
    pred["policy"] = _ref(*pol) if pol else None
    pred["timestamps"] = timestamps_of(entries, e)
    pred["cosigns"] = [_ref(i, c) for i, c in enumerate(entries)
                       if c.type == "cosign" and c.body.get("entry") == e.body_digest]
    return {"_type": STATEMENT_TYPE, "subject": subjects_of(e), "predicateType": RECEIPT_PREDICATE,
            "predicate": pred}


# --- verification summaries --------------------------------------------------------------------
def levels_passed(report: Report) -> list[str]:
    """Our level names, each reached when its group of checks is non-empty and all passed."""
    out = []
    for name, prefixes in LEVELS:
        group = [c for c in report.checks if c.check.startswith(prefixes)]
        if group and all(c.ok for c in group):
            out.append(name)
    trust = [c for c in report.checks if c.check == "log.trust-root"]
    if report.trust == "pinned" and trust and all(c.ok for c in trust):
        out.append(TRUST_PINNED)
    return out


def resource_uri(repo: Repo, ref: str) -> str:
    """`git+<origin url>@<ref>`: where a consumer fetches what was verified (the local git dir without one)."""
    url = repo.config_get("remote.origin.url")
    if not url:
        url = repo.git_dir.resolve().as_uri()
    return f"git+{url}@{ref}"


@dataclass(frozen=True)
class Target:
    """What `verify REV` looked at: the receipts naming REV and the ref they were read for."""

    ref: str
    direct: list[tuple[int, Entry]]
    commit: str | None
    tag: str | None


def vsa_statement(repo: Repo, report: Report, entries: Sequence[Entry], target: Target,
                  now: datetime | None = None) -> dict[str, Any]:
    """A VSA that says exactly what `report` says: the result is report.ok, the levels come from its checks."""
    when = (now or datetime.now(timezone.utc)).astimezone(timezone.utc)
    subjects: list[dict[str, Any]] = []
    for _, e in target.direct:
        for s in subjects_of(e):
            if s not in subjects:
                subjects.append(s)
    if not subjects:  # nothing recorded: name what was asked about, so a FAILED VSA still has a subject
        if target.tag:
            subjects.append({"name": target.ref, "digest": {"gitTag": target.tag}})
        if target.commit:
            subjects.append({"name": f"{target.ref}^{{commit}}", "digest": {"gitCommit": target.commit}})
    base = resource_uri(repo, "refs/vaultmesh/log")
    inputs: list[dict[str, Any]] = []
    ids = {e.id for _, e in target.direct}
    digests = {e.body_digest for _, e in target.direct}
    for seq, e in enumerate(entries):
        if e.id in ids or (e.type == "timestamp" and e.body.get("entry") in ids) or (
                e.type == "cosign" and e.body.get("entry") in digests):
            inputs.append({"uri": f"{base}#{entry_path(seq)}", "digest": {"sha256": e.id}})
    first = min((s for s, _ in target.direct), default=len(entries))
    pol = policy_before(entries, first)
    policy: dict[str, Any] = {"uri": f"{base}#{entry_path(pol[0])}" if pol else f"{base}#policy"}
    if pol:
        policy["digest"] = {"sha256": pol[1].id}
    passed = levels_passed(report)
    pred: dict[str, Any] = {
        "verifier": {"id": VERIFIER_ID, "version": {"git-vaultmesh": __version__}},
        "timeVerified": when.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "resourceUri": resource_uri(repo, target.ref),
        "policy": policy,
        "inputAttestations": inputs,
        "verificationResult": "PASSED" if report.ok else "FAILED",
        "verifiedLevels": passed if report.ok else ["FAILED"],
        LEVELS_FIELD: passed,
        CHECKS_FIELD: [{"check": c.check, "ok": c.ok, "code": c.code} for c in report.checks],
        TRUST_FIELD: report.trust,
    }
    if report.allowed:
        pred["https://git-vaultmesh.dev/vsa/v1#allowed"] = list(report.allowed)
    return {"_type": STATEMENT_TYPE, "subject": subjects, "predicateType": VSA_PREDICATE, "predicate": pred}


def select(repo: Repo, entries: Sequence[Entry], rev: str) -> tuple[Target, list[tuple[int, Entry]]]:
    """The receipts (release, deploy, …) whose subject is `rev`'s ref or commit, in log order."""
    from .verification.subjects import naming_receipts, resolve_subject

    ref, commit = resolve_subject(repo, rev)
    tag = repo.ref_oid(ref) if ref.startswith("refs/tags/") else None
    if tag is not None and repo.rev_parse(tag) == commit:
        tag = None  # a lightweight tag names the commit itself
    found = [(i, entries[i]) for i in sorted(naming_receipts(entries, ref, commit))]
    if ref.startswith("refs/tags/") and not any(e.type == "release" for _, e in found):
        found = []  # a tag is a release claim: deploys of its commit alone do not vouch for it
    return Target(ref, found, commit, tag), found


def vsa_signer(key: str | None, rev: str | None) -> CryptoSigner:
    """Refuse a VSA request that cannot be honoured before anything is verified."""
    if not rev:
        raise VaultMeshError("VM-USAGE", "--vsa summarises the verification of one REV",
                             "name the tag or revision: git vaultmesh verify v1.0 --vsa vsa.intoto.jsonl --vsa-key k.pem")
    if not key:
        raise VaultMeshError("VM-USAGE", "--vsa needs --vsa-key KEY.pem to sign the summary",
                             "create a key: openssl genpkey -algorithm ed25519 -out signer.pem")
    return load_signer(key)


def write_vsa(repo: Repo, report: Report, rev: str, path: str, signer: CryptoSigner,
              now: datetime | None = None) -> dict[str, Any]:
    """Sign the VSA of `report` and write it as one DSSE envelope on one line (what slsa-verifier reads)."""
    from . import ledger

    try:
        entries: list[Entry] = ledger.load(repo)[1]
    except VaultMeshError:  # no log, or an unreadable one: the report says why; the VSA says FAILED
        entries = []
    target, _ = select(repo, entries, rev)
    statement = vsa_statement(repo, report, entries, target, now)
    envelope = sign_statement(statement, signer)
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(envelope_line(envelope) + "\n")
    return statement
