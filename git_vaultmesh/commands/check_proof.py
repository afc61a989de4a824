"""`check-proof`: verify a proof bundle with no repository — only the bundle, the trust root, gpgv/ssh-keygen.

The chain of trust is replayed from the bundle alone: the genesis policy must be signed by the trust root;
each later policy by the threshold of the one before; the release by the threshold in force at its position
(its cosigns included); the checkpoint by a signer in force at its size. Every entry is tied to that
checkpoint by an inclusion proof, and the commit to the release's history root.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import sys
from typing import Any

from .. import ledger, merkle
from ..entry import Entry, parse_line
from ..errors import VaultMeshError
from ..policy import Policy, signing_rule
from ..ui import print_json
from .prove import FORMAT


def _malformed(cause: str) -> VaultMeshError:
    return VaultMeshError("VM-PROOF-MALFORMED", cause, "regenerate the bundle with `git vaultmesh prove`")


def _invalid(cause: str) -> VaultMeshError:
    return VaultMeshError("VM-PROOF-INVALID", cause, "the bundle was altered or does not match the ledger")


def _untrusted(cause: str) -> VaultMeshError:
    return VaultMeshError("VM-PROOF-UNTRUSTED", cause,
                          "check that --trust-root is the genesis signer of the ledger this bundle came from")


def _hexlist(v: Any, what: str) -> list[bytes]:
    if not isinstance(v, list):
        raise _malformed(f"{what} must be a list of hex hashes")
    try:
        out = [bytes.fromhex(x) for x in v]
    except (TypeError, ValueError):
        raise _malformed(f"{what} holds a value that is not hex") from None
    if any(len(h) != 32 for h in out):
        raise _malformed(f"{what} holds a hash that is not 32 bytes")
    return out


def check(bundle: Any, trust_root: str) -> list[str]:
    """Raise a coded error on the first failure; return what was established, line by line."""
    from ..signing import PinnedKey, Verifier

    if not isinstance(bundle, dict) or bundle.get("format") != FORMAT:
        raise _malformed(f"not a {FORMAT} bundle")
    for key in ("checkpoint", "keys", "entries", "release", "commit"):
        if key not in bundle:
            raise _malformed(f"missing {key!r}")
    cpd = bundle["checkpoint"]
    if not isinstance(cpd, dict) or not isinstance(cpd.get("text"), str) or not isinstance(cpd.get("sig"), str):
        raise _malformed("checkpoint must be {text, sig}")
    try:
        cp = ledger.parse_checkpoint(cpd["text"].encode(), "bundle checkpoint")
    except VaultMeshError as exc:
        raise _malformed(exc.cause) from None
    keys = bundle["keys"]
    if not isinstance(keys, list) or not all(
        isinstance(k, dict) and all(isinstance(k.get(f), str) for f in ("format", "fingerprint", "public_key"))
        for k in keys
    ):
        raise _malformed("keys must be a list of {name, format, fingerprint, public_key} (strings)")
    try:
        pinned = [PinnedKey(k["format"], k["fingerprint"], k["public_key"]) for k in keys]
    except KeyError as exc:
        raise _malformed(f"a key lacks {exc}") from None
    items = bundle["entries"]
    if not isinstance(items, list) or not items:
        raise _malformed("entries must be a non-empty list")
    entries: dict[int, Entry] = {}
    for it in items:
        if not isinstance(it, dict) or not isinstance(it.get("index"), int) or not isinstance(it.get("line"), str):
            raise _malformed("each entry must be {index, line, inclusion}")
        idx = it["index"]
        try:
            e = parse_line(it["line"].encode(), f"bundle entry #{idx}")
        except VaultMeshError as exc:
            raise _invalid(exc.cause) from None
        if not merkle.verify_inclusion(idx, cp.size, merkle.leaf_hash(e.line), _hexlist(it.get("inclusion"),
                                                                                        "inclusion"), cp.root):
            raise _invalid(f"entry #{idx} is not included in the checkpoint (size {cp.size})")
        if e.body.get("log") != cp.log_id:
            raise _invalid(f"entry #{idx} names log {e.body.get('log')}, the checkpoint is log {cp.log_id}")
        entries[idx] = e
    facts = [f"checkpoint: log {cp.log_id} size {cp.size}; {len(entries)} entries included"]
    with Verifier(pinned) as verifier:

        def signers(e: Entry) -> set[str]:
            out = set()
            for s in e.sigs:
                res = verifier.verify(s["format"], s["sig"], e.body_bytes)
                if res.status == "valid" and res.fingerprint == s["signer"]:
                    out.add(res.fingerprint)
            return out

        if 0 not in entries or entries[0].type != "policy":
            raise _untrusted("the bundle lacks the genesis policy (entry #0)")
        policy = Policy.from_body(entries[0].body, "genesis")
        genesis_signers = signers(entries[0])
        root = trust_root.upper() if not trust_root.startswith("SHA256:") else trust_root
        if root not in genesis_signers:
            raise _untrusted(f"the genesis policy is signed by {', '.join(sorted(genesis_signers)) or 'no valid key'}, "
                             f"not by the trust root {trust_root}")
        facts.append(f"genesis policy signed by trust root {trust_root}")
        policy_at: dict[int, Policy] = {}
        cosigners: dict[str, set[str]] = {}
        for idx in sorted(entries):
            e = entries[idx]
            policy_at[idx] = policy
            if idx == 0:
                continue
            if e.type == "policy":
                rule = signing_rule(policy, "policy").evaluate(frozenset(signers(e)))
                if rule.ok:
                    policy = Policy.from_body(e.body, f"policy entry #{idx}")
            elif e.type == "cosign":
                cosigners.setdefault(str(e.body["entry"]), set()).update(
                    f for f in signers(e) if policy.signer(f) is not None)
        rel_idx = bundle["release"]
        rel = entries.get(rel_idx) if isinstance(rel_idx, int) else None
        if rel is None or rel.type != "release":
            raise _malformed("release must be the index of a release entry in the bundle")
        rel_policy = policy_at[rel_idx]
        got = {f for f in signers(rel) | cosigners.get(rel.body_digest, set()) if rel_policy.signer(f)}
        rule = signing_rule(rel_policy, "release").evaluate(frozenset(got))
        if not rule.ok:
            raise _untrusted(f"release entry #{rel_idx} has {rule.detail}")
        facts.append(f"release entry #{rel_idx} signed by {', '.join(rule.present)}")
        sig_text = cpd["sig"]
        fmt = "ssh" if "BEGIN SSH SIGNATURE" in sig_text else "openpgp"
        res = verifier.verify(fmt, sig_text, cpd["text"].encode(), armored=True)
        if res.status != "valid" or policy.signer(str(res.fingerprint)) is None:
            raise _untrusted(f"checkpoint signature is {res.status} ({res.detail}) or not by a policy signer")
        facts.append(f"checkpoint signed by {res.fingerprint}")
    hist = rel.body["history"]
    c = bundle["commit"]
    if not isinstance(c, dict) or not isinstance(c.get("raw"), str) or not isinstance(c.get("index"), int):
        raise _malformed("commit must be {oid, raw, index, inclusion}")
    try:
        raw = base64.b64decode(c["raw"], validate=True)
    except ValueError:
        raise _malformed("commit.raw is not base64") from None
    header = b"commit %d\0" % len(raw)
    oid = str(c.get("oid", ""))
    algo = "sha256" if len(oid) == 64 else "sha1"
    if hashlib.new(algo, header + raw).hexdigest() != oid:
        raise _invalid(f"commit.raw does not hash to {oid}")
    if not merkle.verify_inclusion(c["index"], int(hist["size"]), merkle.leaf_hash(raw),
                                   _hexlist(c.get("inclusion"), "commit inclusion"), bytes.fromhex(hist["root"])):
        raise _invalid(f"commit {oid[:12]} is not included in the release's history root")
    facts.append(f"commit {oid} is #{c['index']} of {hist['size']} in the history of "
                 f"{rel.subject_ref or rel.subject_commit}")
    if "consistency" in bundle:
        cons = bundle["consistency"]
        old_idx = cons.get("from") if isinstance(cons, dict) else None
        old = entries.get(old_idx) if isinstance(old_idx, int) else None
        if old is None or old.type != "release":
            raise _malformed("consistency.from must index a release entry in the bundle")
        oh = old.body["history"]
        if not merkle.verify_consistency(int(oh["size"]), int(hist["size"]), bytes.fromhex(oh["root"]),
                                         bytes.fromhex(hist["root"]), _hexlist(cons.get("proof"), "consistency")):
            raise _invalid("the earlier release's history is not a prefix of this release's")
        facts.append(f"history of {old.subject_ref} is a prefix of {rel.subject_ref} (consistency proof)")
    return facts


def run(args: argparse.Namespace) -> int:
    try:
        text = sys.stdin.read() if args.bundle == "-" else open(args.bundle, encoding="utf-8").read()
    except OSError as exc:
        raise VaultMeshError("VM-FILE-UNREADABLE", f"cannot read {args.bundle}: {exc.strerror}",
                             "pass the path of a bundle written by `git vaultmesh prove`") from None
    try:
        bundle = json.loads(text)
    except ValueError as exc:
        raise _malformed(f"not JSON ({exc})") from None
    try:
        facts = check(bundle, args.trust_root)
    except (KeyError, TypeError, ValueError) as exc:
        raise _malformed(f"unexpected shape ({exc.__class__.__name__}: {exc})") from None
    if args.json:
        print_json({"ok": True, "facts": facts})
    else:
        for f in facts:
            print(f"ok   {f}")
        print("check-proof: OK")
    return 0
