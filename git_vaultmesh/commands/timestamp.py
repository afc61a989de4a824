"""`timestamp`: complete pending timestamps (`--pending`) or renew all tokens with an archive timestamp
(`--archive`), each as ONE append.

--pending   every entry with fewer valid tokens than its policy requires gets a token from each TSA of the
            policy in force that it lacks; requests go out in parallel (vaultmesh.tsaJobs, default 16, at a
            time), a TSA that keeps failing is given up for the batch, and every token is verified against the
            policy before it is appended. Exit 1 (VM-TSA-PENDING) if entries remain pending.
--archive   one token from each policy TSA over the current checkpoint (RFC 4998's idea): it keeps every token
            below it valid after its TSA certificate expires, as long as it is made while that certificate is
            valid. Run it before TSA certificates expire (`doctor` warns 90 days ahead).
"""

from __future__ import annotations

import argparse
from datetime import datetime, timezone
from typing import Any

from .. import ledger
from ..config import signing_key
from ..entry import Entry
from ..errors import VaultMeshError
from ..git import Repo
from ..policy import Policy, claimed_timeline, may_sign
from ..rfc3161.fetch import fetch
from ..rfc3161.timestamping import (
    HINT_PENDING,
    TokenBook,
    endpoints,
    iso,
    keep_known,
    settings_for,
    sign_bodies,
    timestamp_body,
)
from ..signing import SigningKey
from ..ui import print_json, warn


def run(args: argparse.Namespace) -> int:
    repo = Repo.discover()
    if args.archive:
        return _archive(repo, args)
    return _pending(repo, args)


def _may_stamp(policy: Policy, key: SigningKey) -> None:
    may_sign(policy, key, "timestamp", lambda _: (
        f"your key {key.fingerprint} may not sign timestamp entries under the policy in force",
        "set vaultmesh.signingKey to a policy signer allowed to sign 'timestamp' entries"))


def _append(repo: Repo, key: SigningKey, head: ledger.Head, stamps: list[Entry]) -> ledger.AppendResult:
    def still_trusted(repo_: Repo, now: ledger.Head) -> list[Entry]:
        if now.commit == head.commit:
            return stamps
        _, entries = ledger.load(repo_)  # the policy may have changed meanwhile: keep tokens it trusts
        final = claimed_timeline(entries).final
        kept = keep_known(stamps, final) if final is not None else []
        if not kept:
            raise VaultMeshError("VM-POLICY-STALE", "the policy changed meanwhile and trusts none of the TSAs "
                                 "that answered", "run the command again")
        return kept

    return ledger.append(repo, key, still_trusted)


def _pending(repo: Repo, args: argparse.Namespace) -> int:
    head, entries = ledger.load(repo)
    assert head.log_id is not None
    timeline = claimed_timeline(entries)
    book = TokenBook([e.line for e in entries], entries, timeline.policies, head.log_id,
                     now=datetime.now(timezone.utc))
    pending = [p for seq in range(len(entries)) if (p := book.pending(seq)) is not None]
    out: dict[str, Any] = {"ok": True, "pending": len(pending), "appended": 0, "tokens": 0, "still_pending": [],
                           "problems": []}
    if not pending:
        return _done(args, out, ["nothing pending: every entry has the timestamp tokens its policy requires"])
    if args.list:
        out["entries"] = [{"seq": p.seq, "id": entries[p.seq].id, "need": p.need, "have": list(p.have),
                           "missing": list(p.missing)} for p in pending]
        return _done(args, out, [f"#{p.seq} {entries[p.seq].type} {entries[p.seq].id[:12]}: {len(p.have)} of "
                                 f"{p.need} token(s); missing {', '.join(p.missing) or '-'}" for p in pending])
    policy = timeline.final
    assert policy is not None
    key = signing_key(repo)
    _may_stamp(policy, key)
    eps, no_url = endpoints(repo, policy)
    problems = [f"TSA {n}: no URL configured (git config vaultmesh.tsa.{n}.url URL)" for n in no_url]
    if not policy.tsas:
        problems.append("the policy in force names no TSA to ask (git vaultmesh tsa add)")
    jobs = [(p.seq, ep) for p in pending for ep in eps if ep.name not in p.have]
    timeout, workers = settings_for(repo)
    results = fetch([(entries[seq].line, ep) for seq, ep in jobs], timeout=timeout, workers=workers)
    got: dict[int, list[tuple[str, bytes]]] = {}
    for (seq, _), f in zip(jobs, results):
        if f.tsr is not None:
            got.setdefault(seq, []).append((f.tsa, f.tsr))
        elif f.error is not None:
            problem = f"TSA {f.tsa}: {f.error.code}: {f.error.cause}"
            if problem not in problems:
                problems.append(problem)
    bodies = [timestamp_body(head.log_id, got[p.seq], entry=entries[p.seq].id) for p in pending if p.seq in got]
    stamps = sign_bodies(key, bodies)
    lines: list[str] = []
    if stamps:
        result = _append(repo, key, head, stamps)
        out.update({"appended": len(result.entries), "commit": result.commit,
                    "tokens": sum(len(e.body["tokens"]) for e in result.entries)})
        last = result.first_seq + len(result.entries) - 1
        span = f"entry #{last}" if last == result.first_seq else f"entries #{result.first_seq}..#{last}"
        lines.append(f"added {out['tokens']} token(s) for {len(result.entries)} entr"
                     f"{'y' if len(result.entries) == 1 else 'ies'} in one append ({span})")
        done_ids = {str(e.body["entry"]) for e in result.entries}
    else:
        done_ids = set()
    still = [p for p in pending
             if len(p.have) + (len(got.get(p.seq, [])) if entries[p.seq].id in done_ids else 0) < p.need]
    out["still_pending"] = [entries[p.seq].id for p in still]
    out["problems"] = problems
    out["ok"] = not still
    if args.json:
        print_json(out)
    else:
        print("\n".join(lines) or "no token obtained")
    for problem in problems:
        warn(problem)
    if still:
        raise VaultMeshError("VM-TSA-PENDING", f"{len(still)} of {len(pending)} pending entr"
                             f"{'y remains' if len(still) == 1 else 'ies remain'} pending (first: #{still[0].seq}, "
                             f"{len(still[0].have)} of {still[0].need} token(s))", HINT_PENDING)
    return 0


def _done(args: argparse.Namespace, out: dict[str, Any], lines: list[str]) -> int:
    if args.json:
        print_json(out)
    else:
        print("\n".join(lines))
    return 0


def _archive(repo: Repo, args: argparse.Namespace) -> int:
    from .record import current_policy

    head = ledger.read_head(repo)
    if head.commit is None or head.log_id is None:
        raise VaultMeshError("VM-NOT-INITIALIZED", f"{ledger.REF_LOG} does not exist", "run `git vaultmesh init` first")
    policy = current_policy(repo, head)
    if not policy.tsas:
        raise VaultMeshError("VM-USAGE", "the policy in force names no TSA, so there is nothing to archive with",
                             "add one: git vaultmesh tsa add NAME --url URL --ca-cert CA.pem")
    key = signing_key(repo)
    _may_stamp(policy, key)
    size = head.size
    data = ledger.checkpoint_text(head.log_id, size, head.frontier.root())
    eps, no_url = endpoints(repo, policy)
    timeout, workers = settings_for(repo)
    results = fetch([(data, ep) for ep in eps], timeout=timeout, workers=workers)
    problems = [f"TSA {n}: no URL configured (git config vaultmesh.tsa.{n}.url URL)" for n in no_url]
    problems += [f"TSA {f.tsa}: {f.error.code}: {f.error.cause}" for f in results if f.error is not None]
    tokens = [(f.tsa, f.tsr) for f in results if f.tsr is not None]
    if not tokens:
        raise VaultMeshError("VM-TSA-UNREACHABLE", "no TSA gave an archive token: " + "; ".join(problems),
                             "retry once a policy TSA is reachable; nothing was appended")
    (stamp,) = sign_bodies(key, [timestamp_body(head.log_id, tokens, checkpoint=size)])
    result = _append(repo, key, head, [stamp])
    until = min(f.info.signer_not_after for f in results if f.info is not None)
    names = sorted(n for n, _ in tokens)
    out: dict[str, Any] = {"ok": True, "entry": stamp.id, "seq": result.first_seq, "checkpoint": size,
           "root": head.frontier.root().hex(), "tsas": names, "renews_until": iso(until),
           "problems": problems}
    if args.json:
        print_json(out)
    else:
        print(f"archive timestamp over checkpoint {size} (root {head.frontier.root().hex()[:16]}…) by "
              f"{', '.join(names)} as entry #{result.first_seq}")
        print(f"  tokens of entries #0..#{size - 1} stay valid while this one does: its signer certificate holds "
              f"until {iso(until)}; run it again before then")
    for problem in problems:
        warn(problem)
    return 0
