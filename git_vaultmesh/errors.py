"""The one error type of git-vaultmesh, and the registry of every stable error code.

Every failure a user can meet carries a code (stable, documented in docs/errors.md), a cause (what was
found, against what was required) and a hint (what to do next). `CODES` is the single source of codes, their
meanings and their default hints: docs/errors.md is generated from it and a test keeps the two identical.
"""

from __future__ import annotations

from typing import NamedTuple


class Code(NamedTuple):
    meaning: str  # what the code says happened, one line
    hint: str  # what to do next, when the raiser has nothing more specific to say


# Every code, declared once. Keep sorted by area; never reuse or rename a code once released.
CODES: dict[str, Code] = {
    # --- usage and environment -------------------------------------------------------------------
    "VM-USAGE": Code("the command line is invalid (unknown option, missing argument, conflicting flags)",
         "see `git vaultmesh help VERB` for the verb's arguments"),
    "VM-NOT-A-REPO": Code("the current directory is not inside a git repository",
         "run inside a git repository, or pass -C PATH"),
    "VM-GIT-FAILED": Code("a git command failed unexpectedly",
         "run the git command shown in the cause by hand to see git's own message"),
    "VM-IO-FAILED": Code("a local file or directory could not be written or read (disk full, read-only, no permission)",
         "free disk space or fix the permissions of that path (TMPDIR chooses where temporary files go), then run the command again"),
    "VM-TOOL-MISSING": Code("a required external program (git, gpg, gpgv, ssh-keygen) is not installed",
         "install it (git, gnupg for gpg/gpgv, openssh-client for ssh-keygen) and make sure it is on PATH"),
    "VM-TOOL-TIMEOUT": Code("an external program (gpg-agent, ssh-keygen, a TSA) did not answer in time",
         "check that gpg-agent / the TSA is responsive, or raise vaultmesh.gpgTimeout / vaultmesh.tsaTimeout"),
    "VM-CONFIG-INVALID": Code("a vaultmesh.* git config value or .vaultmesh.toml setting is invalid",
         "`git vaultmesh config check` lists every malformed setting with its file and line"),
    "VM-BAD-REV": Code("a revision, tag or ref does not name an object in this repository",
         "check the name with `git rev-parse --verify NAME`; fetch tags if it is a tag from a remote"),
    "VM-REV-AMBIGUOUS": Code("git resolves the name to more than one ref (e.g. refs/<name> before the tag); use the full refname",
         "use the full refname (refs/tags/NAME or refs/heads/NAME) or the full object id"),
    "VM-ARTIFACT-UNREADABLE": Code("an artifact file given on the command line cannot be read",
         "check the path and its permissions"),
    "VM-BAD-DIGEST": Code("a --sha256 value is not 64 lowercase hex characters",
         "give --sha256 [NAME=]HEX with the 64 lowercase hex digits `sha256sum` prints"),
    "VM-NO-SIGNING-KEY": Code("no signing key is configured (vaultmesh.signingKey / user.signingkey)",
         "git config vaultmesh.signingKey <gpg fingerprint> (or user.signingkey)"),
    "VM-SIGN-FAILED": Code("the signer (gpg or ssh-keygen) refused to produce a signature",
         "check that the key is in your keyring and gpg-agent can unlock it: `gpg --clearsign </dev/null` (or `ssh-keygen -Y sign`)"),
    "VM-SIGNER-NOT-IN-POLICY": Code("the configured signing key is not a signer in the policy in force",
         "ask a policy signer to pin your key: `git vaultmesh policy add-signer NAME --key FPR`"),
    "VM-NOT-INITIALIZED": Code("this repository has no ledger yet (refs/vaultmesh/log is absent)",
         "run `git vaultmesh init`, or fetch the ledger: `git vaultmesh pull`"),
    "VM-ALREADY-INITIALIZED": Code("init was run on a repository that already has a ledger",
         "the ledger exists; `git vaultmesh log` shows it"),
    "VM-ALREADY-RECORDED": Code("a release for this tag is already in the ledger (one release per tag)",
         "a tag is released once: tag a new version, or pass --if-missing to accept the existing receipt"),
    "VM-NOT-RECORDED": Code("the ledger holds no receipt for the requested subject",
         "record it first: `git vaultmesh record REV`"),
    "VM-RACE-LOST": Code("the ledger ref kept moving under us; the append was retried and gave up",
         "another process keeps appending; run the command again when it is done"),
    "VM-REF-LOCKED": Code("a ledger ref is locked: by another git process, or a stale *.lock left by one that crashed",
         "if no git process is running, remove the stale .lock file named in the cause (`git vaultmesh doctor` finds them)"),
    "VM-REMOTE-FAILED": Code("fetching or reading a remote's ledger failed",
         "check the remote's URL and that it holds refs/vaultmesh/log (`git ls-remote REMOTE refs/vaultmesh/*`)"),
    "VM-REMOTE-DIVERGED": Code("a remote's log does not extend the copy of it we saw last",
         "the remote's log was rewritten: do not push over it; compare both with a trusted replica"),
    "VM-PULL-SIGNER-REMOVED": Code("the remote's policy no longer trusts the key that signed our unpushed entries",
         "ask a signer of the remote's policy to re-add your key (or co-sign), then pull again; nothing changed"),
    "VM-PULL-WOULD-DROP": Code("pull would leave out our archive timestamps (their checkpoints do not survive the merge)",
         "`git vaultmesh pull --drop-archives` keeps our old log head under refs/vaultmesh/keep/; then `timestamp --archive`"),
    "VM-IMPORT-NOT-V4": Code("import-v4: the path does not exist, is not a VaultMesh v4.1 tree (no ops/receipts), or holds no receipts",
         "point import-v4 at the root of the old VaultMesh v4.1 checkout (the folder holding ops/receipts)"),
    "VM-IMPORT-MALFORMED": Code("import-v4: an old receipt cannot be read strictly (bad YAML front matter or JSON, duplicate key, not UTF-8, too large)",
         "fix or remove that receipt (nothing was imported), then run import-v4 again; --dry-run lists every verdict"),
    "VM-QUERY-INVALID": Code("a query, list or timeline argument is invalid (pattern, date, type or limit)",
         "see docs/query.md: words, \"phrases\", -word; dates YYYY-MM-DD"),
    "VM-ADR-INVALID": Code("no ADR of that number, or an ADR command that cannot apply to it",
         "`git vaultmesh list adrs` shows the ADRs"),
    "VM-PEER-UNKNOWN": Code("no federation peer of that name is configured (vaultmesh.peer.<name>.url)",
         "add it first: `git vaultmesh federate add NAME URL`"),
    "VM-PEER-UNREACHABLE": Code("a federation peer's ledger could not be fetched",
         "check the peer's URL (git config vaultmesh.peer.NAME.url) and the network, then sync again"),
    "VM-PEER-ROLLBACK": Code("a peer's log is smaller than the checkpoint of it we witnessed (rewound)",
         "the peer rewound its log; its evidence ref keeps what was seen: tell the peer's operators"),
    "VM-PEER-FORKED": Code("a peer's log does not extend the checkpoint of it we witnessed (rewritten or replaced)",
         "the peer rewrote or replaced its log; its evidence ref keeps both views: tell the peer's operators"),
    "VM-PEER-EQUIVOCATION": Code("a peer signed two different views of its log (same size, different roots)",
         "the peer showed different logs to different witnesses; keep the evidence refs and tell its operators"),
    "VM-FEDERATION-CONFLICT": Code("the merged view holds two statements about one release that disagree",
         "`git vaultmesh federate status --json` names both statements; settle which is right with the peers"),
    "VM-FILE-UNREADABLE": Code("an input file (proof bundle, certificate, key) cannot be read or parsed",
         "check the path, its permissions and its format"),
    "VM-KEY-UNSUPPORTED": Code("an attestation key is neither ECDSA P-256 nor Ed25519 (in-toto/DSSE export and VSAs)",
         "make a key with `openssl genpkey -algorithm ed25519` (or EC P-256)"),
    # --- ledger structure ------------------------------------------------------------------------
    "VM-LOG-CORRUPT": Code("a ledger object is missing or unreadable, or the log tree has an unexpected layout",
         "run `git fsck`; restore refs/vaultmesh/log from a replica (refs/vaultmesh/remotes/*) or a peer"),
    "VM-LOG-GAP": Code("the log's entry numbering has a gap: an entry was removed",
         "restore refs/vaultmesh/log from a replica; entries are never removed"),
    "VM-LOG-NOT-APPEND-ONLY": Code("a log commit changed, removed or reordered an entry its parent held",
         "restore refs/vaultmesh/log from a replica (refs/vaultmesh/remotes/*) or a peer"),
    "VM-LOG-ROLLBACK": Code("the log is smaller than the last checkpoint verified here (rewound)",
         "someone rewound the ledger; fetch it again from a trusted replica"),
    "VM-LOG-FORKED": Code("the log is not consistent with the last checkpoint verified here (replaced)",
         "this is not the ledger verified here before; compare with a trusted replica"),
    "VM-LOG-GENESIS": Code("the first entry is not a valid genesis policy entry",
         "this is not a ledger git-vaultmesh made, or its first entry was replaced: do not trust it"),
    "VM-TRUST-ROOT-MISMATCH": Code("the genesis signer is not the pinned trust root",
         "compare the pinned fingerprint (vaultmesh.trustRoot or --trust-root) with the one the project publishes; "
         "if the pin is right, the log was replaced by one with another genesis: do not trust it"),
    "VM-CHECKPOINT-MISSING": Code("a log commit has no checkpoint or no checkpoint signature",
         "every append writes a checkpoint; this commit was not made by git-vaultmesh: restore from a replica"),
    "VM-CHECKPOINT-MALFORMED": Code("the checkpoint is not a valid C2SP tlog-checkpoint body",
         "the checkpoint was edited; restore refs/vaultmesh/log from a replica"),
    "VM-CHECKPOINT-MISMATCH": Code("the checkpoint's size or root differs from the entries in the same commit",
         "the checkpoint does not commit to these entries: the log was edited; restore refs/vaultmesh/log from a "
         "replica (refs/vaultmesh/remotes/*) or a peer"),
    "VM-CHECKPOINT-SIG": Code("the checkpoint signature is missing, invalid, or not by a policy signer",
         "checkpoints are signed by a policy signer at every append; this one was not: restore refs/vaultmesh/log "
         "from a replica"),
    "VM-NOTES-MISMATCH": Code("refs/notes/vaultmesh disagrees with the log (doctor --repair rebuilds it)",
         "run `git vaultmesh doctor --repair` to rebuild notes from the log"),
    # --- entries ---------------------------------------------------------------------------------
    "VM-ENTRY-MALFORMED": Code("an entry is not canonical RFC 8785 JSON of the expected shape",
         "the entry was edited after it was appended; restore refs/vaultmesh/log from a replica"),
    "VM-ENTRY-UNKNOWN-TYPE": Code("an entry's body.type is not one this version knows",
         "upgrade git-vaultmesh if a newer version wrote the entry; otherwise the entry was forged"),
    "VM-ENTRY-WRONG-LOG": Code("an entry names another log id (replayed from another ledger)",
         "an entry was copied from another ledger; it does not count here"),
    "VM-ENTRY-DUPLICATE": Code("two entries carry the same body digest, or two releases name one tag",
         "an entry was replayed (a statement counts once); the second copy does not count"),
    "VM-ENTRY-REF-INVALID": Code("a cosign/timestamp entry names an entry that is not earlier in the log",
         "a cosign or timestamp must name an earlier entry of this log; this one was forged or reordered"),
    # --- signatures and policy ---------------------------------------------------------------------
    "VM-SIG-MISSING": Code("an entry carries no signature",
         "every appended entry is signed: this one was forged or stripped; restore refs/vaultmesh/log from a replica"),
    "VM-SIG-MALFORMED": Code("a signature is not valid base64 or not a signature packet/SSHSIG",
         "the signature was altered after signing; restore refs/vaultmesh/log from a replica"),
    "VM-SIG-INVALID": Code("a signature does not verify over the entry body",
         "the entry or its signature was altered after signing; restore refs/vaultmesh/log from a replica"),
    "VM-SIG-UNPINNED": Code("a signature verifies but its key is not a signer in the policy in force",
         "only keys pinned in the policy count; add the signer with `policy add-signer`"),
    "VM-SIG-NOT-AUTHORIZED": Code("the signer is in the policy but not for this entry type",
         "ask the policy signers to extend the signer's types"),
    "VM-SIG-KEY-EXPIRED": Code("the signing key had expired at the entry's time",
         "extend the key's expiry (gpg --quick-set-expire) and re-sign, or sign with a current key"),
    "VM-SIG-KEY-REVOKED": Code("the signing key is revoked",
         "a revoked key's signatures do not count; re-sign with a current pinned key"),
    "VM-SIG-PENDING": Code("fewer distinct pinned signers than the policy's threshold (pending signatures)",
         "collect the missing signatures with `git vaultmesh cosign`"),
    "VM-POLICY-INVALID": Code("a policy entry is malformed (unknown signer format, bad key, bad threshold)",
         "check the key, signer name and threshold given to the policy command"),
    "VM-POLICY-UNAUTHORIZED": Code("a policy change is not signed by the threshold of the policy before it",
         "collect signatures with `git vaultmesh policy sign FILE` until the policy threshold is met"),
    "VM-POLICY-STALE": Code("a staged policy proposal amends a policy that is no longer the one in force",
         "make the proposal again against the policy in force (`git vaultmesh policy show`)"),
    "VM-ALREADY-SIGNED": Code("the signer already signed or co-signed this entry or proposal",
         "one signer counts once; ask another signer to co-sign"),
    # --- releases and their subjects ---------------------------------------------------------------
    "VM-TAG-MISSING": Code("the recorded tag no longer exists",
         "the recorded tag was deleted; fetch tags (git fetch --tags) or restore it"),
    "VM-TAG-MOVED": Code("the recorded tag now points at another object",
         "the tag was moved after it was recorded; restore it to the recorded object"),
    "VM-SUBJECT-MISSING": Code("the recorded commit/tree object is no longer in the repository",
         "fetch the objects again (`git fetch --tags`) or restore them from a replica"),
    "VM-TAG-NAME-MISMATCH": Code("a tag ref points at an annotated tag object that carries another tag's name",
         "create a tag object of its own for that name (git tag -a NAME COMMIT); an old tag cannot be renamed by a ref"),
    "VM-HISTORY-MISMATCH": Code("the commit history recomputed now differs from the recorded Merkle root",
         "the history under the tag was rewritten after recording: restore the recorded commits from a replica, "
         "or tag and record a new release"),
    "VM-HISTORY-BASE": Code("the release's base is not an earlier release, not an ancestor, or not consistent",
         "the base release was rewritten or is not an ancestor; compare with a trusted replica"),
    "VM-TREE-DIGEST-MISMATCH": Code("the Git-EVTag-v0-SHA512 digest of the released tree differs from the record",
         "the released tree (or a submodule's) changed after recording; restore the recorded objects"),
    "VM-SUBMODULES-MISSING": Code("a submodule's repository is absent and --require-submodules was given",
         "`git submodule update --init --recursive`, or record without --require-submodules"),
    "VM-ARTIFACT-MISMATCH": Code("an artifact's bytes differ from the recorded SHA-256",
         "the artifact is not the file that was released: do not use it; fetch it again from the release"),
    "VM-ARTIFACT-NOT-RECORDED": Code("an artifact given to verify is not named in the receipt",
         "only artifacts named at record time can be checked; `git vaultmesh show REV` lists them"),
    # --- hooks and covenants -----------------------------------------------------------------------
    "VM-PUSH-NOT-FAST-FORWARD": Code("a push would rewind, replace or delete a ledger ref (only fast-forwards are allowed)",
         "run `git vaultmesh pull` first, then push again; never force-push ledger refs"),
    "VM-HOOK-CHAINED-FAILED": Code("the hook that was there before git-vaultmesh's, which it runs first, failed",
         "fix what the earlier hook reports (its output is above), or remove it from the chain"),
    "VM-HOOK-CONFLICT": Code("a hook cannot be installed or removed without losing a hook file that is there",
         "move the conflicting hook file aside, or set core.hooksPath, then run install again"),
    "VM-REPRO-BUILD-FAILED": Code("the release build command failed, timed out, or wrote no artifact",
         "run vaultmesh.buildCommand by hand in a clean checkout of the tag and fix it"),
    "VM-REPRO-DIFFERS": Code("two clean builds of the same release gave different artifacts (not reproducible)",
         "make the build reproducible (SOURCE_DATE_EPOCH, sorted inputs, no build paths); diffoscope shows what differs"),
    "VM-REPRO-MISMATCH": Code("a rebuilt artifact differs from the recorded digest, or a recorded artifact was not built",
         "the released artifact is not what this source builds; investigate before trusting the release"),
    "VM-REPRO-NO-DIGESTS": Code("the release records no artifact digests for a rebuild to be compared with",
         "record artifact digests with the release (`record TAG --artifact PATH`)"),
    "VM-BADGE-REFUSED": Code("a badge was asked for a covenant that did not pass in this very run",
         "a badge is written only after its covenant passed in the same run; fix the covenant first"),
    # --- proofs ------------------------------------------------------------------------------------
    "VM-PROOF-MALFORMED": Code("a proof bundle is not valid JSON of the documented schema",
         "make a new bundle with `git vaultmesh prove`; do not edit bundles by hand"),
    "VM-PROOF-INVALID": Code("a proof in the bundle does not verify",
         "the bundle was altered, or its log was rewritten: make a new bundle from a trusted clone"),
    "VM-PROOF-NO-PATH": Code("the commit is not part of the release's history",
         "the commit is not in the release; check the commit id and the release tag"),
    "VM-PROOF-VERSION": Code("the bundle is in an older format (vaultmesh-proof-v1) that this version no longer reads",
         "make a new bundle with this version: `git vaultmesh prove COMMIT --in TAG`"),
    "VM-PROOF-INCOMPLETE": Code("the bundle leaves out a policy entry its checkpoint commits to (or the checkpoint commits to none)",
         "a bundle must carry every policy entry; make a new one with `git vaultmesh prove`"),
    # --- RFC 3161 timestamps -----------------------------------------------------------------------
    "VM-TSA-PENDING": Code("an entry has fewer valid timestamp tokens than its policy requires",
         "run `git vaultmesh timestamp --pending` once the TSA is reachable"),
    "VM-TSA-EMPTY": Code("a timestamp token is empty",
         "the TSA or the network failed when the token was stored; request a new token"),
    "VM-TSA-NOT-DER": Code("a timestamp token is not DER (an HTML page, text, or garbage)",
         "the TSA URL probably serves a web page, or a proxy answered instead: check that the URL accepts application/timestamp-query POSTs, then request a new token"),
    "VM-TSA-TRUNCATED": Code("a timestamp token is truncated DER",
         "the token was cut short (interrupted transfer or storage); request a new token"),
    "VM-TSA-STATUS": Code("the TSA answered with a status other than granted",
         "check that the TSA accepts SHA-256 imprints and its default policy, or retry later"),
    "VM-TSA-IMPRINT": Code("the token's message imprint is not SHA-256 of the timestamped entry line",
         "the token was issued for other bytes: request a token over the entry's exact line"),
    "VM-TSA-OTHER-ENTRY": Code("the token's imprint belongs to another entry of the log",
         "the token was moved from another entry; fetch a token for this entry (`timestamp --pending`)"),
    "VM-TSA-NONCE": Code("the token's nonce differs from the nonce sent",
         "the response answers another request (replayed or cached): retry, bypassing proxies"),
    "VM-TSA-SIGNATURE": Code("the token's CMS signature or signed attributes do not verify",
         "the token was altered or corrupted after the TSA signed it; request a new token"),
    "VM-TSA-CHAIN": Code("the TSA signer certificate does not chain to the policy's CA certificate",
         "check that the TSA URL belongs to the TSA named in the policy, or update the policy's CA certificate for it (a signed policy change)"),
    "VM-TSA-EKU": Code("the TSA signer certificate lacks the critical timeStamping extended key usage",
         "use a TSA whose signer certificate has a critical extendedKeyUsage of exactly timeStamping (RFC 3161 section 2.3)"),
    "VM-TSA-PIN": Code("the TSA signer's SPKI does not match the pin in policy",
         "the TSA's signing key changed: confirm the new key with the TSA operator out of band, then update the pin in the policy (spki_pin_of prints it)"),
    "VM-TSA-CERT-VALIDITY": Code("genTime lies outside the TSA signer certificate's validity",
         "the TSA signed outside its certificate's validity (clock or certificate error): report it to the TSA operator and timestamp with another TSA"),
    "VM-TSA-EXPIRED-UNANCHORED": Code("the TSA certificate has expired and no archive timestamp covers the token",
         "renew before certificates expire: `git vaultmesh timestamp --archive`"),
    "VM-TSA-DUPLICATE": Code("tsa add: a policy TSA already has this URL or signing key (one authority counts once)",
         "one authority counts once: add a TSA run by a different authority"),
    "VM-TSA-BEFORE-ENTRY": Code("an entry's recorded_at is later than its token's genTime (beyond the clock allowance)",
         "the recorder's clock (or SOURCE_DATE_EPOCH) was ahead: fix it and record again; the token proves the earlier time"),
    "VM-TSA-UNKNOWN": Code("a token names a TSA that is not in the policy",
         "only TSAs in the policy count; add it with `git vaultmesh tsa add`"),
    "VM-TSA-UNREACHABLE": Code("the TSA could not be reached, timed out, or answered garbage",
         "check the TSA URL and the network, raise the timeout, or retry later; the entry stays pending until a token is added"),
    "VM-HOOK-MISSING": Code("a hook `git vaultmesh install` placed is missing, replaced, not executable, or not where git runs hooks",
         "run `git vaultmesh install` again (it chains to a hook that is there), or `install --uninstall` to stop using them"),
}


class VaultMeshError(Exception):
    """A failure with a stable code, what happened (cause) and what to do next (hint)."""

    def __init__(self, code: str, cause: str, hint: str | None = None) -> None:
        if code not in CODES:  # a typo in a code is a bug: fail loudly in tests
            raise ValueError(f"unregistered error code {code!r}")
        super().__init__(f"{code}: {cause}")
        self.code = code
        self.cause = cause
        self.hint = hint if hint is not None else CODES[code].hint

    def render(self) -> str:
        """One line for stderr: `error: VM-CODE: cause (hint: …)`."""
        text = f"error: {self.code}: {self.cause}"
        if self.hint:
            text += f"\nhint: {self.hint}"
        return text

    def as_dict(self) -> dict[str, str | None]:
        return {"code": self.code, "cause": self.cause, "hint": self.hint}


def hint_for(code: str) -> str:
    """The registry's hint for `code` (what to do next), for checks that report a failure without raising."""
    return CODES[code].hint


def errors_markdown() -> str:
    """docs/errors.md, generated from CODES (a test keeps the committed file identical)."""
    lines = [
        "# Error codes",
        "",
        "Every failure of `git vaultmesh` carries one of these stable codes, with a cause (what was found against",
        "what was required) and a hint (what to do next). `verify --json` puts the code in each failed check's",
        "`code` field; other commands print `error: CODE: cause` and `hint: …` on stderr and exit 1.",
        "This file is generated from `git_vaultmesh/errors.py`: `python -m git_vaultmesh.errors > docs/errors.md`.",
        "",
        "| code | meaning | what to do |",
        "|---|---|---|",
    ]
    lines += [f"| `{code}` | {c.meaning} | {c.hint.replace('|', '&#124;')} |" for code, c in CODES.items()]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":  # pragma: no cover
    print(errors_markdown(), end="")
