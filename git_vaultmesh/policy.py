"""Trust policy: who may sign which entry types, how many must, which TSAs count.

Trust lives only in `policy` entries of the log (never in git config). A policy body is a full snapshot,
so the policy in force at any position is simply the last valid policy entry before it. Rules are small
objects that compose (all-of, k-of-n) in the style of sigstore's verification policies.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Protocol

from .entry import Entry, signed_message
from .errors import VaultMeshError
from .signing import STATUS_CODES

if TYPE_CHECKING:
    from .signing import SigningKey, Verifier

WILDCARD = "*"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")
_OPENPGP_FPR = re.compile(r"^[0-9A-F]{40}\Z|^[0-9A-F]{64}\Z")
_SSH_FPR = re.compile(r"^SHA256:[A-Za-z0-9+/]{43}\Z")


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
    note_keys: tuple[str, ...] = ()  # C2SP verifier keys that sign checkpoints as signed notes (Ed25519)

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
        fields: dict[str, Any] = {
            "signers": [s.as_json() for s in self.signers],
            "thresholds": dict(self.thresholds),
            "tsas": [t.as_json() for t in self.tsas],
            "tokens_required": dict(self.tokens_required),
        }
        if self.note_keys:
            fields["note_keys"] = list(self.note_keys)
        return fields

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
        # a policy no one may change locks the log for good: every later change would be unauthorised
        k_policy = thresholds.get("policy", thresholds.get(WILDCARD, 1))
        may_change = sum(1 for s in signers if s.may_sign("policy"))
        if k_policy > may_change:
            raise bad(f"only {may_change} signer(s) may sign policy changes, fewer than the policy threshold "
                      f"{k_policy}: no later change could ever be adopted")
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
        return cls(tuple(signers), thresholds, tuple(tsas), tokens, _note_keys(body, bad))


def _note_keys(body: dict[str, Any], bad: Any) -> tuple[str, ...]:
    """C2SP verifier keys named after the log's checkpoint origin, `vaultmesh/<log id>` (Ed25519 only)."""
    from .note import Verifier

    raw = body.get("note_keys", [])
    if not isinstance(raw, list) or not all(isinstance(k, str) for k in raw) or len(set(raw)) != len(raw):
        raise bad("note_keys must be a list of distinct C2SP verifier keys")
    for vkey in raw:
        try:
            v = Verifier.parse(vkey)
        except VaultMeshError as exc:
            raise bad(f"note key {vkey[:40]!r}: {exc.cause}") from None
        if v.name != f"vaultmesh/{body.get('log')}":
            raise bad(f"note key {v.name!r} is not named after this log's checkpoint origin vaultmesh/{body.get('log')}")
    return tuple(raw)


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
        ok = bool(results) and all(r.ok for r in results)  # all of nothing is not a pass
        return RuleResult(ok, "; ".join(r.detail for r in results),
                          tuple(p for r in results for p in r.present),
                          tuple(m for r in results for m in r.missing))


def signing_rule(policy: Policy, entry_type: str) -> Rule:
    """The rule an entry of `entry_type` must meet under `policy`."""
    allowed = {s.fingerprint: s.name for s in policy.signers if s.may_sign(entry_type)}
    return KOfN(policy.threshold(entry_type), allowed)


# --- judging signatures ------------------------------------------------------------------------------

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


def check_signatures(policy: Policy, auth_type: str, entry: Entry, verifier: Verifier,
                     not_before: datetime | None = None) -> SignatureCheck:
    """Verify every signature of `entry` against the keys `policy` pins for `auth_type`, at the entry's time —
    or at `not_before` when that is later (the latest time an earlier entry of the log claims): an entry cannot
    have been appended before the entries ahead of it, so backdating its own time does not let a key that has
    since expired (or been revoked) sign it.

    The one per-signature rule: verify, check-proof, `policy` and `cosign` all reach it through a Timeline."""
    if not entry.sigs:
        return SignatureCheck(frozenset(), (("VM-SIG-MISSING", "no signature (absent)"),))
    good: set[str] = set()
    problems: list[tuple[str, str]] = []
    at = _entry_time(entry.body)
    if not_before is not None and (at is None or not_before > at):
        at = not_before
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


class Judge(Protocol):
    """How a reading of the timeline judges an entry's signatures under a policy, for an entry type."""

    def __call__(self, policy: Policy, auth_type: str, entry: Entry,
                 not_before: datetime | None = None) -> SignatureCheck: ...


def verified_judge(verifier: Verifier) -> Judge:
    """The verified reading: every signature checked by gpgv / ssh-keygen against pinned keys."""

    def judge(policy: Policy, auth_type: str, entry: Entry, not_before: datetime | None = None) -> SignatureCheck:
        return check_signatures(policy, auth_type, entry, verifier, not_before)

    return judge


def claimed_judge(policy: Policy, auth_type: str, entry: Entry, not_before: datetime | None = None) -> SignatureCheck:
    """The claimed reading: each signature's `signer` claim taken at its word (no gpg at all), for the
    cheap read paths (`log`, `cosign`, `record`); verify is the authority."""
    good = {s["signer"] for s in entry.sigs if (p := policy.signer(s["signer"])) is not None
            and p.may_sign(auth_type)}
    return SignatureCheck(frozenset(good), ())


def pinned_keys(entries: Iterable[Entry]) -> list[Any]:
    """Every copy of every key any policy entry carried: a later copy may add a revocation or a new expiry,
    and the Verifier merges them (which policy pins a key at a position is decided by the timeline)."""
    from .signing import PinnedKey

    keys: list[PinnedKey] = []
    for e in entries:
        if e.type != "policy":
            continue
        for s in e.body.get("signers", []) or []:
            if isinstance(s, dict) and all(isinstance(s.get(k), str) for k in ("format", "fingerprint", "public_key")):
                keys.append(PinnedKey(s["format"], s["fingerprint"], s["public_key"]))
    return keys


@dataclass(frozen=True)
class Judgement:
    """A policy entry judged against the policy in force before it."""

    ok: bool
    code: str | None
    detail: str
    rule: RuleResult | None = None
    sigs: SignatureCheck | None = None


def judge_change(current: Policy, entry: Entry, judge: Judge | Verifier) -> Judgement:
    """Is `entry` (a policy body) adopted after `current`? `policy apply` / `tsa add` ask before appending."""
    sigs = (judge if callable(judge) else verified_judge(judge))(current, "policy", entry)
    return adoption(current, entry, sigs)


def adoption(current: Policy, entry: Entry, sigs: SignatureCheck) -> Judgement:
    """The one adoption rule, applied by the timeline at every policy entry: every signature valid and pinned,
    the body a valid policy, and the "policy" threshold of `current` met by the good signatures."""
    if sigs.problems:
        code, detail = sigs.problems[0]
        more = f" (and {len(sigs.problems) - 1} more)" if len(sigs.problems) > 1 else ""
        return Judgement(False, code, detail + more, None, sigs)
    try:
        Policy.from_body(entry.body, "the policy change")
    except VaultMeshError as exc:
        return Judgement(False, exc.code, exc.cause, None, sigs)
    rule = signing_rule(current, "policy").evaluate(sigs.good)
    if not rule.ok:
        return Judgement(False, "VM-POLICY-UNAUTHORIZED",
                         f"signed by {', '.join(rule.present) or 'no pinned signer'}: {rule.detail}; "
                         f"missing: {', '.join(rule.missing) or '-'}", rule, sigs)
    return Judgement(True, None, f"signed by {', '.join(rule.present)}: {rule.detail}", rule, sigs)


# --- the one replay of the log: statements, signatures, policy timeline, cosigns ------------------------

@dataclass
class Judged:
    """One entry as the replay saw it. `refused` is a statement rule (wrong log, repeated statement, second
    release of a tag) that takes the entry out of every count; `sigs` is its own signatures under the policy in
    force at its position (a cosign is judged for its target's type); `change` is a policy entry's adoption."""

    seq: int
    entry: Entry
    refused: tuple[str, str] | None = None
    sigs: SignatureCheck | None = None
    change: Judgement | None = None
    target: int | None = None  # a cosign's target position (None: names no earlier entry)


@dataclass
class Timeline:
    """Which policy is in force at each position, and how every carried entry was judged.

    Built by `replay` — the single implementation behind verify, check-proof, record, cosign, policy, pull
    and doctor. `carried` may be a whole log or the sparse set of entries a proof bundle carries (which must
    include every policy entry: the replay cannot tell a missing one from none)."""

    log_id: str
    genesis: Judged
    genesis_rule: RuleResult
    adopted: list[tuple[int, Policy]]  # (position, policy), genesis first, ascending
    judged: dict[int, Judged]
    signers: dict[int, set[str]]  # valid pinned signers of an entry, counted cosigns included

    def at(self, seq: int) -> Policy:
        """The policy an entry at `seq` is judged by: the last one adopted before it (genesis judges itself)."""
        i = bisect.bisect_left([p for p, _ in self.adopted], seq) - 1
        return self.adopted[max(i, 0)][1]

    @property
    def final(self) -> Policy:
        return self.adopted[-1][1]

    @property
    def final_seq(self) -> int:
        return self.adopted[-1][0]

    def rejected(self) -> list[Judged]:
        return [j for j in self.judged.values() if j.entry.type == "policy" and j.seq and
                (j.refused is not None or (j.change is not None and not j.change.ok))]


def replay(carried: Mapping[int, Entry], judge: Judge, known_size: int = 0) -> Timeline:
    """Walk the carried entries in log order once, judging each by the policy in force at its position.

    Non-policy entries below `known_size` were verified before (the caller proved the log consistent with
    that prefix): their signatures are read as claimed, which costs no gpg run.

    Raises VM-LOG-GENESIS / VM-POLICY-INVALID when there is no usable genesis: nothing can be judged then."""
    genesis = carried.get(0)
    if genesis is None or genesis.type != "policy":
        raise VaultMeshError("VM-LOG-GENESIS", "entry #0 is absent, unparseable or not a policy entry",
                             "a ledger starts with the genesis policy written by `git vaultmesh init`; this one "
                             "does not: do not trust it")
    policy = Policy.from_body(genesis.body, "genesis policy (entry #0)")
    log_id = str(genesis.body.get("log"))
    g = Judged(0, genesis, sigs=judge(policy, "policy", genesis))
    g_rule = signing_rule(policy, "policy").evaluate(g.sigs.good if g.sigs else frozenset())
    tl = Timeline(log_id, g, g_rule, [(0, policy)], {0: g}, {0: set(g.sigs.good) if g.sigs and not
                                                                g.sigs.problems else set()})
    digests: dict[str, int] = {genesis.body_digest: 0}
    releases: dict[str, int] = {}
    latest = _entry_time(genesis.body)  # the latest time an entry before this one claims
    for seq in sorted(carried):
        if seq == 0:
            continue
        e = carried[seq]
        not_before = latest
        own = _entry_time(e.body)
        if own is not None and (latest is None or own > latest):
            latest = own
        j = tl.judged[seq] = Judged(seq, e)
        j.refused = _statement_rule(seq, e, log_id, digests, releases)
        if j.refused is not None:
            continue
        auth_type = e.type
        if e.type == "cosign":
            j.target = digests.get(str(e.body.get("entry")))
            target = tl.judged.get(j.target) if j.target is not None else None
            auth_type = target.entry.type if target is not None else e.type
        j.sigs = (claimed_judge if seq < known_size and e.type != "policy" else judge)(policy, auth_type, e, not_before)
        if e.type == "policy":
            j.change = adoption(policy, e, j.sigs)
            if j.change.ok:
                policy = Policy.from_body(e.body, f"policy entry #{seq}")
                tl.adopted.append((seq, policy))
        if j.sigs.problems:
            continue
        tl.signers.setdefault(seq, set()).update(j.sigs.good)
        if e.type == "cosign" and j.target is not None:
            then, target_type = tl.at(j.target), tl.judged[j.target].entry.type
            # a cosigner counts only if pinned for the target's type both when it was made and when it co-signs
            tl.signers.setdefault(j.target, set()).update(
                f for f in j.sigs.good if (s := then.signer(f)) is not None and s.may_sign(target_type))
    return tl


def _statement_rule(seq: int, e: Entry, log_id: str, digests: dict[str, int],
                    releases: dict[str, int]) -> tuple[str, str] | None:
    """Entries that count for nothing: replayed from another log, repeating a statement, a second release."""
    where = f"entry #{seq} ({e.id[:12]}, {e.type})"
    if e.body.get("log") != log_id:
        return ("VM-ENTRY-WRONG-LOG", f"{where} names log {e.body.get('log')}, this log is {log_id} (replayed entry)")
    if e.body_digest in digests:
        return ("VM-ENTRY-DUPLICATE",
                f"{where} repeats the statement of entry #{digests[e.body_digest]} (same body digest)")
    digests[e.body_digest] = seq
    if e.type == "release" and e.subject_ref:
        if e.subject_ref in releases:
            return ("VM-ENTRY-DUPLICATE",
                    f"{where}: a second release for {e.subject_ref} (first: entry #{releases[e.subject_ref]})")
        releases[e.subject_ref] = seq
    return None


@dataclass(frozen=True)
class InForce:
    """The policy in force at the end of the log, which entry adopted it, and the policy entries refused."""

    policy: Policy
    seq: int
    entry: Entry
    rejected: tuple[tuple[int, Entry, Judgement], ...]


def in_force(found: Sequence[tuple[int, Entry]], verifier: Verifier) -> InForce:
    """The verified timeline over the log's policy entries (the `policy` verb builds on what verify accepts)."""
    tl = replay(dict(found), verified_judge(verifier))
    rejected = []
    for j in tl.rejected():
        why = (Judgement(False, j.refused[0], j.refused[1]) if j.refused is not None else j.change)
        assert why is not None
        rejected.append((j.seq, j.entry, why))
    return InForce(tl.final, tl.final_seq, tl.judged[tl.final_seq].entry, tuple(rejected))


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
class ClaimedView:
    """The claimed reading of a whole log: policy in force per position, signature status per entry."""

    policies: tuple[Policy | None, ...]  # policy in force for entry i
    status: dict[int, SigStatus]
    final: Policy | None


def claimed_timeline(entries: Sequence[Entry | None]) -> ClaimedView:
    """The timeline's claimed reading over a whole log: no gpg/ssh process at all, so `log` stays fast."""
    carried = {i: e for i, e in enumerate(entries) if e is not None}
    try:
        tl = replay(carried, claimed_judge)
    except VaultMeshError:
        return ClaimedView(tuple(None for _ in entries), {}, None)
    policies = tuple(tl.at(i) for i in range(len(entries)))
    status: dict[int, SigStatus] = {}
    rules: dict[tuple[int, str], Rule] = {}
    for seq, e in carried.items():
        pol = policies[seq]
        if pol is None or e.type in NO_THRESHOLD_TYPES or tl.judged[seq].refused is not None:
            continue
        rule = rules.get((id(pol), e.type)) or rules.setdefault((id(pol), e.type), signing_rule(pol, e.type))
        res = rule.evaluate(frozenset(tl.signers.get(seq, set())))
        status[seq] = SigStatus(res.present, res.missing, pol.threshold(e.type))
    return ClaimedView(policies, status, tl.final)


# --- may my key sign this type? (asked before signing anything) ---------------------------------------

Refusal = Callable[[PolicySigner | None], tuple[str, str]]  # signer (None: not pinned) -> (cause, hint)


def _not_a_signer(fingerprint: str, entry_type: str) -> Refusal:
    def refusal(signer: PolicySigner | None) -> tuple[str, str]:
        if signer is None:
            return (f"your signing key {fingerprint} is not a signer in the ledger's policy",
                    "ask a policy signer to run `git vaultmesh policy add-signer`, or set vaultmesh.signingKey "
                    "to a key that is in `git vaultmesh policy show`")
        return (f"signer {signer.name} may sign {', '.join(signer.types)}, not {entry_type}",
                "ask the policy signers to extend your types")

    return refusal


def may_sign(policy: Policy | Timeline | ClaimedView | None, key: SigningKey, entry_type: str,
             refusal: Refusal | None = None) -> PolicySigner:
    """The signer `key` is under `policy` (a policy, or a timeline's final one), if it may sign `entry_type`
    entries; VM-SIGNER-NOT-IN-POLICY otherwise, worded by `refusal` for the verb. Every command that signs an
    entry asks this first, so a signature verify would refuse as unauthorised is never made."""
    if isinstance(policy, (Timeline, ClaimedView)):
        policy = policy.final
    signer = policy.signer(key.fingerprint) if policy is not None else None
    if signer is not None and signer.may_sign(entry_type):
        return signer
    cause, hint = (refusal or _not_a_signer(key.fingerprint, entry_type))(signer)
    raise VaultMeshError("VM-SIGNER-NOT-IN-POLICY", cause, hint)
