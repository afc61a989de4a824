"""The only door to git. Everything goes through the real `git` binary.

Why the binary and not libgit2 (pygit2): libgit2 ignores `GIT_CONFIG_PARAMETERS` (so `git -c k=v vaultmesh`
would silently lose settings), lags on SHA-256 repositories, and is no faster for what we do in bulk: one
long-lived `git cat-file --batch` streams objects, and `git rev-list | git cat-file --batch` reads a whole
history at the speed git itself does. Behaviour is by construction the behaviour of the user's git.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from .errors import VaultMeshError

ZERO_OID_SHA1 = "0" * 40
# Variables that redirect git to another repository; cleared when probing a path of our own choosing.
_REPO_ENV = frozenset({"GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_OBJECT_DIRECTORY",
                       "GIT_ALTERNATE_OBJECT_DIRECTORIES", "GIT_COMMON_DIR", "GIT_PREFIX"})


@dataclass(frozen=True)
class TreeItem:
    mode: str
    type: str
    oid: str
    path: str


@dataclass(frozen=True)
class RawChange:
    """One line of `git diff-tree --raw`: how a path changed between a log commit and its parent."""

    status: str  # A, M, D, T, ...
    old_oid: str
    new_oid: str
    path: str


@dataclass(frozen=True)
class RefUpdate:
    """One compare-and-swap: move `ref` from `old` (None = must not exist) to `new`."""

    ref: str
    new: str
    old: str | None


def _git_exe() -> str:
    exe = shutil.which("git")
    if exe is None:
        raise VaultMeshError("VM-TOOL-MISSING", "the git binary is not on PATH", "install git (>= 2.30)")
    return exe


class Repo:
    """A repository, bare or not. Holds one `cat-file --batch` process for object reads."""

    def __init__(self, git_dir: Path, work_tree: Path | None) -> None:
        self.git_dir = git_dir
        self.work_tree = work_tree
        self._exe = _git_exe()
        self._batch: subprocess.Popen[bytes] | None = None
        self._oid_len: int | None = None

    # --- discovery ----------------------------------------------------------------------------
    @classmethod
    def discover(cls, path: str | os.PathLike[str] | None = None, *, ignore_env: bool = False) -> Repo:
        """Find the repository containing `path` (bare or not), as `git rev-parse` would.

        `ignore_env` drops GIT_DIR & co. so probing a submodule's path is not redirected to the
        superproject (they are set inside hooks and by `git --git-dir=… vaultmesh`)."""
        cwd = Path(path) if path is not None else Path.cwd()
        env = None
        if ignore_env:
            env = {k: v for k, v in os.environ.items() if k not in _REPO_ENV}
        try:
            res = subprocess.run(
                [_git_exe(), "rev-parse", "--absolute-git-dir", "--is-bare-repository"],
                cwd=cwd, capture_output=True, env=env,
            )
        except (FileNotFoundError, NotADirectoryError) as exc:
            raise VaultMeshError("VM-NOT-A-REPO", f"{cwd} does not exist", "cd into a git repository") from exc
        lines = res.stdout.decode(errors="replace").splitlines()
        if res.returncode != 0 or len(lines) < 2:
            raise VaultMeshError(
                "VM-NOT-A-REPO", f"{cwd} is not inside a git repository",
                "cd into a git repository, or run `git init` first",
            )
        git_dir = Path(lines[0])
        work_tree = None
        if lines[1] != "true":
            top = subprocess.run([_git_exe(), "rev-parse", "--show-toplevel"], cwd=cwd, capture_output=True, env=env)
            if top.returncode == 0 and top.stdout.strip():
                work_tree = Path(top.stdout.decode().strip())
        return cls(git_dir, work_tree)

    def close(self) -> None:
        if self._batch is not None:
            assert self._batch.stdin is not None
            self._batch.stdin.close()
            self._batch.wait()
            self._batch = None

    def __enter__(self) -> Repo:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- running git ----------------------------------------------------------------------------
    def _cmd(self, args: Sequence[str]) -> list[str]:
        # --no-replace-objects: refs/replace/* (which a fetch can bring) must never change what we hash
        return [self._exe, "--no-replace-objects", f"--git-dir={self.git_dir}", *args]

    def run(
        self, *args: str, input: bytes | None = None, check: bool = True,
        env: Mapping[str, str] | None = None,
    ) -> bytes:
        """Run git; on failure raise VM-GIT-FAILED carrying git's own message."""
        full_env = dict(os.environ, **env) if env else None
        res = subprocess.run(
            self._cmd(args), input=input, capture_output=True, env=full_env,
            cwd=self.work_tree or self.git_dir,
        )
        if check and res.returncode != 0:
            text = res.stderr.decode(errors="replace")
            msg = text.strip().splitlines()
            raise VaultMeshError(
                "VM-GIT-FAILED", f"git {args[0]} failed: {msg[-1] if msg else 'exit ' + str(res.returncode)}",
                _failure_hint(text, "check the repository with `git fsck`; run with GIT_TRACE=1 for details"),
            )
        return res.stdout

    def try_run(self, *args: str, input: bytes | None = None) -> tuple[int, bytes, bytes]:
        res = subprocess.run(
            self._cmd(args), input=input, capture_output=True, cwd=self.work_tree or self.git_dir,
        )
        return res.returncode, res.stdout, res.stderr

    # --- config (read the way `git config` does, so `git -c k=v` and includes work) ---------------
    def config_get(self, key: str) -> str | None:
        code, out, _ = self.try_run("config", "--get", key)
        return out.decode().rstrip("\n") if code == 0 else None

    def config_get_all(self, pattern: str) -> dict[str, str]:
        code, out, _ = self.try_run("config", "-z", "--get-regexp", pattern)
        result: dict[str, str] = {}
        if code != 0:
            return result
        for item in out.decode().split("\0"):
            if not item:
                continue
            key, _, value = item.partition("\n")
            result[key] = value
        return result

    def config_origins(self, pattern: str) -> list[tuple[str, str, str, str]]:
        """(scope, origin, key, value) of every config entry matching `pattern`, in git's reading order;
        origin is `file:PATH` (git adds no line numbers; callers look the key up in the file)."""
        code, out, _ = self.try_run("config", "-z", "--show-scope", "--show-origin", "--get-regexp", pattern)
        items = out.decode(errors="replace").split("\0") if code == 0 else []
        result: list[tuple[str, str, str, str]] = []
        for i in range(0, len(items) - 2, 3):
            key, _, value = items[i + 2].partition("\n")
            result.append((items[i], items[i + 1], key, value))
        return result

    def config_set(self, key: str, value: str) -> None:
        self.run("config", key, value)

    # --- names ----------------------------------------------------------------------------------
    @property
    def oid_len(self) -> int:
        if self._oid_len is None:
            fmt = self.run("rev-parse", "--show-object-format").decode().strip()
            self._oid_len = 64 if fmt == "sha256" else 40
        return self._oid_len

    @property
    def zero_oid(self) -> str:
        return "0" * self.oid_len

    def rev_parse(self, rev: str, peel: str = "object") -> str | None:
        """Resolve `rev` to an oid (`peel` e.g. "commit"), or None when it names nothing."""
        code, out, _ = self.try_run("rev-parse", "--verify", "--quiet", "--end-of-options", f"{rev}^{{{peel}}}")
        return out.decode().strip() if code == 0 else None

    def ref_oid(self, ref: str) -> str | None:
        """The oid a ref points at, without peeling; None when the ref does not exist."""
        code, out, _ = self.try_run("rev-parse", "--verify", "--quiet", "--end-of-options", ref)
        return out.decode().strip() if code == 0 else None

    def path_oid(self, treeish: str, path: str) -> str | None:
        """The oid at `path` inside `treeish` (`git rev-parse treeish:path`), or None."""
        return self.ref_oid(f"{treeish}:{path}")

    def full_ref(self, rev: str) -> str | None:
        if rev.startswith("-"):
            return None
        code, out, _ = self.try_run("rev-parse", "--symbolic-full-name", rev)
        name = out.decode().strip()
        return name if code == 0 and name.startswith("refs/") else None

    def refs(self, prefix: str) -> dict[str, str]:
        out = self.run("for-each-ref", "--format=%(refname) %(objectname)", prefix).decode()
        pairs = (line.split(" ", 1) for line in out.splitlines() if line)
        return {name: oid for name, oid in pairs}

    def is_ancestor(self, ancestor: str, descendant: str) -> bool:
        code, _, _ = self.try_run("merge-base", "--is-ancestor", ancestor, descendant)
        return code == 0

    # --- objects ----------------------------------------------------------------------------------
    def _batch_proc(self) -> subprocess.Popen[bytes]:
        if self._batch is None:
            self._batch = subprocess.Popen(
                self._cmd(["cat-file", "--batch"]), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                cwd=self.work_tree or self.git_dir,
            )
        return self._batch

    def read_object(self, oid: str) -> tuple[str, bytes]:
        """(type, body) of an object; VM-LOG-CORRUPT-free: raises KeyError when it is missing."""
        proc = self._batch_proc()
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(oid.encode() + b"\n")
        proc.stdin.flush()
        return _read_batch_record(proc.stdout, oid)

    def has_object(self, oid: str) -> bool:
        try:
            self.read_object(oid)
        except KeyError:
            return False
        return True

    def read_blobs(self, oids: Sequence[str]) -> list[bytes]:
        """Many objects in one round trip (writes all names, then reads)."""
        if not oids:
            return []
        res = subprocess.run(
            self._cmd(["cat-file", "--batch"]), input="".join(o + "\n" for o in oids).encode(),
            capture_output=True, cwd=self.work_tree or self.git_dir,
        )
        out, pos, bodies = res.stdout, 0, []
        for oid in oids:
            # a corrupt object makes cat-file die mid-stream: whatever is not fully there is "missing"
            nl = out.find(b"\n", pos)
            header = out[pos:nl].split() if nl >= 0 else []
            if len(header) < 3 or not header[2].isdigit():
                raise KeyError(oid)
            size = int(header[2])
            if nl + 1 + size > len(out):
                raise KeyError(oid)
            bodies.append(out[nl + 1: nl + 1 + size])
            pos = nl + 1 + size + 1
        if res.returncode != 0:
            raise KeyError(oids[-1])
        return bodies

    def stream_commits(self, tip: str, exclude: Sequence[str] = ()) -> bytes:
        """Raw `cat-file --batch` output for every commit reachable from tip and not from `exclude`."""
        return b"".join(self.stream_commit_chunks(tip, exclude))

    def stream_commit_chunks(self, tip: str, exclude: Sequence[str] = (), chunk: int = 1 << 20) -> Iterator[bytes]:
        """The same output in pieces as git writes it, so the caller parses while git is still reading.

        One `rev-list | cat-file --batch` pipe with no Python in the middle: this is the floor the
        history benchmark compares against."""
        rev_list = subprocess.Popen(
            self._cmd(["rev-list", tip, *[f"^{e}" for e in exclude]]), stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, cwd=self.work_tree or self.git_dir,
        )
        # --buffer: same bytes, but cat-file no longer flushes after every object; unflushed it is one write
        # per ~4 KiB instead of one per commit, ~15% less CPU for a long history (benchmarks/bench_foundation.py)
        cat = subprocess.Popen(
            self._cmd(["cat-file", "--batch", "--buffer"]), stdin=rev_list.stdout, stdout=subprocess.PIPE,
            cwd=self.work_tree or self.git_dir,
        )
        assert rev_list.stdout is not None and cat.stdout is not None
        rev_list.stdout.close()
        try:
            fd = cat.stdout.fileno()
            while data := os.read(fd, chunk):
                yield data
        finally:
            cat.stdout.close()
            cat.wait()
            _, err = rev_list.communicate()
        if rev_list.returncode != 0 or cat.returncode != 0:
            raise VaultMeshError(
                "VM-GIT-FAILED", f"git rev-list {tip} failed: {err.decode(errors='replace').strip()}",
                "a commit of this history is missing: run `git fsck`",
            )

    def write_blobs(self, blobs: Sequence[bytes]) -> list[str]:
        """Write many blobs with one `hash-object --stdin-paths` process."""
        if not blobs:
            return []
        with tempfile.TemporaryDirectory(prefix="vm-blobs-") as tmp:
            paths = []
            for i, data in enumerate(blobs):
                p = Path(tmp) / str(i)
                try:
                    p.write_bytes(data)
                except OSError as exc:  # ENOSPC, EFBIG (ulimit -f), EDQUOT: nothing was written to the repository
                    raise VaultMeshError(
                        "VM-IO-FAILED", f"cannot stage a {len(data)}-byte object in {tmp}: {exc.strerror or exc}",
                        "free disk space (or raise `ulimit -f`) where TMPDIR points, then run the command again",
                    ) from None
                paths.append(str(p))
            out = self.run("hash-object", "-w", "--no-filters", "--stdin-paths", input="\n".join(paths).encode() + b"\n")
        return out.decode().split()

    def build_tree(
        self, base_tree: str | None, add: Mapping[str, str], remove: Iterable[str] = (),
    ) -> str:
        """A new tree = base_tree + blobs at `add` paths (path -> blob oid) - `remove` paths.

        Uses a throwaway index so large fanned-out trees are written in one pass by git itself."""
        with tempfile.TemporaryDirectory(prefix="vm-index-") as tmp:
            env = {"GIT_INDEX_FILE": str(Path(tmp) / "index")}
            if base_tree:
                self.run("read-tree", base_tree, env=env)
            else:
                self.run("read-tree", "--empty", env=env)
            zero = self.zero_oid
            lines = [f"0 {zero}\t{path}" for path in remove]
            lines += [f"100644 {oid}\t{path}" for path, oid in add.items()]
            if lines:
                self.run("update-index", "-z", "--index-info", input="\0".join(lines).encode() + b"\0", env=env)
            return self.run("write-tree", env=env).decode().strip()

    def commit_tree(self, tree: str, parents: Sequence[str], message: str) -> str:
        args = ["commit-tree", tree]
        for p in parents:
            args += ["-p", p]
        env = _ident_env(self)
        return self.run(*args, input=message.encode(), env=env).decode().strip()

    def ls_tree(self, treeish: str, path: str | None = None, recursive: bool = True) -> list[TreeItem]:
        args = ["ls-tree", "-z", "--full-tree"]
        if recursive:
            args.append("-r")
        args.append(treeish)
        if path:
            args += ["--", path]
        out = self.run(*args).decode()
        items = []
        for rec in out.split("\0"):
            if not rec:
                continue
            meta, _, name = rec.partition("\t")
            mode, typ, oid = meta.split()
            items.append(TreeItem(mode, typ, oid, name))
        return items

    def first_parent_chain(self, tip: str) -> list[tuple[str, list[str]]]:
        """(commit, parents) of tip's first-parent chain, oldest first."""
        out = self.run("rev-list", "--first-parent", "--reverse", "--parents", tip).decode()
        chain = []
        for line in out.splitlines():
            parts = line.split()
            chain.append((parts[0], parts[1:]))
        return chain

    def diff_tree(self, old: str | None, new: str) -> list[RawChange]:
        """Raw changes between two commits' trees (old None = against the empty tree)."""
        if old is None:
            out = self.run("diff-tree", "-r", "-z", "--no-renames", "--raw", "--root", "--no-commit-id", new)
        else:
            out = self.run("diff-tree", "-r", "-z", "--no-renames", "--raw", old, new)
        fields = out.decode().split("\0")
        changes = []
        i = 0
        while i < len(fields) - 1:
            meta = fields[i]
            if not meta.startswith(":"):
                i += 1
                continue
            _, _, old_oid, new_oid, status = meta[1:].split(" ")
            changes.append(RawChange(status[0], old_oid, new_oid, fields[i + 1]))
            i += 2
        return changes

    # --- refs (compare-and-swap only) ---------------------------------------------------------------
    def update_refs(self, updates: Sequence[RefUpdate]) -> bool:
        """Apply all updates atomically, each checked against its expected old value.

        Returns False when any ref moved under us (a lost race); the caller re-reads and retries."""
        zero = self.zero_oid
        lines = ["start"]
        for u in updates:
            old = u.old if u.old is not None else zero
            lines.append(f"verify {u.ref} {old}" if u.new == old else f"update {u.ref} {u.new} {old}")
        lines += ["prepare", "commit"]
        code, _, err = self.try_run("update-ref", "--stdin", input=("\n".join(lines) + "\n").encode())
        if code == 0:
            return True
        text = err.decode(errors="replace")
        # A lost race: a ref moved ("is at X but expected Y", "reference already exists", it vanished), or another
        # process holds its lock right now ("Unable to create '….lock': File exists"). Anything else (no
        # permission, a read-only or full disk) does not go away by retrying: report it at once.
        if any(s in text for s in _RACE_MESSAGES):
            return False
        first = next((line for line in text.splitlines() if line.strip()), f"exit {code}")
        raise VaultMeshError("VM-GIT-FAILED", f"git update-ref failed: {first.strip()}",
                             _failure_hint(text, "check that the repository is writable"))

    def fetch(self, remote: str, refspecs: Sequence[str]) -> None:
        code, _, err = self.try_run("fetch", "--no-tags", "--quiet", remote, *refspecs)
        if code != 0:
            raise VaultMeshError(
                "VM-REMOTE-FAILED", f"git fetch {remote} failed: {err.decode(errors='replace').strip()}",
                f"check `git remote -v` and that {remote} has a ledger (refs/vaultmesh/log)",
            )


_RACE_MESSAGES = ("is at ", "but expected", "reference already exists", "unable to resolve reference", "File exists")
_FAILURE_HINTS = (
    (("No space left on device", "Disk quota exceeded", "File too large"),
     "the disk (or your quota) is full: free some space and run the command again"),
    (("Permission denied", "insufficient permission", "Read-only file system", "Operation not permitted"),
     "this user cannot write to the repository: run the command as its owner, or fix the permissions of .git"),
)


def _failure_hint(stderr: str, default: str) -> str:
    """The fix for a git failure whose cause is the environment rather than the repository."""
    for needles, hint in _FAILURE_HINTS:
        if any(n in stderr for n in needles):
            return hint
    return default


def _read_batch_record(stream: IO[bytes], oid: str) -> tuple[str, bytes]:
    header = stream.readline()
    parts = header.split()
    if len(parts) != 3:
        raise KeyError(oid)
    typ, size = parts[1].decode(), int(parts[2])
    body = stream.read(size)
    stream.read(1)
    return typ, body


def _ident_env(repo: Repo) -> dict[str, str]:
    """Ledger commits carry the user's identity when set, else a fixed one; dates honour SOURCE_DATE_EPOCH."""
    env: dict[str, str] = {}
    code, _, _ = repo.try_run("var", "GIT_COMMITTER_IDENT")
    if code != 0:
        env.update({
            "GIT_AUTHOR_NAME": "git-vaultmesh", "GIT_AUTHOR_EMAIL": "vaultmesh@localhost",
            "GIT_COMMITTER_NAME": "git-vaultmesh", "GIT_COMMITTER_EMAIL": "vaultmesh@localhost",
        })
    sde = os.environ.get("SOURCE_DATE_EPOCH")
    if sde and sde.isdigit():
        env["GIT_AUTHOR_DATE"] = env["GIT_COMMITTER_DATE"] = f"@{sde} +0000"
    return env


def submodule_repo(repo: Repo, path: str) -> Repo | None:
    """The repository of the submodule checked out at `path`, or None when it is absent (e.g. a bare clone)."""
    candidates = []
    if repo.work_tree is not None:
        candidates.append(repo.work_tree / path)
    candidates.append(repo.git_dir / "modules" / path)
    for cand in candidates:
        if cand.exists():
            try:
                sub = Repo.discover(cand, ignore_env=True)
            except VaultMeshError:
                continue
            if sub.git_dir != repo.git_dir:
                return sub
    return None


@dataclass(frozen=True)
class LogCommit:
    oid: str
    parents: list[str]
    message: str
    changes: list[RawChange]


def log_chain(repo: Repo, tip: str) -> list[LogCommit]:
    """Every commit of tip's first-parent chain, oldest first, with its raw changes against its first parent.

    One `git log` process for the whole chain: a ledger can have thousands of append commits."""
    out = repo.run(
        "log", "--first-parent", "--reverse", "--raw", "-z", "--no-abbrev", "--no-renames", "--root",
        "--format=%x01%H %P%x02%B%x03", tip,
    ).decode()
    chain: list[LogCommit] = []
    for rec in out.split("\x01")[1:]:
        head, _, rest = rec.partition("\x02")
        message, _, raw = rest.partition("\x03")
        ids = head.split()
        fields = raw.split("\0")
        changes = []
        i = 0
        while i < len(fields):
            meta = fields[i].lstrip("\n")
            if meta.startswith(":") and i + 1 < len(fields):
                _, _, old_oid, new_oid, status = meta[1:].split(" ")
                changes.append(RawChange(status[0], old_oid, new_oid, fields[i + 1]))
                i += 2
            else:
                i += 1
        chain.append(LogCommit(ids[0], ids[1:], message, changes))
    return chain


def grep_tree(repo: Repo, treeish: str, needle: str, path: str) -> list[str]:
    """Paths under `path` in `treeish` whose content contains the fixed string `needle` (git grep, in C)."""
    code, out, err = repo.try_run("grep", "-l", "-F", "-z", "-e", needle, treeish, "--", path)
    if code == 1:
        return []
    if code != 0:
        raise VaultMeshError("VM-GIT-FAILED", f"git grep failed: {err.decode(errors='replace').strip()}",
                             "check the repository with `git fsck`")
    prefix = treeish + ":"
    return [p[len(prefix):] if p.startswith(prefix) else p for p in out.decode().split("\0") if p]
