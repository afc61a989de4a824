"""Entry checks: genesis and trust root, statement rules, signatures, policy changes, cosigns, thresholds.

All of them read one `policy.replay` of the entries under judgement (the policy timeline); each reports
only its own codes. verify and check-proof compose exactly these, so a bundle is judged by verify's rules.
"""

from __future__ import annotations

from ..errors import VaultMeshError
from ..policy import NO_THRESHOLD_TYPES, replay, signing_rule, verified_judge
from .context import Context, where


def timeline(ctx: Context) -> None:
    """Replay the entries (genesis first) into the policy timeline; a log without a usable genesis stops here."""
    r = ctx.report
    try:
        tl = replay(ctx.carried, verified_judge(ctx.verifier()), ctx.opts.known_size)
    except VaultMeshError as exc:
        r.error("log.genesis", exc)
        return
    ctx.timeline = tl
    r.log_id = tl.log_id
    g = tl.genesis
    assert g.sigs is not None
    for code, detail in g.sigs.problems:
        r.failed("log.genesis", code, f"{where(0, g.entry)}: {detail}")
    if not g.sigs.problems:
        if not tl.genesis_rule.ok:
            r.failed("log.genesis", "VM-LOG-GENESIS", f"genesis policy is self-signed by {tl.genesis_rule.detail}")
        else:
            r.passed("log.genesis", f"genesis policy signed by {', '.join(tl.genesis_rule.present)}")


def trust_root(ctx: Context) -> None:
    """The genesis signer is the pinned trust root; without a pin the verdict says it trusted on first use."""
    if ctx.timeline is None:
        return
    r = ctx.report
    signers = ctx.timeline.signers.get(0, set())
    pin = ctx.trust_root
    if pin:
        r.trust = "pinned"
        if pin.upper() not in {f.upper() for f in signers} and not (pin.startswith("SHA256:") and pin in signers):
            r.failed("log.trust-root", "VM-TRUST-ROOT-MISMATCH",
                     f"genesis signed by {', '.join(sorted(signers)) or 'no valid signer'}; pinned trust root is {pin}")
        else:
            r.passed("log.trust-root", f"genesis signer {pin} is the pinned trust root")
    else:
        r.trust = "tofu"
        r.passed("log.trust-root", "trusted on first use: no --trust-root and no vaultmesh.trustRoot; "
                 f"genesis signer(s) {', '.join(sorted(signers))} accepted without a pin")


def statements(ctx: Context) -> None:
    """An entry replayed from another log, repeating a statement, or a second release of a tag counts for nothing."""
    if ctx.timeline is None:
        return
    for j in ctx.timeline.judged.values():
        if j.refused is not None:
            code, detail = j.refused
            ctx.report.failed("entry.log" if code == "VM-ENTRY-WRONG-LOG" else "entry.unique", code, detail)


def signatures(ctx: Context) -> None:
    """Every signature of an entry in scope is valid, by a key the policy in force pins for its type."""
    if ctx.timeline is None:
        return
    r = ctx.report
    bad = False
    for seq, j in ctx.timeline.judged.items():
        if seq == 0 or j.sigs is None or not j.sigs.problems or not ctx.scope.covers(seq, j.entry):
            continue
        bad = True
        for code, detail in j.sigs.problems:
            r.failed("entry.signatures", code, f"{where(seq, j.entry)}: {detail}")
    if not bad:
        r.passed("entry.signatures", "every signature in scope is valid and pinned by the policy in force")


def policy_changes(ctx: Context) -> None:
    """A policy entry is adopted only when the policy before it signed it; later entries are judged by the
    previous policy otherwise."""
    if ctx.timeline is None:
        return
    r = ctx.report
    for seq, j in ctx.timeline.judged.items():
        ch = j.change
        if ch is None or ch.ok:
            continue
        w = where(seq, j.entry)
        assert ch.code is not None
        if ch.sigs is not None and ch.sigs.problems:
            r.failed("policy.authorized", "VM-POLICY-UNAUTHORIZED",
                     f"{w}: policy change not adopted: a signature on it is not a valid signature by a signer of "
                     "the policy in force. Later entries are judged by the previous policy",
                     "have the current policy's signers sign the change before it is appended")
        elif ch.code == "VM-POLICY-UNAUTHORIZED":
            rule = ch.rule
            assert rule is not None
            r.failed("policy.authorized", "VM-POLICY-UNAUTHORIZED",
                     f"{w}: policy change signed by {', '.join(rule.present) or 'nobody pinned'}; needs "
                     f"{rule.detail}; missing: {', '.join(rule.missing)}. Later entries are judged by the previous "
                     "policy", "have the current policy's signers co-sign the change before it is appended")
        else:
            r.failed("policy.valid", ch.code, f"{w}: {ch.detail}")


def cosign_refs(ctx: Context) -> None:
    """A cosign names the body digest of an earlier entry."""
    if ctx.timeline is None:
        return
    for seq, j in ctx.timeline.judged.items():
        if (j.entry.type == "cosign" and j.refused is None and j.sigs is not None and not j.sigs.problems
                and j.target is None):
            ctx.report.failed("entry.refs", "VM-ENTRY-REF-INVALID",
                              f"{where(seq, j.entry)} co-signs body digest {j.entry.body.get('entry')}, which is no "
                              "earlier entry")


def thresholds(ctx: Context) -> None:
    """Each entry in scope has as many distinct pinned signers (own signatures and counted cosigns) as the
    policy in force at its position requires for its type (pending otherwise)."""
    tl = ctx.timeline
    if tl is None:
        return
    r = ctx.report
    failures = 0
    for seq in sorted(tl.signers):
        e = ctx.carried.get(seq)
        if e is None or e.type in NO_THRESHOLD_TYPES or e.type == "policy" or not ctx.scope.covers(seq, e):
            continue
        rule = signing_rule(tl.at(seq), e.type).evaluate(frozenset(tl.signers[seq]))
        if rule.ok:
            continue
        failures += 1
        if "pending" in ctx.opts.allow:
            r.pending.append(f"{where(seq, e)}: signatures ({rule.detail})")
            r.passed("entry.threshold", f"{where(seq, e)}: pending signatures ({rule.detail}) — accepted by "
                     "--allow-pending")
        else:
            r.failed("entry.threshold", "VM-SIG-PENDING",
                     f"{where(seq, e)}: pending signatures: {rule.detail}; present: "
                     f"{', '.join(rule.present) or 'none'}; missing: {', '.join(rule.missing)}")
    if failures == 0:
        r.passed("entry.threshold", "every entry in scope meets its signing threshold")


ENTRY_RULES = (timeline, trust_root, statements, signatures, policy_changes, cosign_refs, thresholds)
