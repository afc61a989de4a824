"""The one error type of git-vaultmesh, and the registry of every stable error code.

Every failure a user can meet carries a code (stable, documented in docs/errors.md), a cause (what was
found, against what was required) and a hint (what to do next). `CODES` is the single source: the docs are
checked against it by the tests, so the two cannot drift.
"""

from __future__ import annotations

# code -> one-line meaning. Keep sorted by area; never reuse or rename a code once released.
CODES: dict[str, str] = {
    # --- usage and environment -------------------------------------------------------------------
    "VM-USAGE": "the command line is invalid (unknown option, missing argument, conflicting flags)",
    "VM-NOT-A-REPO": "the current directory is not inside a git repository",
    "VM-GIT-FAILED": "a git command failed unexpectedly",
    "VM-IO-FAILED": "a local file or directory could not be written or read (disk full, read-only, no permission)",
    "VM-TOOL-MISSING": "a required external program (git, gpg, gpgv, ssh-keygen) is not installed",
    "VM-TOOL-TIMEOUT": "an external program (gpg-agent, ssh-keygen, a TSA) did not answer in time",
    "VM-CONFIG-INVALID": "a vaultmesh.* git config value or .vaultmesh.toml setting is invalid",
    "VM-BAD-REV": "a revision, tag or ref does not name an object in this repository",
    "VM-REV-AMBIGUOUS": "git resolves the name to more than one ref (e.g. refs/<name> before the tag); use the full refname",
    "VM-ARTIFACT-UNREADABLE": "an artifact file given on the command line cannot be read",
    "VM-BAD-DIGEST": "a --sha256 value is not 64 lowercase hex characters",
    "VM-NO-SIGNING-KEY": "no signing key is configured (vaultmesh.signingKey / user.signingkey)",
    "VM-SIGN-FAILED": "the signer (gpg or ssh-keygen) refused to produce a signature",
    "VM-SIGNER-NOT-IN-POLICY": "the configured signing key is not a signer in the policy in force",
    "VM-NOT-INITIALIZED": "this repository has no ledger yet (refs/vaultmesh/log is absent)",
    "VM-ALREADY-INITIALIZED": "init was run on a repository that already has a ledger",
    "VM-ALREADY-RECORDED": "a release for this tag is already in the ledger (one release per tag)",
    "VM-NOT-RECORDED": "the ledger holds no receipt for the requested subject",
    "VM-RACE-LOST": "the ledger ref kept moving under us; the append was retried and gave up",
    "VM-REF-LOCKED": "a ledger ref is locked: by another git process, or a stale *.lock left by one that crashed",
    "VM-REMOTE-FAILED": "fetching or reading a remote's ledger failed",
    "VM-REMOTE-DIVERGED": "a remote's log does not extend the copy of it we saw last",
    "VM-PEER-UNKNOWN": "no federation peer of that name is configured (vaultmesh.peer.<name>.url)",
    "VM-PEER-UNREACHABLE": "a federation peer's ledger could not be fetched",
    "VM-PEER-ROLLBACK": "a peer's log is smaller than the checkpoint of it we witnessed (rewound)",
    "VM-PEER-FORKED": "a peer's log does not extend the checkpoint of it we witnessed (rewritten or replaced)",
    "VM-PEER-EQUIVOCATION": "a peer signed two different views of its log (same size, different roots)",
    "VM-FEDERATION-CONFLICT": "the merged view holds two statements about one release that disagree",
    "VM-FILE-UNREADABLE": "an input file (proof bundle, certificate, key) cannot be read or parsed",
    "VM-KEY-UNSUPPORTED": "an attestation key is neither ECDSA P-256 nor Ed25519 (in-toto/DSSE export and VSAs)",
    # --- ledger structure ------------------------------------------------------------------------
    "VM-LOG-CORRUPT": "a ledger object is missing or unreadable, or the log tree has an unexpected layout",
    "VM-LOG-GAP": "the log's entry numbering has a gap: an entry was removed",
    "VM-LOG-NOT-APPEND-ONLY": "a log commit changed, removed or reordered an entry its parent held",
    "VM-LOG-ROLLBACK": "the log is smaller than the last checkpoint verified here (rewound)",
    "VM-LOG-FORKED": "the log is not consistent with the last checkpoint verified here (replaced)",
    "VM-LOG-GENESIS": "the first entry is not a valid genesis policy entry",
    "VM-TRUST-ROOT-MISMATCH": "the genesis signer is not the pinned trust root",
    "VM-CHECKPOINT-MISSING": "a log commit has no checkpoint or no checkpoint signature",
    "VM-CHECKPOINT-MALFORMED": "the checkpoint is not a valid C2SP tlog-checkpoint body",
    "VM-CHECKPOINT-MISMATCH": "the checkpoint's size or root differs from the entries in the same commit",
    "VM-CHECKPOINT-SIG": "the checkpoint signature is missing, invalid, or not by a policy signer",
    "VM-NOTES-MISMATCH": "refs/notes/vaultmesh disagrees with the log (doctor --repair rebuilds it)",
    # --- entries ---------------------------------------------------------------------------------
    "VM-ENTRY-MALFORMED": "an entry is not canonical RFC 8785 JSON of the expected shape",
    "VM-ENTRY-UNKNOWN-TYPE": "an entry's body.type is not one this version knows",
    "VM-ENTRY-WRONG-LOG": "an entry names another log id (replayed from another ledger)",
    "VM-ENTRY-DUPLICATE": "two entries carry the same body digest, or two releases name one tag",
    "VM-ENTRY-REF-INVALID": "a cosign/timestamp entry names an entry that is not earlier in the log",
    # --- signatures and policy ---------------------------------------------------------------------
    "VM-SIG-MISSING": "an entry carries no signature",
    "VM-SIG-MALFORMED": "a signature is not valid base64 or not a signature packet/SSHSIG",
    "VM-SIG-INVALID": "a signature does not verify over the entry body",
    "VM-SIG-UNPINNED": "a signature verifies but its key is not a signer in the policy in force",
    "VM-SIG-NOT-AUTHORIZED": "the signer is in the policy but not for this entry type",
    "VM-SIG-KEY-EXPIRED": "the signing key had expired at the entry's time",
    "VM-SIG-KEY-REVOKED": "the signing key is revoked",
    "VM-SIG-PENDING": "fewer distinct pinned signers than the policy's threshold (pending signatures)",
    "VM-POLICY-INVALID": "a policy entry is malformed (unknown signer format, bad key, bad threshold)",
    "VM-POLICY-UNAUTHORIZED": "a policy change is not signed by the threshold of the policy before it",
    "VM-POLICY-STALE": "a staged policy proposal amends a policy that is no longer the one in force",
    "VM-ALREADY-SIGNED": "the signer already signed or co-signed this entry or proposal",
    # --- releases and their subjects ---------------------------------------------------------------
    "VM-TAG-MISSING": "the recorded tag no longer exists",
    "VM-TAG-MOVED": "the recorded tag now points at another object",
    "VM-SUBJECT-MISSING": "the recorded commit/tree object is no longer in the repository",
    "VM-HISTORY-MISMATCH": "the commit history recomputed now differs from the recorded Merkle root",
    "VM-HISTORY-BASE": "the release's base is not an earlier release, not an ancestor, or not consistent",
    "VM-TREE-DIGEST-MISMATCH": "the Git-EVTag-v0-SHA512 digest of the released tree differs from the record",
    "VM-SUBMODULES-MISSING": "a submodule's repository is absent and --require-submodules was given",
    "VM-ARTIFACT-MISMATCH": "an artifact's bytes differ from the recorded SHA-256",
    "VM-ARTIFACT-NOT-RECORDED": "an artifact given to verify is not named in the receipt",
    # --- hooks and covenants -----------------------------------------------------------------------
    "VM-PUSH-NOT-FAST-FORWARD": "a push would rewind, replace or delete a ledger ref (only fast-forwards are allowed)",
    "VM-HOOK-CHAINED-FAILED": "the hook that was there before git-vaultmesh's, which it runs first, failed",
    "VM-HOOK-CONFLICT": "a hook cannot be installed or removed without losing a hook file that is there",
    "VM-REPRO-BUILD-FAILED": "the release build command failed, timed out, or wrote no artifact",
    "VM-REPRO-DIFFERS": "two clean builds of the same release gave different artifacts (not reproducible)",
    "VM-REPRO-MISMATCH": "a rebuilt artifact differs from the recorded digest, or a recorded artifact was not built",
    "VM-REPRO-NO-DIGESTS": "the release records no artifact digests for a rebuild to be compared with",
    "VM-BADGE-REFUSED": "a badge was asked for a covenant that did not pass in this very run",
    # --- proofs ------------------------------------------------------------------------------------
    "VM-PROOF-MALFORMED": "a proof bundle is not valid JSON of the documented schema",
    "VM-PROOF-INVALID": "a proof in the bundle does not verify",
    "VM-PROOF-NO-PATH": "the commit is not part of the release's history",
    "VM-PROOF-VERSION": "the bundle is in an older format (vaultmesh-proof-v1) that this version no longer reads",
    "VM-PROOF-INCOMPLETE": "the bundle leaves out a policy entry its checkpoint commits to (or the checkpoint commits to none)",
    # --- RFC 3161 timestamps -----------------------------------------------------------------------
    "VM-TSA-PENDING": "an entry has fewer valid timestamp tokens than its policy requires",
    "VM-TSA-EMPTY": "a timestamp token is empty",
    "VM-TSA-NOT-DER": "a timestamp token is not DER (an HTML page, text, or garbage)",
    "VM-TSA-TRUNCATED": "a timestamp token is truncated DER",
    "VM-TSA-STATUS": "the TSA answered with a status other than granted",
    "VM-TSA-IMPRINT": "the token's message imprint is not SHA-256 of the timestamped entry line",
    "VM-TSA-OTHER-ENTRY": "the token's imprint belongs to another entry of the log",
    "VM-TSA-NONCE": "the token's nonce differs from the nonce sent",
    "VM-TSA-SIGNATURE": "the token's CMS signature or signed attributes do not verify",
    "VM-TSA-CHAIN": "the TSA signer certificate does not chain to the policy's CA certificate",
    "VM-TSA-EKU": "the TSA signer certificate lacks the critical timeStamping extended key usage",
    "VM-TSA-PIN": "the TSA signer's SPKI does not match the pin in policy",
    "VM-TSA-CERT-VALIDITY": "genTime lies outside the TSA signer certificate's validity",
    "VM-TSA-EXPIRED-UNANCHORED": "the TSA certificate has expired and no archive timestamp covers the token",
    "VM-TSA-DUPLICATE": "tsa add: a policy TSA already has this URL or signing key (one authority counts once)",
    "VM-TSA-UNKNOWN": "a token names a TSA that is not in the policy",
    "VM-TSA-UNREACHABLE": "the TSA could not be reached, timed out, or answered garbage",
    # --- query, list, timeline, ADRs ----------------------------------------------------------------
    "VM-QUERY-INVALID": "a query pattern, date, entry type or limit is malformed (query, list, timeline)",
    "VM-ADR-INVALID": "an ADR command names no ADR of the ledger, or has an empty title or unreadable text",
}


class VaultMeshError(Exception):
    """A failure with a stable code, what happened (cause) and what to do next (hint)."""

    def __init__(self, code: str, cause: str, hint: str | None = None) -> None:
        if code not in CODES:  # a typo in a code is a bug: fail loudly in tests
            raise ValueError(f"unregistered error code {code!r}")
        super().__init__(f"{code}: {cause}")
        self.code = code
        self.cause = cause
        self.hint = hint

    def render(self) -> str:
        """One line for stderr: `error: VM-CODE: cause (hint: …)`."""
        text = f"error: {self.code}: {self.cause}"
        if self.hint:
            text += f"\nhint: {self.hint}"
        return text

    def as_dict(self) -> dict[str, str | None]:
        return {"code": self.code, "cause": self.cause, "hint": self.hint}


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
        "| code | meaning |",
        "|---|---|",
    ]
    lines += [f"| `{code}` | {meaning} |" for code, meaning in CODES.items()]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":  # pragma: no cover
    print(errors_markdown(), end="")
