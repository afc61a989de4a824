"""RFC 3161 tokens: every token of a timestamp entry in scope verifies (its own code otherwise, even when
enough others do), and every entry in scope has as many distinct policy TSAs with a valid token as its
policy requires (VM-TSA-PENDING, or --allow-pending). The token rules themselves are rfc3161/timestamping.py's.
"""

from __future__ import annotations

import os

from .context import Context, where


def tokens(ctx: Context) -> None:
    tl = ctx.timeline
    if tl is None:
        return
    r = ctx.report
    carried = ctx.carried
    policies = [tl.at(i) for i in range(ctx.size)]
    if not any(p.tokens_required for _, p in tl.adopted) and not any(e.type == "timestamp" for e in carried.values()):
        return
    from ..rfc3161.timestamping import TokenBook, verification_now

    now = verification_now()
    if os.environ.get("VAULTMESH_NOW"):
        r.passed("tokens.time", f"tokens judged as of {now:%Y-%m-%dT%H:%M:%SZ} (VAULTMESH_NOW), not the clock")
    lines = [ctx.lines.get(i, b"") for i in range(ctx.size)]
    entries = [carried.get(i) for i in range(ctx.size)]
    book = TokenBook(lines, entries, policies, tl.log_id, now=now, usable=lambda s: s in tl.signers)
    bad = pending = counted = 0
    expired: dict[int, set[str]] = {}  # timestamped entry -> TSAs whose token lapsed with its certificate
    for seq in sorted(book.stamps):
        if not ctx.scope.covers(seq, carried.get(seq)):
            continue
        if seq in book.problems:
            code, detail = book.problems[seq]
            r.failed("entry.tokens", code, detail)
            bad += 1
        for v in book.verdicts(seq):
            counted += 1
            if not v.ok:
                assert v.code is not None
                r.failed("entry.tokens", v.code, v.detail, v.hint)
                bad += 1
                if v.code == "VM-TSA-EXPIRED-UNANCHORED" and v.target is not None:
                    expired.setdefault(v.target, set()).add(v.tsa)
    for seq, e in sorted(carried.items()):
        if not ctx.scope.covers(seq, e):
            continue
        p = book.pending(seq)
        if p is None:
            continue
        pending += 1
        detail = (f"{where(seq, e)}: pending timestamp: {len(p.have)} of required {p.need} token(s) from "
                  f"distinct policy TSAs; valid: {', '.join(p.have) or 'none'}; missing: {', '.join(p.missing) or 'none'}"
                  + (f"; not counted (one authority): {', '.join(p.same_authority)}" if p.same_authority else ""))
        if "pending" in ctx.opts.allow:
            r.pending.append(f"{where(seq, e)}: timestamp tokens ({len(p.have)} of {p.need})")
            r.passed("entry.tokens", f"{detail} — accepted by --allow-pending")
        elif seq in expired:  # not a TSA that was down: its token stopped counting when its certificate expired
            r.failed("entry.tokens", "VM-TSA-PENDING", f"{detail}; the token(s) of {', '.join(sorted(expired[seq]))} "
                     "no longer count: the TSA certificate expired and no archive timestamp covers them",
                     "the time those tokens proved is lost: `git vaultmesh timestamp --pending` adds a token for "
                     "today; run `git vaultmesh timestamp --archive` before TSA certificates expire (docs/timestamps.md, "
                     "long-term validation)")
        else:
            r.failed("entry.tokens", "VM-TSA-PENDING", detail)
    if bad == 0 and pending == 0:
        r.passed("entry.tokens", f"{counted} timestamp token(s) in scope verify; every entry in scope has the "
                 "tokens its policy requires")
