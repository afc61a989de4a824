"""The attacker's toolkit: real git plumbing and real gpg, nothing from git_vaultmesh that writes refs.

An attacker with write access to a repository can write any object and move any ref. `Tamper` does exactly
that: `hash-object`, a throwaway index (`GIT_INDEX_FILE` + `read-tree` / `update-index` / `write-tree`),
`commit-tree`, `update-ref`. Where a row needs a *validly signed* forgery (to test the parser or a rule rather
than a broken signature), it signs with `gpg --detach-sign` directly over JCS(body); where it needs an
internally consistent checkpoint it computes it with the tool's own pure helpers (`checkpoint_text`,
`merkle`), which only hash and never touch the repository.
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from git_vaultmesh import ledger, merkle
from git_vaultmesh.entry import Entry, canonical, entry_path, parse_line
from git_vaultmesh.errors import CODES, VaultMeshError

from conftest import GIT_ENV, GpgKey, vm

REF_LOG = "refs/vaultmesh/log"
REF_NOTES = "refs/notes/vaultmesh"


def base_env(home: str, gnupghome: str) -> dict[str, str]:
    """A hermetic environment for git and gpg (no user or system config)."""
    env = dict(os.environ)
    env.update(GIT_ENV)
    env.update({"HOME": home, "GNUPGHOME": gnupghome})
    env.pop("GIT_CONFIG_PARAMETERS", None)
    env.pop("SOURCE_DATE_EPOCH", None)
    return env


def run_git(cwd: str | Path, *args: str, env: dict[str, str], input: bytes | None = None) -> bytes:
    res = subprocess.run(["git", *args], cwd=cwd, input=input, capture_output=True, env=env)
    if res.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} failed: {res.stderr.decode(errors='replace')}")
    return res.stdout


def gpg_sign(key: GpgKey, data: bytes, *, armor: bool, env: dict[str, str]) -> bytes:
    """A detached OpenPGP signature made by gpg itself (the attacker's or a stolen key)."""
    res = subprocess.run(
        ["gpg", "--batch", "--yes", "--pinentry-mode", "loopback", "--passphrase", "", "--local-user",
         key.fingerprint, "--detach-sign", "--armor" if armor else "--no-armor", "--output", "-"],
        input=data, capture_output=True, env=dict(env, GNUPGHOME=key.home),
    )
    assert res.returncode == 0 and res.stdout, res.stderr.decode(errors="replace")
    return res.stdout


def gpg_export(key: GpgKey, env: dict[str, str]) -> str:
    argv = ["gpg", "--batch", "--armor", "--export-options", "export-minimal", "--export", key.fingerprint]
    res = subprocess.run(argv, capture_output=True, env=dict(env, GNUPGHOME=key.home), check=True)
    return res.stdout.decode()


def leaf_data(blob: bytes) -> bytes:
    """The Merkle leaf data the verifier uses for an entry blob: the line, or the raw blob if malformed."""
    try:
        return ledger.split_blob(blob, "entry")
    except VaultMeshError:
        return blob


def parsed_or_none(blob: bytes) -> Entry | None:
    """The entry as the verifier's tolerant view parses it; None where it cannot."""
    try:
        return parse_line(ledger.split_blob(blob, "entry"))
    except VaultMeshError:
        return None


def policy_line(blobs: Sequence[bytes]) -> tuple[int, bytes]:
    """The checkpoint's policy commitment over these entry blobs, computed as the tool computes it."""
    return ledger.policy_commitment([leaf_data(b) for b in blobs], [parsed_or_none(b) for b in blobs])


@dataclass
class Tamper:
    """Plumbing-level writes to one repository copy."""

    repo: Path
    env: dict[str, str]
    log_id: str
    # checkpoints written by this toolkit carry the `policy <n> <root>` line, as the current version writes them
    # (off: the line-less form of older versions, which verify still reads but `prove` refuses to bundle)
    commit_policies: bool = False

    # --- reading ------------------------------------------------------------------------------------
    def git(self, *args: str, input: bytes | None = None, env: dict[str, str] | None = None) -> str:
        return run_git(self.repo, *args, env=dict(self.env, **(env or {})), input=input).decode().strip()

    def gitb(self, *args: str, input: bytes | None = None) -> bytes:
        return run_git(self.repo, *args, env=self.env, input=input)

    def oid(self, rev: str) -> str:
        return self.git("rev-parse", "--verify", rev)

    def head(self) -> str:
        return self.oid(REF_LOG)

    def chain(self) -> list[str]:
        """The log commits, oldest first."""
        return self.git("rev-list", "--first-parent", "--reverse", REF_LOG).split()

    def blobs(self, commit: str | None = None) -> list[bytes]:
        """The entry blobs (line + newline) of a log commit, in log order."""
        commit = commit or self.head()
        out = self.git("ls-tree", "-r", "--name-only", commit, "--", "entries").split("\n")
        return [self.gitb("cat-file", "blob", f"{commit}:{p}") for p in sorted(x for x in out if x)]

    def entries(self, commit: str | None = None) -> list[dict[str, Any]]:
        return [json.loads(b) for b in self.blobs(commit)]

    def sizes(self) -> list[int]:
        """Log size at each log commit, oldest first."""
        return [len(self.git("ls-tree", "-r", "--name-only", c, "--", "entries").split())
                for c in self.chain()]

    def loose_path(self, oid: str) -> Path:
        git_dir = Path(self.git("rev-parse", "--absolute-git-dir"))
        return git_dir / "objects" / oid[:2] / oid[2:]

    # --- writing objects ------------------------------------------------------------------------------
    def blob(self, data: bytes) -> str:
        return self.git("hash-object", "-w", "--no-filters", "--stdin", input=data)

    def tree(self, base: str | None, add: dict[str, str | tuple[str, str]],
             remove: Sequence[str] = ()) -> str:
        """base tree + add (path -> blob oid, or (mode, oid)) - remove, through a throwaway index."""
        with tempfile.TemporaryDirectory(prefix="vmadv-idx-") as tmp:
            env = {"GIT_INDEX_FILE": str(Path(tmp) / "index")}
            if base:
                self.git("read-tree", base, env=env)
            else:
                self.git("read-tree", "--empty", env=env)
            lines = [f"0 {'0' * 40}\t{p}" for p in remove]
            for path, spec in add.items():
                mode, oid = spec if isinstance(spec, tuple) else ("100644", spec)
                lines.append(f"{mode} {oid}\t{path}")
            if lines:
                data = "\0".join(lines).encode() + b"\0"
                self.git("update-index", "-z", "--index-info", input=data, env=env)
            return self.git("write-tree", env=env)

    def commit(self, tree: str, parents: Sequence[str], message: str = "vaultmesh: append\n") -> str:
        args = ["commit-tree", tree]
        for p in parents:
            args += ["-p", p]
        return self.git(*args, input=message.encode())

    def set_ref(self, ref: str, oid: str) -> None:
        self.git("update-ref", ref, oid)

    def delete_ref(self, ref: str) -> None:
        self.git("update-ref", "-d", ref)

    # --- signing ---------------------------------------------------------------------------------------
    def sig(self, key: GpgKey, body: dict[str, Any], signer: str | None = None) -> dict[str, str]:
        raw = gpg_sign(key, canonical(body), armor=False, env=self.env)
        signer = signer or key.fingerprint
        return {"format": "openpgp", "signer": signer, "sig": base64.b64encode(raw).decode()}

    def line(self, body: dict[str, Any], sigs: list[dict[str, str]]) -> bytes:
        """An entry blob: JCS line + newline."""
        return canonical({"v": 1, "body": body, "sigs": sigs}) + b"\n"

    def signed(self, key: GpgKey, body: dict[str, Any]) -> bytes:
        return self.line(body, [self.sig(key, body)])

    def body(self, typ: str, **fields: Any) -> dict[str, Any]:
        return {"type": typ, "log": self.log_id, "recorded_at": "2030-01-01T00:00:00Z", **fields}

    def checkpoint(self, blobs: Sequence[bytes], log_id: str | None = None) -> bytes:
        root = merkle.root_from_leaf_hashes([merkle.leaf_hash(leaf_data(b)) for b in blobs])
        policies = policy_line(blobs) if self.commit_policies else None
        return ledger.checkpoint_text(log_id or self.log_id, len(blobs), root, policies)

    def checkpoint_files(self, cp: bytes, key: GpgKey | None, old_sig: str | None = None) -> dict[str, str]:
        """checkpoint + checkpoint.sig blobs: signed by `key`, or (key None) the given old signature blob."""
        files = {"checkpoint": self.blob(cp)}
        if key is not None:
            files["checkpoint.sig"] = self.blob(gpg_sign(key, cp, armor=True, env=self.env))
        elif old_sig is not None:
            files["checkpoint.sig"] = old_sig
        return files

    def sync_notes(self) -> None:
        """Rewrite refs/notes/vaultmesh to match the log, as a careful attacker would (notes are derived)."""
        notes: dict[str, bytes] = {}
        for blob in self.blobs():
            try:  # the tool's own strict parser: an entry the verifier cannot parse gets no note
                subject = parse_line(ledger.split_blob(blob, "entry")).subject_commit
            except VaultMeshError:
                continue
            if subject:
                notes[subject] = notes.get(subject, b"") + blob
        tree = self.tree(None, {f"{c[:2]}/{c[2:]}": self.blob(data) for c, data in notes.items()})
        old = self.git("for-each-ref", "--format=%(objectname)", REF_NOTES)
        self.set_ref(REF_NOTES, self.commit(tree, [old] if old else [], "vaultmesh notes\n"))

    # --- whole-log operations --------------------------------------------------------------------------
    def append(self, blobs: Sequence[bytes], key: GpgKey | None, *, start: int | None = None,
               parents: Sequence[str] | None = None, move: bool = True) -> str:
        """A commit on top of the log adding `blobs` as the next entries, checkpoint signed by `key`."""
        head = self.head()
        old = self.blobs(head)
        start = len(old) if start is None else start
        add: dict[str, str | tuple[str, str]] = {
            entry_path(start + i): self.blob(b) for i, b in enumerate(blobs)}
        add.update(self.checkpoint_files(self.checkpoint([*old, *blobs]), key))
        commit = self.commit(self.tree(f"{head}^{{tree}}", add), list(parents or [head]))
        if move:
            self.set_ref(REF_LOG, commit)
            self.sync_notes()
        return commit

    def on_top(self, add: dict[str, str | tuple[str, str]] | None = None, remove: Sequence[str] = ()) -> str:
        """A raw commit on top of the log: arbitrary tree edits, nothing re-signed."""
        head = self.head()
        commit = self.commit(self.tree(f"{head}^{{tree}}", add or {}, remove), [head])
        self.set_ref(REF_LOG, commit)
        return commit

    def rewrite(self, blobs: Sequence[bytes], key: GpgKey | None, *, sizes: Sequence[int] | None = None,
                log_id: str | None = None) -> str:
        """Replace the log by a fresh chain holding `blobs`: one append commit per size in `sizes`, each with
        its own checkpoint signed by `key` (None: keep the original commit's old checkpoint.sig)."""
        sizes = list(sizes or range(1, len(blobs) + 1))
        old_sigs = [self.oid(f"{c}:checkpoint.sig") for c in self.chain()]
        parent: str | None = None
        tree: str | None = None
        done = 0
        for i, size in enumerate(sizes):
            add: dict[str, str | tuple[str, str]] = {
                entry_path(s): self.blob(blobs[s]) for s in range(done, size)}
            old = old_sigs[min(i, len(old_sigs) - 1)]
            add.update(self.checkpoint_files(self.checkpoint(blobs[:size], log_id), key, old_sig=old))
            tree = self.tree(tree, add)
            parent = self.commit(tree, [parent] if parent else [])
            done = size
        assert parent is not None
        self.set_ref(REF_LOG, parent)
        self.sync_notes()
        return parent

    def replace_entry(self, seq: int, blob: bytes, key: GpgKey | None) -> str:
        """Rewrite the log as if entry `seq` had always been `blob` (same commit boundaries)."""
        blobs = self.blobs()
        blobs[seq] = blob
        return self.rewrite(blobs, key, sizes=self.sizes())


class Disagreement(Exception):
    """check-proof (or prove) and verify disagree: the one failure a strict xfail may stand for."""


def agree(ok: bool, what: str) -> None:
    if not ok:
        raise Disagreement(what)


# --- proof bundles, through the CLI ---------------------------------------------------------------------
_ERROR_LINE = re.compile(r"^error: (VM-[A-Z0-9-]+): ", re.M)


def prove(repo: Path, env: dict[str, str], tag: str, out: Path) -> tuple[dict[str, Any] | None, str | None]:
    """`prove TAG --in TAG`: (the bundle, None), or (None, the code it refused with)."""
    res = vm(repo, "prove", tag, "--in", tag, "-o", str(out), env=env)
    assert "Traceback" not in res.stderr, res.stderr
    if res.returncode == 0:
        return json.loads(out.read_text(encoding="utf-8")), None
    found = _ERROR_LINE.search(res.stderr)
    assert res.returncode == 1 and found, f"prove {tag}: exit {res.returncode} without a coded error:\n{res.stderr}"
    return None, found.group(1)


def check_proof(bundle: dict[str, Any], path: Path, trust_root: str,
                env: dict[str, str]) -> tuple[int, dict[str, Any]]:
    """`check-proof --json` run from the bundle's directory (no repository): exit code and report (minus facts)."""
    path.write_text(json.dumps(bundle), encoding="utf-8")
    res = vm(path.parent, "check-proof", "--trust-root", trust_root, str(path), "--json", env=env)
    assert "Traceback" not in res.stderr and "Traceback" not in res.stdout, res.stderr
    try:
        report: dict[str, Any] = json.loads(res.stdout)
    except ValueError:
        raise AssertionError(f"check-proof printed no JSON (exit {res.returncode}):\n{res.stdout}\n{res.stderr}") from None
    assert isinstance(report.pop("facts", None), list), report
    return res.returncode, report


# --- the table -----------------------------------------------------------------------------------------
@dataclass
class World:
    """The pristine ledger repository every row starts from (built once, copied per row)."""

    root: Path  # holds repo/ and art/
    gnupghome: str
    alice: GpgKey  # the genesis signer, pinned as vaultmesh.trustRoot
    mallory: GpgKey  # a second key in the same GNUPGHOME, in no policy
    log_id: str
    env: dict[str, str]

    @property
    def repo(self) -> Path:
        return self.root / "repo"

    @property
    def art(self) -> Path:
        return self.root / "art"


@dataclass
class Ctx:
    """What an attack function gets: its own copy of the pristine repo, and the keys."""

    world: World
    repo: Path
    art: Path  # a private copy of the artifacts directory
    work: Path  # scratch space for the row (other repositories, files)
    t: Tamper
    vm_env: dict[str, str]

    @property
    def alice(self) -> GpgKey:
        return self.world.alice

    @property
    def mallory(self) -> GpgKey:
        return self.world.mallory


@dataclass(frozen=True)
class Row:
    id: str
    description: str
    threat: str  # the threat category (TUF / gittuf vocabulary where it fits)
    attack: Callable[[Ctx], None]
    args: tuple[str, ...]  # verify arguments; "{art}" is replaced by the row's artifacts directory
    expect: tuple[str, ...]  # every one of these codes must be among the failed checks' codes
    why: str = ""  # why this code (when more than one would be defensible)

    def __post_init__(self) -> None:
        for want in self.expect:
            for code in want.split("|"):
                assert code in CODES, f"{self.id}: unregistered code {code}"


@dataclass
class Tally:
    """Figures for the summary line: rows tried, and rows rejected with the right code."""

    tried: list[str] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)
    problems: dict[str, str] = field(default_factory=dict)
    got: dict[str, list[str]] = field(default_factory=dict)  # row id -> distinct failed codes


TALLY = Tally()
