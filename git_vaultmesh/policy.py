"""Trust policy: who may sign which entry types, how many must, which TSAs count.

Trust lives only in `policy` entries of the log (never in git config). A policy body is a full snapshot,
so the policy in force at any position is simply the last valid policy entry before it. Rules are small
objects that compose (all-of, k-of-n) in the style of sigstore's verification policies.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from .errors import VaultMeshError

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
