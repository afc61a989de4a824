"""`policy`: show the trust policy and change it.

A change is a `policy` entry holding the full new snapshot, valid only when signed by the "policy" threshold
of the policy in force before it (docs/formats.md). When one signature meets that threshold the change is signed and
appended at once; otherwise it is staged: `--propose FILE` writes the entry with the proposer's signature,
`policy sign FILE` adds each further signer's, `policy apply FILE` appends it once verify would adopt it.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
from dataclasses import dataclass
from typing import Any

from .. import ledger
from ..config import Settings, signing_key
from ..entry import TYPES, Entry, add_signature, canonical, now_rfc3339, parse_line, sign_body
from ..errors import VaultMeshError
from ..git import Repo
from ..policy import (
    NO_THRESHOLD_TYPES,
    WILDCARD,
    InForce,
    Policy,
    PolicySigner,
    in_force,
    judge_change,
    may_sign,
    signing_rule,
)
from ..signing import PinnedKey, SigningKey, Verifier, openpgp_public_key, ssh_fingerprint
from ..ui import print_json, report

SHOW_SCHEMA = "vaultmesh-policy/1"
# Types a threshold means something for (cosign/timestamp/witness entries are never judged by their own).
THRESHOLD_TYPES = tuple(t for t in TYPES if t not in NO_THRESHOLD_TYPES)
_AMENDS = re.compile(r"\(amends policy ([0-9a-f]{64})\)$")


@dataclass
class State:
    """What every policy verb needs: the log head, the policy in force, and a pinned-keys verifier."""

    repo: Repo
    head: ledger.Head
    log_id: str
    current: InForce
    newest_policy_seq: int  # adopted or not: an append is refused if another policy entry lands meanwhile
    verifier: Verifier


def _policy_entries(repo: Repo, head: ledger.Head) -> list[tuple[int, Entry]]:
    return [(s, e) for s, e in ledger.find_entries(repo, head, {"type": "policy"}) if e.type == "policy"]


def load_state(repo: Repo) -> State:
    head = ledger.read_head(repo)
    if head.commit is None or head.log_id is None:
        raise VaultMeshError("VM-NOT-INITIALIZED", f"{ledger.REF_LOG} does not exist",
                             "run `git vaultmesh init` first (or `git vaultmesh pull` a colleague's ledger)")
    found = _policy_entries(repo, head)
    # every key any policy entry carried, as verify does (a later copy may add a revocation)
    keys = []
    for _, e in found:
        for s in e.body.get("signers", []) or []:
            if isinstance(s, dict) and s.get("format") in ("openpgp", "ssh") and all(
                    isinstance(s.get(k), str) for k in ("fingerprint", "public_key")):
                keys.append(PinnedKey(s["format"], s["fingerprint"], s["public_key"]))
    verifier = Verifier(keys, timeout=Settings(repo).timeout("gpgtimeout", 30.0))
    try:
        current = in_force(found, verifier)
    except BaseException:
        verifier.close()
        raise
    return State(repo, head, head.log_id, current, found[-1][0], verifier)


def run(args: argparse.Namespace) -> int:
    repo = Repo.discover()
    cmd = args.policy_command
    if cmd is None:
        raise VaultMeshError("VM-USAGE", "no policy subcommand given",
                             "git vaultmesh policy show | add-signer | remove-signer | set-threshold | sign | apply")
    st = load_state(repo)
    try:
        if cmd == "show":
            return _show(st, args)
        if cmd in ("add-signer", "remove-signer", "set-threshold", "set-note-key"):
            return _change(st, args)
        if cmd == "sign":
            return _sign(st, args)
        return _apply_file(st, args)
    finally:
        st.verifier.close()


# --- show ----------------------------------------------------------------------------------------------

def show_json(st: State) -> dict[str, Any]:
    """The documented `policy show --json` object (schema "vaultmesh-policy/1", docs/policy.md)."""
    pol, e = st.current.policy, st.current.entry
    types = list(THRESHOLD_TYPES) + sorted(t for t in pol.thresholds if t not in THRESHOLD_TYPES and t != WILDCARD)
    return {
        "schema": SHOW_SCHEMA,
        "log": st.log_id,
        "entry": {"seq": st.current.seq, "id": e.id, "body_digest": e.body_digest,
                  "recorded_at": e.body["recorded_at"]},
        "signers": [s.as_json() for s in pol.signers],
        "thresholds": dict(pol.thresholds),
        "effective": {t: {"threshold": pol.threshold(t),
                          "signers": [s.name for s in pol.signers if s.may_sign(t)]} for t in types},
        "tsas": [{"name": t.name, "spki_pin": t.spki_pin, "ca_cert": t.ca_cert} for t in pol.tsas],
        "tokens_required": dict(pol.tokens_required),
        "rejected": [{"seq": seq, "id": re_.id, "code": j.code, "detail": j.detail}
                     for seq, re_, j in st.current.rejected],
        "trust_root": st.repo.config_get("vaultmesh.trustRoot"),
    }


def _show(st: State, args: argparse.Namespace) -> int:
    data = show_json(st)
    if args.json:
        print_json(data)
        return 0
    print(f"policy in force: entry #{data['entry']['seq']} ({data['entry']['id'][:12]}), "
          f"recorded {data['entry']['recorded_at']}, log {data['log']}")
    print("signers:")
    width = max(len(s["name"]) for s in data["signers"])
    for s in data["signers"]:
        print(f"  {s['name']:<{width}}  {s['format']:<7}  {s['fingerprint']}  types {','.join(s['types'])}")
    print("signatures required (distinct pinned signers, per entry type):")
    for t, eff in data["effective"].items():
        print(f"  {t:<9} {eff['threshold']} of {len(eff['signers'])} ({', '.join(eff['signers']) or 'nobody'})")
    print(f"  thresholds as stored: {canonical(data['thresholds']).decode()}")
    tsas = ", ".join(t["name"] + (f" (pin {t['spki_pin'][:16]}…)" if t["spki_pin"] else "") for t in data["tsas"])
    print(f"TSAs: {tsas or 'none'}")
    print(f"timestamp tokens required: {canonical(data['tokens_required']).decode() if data['tokens_required'] else 'none'}")
    print(f"trust root (vaultmesh.trustRoot): {data['trust_root'] or 'not pinned: verify trusts on first use'}")
    for r in data["rejected"]:
        print(f"not adopted: policy entry #{r['seq']} ({r['id'][:12]}): {r['code']}: {r['detail']}")
    return 0


# --- building a change -----------------------------------------------------------------------------------

def _types(raw: str | None) -> tuple[str, ...]:
    if not raw:
        return (WILDCARD,)
    types = tuple(dict.fromkeys(t.strip() for t in raw.split(",") if t.strip()))
    bad = [t for t in types if t != WILDCARD and t not in TYPES]
    if bad or not types:
        raise VaultMeshError("VM-USAGE", f"--types {raw!r}: unknown entry type(s) {', '.join(bad) or '(none)'}",
                             f"use a comma-separated list of {', '.join(TYPES)}, or '*'")
    return types


def _new_signer(args: argparse.Namespace, settings: Settings) -> PolicySigner:
    timeout = settings.timeout("gpgtimeout", 30.0)
    if bool(args.key) == bool(args.ssh_key):
        raise VaultMeshError("VM-USAGE", "give exactly one of --key and --ssh-key",
                             "--key FPR (or an exported .asc file) for OpenPGP, --ssh-key FILE.pub for SSH")
    if args.key:
        fpr, public = openpgp_public_key(args.key, timeout)
        return PolicySigner(args.name, "openpgp", fpr, public, _types(args.types))
    spec: str = args.ssh_key
    line = spec[5:] if spec.startswith("key::") else spec
    if not line.startswith(("ssh-", "ecdsa-", "sk-")):
        try:
            with open(os.path.expanduser(spec), encoding="utf-8") as fh:
                line = fh.read().strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise VaultMeshError("VM-FILE-UNREADABLE", f"cannot read SSH public key {spec}: {exc}",
                                 "pass the .pub file, or the public key line itself") from None
    line = line.strip().splitlines()[0] if line.strip() else ""
    try:
        fpr = ssh_fingerprint(line)
    except ValueError as exc:
        raise VaultMeshError("VM-FILE-UNREADABLE", f"{spec}: {exc}", "pass the .pub file of an SSH key") from None
    return PolicySigner(args.name, "ssh", fpr, line, _types(args.types))


def _changed(st: State, args: argparse.Namespace) -> tuple[Policy, str, str]:
    """(new policy, one-line summary, hint if the new policy is invalid)."""
    cur = st.current.policy
    signers = list(cur.signers)
    thresholds = dict(cur.thresholds)
    note_keys = cur.note_keys
    cmd = args.policy_command
    if cmd == "set-note-key":
        vkey = args.vkey or ledger.note_key(st.repo, st.log_id, create=True).vkey()
        note_keys = () if args.remove else (vkey,)
        summary = "stop signing checkpoints as C2SP notes" if args.remove else f"sign checkpoints as C2SP notes: {vkey}"
        hint = "a note key is a C2SP verifier key named vaultmesh/<log id> (see `git vaultmesh policy set-note-key -h`)"
    elif cmd == "add-signer":
        if cur.signer_named(args.name):
            raise VaultMeshError("VM-USAGE", f"{args.name} is already a signer",
                                 "pick another name, or remove-signer first to replace the key")
        new = _new_signer(args, Settings(st.repo))
        if (same := cur.signer(new.fingerprint)) is not None:
            raise VaultMeshError("VM-USAGE", f"key {new.fingerprint} is already pinned as {same.name}",
                                 "one key, one signer: thresholds count distinct keys")
        signers.append(new)
        summary = f"add signer {new.name} ({new.format} {new.fingerprint}, types {','.join(new.types)})"
        hint = "signer names are 1-64 characters of letters, digits and ._- starting with a letter or digit"
    elif cmd == "remove-signer":
        gone = cur.signer_named(args.name)
        if gone is None:
            raise VaultMeshError("VM-USAGE", f"{args.name} is not a signer of the policy in force",
                                 "see `git vaultmesh policy show`")
        signers.remove(gone)
        summary = f"remove signer {gone.name} ({gone.format} {gone.fingerprint})"
        hint = "lower the thresholds that would exceed the remaining signers first (policy set-threshold TYPE K)"
    else:
        typ, k = args.type, args.k
        if typ != WILDCARD and typ not in THRESHOLD_TYPES:
            raise VaultMeshError("VM-USAGE", f"no threshold applies to entry type {typ!r}",
                                 f"use one of {', '.join(THRESHOLD_TYPES)}, or '*' for the default")
        thresholds[typ] = k
        summary = f"set threshold for {typ} to {k}"
        hint = "a threshold must be 1..64 and at most the number of signers who may sign that type"
    return Policy(tuple(signers), thresholds, cur.tsas, cur.tokens_required, note_keys), summary, hint


def _diff(old: Policy, new: Policy) -> list[str]:
    """What a change really does, computed from the snapshots (a proposal's message is only a claim)."""
    lines = []
    for s in new.signers:
        o = old.signer_named(s.name)
        if o is None:
            lines.append(f"+ signer {s.name} {s.format} {s.fingerprint} types {','.join(s.types)}")
        elif o != s:
            lines.append(f"~ signer {s.name}: {o.fingerprint} types {','.join(o.types)} -> "
                         f"{s.fingerprint} types {','.join(s.types)}")
    lines += [f"- signer {s.name} {s.format} {s.fingerprint}" for s in old.signers if new.signer_named(s.name) is None]
    for t in sorted(set(old.thresholds) | set(new.thresholds)):
        if old.thresholds.get(t) != new.thresholds.get(t):
            lines.append(f"~ threshold {t}: {old.thresholds.get(t, '-')} -> {new.thresholds.get(t, '-')}")
    if old.tsas != new.tsas:
        lines.append(f"~ tsas: {', '.join(t.name for t in old.tsas) or '-'} -> {', '.join(t.name for t in new.tsas) or '-'}")
    if old.tokens_required != new.tokens_required:
        lines.append(f"~ tokens_required: {old.tokens_required} -> {new.tokens_required}")
    if old.note_keys != new.note_keys:
        lines.append(f"~ note_keys: {', '.join(old.note_keys) or '-'} -> {', '.join(new.note_keys) or '-'}")
    return lines or ["(no change)"]


def _require_policy_signer(policy: Policy, key: SigningKey, what: str) -> PolicySigner:
    def refusal(signer: PolicySigner | None) -> tuple[str, str]:
        who = ", ".join(s.name for s in policy.signers if s.may_sign("policy"))
        return (f"your signing key {key.fingerprint} {'is not pinned' if signer is None else 'may not sign policy'} "
                f"in the policy in force, so it cannot {what}",
                f"policy changes are signed by: {who}; set vaultmesh.signingKey to one of their keys")

    return may_sign(policy, key, "policy", refusal)


def _change(st: State, args: argparse.Namespace) -> int:
    cur = st.current.policy
    new, summary, hint = _changed(st, args)
    need = cur.threshold("policy")
    if not args.propose and need > 1:
        argv = _argv(args)
        raise VaultMeshError(
            "VM-POLICY-UNAUTHORIZED",
            f"the policy in force needs {need} signatures on a policy change "
            f"({', '.join(signing_rule(cur, 'policy').evaluate(frozenset()).missing)}); one signer cannot append it",
            f"stage it: git vaultmesh {argv} --propose change.json; then each other signer runs "
            "`git vaultmesh policy sign change.json`, and anyone `git vaultmesh policy apply change.json`")
    body: dict[str, Any] = {"type": "policy", "log": st.log_id, "recorded_at": now_rfc3339(),
                            "message": f"{summary} (amends policy {st.current.entry.body_digest})",
                            **new.body_fields()}
    try:
        Policy.from_body(body, "the new policy")
    except VaultMeshError as exc:
        raise VaultMeshError("VM-POLICY-INVALID", exc.cause, hint) from None
    key = signing_key(st.repo)
    _require_policy_signer(cur, key, "sign a policy change")
    entry = sign_body(body, key)
    if args.propose:
        write_proposal(args.propose, entry)
        have = signing_rule(cur, "policy").evaluate(frozenset({key.fingerprint}))
        return _report(args, {"ok": True, "appended": False, "proposal": args.propose, "summary": summary,
                              "signatures": _sig_json(have, need)},
                       [f"proposed: {summary}", *("  " + d for d in _diff(cur, new)),
                        f"wrote {args.propose}: {have.detail}" + (f"; missing: {', '.join(have.missing)}"
                                                                  if not have.ok else ""),
                        _next_step(args.propose, have.ok)])
    return _append(st, args, entry, key, summary)


def _argv(args: argparse.Namespace) -> str:
    """The command line of this change, for the hint that stages it."""
    if args.policy_command == "add-signer":
        key = f"--key {args.key}" if args.key else f"--ssh-key {args.ssh_key}"
        words = ["add-signer", args.name, *key.split(" ", 1)] + (["--types", args.types] if args.types else [])
    elif args.policy_command == "remove-signer":
        words = ["remove-signer", args.name]
    else:
        words = ["set-threshold", args.type, str(args.k)]
    return "policy " + " ".join(shlex.quote(w) for w in words)


def _sig_json(rule: Any, need: int) -> dict[str, Any]:
    return {"have": len(rule.present), "need": need, "signers": list(rule.present), "missing": list(rule.missing)}


def _next_step(path: str, ready: bool) -> str:
    if ready:
        return f"next: git vaultmesh policy apply {path}"
    return f"next: another signer runs `git vaultmesh policy sign {path}` (then `policy apply {path}`)"


def _report(args: argparse.Namespace, data: dict[str, Any], lines: list[str]) -> int:
    return report(bool(getattr(args, "json", False)), data, lines)


# --- staged proposals ------------------------------------------------------------------------------------

def write_proposal(path: str, entry: Entry) -> None:
    """The entry line itself (what `apply` appends byte for byte), written atomically."""
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        with open(tmp, "wb") as fh:
            fh.write(entry.line + b"\n")
        os.replace(tmp, path)
    except OSError as exc:
        raise VaultMeshError("VM-FILE-UNREADABLE", f"cannot write {path}: {exc.strerror or exc}",
                             "choose a writable path for the proposal") from None


def _read_proposal(st: State, path: str) -> tuple[Entry, Policy]:
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        raise VaultMeshError("VM-FILE-UNREADABLE", f"cannot read proposal {path}: {exc.strerror or exc}",
                             "pass the file written by `policy … --propose FILE`") from None
    entry = parse_line(data[:-1] if data.endswith(b"\n") else data, f"proposal {path}")
    if entry.type != "policy":
        raise VaultMeshError("VM-USAGE", f"{path} holds a {entry.type} entry, not a policy proposal",
                             "pass the file written by `policy … --propose FILE`")
    if entry.body.get("log") != st.log_id:
        raise VaultMeshError("VM-ENTRY-WRONG-LOG", f"{path} is a proposal for log {entry.body.get('log')}, "
                             f"this ledger is {st.log_id}", "proposals cannot move between ledgers")
    try:
        new = Policy.from_body(entry.body, f"proposal {path}")
    except VaultMeshError as exc:
        raise VaultMeshError("VM-POLICY-INVALID", exc.cause, "re-propose the change") from None
    return entry, new


def _check_base(st: State, entry: Entry, path: str) -> None:
    """A proposal is a full snapshot: applied on top of another change it would silently revert it."""
    m = _AMENDS.search(str(entry.body.get("message", "")))
    if m is None:
        raise VaultMeshError("VM-POLICY-INVALID", f"{path} does not say which policy it amends",
                             "proposals are written by `git vaultmesh policy … --propose FILE`")
    if m.group(1) != st.current.entry.body_digest:
        raise VaultMeshError(
            "VM-POLICY-STALE",
            f"{path} amends policy {m.group(1)[:12]}…, but the policy in force is entry #{st.current.seq} "
            f"({st.current.entry.body_digest[:12]}…): another change was applied since it was proposed",
            "propose the change again against the policy in force (`git vaultmesh policy show`)")


def _sign(st: State, args: argparse.Namespace) -> int:
    path = args.file
    entry, new = _read_proposal(st, path)
    there = _already_in_log(st.repo, st.head, entry)
    if there is not None:
        raise VaultMeshError("VM-POLICY-STALE", f"{path} is already applied as entry #{there}",
                             "signatures added now would not be in the log; nothing to do")
    _check_base(st, entry, path)
    cur = st.current.policy
    key = signing_key(st.repo)
    if key.fingerprint in {s["signer"] for s in entry.sigs}:
        raise VaultMeshError("VM-ALREADY-SIGNED", f"{path} already carries a signature by {key.fingerprint}",
                             "thresholds count distinct signers: another signer must sign it")
    _require_policy_signer(cur, key, "sign a policy change")
    signed = add_signature(entry, key)
    write_proposal(path, signed)
    have = signing_rule(cur, "policy").evaluate(frozenset(s["signer"] for s in signed.sigs))
    return _report(args, {"ok": True, "appended": False, "proposal": path,
                          "signatures": _sig_json(have, cur.threshold("policy"))},
                   [f"signed {path}: it changes the policy in force as follows:",
                    *("  " + d for d in _diff(cur, new)),
                    f"signatures: {have.detail}" + (f"; missing: {', '.join(have.missing)}" if not have.ok else ""),
                    _next_step(path, have.ok)])


def _apply_file(st: State, args: argparse.Namespace) -> int:
    entry, _ = _read_proposal(st, args.file)
    there = _already_in_log(st.repo, st.head, entry)
    if there is not None:
        return _report(args, {"ok": True, "appended": False, "entry": entry.id, "seq": there},
                       [f"{args.file} is already applied as entry #{there}; nothing appended"])
    _check_base(st, entry, args.file)
    key = signing_key(st.repo)
    message = str(entry.body.get("message", ""))
    return _append(st, args, entry, key, _AMENDS.sub("", message).strip())


def _already_in_log(repo: Repo, head: ledger.Head, entry: Entry) -> int | None:
    for seq, e in ledger.find_entries(repo, head, {"recorded_at": entry.body["recorded_at"]}):
        if e.body_digest == entry.body_digest:
            return seq
    return None


class _Stale(Exception):
    pass


def append_change(st: State, key: SigningKey, entry: Entry) -> tuple[ledger.AppendResult, Any]:
    """Append an already judged policy change, with RFC 3161 tokens from the TSAs of the policy it is judged
    by (that policy may require them), refusing if another policy entry landed meanwhile."""
    from ..rfc3161.timestamping import keep_known, stamp_entries

    cur = st.current.policy
    stamps = stamp_entries(st.repo, key, cur, [entry])

    def still_current(repo_: Repo, now: ledger.Head) -> list[Entry]:
        if now.commit != st.head.commit:
            newest = _policy_entries(repo_, now)[-1][0]
            if newest != st.newest_policy_seq:
                raise _Stale(newest)
            if _already_in_log(repo_, now, entry) is not None:
                raise _Stale(-1)
            return [entry, *keep_known(stamps.entries, cur)]
        return [entry, *stamps.entries]

    try:
        return ledger.append(st.repo, key, still_current, confirm=stamps.confirm), stamps
    except _Stale as exc:
        raise VaultMeshError("VM-POLICY-STALE", f"another policy entry (#{exc.args[0]}) was appended meanwhile"
                             if exc.args[0] >= 0 else "the same change was appended meanwhile",
                             "check `git vaultmesh policy show` and propose again if still needed") from None


def _append(st: State, args: argparse.Namespace, entry: Entry, key: SigningKey, summary: str) -> int:
    """Append a policy change only if verify will adopt it: refuse before writing anything otherwise."""
    cur = st.current.policy
    new = Policy.from_body(entry.body, "the policy change")
    j = judge_change(cur, entry, st.verifier)
    if not j.ok:
        hint = ("collect the missing signatures: each signer runs `git vaultmesh policy sign FILE`"
                if j.code == "VM-POLICY-UNAUTHORIZED" else
                "only signatures by signers of the policy in force count; re-propose and have them sign")
        raise VaultMeshError(j.code or "VM-POLICY-UNAUTHORIZED", f"policy change not applied: {j.detail}", hint)
    # the appender signs the checkpoint: verify accepts a signer pinned before or after the change
    if cur.signer(key.fingerprint) is None and new.signer(key.fingerprint) is None:
        raise VaultMeshError("VM-SIGNER-NOT-IN-POLICY",
                             f"your key {key.fingerprint} is in neither the old nor the new policy, so it cannot "
                             "sign the log checkpoint of this append",
                             "have a policy signer run `git vaultmesh policy apply FILE`")

    result, stamps = append_change(st, key, entry)
    stamps.warn(entry.id)
    return _report(args, {"ok": True, "appended": True, "entry": entry.id, "seq": result.first_seq,
                          "summary": summary, "signatures": _sig_json(j.rule, cur.threshold("policy"))},
                   [f"policy changed as entry #{result.first_seq} ({entry.id[:12]}): {summary}",
                    *("  " + d for d in _diff(cur, new)),
                    f"  {j.detail}"])
