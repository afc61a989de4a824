"""Argument parsing only. Each verb's module is imported when that verb runs, so `-h` stays fast."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .errors import VaultMeshError

PROG = "git vaultmesh"
DESCRIPTION = """\
The repo is the ledger: record signed, timestamped receipts of releases and deploys in this repository
(refs/vaultmesh/log, refs/notes/vaultmesh) and verify them offline, failing closed with a stable error code.
"""
EPILOG = """\
exit status: 0 success; 1 a check failed or an error (its VM-… code is printed); 2 bad usage.
Error codes are listed in docs/errors.md. Settings: git config vaultmesh.* (see `git vaultmesh config`).
"""


def _json(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print machine-readable JSON on stdout")


def _trust(p: argparse.ArgumentParser) -> None:
    p.add_argument("--trust-root", metavar="FPR",
                   help="genesis signer fingerprint to pin (default: git config vaultmesh.trustRoot)")


def _timings(p: argparse.ArgumentParser) -> None:
    p.add_argument("--timings", action="store_true",
                   help="print the time of each step (history, tree digest, sign, tsa, ledger append, ...) on "
                        "stderr, and add a \"timings\" object to --json (also: VAULTMESH_TIMINGS=1)")


Add = Callable[..., argparse.ArgumentParser]


def _adder(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> Add:
    """`add(name, help[, description])` for one level of verbs: help doubles as the description."""

    def add(name: str, help: str, description: str | None = None) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help, description=description or help,
                              formatter_class=argparse.RawDescriptionHelpFormatter)

    return add


def _vsa_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--vsa", metavar="FILE",
                   help="also write a signed SLSA Verification Summary Attestation of this result (PASSED or "
                   "FAILED) to FILE: one DSSE envelope (see docs/interop.md)")
    p.add_argument("--vsa-key", metavar="KEY.pem", help="PEM private key (ECDSA P-256 or Ed25519) signing the VSA")


def _interop_verbs(add: Add) -> None:
    p = add("export", "export the receipts of a tag or revision as DSSE-signed in-toto Statements",
            "Print one DSSE envelope per receipt naming REV, one per line (.intoto.jsonl): an in-toto Statement\n"
            "v1 whose subjects are the artifacts (sha256), the tag (gitTag) and the tagged commit (gitCommit),\n"
            "with the predicate https://git-vaultmesh.dev/receipt/v1 (history root and size, tree digest,\n"
            "policy entry, tokens' genTime, the signed entry line). Signed with --key (ECDSA P-256 or Ed25519\n"
            "PEM); the receipt's own OpenPGP/SSH signature travels inside. See docs/interop.md.")
    p.add_argument("rev", help="tag or revision whose receipts to export")
    p.add_argument("--intoto", action="store_true", help="DSSE-wrapped in-toto Statements (the only format)")
    p.add_argument("--key", metavar="KEY.pem", help="PEM private key signing the envelopes")
    p.add_argument("--public-key", metavar="FILE", help="also write the signing key's PEM public key to FILE")
    p.add_argument("-o", "--output", metavar="FILE", help="write to FILE instead of stdout")


def _ledger_verbs(add: Add) -> None:
    """Verbs that start the ledger and append receipts."""
    p = add("init", "create the ledger: a genesis policy entry trusting your signing key",
            "Create refs/vaultmesh/log with a genesis policy entry signed by your key (threshold 1), and pin\n"
            "that key as this clone's trust root (git config vaultmesh.trustRoot).")
    p.add_argument("--name", help="signer name in the policy (default: from the key's user id)")
    _json(p)

    p = add("record", "record a receipt for a tag (release) or any rev (deploy)",
            "Sign and append a receipt. A tag gives a `release` (one per tag) with the history Merkle root and\n"
            "the Git-EVTag tree digest; any other rev gives a `deploy` (deploys may repeat).")
    p.add_argument("rev", nargs="?", default="HEAD", help="tag or revision (default HEAD)")
    p.add_argument("--type", choices=["release", "deploy"], help="default: release for a tag, else deploy")
    p.add_argument("--component", help="component name (default: git config vaultmesh.component, else the "
                   "last part of the origin URL without .git, else the folder's name)")
    p.add_argument("--version", dest="version_", metavar="VERSION", help="version (default: the tag name)")
    p.add_argument("--artifact", action="append", default=[], metavar="PATH", help="hash this file into the receipt")
    p.add_argument("--sha256", action="append", default=[], metavar="[NAME=]HEX",
                   help="an artifact digest computed elsewhere")
    p.add_argument("--evidence", action="append", default=[], metavar="TEXT", help="free-form evidence string")
    p.add_argument("--message", "-m", help="a human summary")
    p.add_argument("--environment", help="deploy target (deploy only)")
    p.add_argument("--if-missing", action="store_true", help="succeed without change if already recorded")
    p.add_argument("--require-submodules", action="store_true",
                   help="fail instead of recording submodules as not-included when their repos are absent")
    _json(p)
    _timings(p)


def _verify_verbs(add: Add) -> None:
    """Verbs that judge: the ledger, a release, a proof bundle."""
    p = add("verify", "verify the ledger and a release; fails closed with a VM-… code",
            "Check the log (append-only, checkpoints, signatures against the pinned policy), and for REV its\n"
            "tag, history Merkle root, tree digest and artifacts. Without REV, or with --all, every entry.")
    p.add_argument("rev", nargs="?", help="tag or revision whose receipts to verify")
    p.add_argument("--all", action="store_true", help="every entry and every recorded release")
    p.add_argument("--artifact", action="append", default=[], metavar="PATH", help="re-hash and compare")
    p.add_argument("--allow-pending", action="store_true",
                   help="accept entries still pending signatures or timestamp tokens (printed in the result)")
    _trust(p)
    _json(p)
    _vsa_flags(p)
    _timings(p)

    p = add("prove", "write a self-contained proof bundle (JSON) that a commit is in a release",
            "Prints a bundle with the commit-in-release inclusion proof, the entry-in-log inclusion proof,\n"
            "the signed checkpoint and the policy keys, verifiable offline with `check-proof`.")
    p.add_argument("commit", help="the commit to prove")
    p.add_argument("--in", dest="release", required=True, metavar="TAG", help="the recorded release")
    p.add_argument("--from", dest="from_release", metavar="TAG",
                   help="also prove that this earlier release's history is a prefix (consistency)")
    p.add_argument("-o", "--output", help="write to this file instead of stdout")

    p = add("check-proof", "verify a proof bundle offline, without the repository")
    p.add_argument("bundle", help="the bundle file (- for stdin)")
    p.add_argument("--trust-root", metavar="FPR", required=True, help="the genesis signer you trust")
    _json(p)


def _reading_verbs(add: Add) -> None:
    """Verbs that read entries without judging them."""
    p = add("show", "show the receipts recorded for a tag or revision")
    p.add_argument("rev", help="tag, revision, entry id or #seq")
    _json(p)
    p.add_argument("--yaml", action="store_true", help="print YAML")

    p = add("log", "list ledger entries, newest first")
    p.add_argument("-n", "--max-count", type=int, help="at most N entries")
    p.add_argument("--type", help="only entries of this type")
    _json(p)


def _trust_verbs(add: Add) -> None:
    """Verbs that change who is trusted (policy entries, co-signatures)."""
    p = add("policy", "show or change the trust policy: signers, thresholds, co-signing, rotation",
            "Trust lives only in `policy` entries of the log. A change appends a full snapshot of the new\n"
            "policy, valid only if signed by the \"policy\" threshold of the policy in force before it; every\n"
            "entry is judged by the policy in force at its position (a key removed later does not invalidate\n"
            "what it signed while trusted; a key added later cannot sign the past).\n\n"
            "When one signature is enough (policy threshold 1) a change is appended at once. Otherwise stage it:\n"
            "  alice$ git vaultmesh policy add-signer dave --key FPR --propose change.json   # signed by alice\n"
            "  bob$   git vaultmesh policy sign change.json     # shows the real diff, adds bob's signature\n"
            "  any$   git vaultmesh policy apply change.json    # appends once the threshold is met\n"
            "apply refuses (VM-POLICY-UNAUTHORIZED) before appending if signatures are missing, and a proposal\n"
            "made against an older policy is refused (VM-POLICY-STALE). See docs/policy.md.")
    psub = p.add_subparsers(dest="policy_command", metavar="SUBCOMMAND")

    padd = _adder(psub)

    q = padd("show", "print the policy in force: signers, thresholds per entry type, TSAs, tokens required",
             "Print the policy in force (the last policy entry its predecessor validly signed) and any policy\n"
             "entry that was not adopted. --json prints the stable object documented in docs/policy.md\n"
             "(schema \"vaultmesh-policy/1\").")
    _json(q)

    def propose(q: argparse.ArgumentParser) -> None:
        q.add_argument("--propose", metavar="FILE",
                       help="write the change signed by you to FILE instead of appending it (staging flow)")
        _json(q)

    q = padd("add-signer", "pin a new signer's OpenPGP or SSH key",
             "Pin NAME's key: --key takes an OpenPGP fingerprint or key id in your keyring (a subkey maps to its\n"
             "primary) or an exported .asc file; --ssh-key takes an SSH .pub file or public key line.")
    q.add_argument("name", help="signer name (letters, digits, ._-)")
    q.add_argument("--key", metavar="FPR|FILE", help="OpenPGP key to pin")
    q.add_argument("--ssh-key", metavar="FILE.pub", help="SSH public key to pin")
    q.add_argument("--types", metavar="T1,T2", help="entry types the signer may sign (default: all, '*')")
    propose(q)
    q = padd("remove-signer", "unpin a signer (rotation); what they signed while trusted stays valid")
    q.add_argument("name", help="signer name")
    propose(q)
    q = padd("set-note-key", "sign every checkpoint also as a C2SP signed note (Ed25519), for tlog witnesses",
             "Pin a C2SP verifier key named vaultmesh/<log id> in the policy; from then on every append writes\n"
             "checkpoint.note (the checkpoint as a signed note) beside checkpoint.sig, and verify requires it.\n"
             "Without --vkey, a key is made under the git dir (vaultmesh/note.key) and its verifier key pinned.")
    q.add_argument("--vkey", help="pin this verifier key (<name>+<hex id>+<base64 key>) instead of a local one")
    q.add_argument("--remove", action="store_true", help="unpin the note key: checkpoints are no longer notes")
    propose(q)

    q = padd("set-threshold", "require K distinct signers for entries of TYPE from now on",
             "Require K distinct pinned signers (own signature plus cosigns) for entries of TYPE appended\n"
             "after this change; TYPE '*' sets the default. Entries below it are pending (VM-SIG-PENDING).")
    q.add_argument("type", metavar="TYPE", help="entry type (release, deploy, policy, adr, …) or '*'")
    q.add_argument("k", metavar="K", type=int, help="number of distinct signers")
    propose(q)
    q = padd("sign", "add your signature to a staged policy proposal FILE")
    q.add_argument("file", metavar="FILE")
    _json(q)
    q = padd("apply", "append a staged policy proposal FILE once it carries enough signatures")
    q.add_argument("file", metavar="FILE")
    _json(q)

    p = add("cosign", "add your signature to an entry already in the log (k-of-n thresholds)",
            "Append a `cosign` entry naming the body digest of the entry for REV (a tag's release, a revision's\n"
            "receipt) or ENTRY-ID, signed by your key. Refused if you already signed or co-signed it, if your\n"
            "key is not pinned for its type both when it was made and now, or if it is not in the log.")
    p.add_argument("target", metavar="REV|ENTRY-ID", help="tag, revision, entry id (8+ hex) or #seq")
    p.add_argument("--message", "-m", help="a note to sign along (e.g. what you checked)")
    _json(p)


def _timestamp_verbs(add: Add) -> None:
    """RFC 3161: TSAs in the policy and the tokens entries carry."""
    p = add("tsa", "RFC 3161 TSAs: add one to the trust policy, list them, or run the built-in loopback TSA",
            "tsa add NAME --url URL --ca-cert CA.pem appends a signed policy entry: from then on entries need\n"
            "--require N tokens (default: at least 1) from distinct policy TSAs. The URL goes to git config\n"
            "(vaultmesh.tsa.NAME.url, operational); the CA and optional SPKI pin are trust, in the policy.\n"
            "tsa serve runs the built-in RFC 3161 server on 127.0.0.1 only, for demos, tests and air-gapped sites.")
    tsub = p.add_subparsers(dest="tsa_command", metavar="SUBCOMMAND")
    q = tsub.add_parser("add", help="add a TSA to the policy (a signed policy entry)",
                        description="Add a TSA to the trust policy. The TSA is asked for a probe token first, which\n"
                        "must verify against --ca-cert (and --pin-spki), unless --offline.",
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    q.add_argument("name", help="TSA name in the policy (letters, digits, ._-)")
    q.add_argument("--url", required=True, help="the TSA's RFC 3161 URL (saved as git config vaultmesh.tsa.NAME.url)")
    q.add_argument("--ca-cert", required=True, metavar="PEM", help="the CA certificate the TSA signer chains to")
    q.add_argument("--pin-spki", metavar="BASE64", help="also pin the signer key: base64(SHA-256(DER SPKI))")
    q.add_argument("--require", type=int, metavar="N",
                   help="tokens from distinct policy TSAs every entry needs from now on (default: max(current, 1))")
    q.add_argument("--offline", action="store_true", help="do not ask the TSA for a probe token first")
    q.add_argument("--propose", metavar="FILE",
                   help="write the change signed by you to FILE (for `policy sign`/`policy apply`) instead")
    _json(q)
    q = tsub.add_parser("list", help="the TSAs of the policy in force, their URLs and CA validity")
    _json(q)
    q = tsub.add_parser("serve", help="run the built-in RFC 3161 server on loopback",
                        description="Serve RFC 3161 on http://127.0.0.1:PORT/tsr (loopback only) until --max-lifetime\n"
                        "seconds pass, SIGTERM or Ctrl-C. --identity DIR keeps its CA and keys (ca.pem, ca.key,\n"
                        "tsa.pem, tsa.key; created there if absent); keys are unencrypted: not a production TSA.",
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    q.add_argument("--port", type=int, default=3161, help="TCP port (default 3161; 0 picks a free one)")
    q.add_argument("--host", default="127.0.0.1", help="loopback address to bind (127.0.0.1 or ::1)")
    q.add_argument("--identity", metavar="DIR", help="directory holding (or receiving) the CA and signer keys")
    q.add_argument("--key-type", choices=["ec", "rsa"], default="ec", help="key type of a new identity")
    q.add_argument("--max-lifetime", type=float, default=3600.0, metavar="SECONDS",
                   help="stop after this many seconds (default 3600; 0: until stopped)")

    p = add("timestamp", "fetch pending RFC 3161 tokens, or renew all tokens with an archive timestamp",
            "--pending: give every entry still short of the tokens its policy requires a token from each\n"
            "policy TSA it lacks (batched, in parallel, one append). --archive: one token over the current\n"
            "checkpoint, which keeps every earlier token valid after its TSA certificate expires.")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--pending", action="store_true", help="fetch the missing tokens of pending entries")
    g.add_argument("--archive", action="store_true", help="timestamp the current checkpoint (renewal)")
    p.add_argument("--list", action="store_true", help="with --pending: only list the pending entries")
    _json(p)


def _maintenance_verbs(add: Add) -> None:
    """Sharing, demonstrating and repairing the ledger."""
    p = add("pull", "fetch a remote's ledger, re-append our entries it lacks, so the next push fast-forwards")
    p.add_argument("remote", nargs="?", default="origin", help="the remote to fetch refs/vaultmesh/log from")
    p.add_argument("--drop-archives", action="store_true",
                   help="merge even though our archive timestamps cover checkpoints the merge replaces (our old "
                   "log head is kept under refs/vaultmesh/keep/; re-archive afterwards)")
    _json(p)

    p = add("demo", "run the whole story in a throwaway repo: record, verify, tamper, verify fails")
    p.add_argument("--keep", action="store_true", help="keep the throwaway directory and print its path")
    _json(p)

    p = add("config", "list every setting with its value, origin and default; `config check` validates them",
            "Settings are operational only (which key signs, TSA URLs, timeouts): trust lives in policy entries.\n"
            "They come from git config vaultmesh.* (any scope) and the [vaultmesh] table of .vaultmesh.toml.\n"
            "`config check` reports unknown keys (with a near-miss suggestion) and wrong types, exit 1.")
    csub = p.add_subparsers(dest="config_command", metavar="SUBCOMMAND")
    _json(_adder(csub)("check", "report unknown keys and malformed values with file and line"))
    _json(p)

    p = add("help", "show this help, or a verb's (`git vaultmesh help verify`); the man page is --help")
    p.add_argument("verb", nargs="*", help="the verb (and subcommand) to explain")

    p = add("completion", "print a shell completion script (bash, zsh, fish) generated from this parser",
            "Install lines:\n"
            "  bash: git vaultmesh completion bash > ~/.local/share/bash-completion/completions/git-vaultmesh\n"
            "        (or `eval \"$(git vaultmesh completion bash)\"` in ~/.bashrc, after git's completion)\n"
            "  zsh:  git vaultmesh completion zsh > ~/.zfunc/_git-vaultmesh   (fpath+=~/.zfunc)\n"
            "  fish: git vaultmesh completion fish > ~/.config/fish/completions/git-vaultmesh.fish")
    p.add_argument("shell", choices=["bash", "zsh", "fish"], metavar="shell", help="bash, zsh or fish")

    p = add("doctor", "health of this clone: ledger, index, config, keys, TSAs, hooks; --repair rebuilds the notes",
            "Areas: ledger (refs and head readable, no stale ref lock, every subject the log names present, the\n"
            "notes agree with the log), index (the query index is fresh), config (`config check`), keys (a signing\n"
            "key is configured), TSAs (URLs, certificate expiry warnings), hooks (what `install` placed is there).\n"
            "By default the ledger's derived state is checked over the entries appended since the last clean\n"
            "doctor (any doubt, e.g. a rewritten log or notes edited by hand: the whole log); --full always\n"
            "sweeps every entry and asks gpg/ssh-keygen for the signing key. Exit 1 on any problem.")
    p.add_argument("--repair", action="store_true", help="rebuild refs/notes/vaultmesh from the log")
    p.add_argument("--full", "--deep", dest="full", action="store_true",
                   help="check every entry of the log (not only those appended since the last clean doctor), and "
                   "that gpg/ssh-keygen can use the signing key")
    _json(p)


def _federation_verbs(add: Add) -> None:
    p = add("federate", "watch other teams' ledgers: add a peer, sync (verify + witness), status, merge, list",
            "A peer is a separate log with its own signers. `sync` fetches its refs/vaultmesh/log into\n"
            "refs/vaultmesh/remotes/<peer>/log only after verifying it with the peer's own policy and your pin\n"
            "of its trust root, and checking it extends what you witnessed of it before (RFC 9162 consistency);\n"
            "then a signed `witness` entry (with a C2SP cosignature) records the checkpoint you saw. A peer that\n"
            "rewound, rewrote or equivocated is reported with its own code and kept as evidence, never merged.")
    sub = p.add_subparsers(dest="federate_command", metavar="SUBCOMMAND")
    fadd = _adder(sub)
    q = fadd("add", "configure a peer: a name and any git URL (file:// included)")
    q.add_argument("name", help="a plain name for the peer (refs/vaultmesh/remotes/<name>/log)")
    q.add_argument("url", help="the peer's repository URL")
    q.add_argument("--trust-root", metavar="FPR", help="the peer's genesis signer (default: pinned on first sync)")
    _json(q)
    q = fadd("sync", "fetch, verify and witness peers (all configured peers by default)",
             "Fetch, verify and witness peers (all configured peers by default). A peer that still serves the\n"
             "commit judged at the last sync is answered from our witness entry of it (`git ls-remote`, no fetch):\n"
             "--json says \"unchanged\": true, \"reverified\": false. Anything else is fetched and judged in full.")
    q.add_argument("names", nargs="*", metavar="NAME", help="the peers to sync")
    _json(q)
    q = fadd("status", "each peer's last witnessed checkpoint, entries and verdict; the merged view")
    q.add_argument("--strict", action="store_true", help="exit non-zero when the merged view has conflicts")
    _json(q)
    q = fadd("merge", "append a signed merge entry recording the merged view's inputs and root")
    _json(q)
    q = fadd("list", "list entries: ours, and with --all-peers every verified peer's copy too (all kinds)",
             "Entries of our log and, with --all-peers, of each peer's verified copy\n"
             "(refs/vaultmesh/remotes/<peer>/log: it moves only after `federate sync` verified it), oldest first\n"
             "by recorded_at, then log and position. Every kind by default; --type narrows it.")
    q.add_argument("--all-peers", action="store_true", help="include every peer's verified copy")
    q.add_argument("--type", action="append", metavar="TYPE",
                   help="only entries of this type (repeatable), e.g. release, deploy, witness")
    _json(q)


HOOK_NAMES = ("pre-commit", "pre-push", "reference-transaction", "post-rewrite", "pre-receive")


def _hook_verbs(add: Add) -> None:
    """install, hook and covenant (docs/hooks.md)."""
    p = add("covenant", "judge the Four Covenants: I Integrity, II Reproducibility, III Federation, IV Proof-chain",
            "Each covenant is computed now from the verification checks (nothing is cached or assumed):\n"
            "  integrity        every entry, checkpoint and recorded release verifies; notes agree (verify --all)\n"
            "  reproducibility  vaultmesh.buildCommand run twice in clean checkouts of the newest release,\n"
            "                   SOURCE_DATE_EPOCH = the tagged commit's time: identical bytes = recorded digests\n"
            "  federation       every peer (vaultmesh.peer.<name>.url) consistent with what we witnessed\n"
            "  proof-chain      every entry has the signatures, thresholds and RFC 3161 tokens policy requires\n"
            "A covenant with nothing configured reports \"not configured\" (exit 0 unless --strict).\n"
            "Exit 1 when any covenant fails.")
    p.add_argument("covenants", nargs="*", metavar="COVENANT",
                   help="integrity, reproducibility, federation, proof-chain (default: all four)")
    p.add_argument("--strict", action="store_true", help="a covenant that is not configured fails too")
    p.add_argument("--badge", metavar="FILE.svg",
                   help="write an SVG badge for the one named covenant, only if it passed in this run")
    p.add_argument("--release", metavar="TAG", help="reproducibility: rebuild this release (default: the newest)")
    _trust(p)
    _json(p)

    p = add("install", "install the hooks, ledger refspecs and notes display into this repository",
            "Installs pre-commit, pre-push, reference-transaction and post-rewrite hooks into the hooks\n"
            "directory (core.hooksPath if set): a hook that is already there is kept and run first (chained),\n"
            "never overwritten. For each remote (or --remote R): fetch the ledger into\n"
            "refs/vaultmesh/remotes/R/* (never forced) and push it with what `git push` pushed before\n"
            "(push.default is made explicit). Adds refs/notes/vaultmesh to notes.displayRef.\n"
            "--server installs the pre-receive hook (for a bare repository that receives pushes).\n"
            "--uninstall removes exactly what install added and puts chained hooks back.")
    p.add_argument("--uninstall", action="store_true", help="remove what install added; restore chained hooks")
    p.add_argument("--server", action="store_true", help="install the pre-receive hook (server side)")
    p.add_argument("--no-hooks", action="store_true", help="leave the hooks alone")
    p.add_argument("--no-refspecs", action="store_true", help="leave remotes and notes.displayRef alone")
    p.add_argument("--remote", action="append", default=[], metavar="R", help="only this remote (repeatable)")
    _json(p)

    p = add("hook", "run one hook's checks (what the installed hook scripts call)",
            "The hook scripts installed by `git vaultmesh install` are two lines that call this. It runs the\n"
            "hook that was there before install (if any) with the same arguments and input, then ours.")
    p.add_argument("name", choices=HOOK_NAMES, metavar="NAME", help=f"the git hook: {', '.join(HOOK_NAMES)}")
    p.add_argument("hook_args", nargs="*", metavar="ARG", help="the arguments git gave the hook")
    p.add_argument("--chain", metavar="PATH", help="the installed hook script's path: its saved predecessor runs first")
    p.add_argument("--covenants", action="store_true",
                   help="pre-commit: also judge Integrity and Proof-chain (the pre-commit framework hook)")


def _import_verbs(add: Add) -> None:
    """Migration from the old VaultMesh v4.1 tool (docs/migrating-from-v4.md)."""
    p = add("import-v4", "import an old VaultMesh v4.1 receipt tree as signed `import` entries (claims unverified)",
            "Read ops/receipts/** of a VaultMesh v4.1 tree (YAML front-matter and JSON .receipt/.json files, ADR\n"
            "Markdown under adr/, neighbouring .asc/.tsr files) and append one `import` entry per receipt, signed\n"
            "by your key in one batch. Each keeps the original bytes and their SHA-256, and lists what this\n"
            "import checked (verified) and what it could not (unverified: missing, empty or HTML tokens, unchecked\n"
            "signatures, malformed dates, unknown keys). The old tool's claims never become verdicts.\n"
            "Importing the same tree again appends nothing. A malformed receipt stops the import before\n"
            "anything is appended (VM-IMPORT-MALFORMED). See docs/migrating-from-v4.md.")
    p.add_argument("paths", nargs="+", metavar="PATH",
                   help="the old tree's root (holding ops/receipts), or a directory or file inside ops/receipts")
    p.add_argument("--dry-run", action="store_true", help="parse and report; append nothing (no signing key needed)")
    _json(p)


def _query_verbs(add: Add) -> None:
    """The daily read path: search, list and timeline, answered from a derived index (docs/query.md); ADRs."""
    def common(p: argparse.ArgumentParser, types: bool = True) -> None:
        if types:
            p.add_argument("--type", action="append", metavar="TYPE",
                           help="only entries of this type (release, deploy, adr, decision, policy, ...; repeatable)")
        p.add_argument("--since", metavar="DATE", help="recorded at or after DATE (YYYY-MM-DD or YYYY-MM-DDTHH:MM:SSZ)")
        p.add_argument("--until", metavar="DATE", help="recorded at or before DATE (a YYYY-MM-DD includes that day)")
        p.add_argument("-n", "--limit", type=int, metavar="N", help="at most N results (0: none)")
        p.add_argument("--verified", action="store_true",
                       help="verify the whole ledger first and answer from the verified log, not the index")
        _json(p)
        p.add_argument("--yaml", action="store_true", help="print YAML (the same document as --json)")

    p = add("query", "search the ledger: words in component, version, message, evidence, title; field filters",
            "Every word must occur (case does not matter) in one of an entry's component, version, message,\n"
            "evidence, title, environment, status, ADR document or subject ref; \"quoted phrases\" match as a\n"
            "whole and -word excludes. Newest first. Answers come from a derived index under the git dir\n"
            "(rebuilt or extended automatically) and are unverified unless --verified. See docs/query.md.")
    p.add_argument("pattern", nargs="*", help="words, \"phrases\" and -exclusions (none: every entry)")
    p.add_argument("--component", help="only this component (exact)")
    p.add_argument("--version", dest="version_", metavar="VERSION", help="only this version (exact)")
    p.add_argument("--environment", help="only deploys to this environment (exact)")
    p.add_argument("--signer", metavar="FPR", help="only entries signed by this fingerprint (exact)")
    p.add_argument("--reverse", action="store_true", help="oldest first")
    common(p)

    p = add("list", "list releases, deploys, ADRs, decisions, witnessed peers, or all entries (log order)",
            "releases, deploys, all: one line per entry, oldest first. adrs, decisions: one line per record\n"
            "(its newest revision), with its status and supersedes / superseded-by links. peers: each federation\n"
            "peer this log witnessed. From the derived index; unverified unless --verified.")
    p.add_argument("kind", choices=["releases", "deploys", "adrs", "decisions", "peers", "all"], metavar="KIND",
                   help="releases, deploys, adrs, decisions, peers or all")
    common(p, types=False)

    p = add("timeline", "what happened when: entries oldest first, one heading per day",
            "Entries in log order under a heading per UTC day, e.g.\n"
            "  git vaultmesh timeline --since 2025-10-01 --until 2025-10-31 --type deploy")
    common(p)


def _adr_verbs(add: Add) -> None:
    """ADRs: signed, numbered records (docs/query.md)."""
    p = add("adr", "architecture decision records: create one, or change its status (signed entries)",
            "ADRs are signed `adr` entries of the ledger, numbered ADR-0001, ADR-0002, ... in the order they are\n"
            "created. `list adrs` lists them; `show ADR-0007` prints one with its revisions.")
    sub = p.add_subparsers(dest="adr_command", metavar="SUBCOMMAND")
    aadd = _adder(sub)
    q = aadd("create", "record a new ADR: opens $EDITOR for its text unless --message or --file")
    q.add_argument("title", help="the decision, in a few words")
    q.add_argument("-m", "--message", help="the ADR's text (markdown)")
    q.add_argument("--file", metavar="FILE", help="read the ADR's text from FILE")
    q.add_argument("--status", default="proposed",
                   choices=["proposed", "accepted", "rejected", "deprecated", "superseded"], help="default proposed")
    q.add_argument("--supersedes", action="append", default=[], metavar="ADR",
                   help="an ADR this one replaces (repeatable); it then lists as superseded")
    _json(q)
    q = aadd("status", "record a new status for an ADR (a revision entry)")
    q.add_argument("adr", metavar="ADR", help="ADR-0007 or 7")
    q.add_argument("status", choices=["proposed", "accepted", "rejected", "deprecated", "superseded"],
                   metavar="STATUS", help="proposed, accepted, rejected, deprecated or superseded")
    q.add_argument("-m", "--message", help="why")
    _json(q)


# One function per group of verbs; a new verb goes in its group's function, or a new group here.
VERB_GROUPS: tuple[Callable[[Add], None], ...] = (
    _ledger_verbs,
    _verify_verbs,
    _reading_verbs,
    _trust_verbs,
    _timestamp_verbs,
    _maintenance_verbs,
    _federation_verbs,
    _hook_verbs,
    _interop_verbs,
    _import_verbs,
    _query_verbs,
    _adr_verbs,
)


# Verbs whose whole run is a few tens of milliseconds: their group's parser is built alone (all ~40 verbs cost ~6 ms)
FAST_GROUPS: dict[str, Callable[[Add], None]] = {"query": _query_verbs, "list": _query_verbs,
                                                 "timeline": _query_verbs, "doctor": _maintenance_verbs}


def _groups_for(argv: Sequence[str]) -> Sequence[Callable[[Add], None]]:
    words = iter(argv)
    for word in words:
        if word in ("-h", "--help"):
            break
        if word == "-C":
            next(words, None)
        elif not word.startswith("-"):
            return (FAST_GROUPS[word],) if word in FAST_GROUPS else VERB_GROUPS
    return VERB_GROUPS


def build_parser(groups: Sequence[Callable[[Add], None]] = VERB_GROUPS) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=DESCRIPTION, epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-C", dest="directory", metavar="PATH", help="run as if started in PATH")
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    parser.add_argument("-q", "--quiet", action="store_true", help="print only errors on stderr")
    parser.add_argument("-v", "--verbose", action="store_true", help="also show what gpg and git said")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    add = _adder(sub)
    for group in groups:
        group(add)
    return parser


COMMANDS: dict[str, str] = {
    "init": "init", "record": "record", "verify": "verify", "show": "show", "log": "log",
    "prove": "prove", "check-proof": "check_proof", "pull": "pull", "demo": "demo", "doctor": "doctor",
    "policy": "policy", "cosign": "cosign",
    "tsa": "tsa", "timestamp": "timestamp", "federate": "federate", "export": "export",
    "covenant": "covenant", "install": "install", "hook": "hook",
    "config": "config", "completion": "completion", "help": "help",
    "import-v4": "import_v4",
    "query": "query", "list": "listing", "timeline": "timeline", "adr": "adr",
}


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _malformed_security_setting() -> VaultMeshError | None:
    """A security setting (signing key, format, trust root) that does not parse stops every verb: guessing
    a default there would sign with, or trust, something the user did not choose."""
    from .config import SCHEMA, schema_key, validated
    from .errors import VaultMeshError
    from .git import Repo

    try:
        repo = Repo.discover(".")
    except VaultMeshError:
        return None  # the verb itself says it needs a repository
    for key, value in repo.config_get_all(r"^vaultmesh\.").items():
        name = key[len("vaultmesh."):]
        setting = SCHEMA.get(schema_key(name) or "")
        if setting is not None and setting.security:
            try:
                validated(name, value)
            except VaultMeshError as exc:
                return exc
    return None


def main(argv: Sequence[str] | None = None) -> int:
    started = time.perf_counter()
    if "git_vaultmesh.git" in sys.modules:  # run again in one process (tests): find the repository afresh
        sys.modules["git_vaultmesh.git"].forget_discovered()
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(_groups_for(argv))
    args = parser.parse_args(argv)
    if args.version:
        from . import __version__

        print(f"git-vaultmesh {__version__}")
        return 0
    if not args.command:
        parser.print_help()
        return 2
    from .errors import VaultMeshError

    if args.directory:
        try:
            os.chdir(args.directory)
        except OSError as exc:
            print(VaultMeshError("VM-NOT-A-REPO", f"cannot change to {args.directory}: {exc.strerror}",
                                 "pass an existing directory to -C").render(), file=sys.stderr)
            return 1

    for dest, value in vars(args).items():  # argv git and our output cannot carry: refused before any verb runs
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, str) and not _utf8(item):
                print(VaultMeshError("VM-USAGE", f"the value of {dest} is not valid UTF-8",
                                     "pass names, revisions and paths as UTF-8").render(), file=sys.stderr)
                return 2
    timed = getattr(args, "timings", False) or os.environ.get("VAULTMESH_TIMINGS", "") not in ("", "0")
    if timed:
        from . import timings

        timings.enable(started)
    os.environ["GIT_VAULTMESH_VERBOSITY"] = "quiet" if args.quiet else "verbose" if args.verbose else "normal"
    # the read path (query, list, timeline) signs nothing and trusts nothing unless --verified: no settings check,
    # whose three git processes would be a third of its time budget
    reads_only = args.command in ("query", "list", "timeline") and not args.verified
    # config and doctor judge every setting themselves and report a malformed one instead of refusing to run
    if args.command not in ("config", "doctor", "demo", "help", "completion") and not reads_only:
        refused = _malformed_security_setting()
        if refused is not None:
            print(refused.render(), file=sys.stderr)
            return 2
    module = importlib.import_module(f".commands.{COMMANDS[args.command]}", __package__)
    run: Callable[[argparse.Namespace], int] = module.run
    try:
        return _run(args, run)
    finally:
        if timed:
            timings.print_report()


def _run(args: argparse.Namespace, run: Callable[[argparse.Namespace], int]) -> int:
    from .errors import VaultMeshError

    try:
        try:
            return run(args)
        except OSError as exc:  # a full disk, a read-only file system: the environment failed, not the code
            if isinstance(exc, BrokenPipeError):
                raise
            where = f": {exc.filename}" if exc.filename else ""
            raise VaultMeshError(
                "VM-IO-FAILED", f"{exc.strerror or exc}{where}",
                "free disk space or fix the permissions of that path (TMPDIR chooses where temporary files go), "
                "then run the command again",
            ) from exc
    except VaultMeshError as exc:
        if getattr(args, "json", False):
            import json

            print(json.dumps({"ok": False, "error": exc.as_dict()}, indent=2))
        print(exc.render(), file=sys.stderr)
        return 2 if exc.code == "VM-CONFIG-INVALID" else 1  # a malformed setting is a usage error
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `git vaultmesh log | head -1`: the reader left; say nothing more, like git
        import os

        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())  # so the interpreter's final flush cannot fail again
        except OSError:
            pass
        return 141


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
