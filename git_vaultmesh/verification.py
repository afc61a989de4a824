"""The verification engine behind `verify`, `pull` and `doctor`: fail closed, one stable code per failure.

Every rule reports a Check; nothing is skipped because its input is missing — a missing input is itself a
failure with its own code. The engine reads the whole log once (one `git log`, one batch of blobs) and then
judges each entry by the policy in force at its position.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from . import history, ledger, merkle
from .entry import Entry, hash_file, parse_line, seq_of_path
from .errors import CODES, VaultMeshError
from .git import Repo, log_chain
from .policy import Policy, check_signatures, signing_rule

HINTS: dict[str, str] = {
    "VM-LOG-NOT-APPEND-ONLY": "restore refs/vaultmesh/log from a replica (refs/vaultmesh/remotes/*) or a peer",
    "VM-LOG-GAP": "restore refs/vaultmesh/log from a replica; entries are never removed",
    "VM-LOG-ROLLBACK": "someone rewound the ledger; fetch it again from a trusted replica",
    "VM-LOG-FORKED": "this is not the ledger verified here before; compare with a trusted replica",
    "VM-TRUST-ROOT-MISMATCH": "the log was replaced by one with another genesis; do not trust it",
    "VM-CHECKPOINT-MISMATCH": "the checkpoint does not commit to these entries: the log was edited",
    "VM-CHECKPOINT-SIG": "checkpoints are signed by a policy signer at every append; this one was not",
    "VM-NOTES-MISMATCH": "run `git vaultmesh doctor --repair` to rebuild notes from the log",
    "VM-SIG-MISSING": "re-record the receipt with a signing key",
    "VM-SIG-INVALID": "the entry or its signature was altered after signing",
    "VM-SIG-UNPINNED": "only keys pinned in the policy count; add the signer with `policy add-signer`",
    "VM-SIG-NOT-AUTHORIZED": "ask the policy signers to extend the signer's types",
    "VM-SIG-PENDING": "collect the missing signatures with `git vaultmesh cosign`",
    "VM-TAG-MOVED": "the tag was moved after it was recorded; restore it to the recorded object",
    "VM-TAG-MISSING": "the recorded tag was deleted; fetch tags (git fetch --tags) or restore it",
    "VM-HISTORY-MISMATCH": "the history under the tag was rewritten after recording",
    "VM-ARTIFACT-MISMATCH": "the artifact is not the file that was released",
    "VM-TSA-PENDING": "run `git vaultmesh timestamp --pending` once the TSA is reachable",
}


@dataclass
class Check:
    check: str
    ok: bool
    code: str | None
    detail: str
    hint: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {"check": self.check, "ok": self.ok, "code": self.code, "detail": self.detail, "hint": self.hint}


@dataclass
class Report:
    trust: str = "tofu"
    checks: list[Check] = field(default_factory=list)
    allowed: list[str] = field(default_factory=list)
    log_id: str | None = None
    size: int = 0
    root: bytes = b""

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks) and bool(self.checks)

    def passed(self, check: str, detail: str) -> None:
        self.checks.append(Check(check, True, None, detail, None))

    def failed(self, check: str, code: str, detail: str, hint: str | None = None) -> None:
        assert code in CODES, code
        self.checks.append(Check(check, False, code, detail, hint or HINTS.get(code)))

    def error(self, check: str, exc: VaultMeshError) -> None:
        self.failed(check, exc.code, exc.cause, exc.hint)

    def codes(self) -> list[str]:
        return [c.code for c in self.checks if c.code]

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"ok": self.ok, "trust": self.trust, "checks": [c.as_json() for c in self.checks]}
        if self.allowed:
            out["allowed"] = self.allowed
        return out


@dataclass
class Options:
    target: str | None = None
    all: bool = False
    artifacts: Sequence[str] = ()
    trust_root: str | None = None
    allow: frozenset[str] = frozenset()
    remember: bool = True  # store the verified checkpoint for rollback detection
    log_ref: str = ledger.REF_LOG  # pull verifies a fetched copy before adopting it
    subjects: bool = True  # tags, history, tree digests, artifacts (pull checks the log alone)


@dataclass
class Loaded:
    """The log read once: raw lines, parsed entries (None where unparseable), leaf hashes."""

    head: str
    lines: list[bytes]
    entries: list[Entry | None]
    leaves: list[bytes]


def _where(seq: int, e: Entry | None) -> str:
    return f"entry #{seq}" + (f" ({e.id[:12]}, {e.type})" if e is not None else "")


class Verification:
    def __init__(self, repo: Repo, opts: Options) -> None:
        self.repo = repo
        self.opts = opts
        self.report = Report()
        self.policies: list[Policy | None] = []  # policy in force for entry i (judged by what precedes it)
        self.final_policy: Policy | None = None
        self._verifier: Any = None
        self._scope_all = opts.all or opts.target is None
        self._by_id: dict[str, int] = {}
        self._signers_of: dict[int, set[str]] = {}
        self._chain_checkpoints: list[tuple[str, int, str | None, str | None]] = []
        self._direct: set[int] = set()  # entries naming the target itself (not its base chain or cosigns)
        self._replaced: dict[str, str] | None = None

    # --- entry point -------------------------------------------------------------------------------
    def run(self) -> Report:
        r = self.report
        head = self.repo.ref_oid(self.opts.log_ref)
        if head is None:
            r.failed("log.present", "VM-NOT-INITIALIZED", f"{self.opts.log_ref} is absent",
                     "run `git vaultmesh init`, or fetch the ledger refs from a peer")
            return r
        try:
            kind = self.repo.read_object(head)[0]
        except KeyError:
            kind = "missing object"
        if kind != "commit":
            r.failed("log.read", "VM-LOG-CORRUPT",
                     f"{self.opts.log_ref} points at a {kind} ({head}), not a commit",
                     "restore refs/vaultmesh/log from a replica (refs/vaultmesh/remotes/*) or a peer")
            return r
        try:
            loaded = self._load(head)
        except VaultMeshError as exc:
            r.error("log.read", exc)
            return r
        try:
            self._check_chain(loaded)
            self._check_entries(loaded)
            targets = self._targets(loaded)
            if targets is not None and self.opts.subjects:
                self._check_subjects(loaded, targets)
                self._check_notes(loaded, targets)
            if self.opts.remember:
                self._check_rollback(loaded)
        except VaultMeshError as exc:  # e.g. git log fails on a missing log commit: still a coded check
            r.error("log.read", exc)
        finally:
            if self._verifier is not None:
                self._verifier.close()
        if r.ok and self.opts.remember and r.log_id:
            ledger.save_verified(self.repo, r.log_id, len(loaded.lines), merkle.root_from_leaf_hashes(loaded.leaves))
        return r

    # --- loading -------------------------------------------------------------------------------------
    def _load(self, head: str) -> Loaded:
        try:
            items = ledger.entry_items(self.repo, head)
        except VaultMeshError as exc:
            if exc.code != "VM-LOG-GAP":
                raise
            self.report.error("log.layout", exc)
            items = []
            for it in self.repo.ls_tree(head, "entries"):
                seq = seq_of_path(it.path)
                if seq is not None:
                    items.append((seq, it.path, it.oid))
            items.sort()
        try:
            blobs = self.repo.read_blobs([oid for _, _, oid in items])
        except (KeyError, ValueError) as exc:  # ValueError: cat-file died mid-stream on a corrupt object
            what = f"entry blob {exc} is missing" if isinstance(exc, KeyError) else "an entry blob is corrupt"
            raise VaultMeshError("VM-LOG-CORRUPT", f"{what} in the object store",
                                 "restore the ledger objects from a replica; run `git fsck`") from None
        lines: list[bytes] = []
        entries: list[Entry | None] = []
        for (seq, _, _), blob in zip(items, blobs):
            where = f"entry #{seq}"
            try:
                line = ledger.split_blob(blob, where)
            except VaultMeshError as exc:
                self.report.error(f"entry.{seq}.format", exc)
                line = blob
                lines.append(line)
                entries.append(None)
                continue
            lines.append(line)
            try:
                entries.append(parse_line(line, where))
            except VaultMeshError as exc:
                self.report.error(f"entry.{seq}.format", exc)
                entries.append(None)
        return Loaded(head, lines, entries, [merkle.leaf_hash(x) for x in lines])

    # --- the chain of log commits --------------------------------------------------------------------
    def _check_chain(self, loaded: Loaded) -> None:
        r = self.report
        try:
            chain = log_chain(self.repo, loaded.head)
        except VaultMeshError as exc:  # git log stops at a missing or corrupt log commit
            raise VaultMeshError("VM-LOG-CORRUPT", f"the chain of log commits cannot be read: {exc.cause}",
                                 "restore refs/vaultmesh/log from a replica; run `git fsck`") from None
        size = 0
        ok = True
        checkpoints: list[tuple[str, int, str | None, str | None]] = []
        cp_oid = sig_oid = None
        for commit in chain:
            if len(commit.parents) > 1:
                r.failed("log.append-only", "VM-LOG-NOT-APPEND-ONLY",
                         f"log commit {commit.oid[:12]} is a merge; the log is a single chain")
                ok = False
            added = []
            for ch in commit.changes:
                if ch.path == ledger.CHECKPOINT:
                    cp_oid = ch.new_oid if ch.status != "D" else None
                elif ch.path == ledger.CHECKPOINT_SIG:
                    sig_oid = ch.new_oid if ch.status != "D" else None
                elif ch.path.startswith("entries/"):
                    seq = seq_of_path(ch.path)
                    if ch.status != "A" or seq is None:
                        r.failed("log.append-only", "VM-LOG-NOT-APPEND-ONLY",
                                 f"log commit {commit.oid[:12]} {_verb(ch.status)} {ch.path}: "
                                 "an append may only add entries")
                        ok = False
                    else:
                        added.append(seq)
                else:
                    r.failed("log.layout", "VM-LOG-CORRUPT", f"log commit {commit.oid[:12]} adds {ch.path!r}",
                             "the log tree holds only entries/, checkpoint and checkpoint.sig")
                    ok = False
            added.sort()
            if added and added != list(range(size, size + len(added))):
                r.failed("log.append-only", "VM-LOG-NOT-APPEND-ONLY",
                         f"log commit {commit.oid[:12]} adds entries {added[0]}..{added[-1]} after size {size}")
                ok = False
            size += len(added)
            checkpoints.append((commit.oid, size, cp_oid, sig_oid))
        if ok:
            r.passed("log.append-only", f"{len(chain)} log commit(s), each only adds entries; size {size}")
        self._chain_checkpoints = checkpoints

    # --- entries, policy, signatures -----------------------------------------------------------------
    def _verifier_for(self, loaded: Loaded) -> Any:
        if self._verifier is None:
            from .signing import PinnedKey, Verifier

            # every copy of every key any policy carried: a later copy may add a revocation or new expiry,
            # and the Verifier merges them (which policy pins a key at a position is decided separately)
            keys: list[PinnedKey] = []
            for e in loaded.entries:
                if e is not None and e.type == "policy":
                    for s in e.body.get("signers", []) or []:
                        if isinstance(s, dict) and all(isinstance(s.get(k), str)
                                                       for k in ("format", "fingerprint", "public_key")):
                            keys.append(PinnedKey(s["format"], s["fingerprint"], s["public_key"]))
            self._verifier = Verifier(keys)
        return self._verifier

    def _sig_signers(self, loaded: Loaded, seq: int, e: Entry, policy: Policy, check: str,
                     in_scope: bool, auth_type: str | None = None) -> set[str] | None:
        """Distinct pinned fingerprints with valid signatures on e; None (with failures reported) if any is bad.

        `auth_type` is the type the signers must be allowed to sign: a cosign is judged by its target's type
        (a signer pinned for releases may co-sign a release without being allowed "cosign" by name)."""
        r = self.report
        typ = auth_type or e.type
        if not e.sigs:
            if in_scope:
                r.failed(check, "VM-SIG-MISSING", f"{_where(seq, e)}: no signature (absent)")
            return None
        # the per-signature rule is policy.check_signatures, the same one `policy`/`cosign` refuse with
        sigs = check_signatures(policy, typ, e, self._verifier_for(loaded))
        if in_scope:
            for code, detail in sigs.problems:
                r.failed(check, code, f"{_where(seq, e)}: {detail}")
        return None if sigs.problems else set(sigs.good)

    def _check_entries(self, loaded: Loaded) -> None:
        r = self.report
        entries = loaded.entries
        if not entries or entries[0] is None or entries[0].type != "policy":
            r.failed("log.genesis", "VM-LOG-GENESIS", "entry #0 is absent, unparseable or not a policy entry",
                     "a ledger starts with the genesis policy written by `git vaultmesh init`")
            self.policies = [None] * len(entries)
            return
        genesis = entries[0]
        log_id = str(genesis.body["log"])
        r.log_id = log_id
        try:
            policy: Policy | None = Policy.from_body(genesis.body, "genesis policy (entry #0)")
        except VaultMeshError as exc:
            r.error("log.genesis", exc)
            self.policies = [None] * len(entries)
            return
        assert policy is not None
        scope_all = self._scope_all
        g_signers = self._sig_signers(loaded, 0, genesis, policy, "log.genesis", True)
        if g_signers is not None:
            rule = signing_rule(policy, "policy").evaluate(frozenset(g_signers))
            if not rule.ok:
                r.failed("log.genesis", "VM-LOG-GENESIS", f"genesis policy is self-signed by {rule.detail}")
            else:
                r.passed("log.genesis", f"genesis policy signed by {', '.join(rule.present)}")
        trust_root = self.opts.trust_root or self.repo.config_get("vaultmesh.trustRoot")
        if trust_root:
            r.trust = "pinned"
            if trust_root.upper() not in {f.upper() for f in (g_signers or set())} and not (
                    trust_root.startswith("SHA256:") and trust_root in (g_signers or set())):
                r.failed("log.trust-root", "VM-TRUST-ROOT-MISMATCH",
                         f"genesis signed by {', '.join(sorted(g_signers or [])) or 'no valid signer'}; "
                         f"pinned trust root is {trust_root}")
            else:
                r.passed("log.trust-root", f"genesis signer {trust_root} is the pinned trust root")
        else:
            r.trust = "tofu"
            r.passed("log.trust-root", "trusted on first use: no --trust-root and no vaultmesh.trustRoot; "
                     f"genesis signer(s) {', '.join(sorted(g_signers or []))} accepted without a pin")
        self.policies = [policy]
        digests: dict[str, int] = {digest: 0 for digest in [genesis.body_digest]}
        releases: dict[str, int] = {}
        signers_of: dict[int, set[str]] = {0: g_signers or set()}
        by_digest_pos: dict[str, int] = {genesis.body_digest: 0}
        by_id_pos: dict[str, int] = {genesis.id: 0}
        self._by_id = by_id_pos
        self._signers_of = signers_of
        sig_fail = False
        for seq in range(1, len(entries)):
            e = entries[seq]
            assert policy is not None
            self.policies.append(policy)
            if e is None:
                continue
            where = _where(seq, e)
            if e.body.get("log") != log_id:
                r.failed("entry.log", "VM-ENTRY-WRONG-LOG",
                         f"{where} names log {e.body.get('log')}, this log is {log_id} (replayed entry)")
                continue
            if e.body_digest in digests:
                r.failed("entry.unique", "VM-ENTRY-DUPLICATE",
                         f"{where} repeats the statement of entry #{digests[e.body_digest]} (same body digest)")
                continue
            digests[e.body_digest] = seq
            by_digest_pos[e.body_digest] = seq
            by_id_pos[e.id] = seq
            if e.type == "release" and e.subject_ref:
                if e.subject_ref in releases:
                    r.failed("entry.unique", "VM-ENTRY-DUPLICATE",
                             f"{where}: a second release for {e.subject_ref} (first: entry #{releases[e.subject_ref]})")
                    continue
                releases[e.subject_ref] = seq
            in_scope = scope_all or e.type == "policy" or seq in self._scoped_positions(loaded)
            auth_type = None
            if e.type == "cosign":
                tpos = by_digest_pos.get(str(e.body.get("entry")))
                tgt = entries[tpos] if tpos is not None else None
                auth_type = tgt.type if tgt is not None else None
            good = self._sig_signers(loaded, seq, e, policy, "entry.signatures", in_scope, auth_type)
            if good is None:
                sig_fail = sig_fail or in_scope
                if e.type == "policy":
                    r.failed("policy.authorized", "VM-POLICY-UNAUTHORIZED",
                             f"{where}: policy change not adopted: a signature on it is not a valid "
                             "signature by a signer of the policy in force. Later entries are judged by the "
                             "previous policy",
                             "have the current policy's signers sign the change before it is appended")
                continue
            signers_of[seq] = good
            if e.type == "policy":
                rule = signing_rule(policy, "policy").evaluate(frozenset(good))
                try:
                    new_policy = Policy.from_body(e.body, where)
                except VaultMeshError as exc:
                    r.error("policy.valid", exc)
                    continue
                if not rule.ok:
                    r.failed("policy.authorized", "VM-POLICY-UNAUTHORIZED",
                             f"{where}: policy change signed by {', '.join(rule.present) or 'nobody pinned'}; "
                             f"needs {rule.detail}; missing: {', '.join(rule.missing)}. Later entries are "
                             "judged by the previous policy",
                             "have the current policy's signers co-sign the change before it is appended")
                    continue
                policy = new_policy
            elif e.type == "cosign":
                target = by_digest_pos.get(str(e.body.get("entry")))
                if target is None:
                    r.failed("entry.refs", "VM-ENTRY-REF-INVALID",
                             f"{where} co-signs body digest {e.body.get('entry')}, which is no earlier entry")
                    continue
                target_policy = self.policies[target]
                assert target_policy is not None
                # a cosigner counts only if pinned both when the entry was made and when it co-signs
                signers_of.setdefault(target, set()).update(
                    f for f in good if target_policy.signer(f) is not None)
        self.final_policy = policy
        if not sig_fail and not any(c.check == "entry.signatures" and not c.ok for c in r.checks):
            r.passed("entry.signatures", "every signature in scope is valid and pinned by the policy in force")
        self._check_thresholds(loaded)
        self._check_tokens(loaded)
        self._check_checkpoints(loaded)

    def _scoped_positions(self, loaded: Loaded) -> set[int]:
        if not hasattr(self, "_scope_cache"):
            target = self.opts.target
            positions: set[int] = set()
            if target is not None:
                commit = self.repo.rev_parse(target, "commit")
                ref = self.repo.full_ref(target) or (f"refs/tags/{target}" if not target.startswith("refs/") else target)
                for i, e in enumerate(loaded.entries):
                    if e is not None and (e.subject_ref == ref or (commit and e.subject_commit == commit)):
                        positions.add(i)
                self._direct = set(positions)
                self._target_ref = ref
                ids = {loaded.entries[i].id for i in positions if loaded.entries[i] is not None}  # type: ignore[union-attr]
                digests = {loaded.entries[i].body_digest for i in positions if loaded.entries[i] is not None}  # type: ignore[union-attr]
                for i, e in enumerate(loaded.entries):
                    if e is not None and (e.body.get("entry") in ids or e.body.get("entry") in digests):
                        positions.add(i)
                # the base chain of targeted releases is verified too (full history recompute)
                frontier = [i for i in positions if loaded.entries[i] is not None and loaded.entries[i].type == "release"]  # type: ignore[union-attr]
                id_pos = {e.id: i for i, e in enumerate(loaded.entries) if e is not None}
                while frontier:
                    i = frontier.pop()
                    e = loaded.entries[i]
                    assert e is not None
                    base = (e.body.get("history") or {}).get("base")
                    if isinstance(base, dict) and base.get("entry") in id_pos:
                        j = id_pos[base["entry"]]
                        if j not in positions:
                            positions.add(j)
                            frontier.append(j)
            self._scope_cache = positions
        return self._scope_cache

    def _check_thresholds(self, loaded: Loaded) -> None:
        r = self.report
        failures = 0
        for seq, e in enumerate(loaded.entries):
            if e is None or seq not in self._signers_of or e.type in ("cosign", "timestamp", "witness"):
                continue
            if not (self._scope_all or e.type == "policy" or seq in self._scoped_positions(loaded)):
                continue
            if e.type == "policy":
                continue  # judged when adopted
            policy = self.policies[seq]
            assert policy is not None
            rule = signing_rule(policy, e.type).evaluate(frozenset(self._signers_of[seq]))
            if not rule.ok:
                failures += 1
                if "pending" in self.opts.allow:
                    r.passed("entry.threshold", f"{_where(seq, e)}: pending signatures ({rule.detail}) — "
                             "accepted by --allow-pending")
                else:
                    r.failed("entry.threshold", "VM-SIG-PENDING",
                             f"{_where(seq, e)}: pending signatures: {rule.detail}; present: "
                             f"{', '.join(rule.present) or 'none'}; missing: {', '.join(rule.missing)}")
        if failures == 0:
            r.passed("entry.threshold", "every entry in scope meets its signing threshold")

    def _check_tokens(self, loaded: Loaded) -> None:
        """RFC 3161 tokens (rfc3161/timestamping.py has the rules): every token of a timestamp entry in scope must verify
        (its own code otherwise, even when enough others do), and every entry in scope needs as many distinct
        policy TSAs with a valid token as its policy requires (VM-TSA-PENDING, or --allow-pending)."""
        r = self.report
        entries = loaded.entries
        requires = any(p is not None and p.tokens_required for p in self.policies)
        if not requires and not any(e is not None and e.type == "timestamp" for e in entries):
            return
        from .rfc3161.timestamping import TokenBook, verification_now

        now = verification_now()
        if os.environ.get("VAULTMESH_NOW"):
            r.passed("tokens.time", f"tokens judged as of {now:%Y-%m-%dT%H:%M:%SZ} (VAULTMESH_NOW), not the clock")
        book = TokenBook(loaded.lines, entries, self.policies, str(r.log_id), now=now,
                         usable=lambda s: s in self._signers_of)

        def in_scope(seq: int) -> bool:
            e = entries[seq]
            return self._scope_all or (e is not None and e.type == "policy") or seq in self._scoped_positions(loaded)

        bad = pending = counted = 0
        for seq in sorted(book.stamps):
            if not in_scope(seq):
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
        for seq, e in enumerate(entries):
            if e is None or not in_scope(seq):
                continue
            p = book.pending(seq)
            if p is None:
                continue
            pending += 1
            detail = (f"{_where(seq, e)}: pending timestamp: {len(p.have)} of required {p.need} token(s) from "
                      f"distinct policy TSAs; valid: {', '.join(p.have) or 'none'}; "
                      f"missing: {', '.join(p.missing) or 'none'}")
            if "pending" in self.opts.allow:
                r.passed("entry.tokens", f"{detail} — accepted by --allow-pending")
            else:
                r.failed("entry.tokens", "VM-TSA-PENDING", detail)
        if bad == 0 and pending == 0:
            r.passed("entry.tokens", f"{counted} timestamp token(s) in scope verify; every entry in scope has the "
                     "tokens its policy requires")

    def _check_checkpoints(self, loaded: Loaded) -> None:
        """Each log commit's checkpoint commits to exactly the entries up to its size, signed by a signer."""
        r = self.report
        cps = self._chain_checkpoints
        if not cps:
            r.failed("log.checkpoint", "VM-CHECKPOINT-MISSING", "no log commit carries a checkpoint")
            return
        oids = [c for _, _, c, _ in cps if c] + [s for _, _, _, s in cps if s]
        try:
            blobs = dict(zip(oids, self.repo.read_blobs(oids)))
        except (KeyError, ValueError) as exc:  # ValueError: cat-file died mid-stream on a corrupt object
            r.failed("log.checkpoint", "VM-LOG-CORRUPT", f"checkpoint blob {exc} is missing or corrupt")
            return
        rng = merkle.CompactRange.from_leaf_hashes([])
        leaves = loaded.leaves
        bad = 0
        last = len(cps) - 1
        for idx, (commit, size, cp_oid, sig_oid) in enumerate(cps):
            if size > len(leaves):
                size = len(leaves)
            rng.extend(leaves[rng.size:size])
            if cp_oid is None or sig_oid is None:
                r.failed("log.checkpoint", "VM-CHECKPOINT-MISSING",
                         f"log commit {commit[:12]}: checkpoint{' signature' if cp_oid else ''} absent")
                bad += 1
                continue
            try:
                cp = ledger.parse_checkpoint(blobs[cp_oid], f"checkpoint of {commit[:12]}")
            except VaultMeshError as exc:
                r.error("log.checkpoint", exc)
                bad += 1
                continue
            if cp.size != size or cp.root != rng.root() or cp.log_id != r.log_id:
                r.failed("log.checkpoint", "VM-CHECKPOINT-MISMATCH",
                         f"log commit {commit[:12]}: checkpoint says log {cp.log_id[:12]} size {cp.size} root "
                         f"{cp.root.hex()[:16]}…, the entries give log {str(r.log_id)[:12]} size {size} root "
                         f"{rng.root().hex()[:16]}…")
                bad += 1
                continue
            if idx == last or self._scope_all:
                # the appender signs: pinned by the policy in force before its entries or after them (an
                # applied policy change may add the appender, or remove them while they still sign this append)
                prev = min(cps[idx - 1][1], len(leaves)) if idx else 0
                policies = [self.policies[n] if n < len(self.policies) else self.final_policy for n in (prev, size)]
                if not self._checkpoint_sig_ok(loaded, commit, blobs[cp_oid], blobs[sig_oid], policies):
                    bad += 1
        if bad == 0:
            r.passed("log.checkpoint", f"{len(cps)} checkpoint(s) match the entries; head checkpoint signed; "
                     f"size {len(leaves)} root {merkle.root_from_leaf_hashes(leaves).hex()}")

    def _checkpoint_sig_ok(self, loaded: Loaded, commit: str, cp: bytes, sig: bytes,
                           policies: Sequence[Policy | None]) -> bool:
        r = self.report
        sig_text = sig.decode(errors="replace")
        fmt = "ssh" if "BEGIN SSH SIGNATURE" in sig_text else "openpgp"
        res = self._verifier_for(loaded).verify(fmt, sig_text, cp, armored=True)
        if res.status != "valid":
            r.failed("log.checkpoint", "VM-CHECKPOINT-SIG", f"log commit {commit[:12]}: checkpoint signature "
                     f"{'absent' if not sig.strip() else res.status}: {res.detail}")
            return False
        if not any(p is not None and p.signer(res.fingerprint) is not None for p in policies):
            r.failed("log.checkpoint", "VM-CHECKPOINT-SIG",
                     f"log commit {commit[:12]}: checkpoint signed by {res.fingerprint}, not a policy signer")
            return False
        return True

    # --- what REV names ----------------------------------------------------------------------------
    def _targets(self, loaded: Loaded) -> list[int] | None:
        r = self.report
        if self.opts.all or self.opts.target is None:
            return [i for i, e in enumerate(loaded.entries) if e is not None]
        positions = sorted(self._scoped_positions(loaded))
        direct = [i for i in positions if loaded.entries[i] is not None
                  and loaded.entries[i].type not in ("cosign", "timestamp")]  # type: ignore[union-attr]
        if not direct:
            if self.repo.rev_parse(self.opts.target) is None:
                r.failed("subject.recorded", "VM-BAD-REV",
                         f"{self.opts.target!r} names no object here and no receipt names it",
                         "check the tag name; fetch tags with `git fetch --tags`")
            else:
                r.failed("subject.recorded", "VM-NOT-RECORDED", f"no receipt in the ledger names {self.opts.target}",
                         f"record it: git vaultmesh record {self.opts.target}")
            return None
        ref = getattr(self, "_target_ref", None)
        if ref and ref.startswith("refs/tags/") and not any(
                loaded.entries[i].type == "release" and loaded.entries[i].subject_ref == ref  # type: ignore[union-attr]
                for i in direct):
            # a tag is a release claim: receipts that merely name its commit (a deploy) do not vouch for it
            r.failed("subject.recorded", "VM-NOT-RECORDED",
                     f"no release receipt names {ref} (receipts naming its commit: "
                     f"{', '.join('#' + str(i) for i in direct)})",
                     f"record the release: git vaultmesh record {self.opts.target}")
            return None
        r.passed("subject.recorded", f"{self.opts.target}: {len(direct)} receipt(s) "
                 f"({', '.join('#' + str(i) for i in direct)})")
        return positions

    def _check_subjects(self, loaded: Loaded, positions: list[int]) -> None:
        r = self.report
        from .evtag import tree_digest

        artifacts = list(self.opts.artifacts)
        art_digests: dict[str, list[tuple[str, str]]] = {}  # name -> each (sha256, path) given with that name
        for path in artifacts:
            try:
                art_digests.setdefault(os.path.basename(path), []).append((hash_file(path)[0], path))
            except VaultMeshError as exc:
                r.error("artifact", exc)
        matched: set[str] = set()
        id_pos = self._by_id
        for seq in positions:
            e = loaded.entries[seq]
            if e is None or e.type not in ("release", "deploy"):
                continue
            where = _where(seq, e)
            subj = e.body.get("subject", {})
            commit = subj.get("commit")
            ref = subj.get("ref")
            if ref and e.type == "release":
                now = self.repo.ref_oid(ref)
                expect = subj.get("tag") or commit
                if now is None:
                    r.failed("release.tag", "VM-TAG-MISSING", f"{where}: {ref} is absent (recorded at {expect})")
                elif now != expect:
                    r.failed("release.tag", "VM-TAG-MOVED", f"{where}: {ref} is now {now}, recorded {expect}")
                else:
                    r.passed("release.tag", f"{where}: {ref} still points at {expect[:12]}")
            if not commit or not self.repo.has_object(commit):
                r.failed("subject.present", "VM-SUBJECT-MISSING",
                         f"{where}: recorded commit {commit} is not in this repository",
                         "fetch refs/vaultmesh/keep/* and tags from a replica")
                continue
            tree = self.repo.rev_parse(commit, "tree")
            if tree != subj.get("tree"):
                r.failed("subject.tree", "VM-HISTORY-MISMATCH", f"{where}: commit {commit[:12]} has tree {tree}, "
                         f"recorded {subj.get('tree')}")
            if e.type == "release":
                self._check_history(loaded, seq, e, id_pos)
                try:
                    partial = e.body.get("submodules") == "not-included"
                    td = tree_digest(self.repo, commit, require_submodules=not partial,
                                     include_submodules=not partial)
                    if td.digest != e.body.get("tree_digest"):
                        r.failed("release.tree-digest", "VM-TREE-DIGEST-MISMATCH",
                                 f"{where}: Git-EVTag-v0-SHA512 is {td.digest[:16]}…, recorded "
                                 f"{str(e.body.get('tree_digest'))[:16]}…")
                    else:
                        r.passed("release.tree-digest", f"{where}: Git-EVTag-v0-SHA512 matches")
                except VaultMeshError as exc:
                    r.error("release.tree-digest", exc)
            self._check_replaced(where, e, commit)
            if not (self._scope_all or seq in self._direct):
                continue  # a base release is in scope for its history, not for the artifacts given for REV
            for art in e.body.get("artifacts", []) or []:
                name = art["name"]
                for got, path in art_digests.get(name, []):
                    matched.add(name)
                    if got != art["sha256"]:
                        r.failed("artifact", "VM-ARTIFACT-MISMATCH",
                                 f"{where}: {path} has sha256 {got}, recorded {art['sha256']}")
                    else:
                        r.passed("artifact", f"{where}: {path} matches its recorded sha256")
        for name, given in art_digests.items():
            if name in matched:
                continue
            for _, path in given:
                r.failed("artifact", "VM-ARTIFACT-NOT-RECORDED",
                         f"{path}: no receipt in scope names an artifact {name!r}",
                         "pass the artifact that was recorded, or record this one")

    def _check_replaced(self, where: str, e: Entry, commit: str) -> None:
        """git.py hashes the real objects (--no-replace-objects), but checkout, log and archive honour
        refs/replace/*: a replacement reachable from a recorded subject means git shows other content than
        was recorded, so it fails (fail-closed) instead of verifying objects nobody sees."""
        r = self.report
        if self._replaced is None:
            base = os.environ.get("GIT_REPLACE_REF_BASE") or "refs/replace/"
            base = base if base.endswith("/") else base + "/"
            self._replaced = {name[len(base):]: oid for name, oid in self.repo.refs(base).items()}
        if not self._replaced:
            return
        reachable = set(self.repo.run("rev-list", "--objects", "--no-object-names", commit).decode().split())
        tag = (e.body.get("subject") or {}).get("tag")
        if tag:
            reachable.add(tag)  # a replaced tag object makes `git checkout TAG` peel to another commit
        for oid in sorted(self._replaced.keys() & reachable):
            kind = self.repo.read_object(oid)[0]
            code = {"commit": "VM-HISTORY-MISMATCH", "tag": "VM-TAG-MOVED"}.get(kind, "VM-TREE-DIGEST-MISMATCH")
            r.failed("subject.replaced", code,
                     f"{where}: a replace ref substitutes {self._replaced[oid][:12]} for {kind} {oid[:12]} "
                     f"of the recorded {e.type}: git checkout, log and archive show other content than was "
                     "recorded",
                     f"remove it (git replace -d {oid}) unless you made it; verify hashes the real objects")

    def _check_history(self, loaded: Loaded, seq: int, e: Entry, id_pos: dict[str, int]) -> None:
        r = self.report
        where = _where(seq, e)
        h = e.body.get("history")
        commit = str(e.subject_commit)
        try:
            if not isinstance(h, dict) or h.get("alg") != history.ALG or h.get("order") != history.ORDER:
                raise ValueError("history must name alg rfc6962-sha256 and order vaultmesh-topo-v1")
            size, root = int(h["size"]), bytes.fromhex(h["root"])
            frontier = merkle.CompactRange.from_frontier(size, [bytes.fromhex(x) for x in h["frontier"]])
            base_info = h.get("base")
            consistency = [bytes.fromhex(x) for x in h.get("consistency", [])]
        except (ValueError, KeyError, TypeError) as exc:
            r.failed("release.history", "VM-ENTRY-MALFORMED", f"{where}: history field malformed ({exc})")
            return
        base: history.Base | None = None
        if base_info is not None:
            bpos = id_pos.get(str(base_info.get("entry")))
            be = loaded.entries[bpos] if bpos is not None else None
            if bpos is None or bpos >= seq or be is None or be.type != "release":
                r.failed("release.base", "VM-HISTORY-BASE",
                         f"{where}: base {str(base_info.get('entry'))[:12]} is not an earlier release in this log")
                return
            bh = be.body["history"]
            try:
                bfront = merkle.CompactRange.from_frontier(int(bh["size"]), [bytes.fromhex(x) for x in bh["frontier"]])
            except (ValueError, KeyError, TypeError):
                r.failed("release.base", "VM-HISTORY-BASE", f"{where}: base entry #{bpos} has a malformed history")
                return
            if (int(base_info.get("size", -1)) != int(bh["size"]) or base_info.get("root") != bh["root"]
                    or bfront.root().hex() != bh["root"]):
                r.failed("release.base", "VM-HISTORY-BASE",
                         f"{where}: base size/root differ from base entry #{bpos}'s own history")
                return
            bcommit = str(be.subject_commit)
            if not self.repo.has_object(bcommit) or not self.repo.is_ancestor(bcommit, commit):
                r.failed("release.base", "VM-HISTORY-BASE",
                         f"{where}: base release #{bpos} (commit {bcommit[:12]}) is no longer an ancestor of "
                         f"{commit[:12]}: history was rewritten")
                return
            if not merkle.verify_consistency(int(bh["size"]), size, bytes.fromhex(bh["root"]), root, consistency):
                r.failed("release.base", "VM-HISTORY-BASE",
                         f"{where}: consistency proof from base #{bpos} (size {bh['size']}) to size {size} fails")
                return
            base = history.Base(be.id, bcommit, int(bh["size"]), bytes.fromhex(bh["root"]), bfront)
        try:
            got = history.compute(self.repo, commit, base)
        except VaultMeshError as exc:
            r.error("release.history", exc)
            return
        if got.root != root or got.size != size or got.frontier.hashes != frontier.hashes:
            r.failed("release.history", "VM-HISTORY-MISMATCH",
                     f"{where}: history recomputed now has {got.size} commits, root {got.root.hex()[:16]}…; "
                     f"recorded {size} commits, root {root.hex()[:16]}…")
        else:
            r.passed("release.history", f"{where}: history of {size} commits recomputed, root matches")

    # --- notes ---------------------------------------------------------------------------------------
    def _check_notes(self, loaded: Loaded, positions: list[int]) -> None:
        r = self.report
        entries = [e for e in loaded.entries if e is not None]
        expected = ledger.notes_for(entries)
        notes_head = self.repo.ref_oid(ledger.REF_NOTES)
        newer = self._log_of_newer_notes(loaded.head, notes_head)
        if newer is not None:  # an append landed while we verified: judge the notes by the log they derive from
            expected = ledger.notes_for(newer)
        subjects = {loaded.entries[i].subject_commit for i in positions  # type: ignore[union-attr]
                    if loaded.entries[i] is not None and loaded.entries[i].subject_commit}  # type: ignore[union-attr]
        actual: dict[str, str] = {}
        doubled: set[str] = set()  # notes at two paths (flat and fanned out): git shows both, concatenated
        if notes_head is not None:
            try:
                for it in self.repo.ls_tree(notes_head):
                    key = it.path.replace("/", "")
                    if key in actual:
                        doubled.add(key)
                    actual[key] = it.oid
            except VaultMeshError as exc:
                r.failed("notes", "VM-NOTES-MISMATCH",
                         f"{ledger.REF_NOTES} ({notes_head[:12]}) is unreadable: {exc.cause}")
                return
        if self._scope_all:
            subjects |= set(actual) | set(expected)
        wrong = []
        oids = {s: actual[s] for s in subjects if s in actual}
        blobs = dict(zip(oids, self.repo.read_blobs(list(oids.values()))))
        for s in sorted(x for x in subjects if x):
            want = expected.get(s, b"")
            have = blobs.get(s, b"")
            if s in doubled:
                wrong.append(f"{s[:12]} (two notes, at the flat and the fan-out path)")
            elif want != have:
                wrong.append(f"{s[:12]} ({'absent' if s not in actual else 'differs'})")
        if wrong:
            r.failed("notes", "VM-NOTES-MISMATCH",
                     f"refs/notes/vaultmesh disagrees with the log for {len(wrong)} commit(s): {', '.join(wrong[:5])}")
        else:
            r.passed("notes", f"notes agree with the log for {len(subjects)} commit(s)")

    def _log_of_newer_notes(self, head: str, notes_head: str | None) -> list[Entry] | None:
        """The entries of the log `notes_head` says it was derived from, when that log is not the one verified
        but extends it and is still on the log ref (another process appended meanwhile: both refs moved in one
        transaction after we read the log). None otherwise: the notes are then judged against the verified log."""
        source = ledger.notes_source(self.repo, notes_head) if self.opts.log_ref == ledger.REF_LOG else None
        if source is None or source == head:
            return None
        now = self.repo.ref_oid(ledger.REF_LOG)
        if now is None or not self.repo.is_ancestor(head, source) or not self.repo.is_ancestor(source, now):
            return None
        try:
            return ledger.read_entries(self.repo, source)
        except VaultMeshError:
            return None

    # --- rollback / replacement --------------------------------------------------------------------
    def _check_rollback(self, loaded: Loaded) -> None:
        r = self.report
        stored = ledger.load_verified(self.repo)
        if not stored or not r.log_id:
            r.passed("log.rollback", "no checkpoint verified here before; this one will be remembered")
            return
        size = len(loaded.leaves)
        if stored.get("log") != r.log_id:
            r.failed("log.rollback", "VM-LOG-FORKED",
                     f"log id is {r.log_id}, the log verified here before was {stored.get('log')} (replaced)")
        elif size < int(stored.get("size", 0)):
            r.failed("log.rollback", "VM-LOG-ROLLBACK",
                     f"log has {size} entries, {stored.get('size')} were verified here before (rewound)")
        elif merkle.root_from_leaf_hashes(loaded.leaves[: int(stored["size"])]).hex() != stored.get("root"):
            r.failed("log.rollback", "VM-LOG-FORKED",
                     f"the first {stored['size']} entries no longer have the root verified here before "
                     f"({str(stored.get('root'))[:16]}…): the log was replaced")
        else:
            r.passed("log.rollback", f"consistent with the checkpoint verified here before (size {stored['size']})")


def _verb(status: str) -> str:
    return {"M": "modifies", "D": "deletes", "T": "changes the type of", "A": "adds"}.get(status, "changes")


def verify(repo: Repo, opts: Options) -> Report:
    return Verification(repo, opts).run()


def summarize(report: Report) -> Iterable[str]:
    for c in report.checks:
        mark = "ok  " if c.ok else "FAIL"
        yield f"{mark} {c.check}: {c.detail}" + (f" [{c.code}]" if c.code else "")
        if not c.ok and c.hint:
            yield f"     hint: {c.hint}"
