"""Trust policy: who may sign which entry types, how many must, which TSAs count.

Trust lives only in `policy` entries of the log (never in git config). A policy body is a full snapshot,
so the policy in force at any position is simply the last valid policy entry before it. Rules are small
objects that compose (all-of, k-of-n) in the style of sigstore's verification policies.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Protocol

from .entry import Entry, signed_message
from .errors import VaultMeshError
from .signing import STATUS_CODES

if TYPE_CHECKING:
    from .signing import Verifier

WILDCARD = "*"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_OPENPGP_FPR = re.compile(r"^[0-9A-F]{40}$|^[0-9A-F]{64}$")
_SSH_FPR = re.compile(r"^SHA256:[A-Za-z0-9+/]{43}$")


@dataclass(frozen=True)
class PolicySigner:
    name: str
    format: str  # "openpgp" | "ssh"
    fingerprint: str
    public_key: str
    types: tuple[str, ...] = (WILDCARD,)

    def may_sign(self, entry_type: str) -> bool:
        return WILDCARD in self.types or entry_type in self.types

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "format": self.format, "fingerprint": self.fingerprint,
                "public_key": self.public_key, "types": list(self.types)}


@dataclass(frozen=True)
class PolicyTsa:
    name: str
    ca_cert: str  # PEM
    spki_pin: str | None = None

    def as_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {"name": self.name, "ca_cert": self.ca_cert}
        if self.spki_pin:
            d["spki_pin"] = self.spki_pin
        return d


@dataclass(frozen=True)
class Policy:
    signers: tuple[PolicySigner, ...]
    thresholds: dict[str, int] = field(default_factory=lambda: {WILDCARD: 1})
    tsas: tuple[PolicyTsa, ...] = ()
    tokens_required: dict[str, int] = field(default_factory=dict)

    def threshold(self, entry_type: str) -> int:
        return self.thresholds.get(entry_type, self.thresholds.get(WILDCARD, 1))

    def tokens(self, entry_type: str) -> int:
        return self.tokens_required.get(entry_type, self.tokens_required.get(WILDCARD, 0))

    def signer(self, fingerprint: str) -> PolicySigner | None:
        for s in self.signers:
            if s.fingerprint == fingerprint:
                return s
        return None

    def signer_named(self, name: str) -> PolicySigner | None:
        for s in self.signers:
            if s.name == name:
                return s
        return None

    def tsa(self, name: str) -> PolicyTsa | None:
        for t in self.tsas:
            if t.name == name:
                return t
        return None

    def body_fields(self) -> dict[str, Any]:
        return {
            "signers": [s.as_json() for s in self.signers],
            "thresholds": dict(self.thresholds),
            "tsas": [t.as_json() for t in self.tsas],
            "tokens_required": dict(self.tokens_required),
        }

    @classmethod
    def from_body(cls, body: dict[str, Any], where: str = "policy entry") -> Policy:
        """Parse and validate a policy body; anything odd is VM-POLICY-INVALID (never a default)."""

        def bad(cause: str) -> VaultMeshError:
            return VaultMeshError("VM-POLICY-INVALID", f"{where}: {cause}",
                                  "policy entries are written by `git vaultmesh init/policy`; this one was not")

        signers_raw = body.get("signers")
        if not isinstance(signers_raw, list) or not signers_raw:
            raise bad("signers must be a non-empty list")
        signers: list[PolicySigner] = []
        for s in signers_raw:
            if not isinstance(s, dict) or set(s) != {"name", "format", "fingerprint", "public_key", "types"}:
                raise bad("each signer must be exactly {name, format, fingerprint, public_key, types}")
            if not isinstance(s["name"], str) or not _NAME.match(s["name"]):
                raise bad(f"signer name {s['name']!r} is invalid")
            fmt, fpr = s["format"], s["fingerprint"]
            if fmt == "openpgp":
                ok = isinstance(fpr, str) and bool(_OPENPGP_FPR.match(fpr))
            elif fmt == "ssh":
                ok = isinstance(fpr, str) and bool(_SSH_FPR.match(fpr))
            else:
                raise bad(f"signer {s['name']}: unknown format {fmt!r}")
            if not ok:
                raise bad(f"signer {s['name']}: fingerprint {fpr!r} is not a {fmt} fingerprint")
            if not isinstance(s["public_key"], str) or not s["public_key"].strip():
                raise bad(f"signer {s['name']}: public_key missing")
            types = s["types"]
            if not isinstance(types, list) or not types or not all(isinstance(t, str) for t in types):
                raise bad(f"signer {s['name']}: types must be a non-empty list of entry types or '*'")
            signers.append(PolicySigner(s["name"], fmt, fpr, s["public_key"], tuple(types)))
        names = [s.name for s in signers]
        fprs = [s.fingerprint for s in signers]
        if len(set(names)) != len(names) or len(set(fprs)) != len(fprs):
            raise bad("signer names and fingerprints must be unique")
        thresholds = _int_map(body.get("thresholds", {WILDCARD: 1}), "thresholds", 1, bad)
        for typ, k in thresholds.items():
            eligible = sum(1 for s in signers if s.may_sign(typ) or typ == WILDCARD)
            if k > eligible:
                raise bad(f"threshold {k} for {typ!r} exceeds the {eligible} signer(s) who may sign it")
        tsas: list[PolicyTsa] = []
        for t in body.get("tsas", []) or []:
            if not isinstance(t, dict) or not {"name", "ca_cert"} <= set(t) <= {"name", "ca_cert", "spki_pin"}:
                raise bad("each tsa must be {name, ca_cert[, spki_pin]}")
            if not isinstance(t["name"], str) or not _NAME.match(t["name"]):
                raise bad(f"tsa name {t.get('name')!r} is invalid")
            if not isinstance(t["ca_cert"], str) or "BEGIN CERTIFICATE" not in t["ca_cert"]:
                raise bad(f"tsa {t['name']}: ca_cert must be a PEM certificate")
            tsas.append(PolicyTsa(t["name"], t["ca_cert"], t.get("spki_pin")))
        tokens = _int_map(body.get("tokens_required", {}), "tokens_required", 0, bad)
        for typ, k in tokens.items():
            if k > len(tsas):
                raise bad(f"{k} token(s) required for {typ!r} but only {len(tsas)} TSA(s) in policy")
        return cls(tuple(signers), thresholds, tuple(tsas), tokens)


def _int_map(raw: Any, name: str, minimum: int, bad: Any) -> dict[str, int]:
    if not isinstance(raw, dict):
        raise bad(f"{name} must be an object of entry type -> integer")
    out: dict[str, int] = {}
    for k, v in raw.items():
        if not isinstance(v, int) or isinstance(v, bool) or v < minimum or v > 64:
            raise bad(f"{name}[{k!r}] = {v!r}: must be an integer from {minimum} to 64")
        out[str(k)] = v
    return out


# --- composable rules ------------------------------------------------------------------------------

@dataclass(frozen=True)
class RuleResult:
    ok: bool
    detail: str
    present: tuple[str, ...] = ()
    missing: tuple[str, ...] = ()


class Rule(Protocol):
    def evaluate(self, signers: frozenset[str]) -> RuleResult: ...


@dataclass(frozen=True)
class KOfN:
    """At least k distinct fingerprints out of `allowed` (names for messages)."""

    k: int
    allowed: dict[str, str]  # fingerprint -> name

    def evaluate(self, signers: frozenset[str]) -> RuleResult:
        present = sorted(self.allowed[f] for f in signers if f in self.allowed)
        missing = sorted(n for f, n in self.allowed.items() if f not in signers)
        ok = len(present) >= self.k
        detail = f"{len(present)} of required {self.k} signer(s)"
        return RuleResult(ok, detail, tuple(present), tuple(missing))


@dataclass(frozen=True)
class AllOf:
    rules: Sequence[Rule]

    def evaluate(self, signers: frozenset[str]) -> RuleResult:
        results = [r.evaluate(signers) for r in self.rules]
        return RuleResult(all(r.ok for r in results), "; ".join(r.detail for r in results),
                          tuple(p for r in results for p in r.present),
                          tuple(m for r in results for m in r.missing))


def signing_rule(policy: Policy, entry_type: str) -> Rule:
    """The rule an entry of `entry_type` must meet under `policy`."""
    allowed = {s.fingerprint: s.name for s in policy.signers if s.may_sign(entry_type)}
    return KOfN(policy.threshold(entry_type), allowed)


def pinned(policies: Iterable[Policy]) -> list[PolicySigner]:
    """Every signer any of these policies ever pinned (the keys a verifier must know)."""
    seen: dict[str, PolicySigner] = {}
    for p in policies:
        for s in p.signers:
            seen.setdefault(s.fingerprint, s)
    return list(seen.values())


# --- judging policy changes (the same rule `verify` applies, for the `policy` and `cosign` verbs) -----

NO_THRESHOLD_TYPES = frozenset({"cosign", "timestamp", "witness"})  # never judged by a threshold of their own


def _entry_time(body: dict[str, Any]) -> datetime | None:
    try:
        return datetime.strptime(str(body.get("recorded_at")), "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
    except ValueError:
        return None


@dataclass(frozen=True)
class SignatureCheck:
    """The distinct pinned signers with good signatures, and what was wrong with the others."""

    good: frozenset[str]
    problems: tuple[tuple[str, str], ...]  # (code, detail); any problem rejects the entry, as verify does


def check_signatures(policy: Policy, auth_type: str, entry: Entry, verifier: Verifier) -> SignatureCheck:
    """Verify every signature of `entry` against the keys `policy` pins for `auth_type`, at the entry's time.

    Mirrors verification._sig_signers so the CLI refuses before appending exactly what verify would reject."""
    good: set[str] = set()
    problems: list[tuple[str, str]] = []
    at = _entry_time(entry.body)
    for s in entry.sigs:
        res = verifier.verify(s["format"], s["sig"], signed_message(s, entry), at=at)
        claimed = s["signer"]
        if res.status != "valid":
            code = STATUS_CODES.get(res.status) or "VM-SIG-INVALID"
            problems.append((code, f"signature claimed by {claimed} is {res.status}: {res.detail}"))
        elif res.fingerprint != claimed:
            problems.append(("VM-SIG-INVALID", f"signature names {claimed} but was made by {res.fingerprint}"))
        elif (signer := policy.signer(res.fingerprint)) is None:
            problems.append(("VM-SIG-UNPINNED", f"good signature by {res.fingerprint}, which the policy in force "
                             f"does not pin (pinned: {', '.join(x.name for x in policy.signers)})"))
        elif not signer.may_sign(auth_type):
            problems.append(("VM-SIG-NOT-AUTHORIZED",
                             f"{signer.name} may sign {', '.join(signer.types)}, not {auth_type}"))
        else:
            good.add(res.fingerprint)
    return SignatureCheck(frozenset(good), tuple(problems))


@dataclass(frozen=True)
class Judgement:
    """A policy entry judged against the policy in force before it."""

    ok: bool
    code: str | None
    detail: str
    rule: RuleResult | None = None


def judge_change(current: Policy, entry: Entry, verifier: Verifier) -> Judgement:
    """Is `entry` (a policy body) adopted after `current`? Every signature valid and pinned, threshold met."""
    try:
        Policy.from_body(entry.body, "the policy change")
    except VaultMeshError as exc:
        return Judgement(False, exc.code, exc.cause)
    sigs = check_signatures(current, "policy", entry, verifier)
    if sigs.problems:
        code, detail = sigs.problems[0]
        more = f" (and {len(sigs.problems) - 1} more)" if len(sigs.problems) > 1 else ""
        return Judgement(False, code, detail + more)
    rule = signing_rule(current, "policy").evaluate(sigs.good)
    if not rule.ok:
        return Judgement(False, "VM-POLICY-UNAUTHORIZED",
                         f"signed by {', '.join(rule.present) or 'no pinned signer'}: {rule.detail}; "
                         f"missing: {', '.join(rule.missing) or '-'}", rule)
    return Judgement(True, None, f"signed by {', '.join(rule.present)}: {rule.detail}", rule)


@dataclass(frozen=True)
class InForce:
    """The policy in force at the end of the log, which entry adopted it, and the policy entries refused."""

    policy: Policy
    seq: int
    entry: Entry
    rejected: tuple[tuple[int, Entry, Judgement], ...]


def in_force(policy_entries: Sequence[tuple[int, Entry]], verifier: Verifier) -> InForce:
    """Walk the log's policy entries in order (genesis first), adopting each one the policy before it signed.

    `verify` is the authority over the whole log; this is the same adoption rule over policy entries only,
    so the `policy` verb builds on what verify will accept rather than on the newest entry whatever it is."""
    if not policy_entries or policy_entries[0][0] != 0:
        raise VaultMeshError("VM-LOG-GENESIS", "entry #0 is not a policy entry",
                             "a ledger starts with the genesis policy written by `git vaultmesh init`")
    seq0, genesis = policy_entries[0]
    policy = Policy.from_body(genesis.body, "genesis policy (entry #0)")
    current = (seq0, genesis)
    rejected: list[tuple[int, Entry, Judgement]] = []
    seen = {genesis.body_digest}
    for seq, e in policy_entries[1:]:
        if e.body.get("log") != genesis.body.get("log") or e.body_digest in seen:
            rejected.append((seq, e, Judgement(False, "VM-ENTRY-DUPLICATE" if e.body_digest in seen else
                                               "VM-ENTRY-WRONG-LOG", "replayed or repeated policy entry")))
            continue
        seen.add(e.body_digest)
        j = judge_change(policy, e, verifier)
        if not j.ok:
            rejected.append((seq, e, j))
            continue
        policy = Policy.from_body(e.body, f"policy entry #{seq}")
        current = (seq, e)
    return InForce(policy, current[0], current[1], tuple(rejected))


# --- pending signatures, cheaply (for `log` and `cosign`: no signature is verified here) ---------------

@dataclass(frozen=True)
class SigStatus:
    """Distinct *claimed* signers pinned for an entry (own signatures plus cosigns) against its threshold."""

    present: tuple[str, ...]
    missing: tuple[str, ...]
    need: int

    @property
    def have(self) -> int:
        return len(self.present)

    @property
    def pending(self) -> bool:
        return self.have < self.need

    def as_json(self) -> dict[str, Any]:
        return {"have": self.have, "need": self.need, "pending": self.pending,
                "signers": list(self.present), "missing": list(self.missing)}


@dataclass(frozen=True)
class Timeline:
    """Policy at each position and claimed signature status per entry, from signer names alone."""

    policies: tuple[Policy | None, ...]  # policy in force for entry i
    status: dict[int, SigStatus]
    final: Policy | None


def _fast_body_digest(e: Entry) -> str:
    """Body digest without re-canonicalising: a parsed line is canonical `{"body":B,"sigs":[…],"v":1}` whose
    sigs hold only strings (no unescaped quote), so B ends at the last `,"sigs":[`. Falls back otherwise."""
    start, end = len(b'{"body":'), e.line.rfind(b',"sigs":[')
    if e.line.startswith(b'{"body":') and end > start:
        return hashlib.sha256(e.line[start:end]).hexdigest()
    return e.body_digest


def claimed_timeline(entries: Sequence[Entry | None]) -> Timeline:
    """One pass over the entries, trusting each signature's `signer` claim (verify is the authority).

    A policy entry is taken as in force when its claimed signers meet the previous policy's "policy"
    threshold; a cosign adds its claimed signer when pinned (for the target's type) both at the target's
    position and at its own. Cost: no gpg/ssh process at all, so `log` stays fast on large ledgers."""
    policies: list[Policy | None] = []
    claimed: dict[int, set[str]] = {}
    by_digest: dict[str, int] = {}
    policy: Policy | None = None
    any_cosign = any(e is not None and e.type == "cosign" for e in entries)
    for seq, e in enumerate(entries):
        policies.append(policy)
        if e is None:
            continue
        if any_cosign:
            by_digest.setdefault(_fast_body_digest(e), seq)
        signers = {s["signer"] for s in e.sigs}
        if e.type == "policy":
            try:
                new = Policy.from_body(e.body, f"policy entry #{seq}")
            except VaultMeshError:
                continue
            if policy is None:
                policy = policies[seq] = new  # genesis judges itself
            if signing_rule(policies[seq] or new, "policy").evaluate(frozenset(signers)).ok:
                policy = new
            claimed[seq] = signers
        elif e.type == "cosign":
            target = by_digest.get(str(e.body.get("entry")))
            target_e = entries[target] if target is not None else None
            then = policies[target] if target is not None else None
            if target is None or target_e is None or then is None or policy is None:
                continue
            claimed.setdefault(target, set()).update(
                f for f in signers
                if (a := then.signer(f)) is not None and a.may_sign(target_e.type)
                and (b := policy.signer(f)) is not None and b.may_sign(target_e.type))
        else:
            claimed.setdefault(seq, set()).update(signers)
    status: dict[int, SigStatus] = {}
    rules: dict[tuple[int, str], Rule] = {}
    for seq, e in enumerate(entries):
        pol = policies[seq]
        if e is None or pol is None or e.type in NO_THRESHOLD_TYPES:
            continue
        rule = rules.get((id(pol), e.type)) or rules.setdefault((id(pol), e.type), signing_rule(pol, e.type))
        res = rule.evaluate(frozenset(claimed.get(seq, set())))
        status[seq] = SigStatus(res.present, res.missing, pol.threshold(e.type))
    return Timeline(tuple(policies), status, policy)
