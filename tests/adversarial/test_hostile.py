"""A hostile environment, for real: read-only repository, full disk, missing gpg, hung gpg-agent, unreadable
artifact, SHA-256 repository. Each must end in a coded error (code, cause, hint), the ledger unchanged - or
work. Then the error catalogue: every code constructed is registered, documented, and exercised by a test.

Tests run as root in CI, where file permissions do not bind: a read-only repository is made real by running
the recorder in a new user namespace (`unshare --user`), where root's files are no longer root's to override;
a full disk is a small tmpfs mounted in a private mount namespace (`unshare --mount`), gone when it exits.
Where the machine allows neither, the case is skipped and the reason printed.
"""

from __future__ import annotations

import ast
import inspect
import json
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from git_vaultmesh.errors import CODES, VaultMeshError, errors_markdown

from conftest import GpgKey, git, kill_agent, make_gpg_home, vm, vm_ok

ROOT = Path(__file__).resolve().parents[2]
CODE_RE = re.compile(r"VM-[A-Z0-9]+(?:-[A-Z0-9]+)*")


# --- helpers -----------------------------------------------------------------------------------------------
def refs(repo: Path) -> dict[str, str]:
    out = git(repo, "for-each-ref", "--format=%(refname) %(objectname)", "refs/vaultmesh", "refs/notes")
    return dict(line.split(" ", 1) for line in out.splitlines())


def fsck_clean(repo: Path) -> str:
    res = subprocess.run(["git", "fsck", "--full", "--no-dangling", "--no-progress"], cwd=repo, capture_output=True,
                         text=True)
    assert res.returncode == 0 and not (res.stdout + res.stderr).strip(), res.stdout + res.stderr
    return res.stdout


def assert_coded(res: subprocess.CompletedProcess[str], code: str) -> None:
    """Exit 1, `error: CODE: cause` and `hint: …` on stderr, never a traceback."""
    assert "Traceback" not in res.stderr + res.stdout, res.stderr
    assert res.returncode == 1, (res.returncode, res.stdout, res.stderr)
    lines = res.stderr.strip().splitlines()
    assert any(line.startswith(f"error: {code}: ") and len(line) > len(code) + 12 for line in lines), res.stderr
    assert any(line.startswith("hint: ") and len(line) > 12 for line in lines), res.stderr


def run_cli(cwd: Path, *args: str, prefix: Sequence[str] = (), env: dict[str, str] | None = None,
            **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*prefix, sys.executable, "-m", "git_vaultmesh", *args], cwd=cwd, capture_output=True,
                          text=True, env=dict(os.environ, **(env or {})), timeout=120, **kw)  # type: ignore[call-overload]


def unprivileged_prefix() -> list[str]:
    """A command prefix under which this process's own files obey their permission bits."""
    if os.geteuid() != 0:
        return []
    if shutil.which("unshare") is None:
        pytest.skip("running as root and `unshare` is not installed: permissions cannot be made to bind")
    probe = Path(tempfile.mkdtemp(prefix="vmro"))
    try:
        probe.chmod(0o500)
        res = subprocess.run(["unshare", "--user", "sh", "-c", f"touch {probe}/x"], capture_output=True, text=True)
        if res.returncode != 0 and "Permission denied" in res.stderr and not (probe / "x").exists():
            return ["unshare", "--user"]
        pytest.skip(f"running as root and a user namespace does not drop root's rights here: {res.stderr.strip()}")
    finally:
        probe.chmod(0o700)
        shutil.rmtree(probe, ignore_errors=True)
    raise AssertionError("unreachable")


def mount_ns_prefix() -> list[str]:
    """A command prefix that may mount a tmpfs in a private mount namespace (vanishes when it exits)."""
    if shutil.which("unshare") is None:
        pytest.skip("`unshare` is not installed: cannot mount a small tmpfs to fill")
    mnt = Path(tempfile.mkdtemp(prefix="vmmnt"))
    errors = []
    try:
        for prefix in (["unshare", "--mount", "--propagation", "private"],
                       ["unshare", "--user", "--map-root-user", "--mount", "--propagation", "private"]):
            res = subprocess.run([*prefix, "sh", "-c", f"mount -t tmpfs -o size=64k vmprobe {mnt}"],
                                 capture_output=True, text=True)
            if res.returncode == 0:
                return prefix
            errors.append(res.stderr.strip())
    finally:
        shutil.rmtree(mnt, ignore_errors=True)
    pytest.skip(f"cannot mount a tmpfs in a private namespace here ({'; '.join(errors)}); "
                "test_file_size_limit_is_a_coded_error still covers a failing write")
    raise AssertionError("unreachable")


# --- read-only repository ------------------------------------------------------------------------------------
@pytest.fixture
def read_only(ledger_repo: Path) -> Iterator[list[Path]]:
    """Paths to chmod a-w for the test (restored afterwards)."""
    paths: list[Path] = []
    yield paths
    for p in reversed(paths):
        for q in [p, *p.rglob("*")] if p.is_dir() else [p]:
            q.chmod(q.stat().st_mode | stat.S_IWUSR)


def make_read_only(paths: list[Path], *targets: Path, recursive: bool = True) -> None:
    for t in targets:
        paths.append(t)
        for q in [t, *t.rglob("*")] if t.is_dir() and recursive else [t]:
            q.chmod(q.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))


def test_read_only_refs_fail_at_once_with_a_coded_error(ledger_repo: Path, read_only: list[Path]) -> None:
    """No permission to lock a ref is not a lost race: it used to be retried 64 times (~9 s) and reported
    as VM-RACE-LOST ("another process is appending heavily")."""
    prefix = unprivileged_prefix()
    gd = ledger_repo / ".git"
    before = refs(ledger_repo)
    make_read_only(read_only, gd / "refs")
    make_read_only(read_only, gd, recursive=False)  # nor packed-refs
    t0 = time.monotonic()
    res = run_cli(ledger_repo, "record", "HEAD", "--environment", "ro", prefix=prefix)
    elapsed = time.monotonic() - t0
    assert_coded(res, "VM-GIT-FAILED")
    assert "Permission denied" in res.stderr and "cannot write to the repository" in res.stderr
    assert elapsed < 8, f"{elapsed:.1f} s: was it retried as a race?"
    assert refs(ledger_repo) == before


def test_read_only_object_store_is_a_coded_error(ledger_repo: Path, read_only: list[Path]) -> None:
    prefix = unprivileged_prefix()
    before = refs(ledger_repo)
    make_read_only(read_only, ledger_repo / ".git" / "objects")
    res = run_cli(ledger_repo, "record", "HEAD", "--environment", "ro", prefix=prefix)
    assert_coded(res, "VM-GIT-FAILED")
    assert refs(ledger_repo) == before
    fsck_clean(ledger_repo)


# --- full disk ---------------------------------------------------------------------------------------------
FILL_AND_RECORD = r"""
import json, os, shutil, subprocess, sys
mnt, src = sys.argv[1], sys.argv[2]
subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "vmfull", mnt], check=True)
repo = os.path.join(mnt, "repo")
shutil.copytree(src, repo, symlinks=True)
def refs():
    return subprocess.run(["git", "for-each-ref", "refs/vaultmesh", "refs/notes"], cwd=repo, capture_output=True,
                          text=True).stdout
def cli(*args):
    r = subprocess.run([sys.executable, "-m", "git_vaultmesh", *args], cwd=repo, capture_output=True, text=True)
    return {"rc": r.returncode, "stdout": r.stdout, "stderr": r.stderr}
before = refs()
with open(os.path.join(mnt, "fill"), "wb", buffering=0) as fh:
    try:
        while True:
            fh.write(b"\0" * 1024)
    except OSError:
        pass
out = {"full": cli("record", "HEAD", "--environment", "disk-full"), "refs_unchanged": refs() == before}
fsck = subprocess.run(["git", "fsck", "--full", "--no-dangling", "--no-progress"], cwd=repo, capture_output=True,
                      text=True)
out["fsck"] = {"rc": fsck.returncode, "out": fsck.stdout + fsck.stderr}
os.remove(os.path.join(mnt, "fill"))
out["after"] = cli("record", "HEAD", "--environment", "space-again")
out["verify"] = cli("verify", "--all")
out["locks"] = [os.path.join(d, f) for d, _, fs in os.walk(os.path.join(repo, ".git")) for f in fs
                if f.endswith(".lock")]
print(json.dumps(out))
"""


def test_disk_full_is_a_coded_error_and_changes_nothing(ledger_repo: Path, tmp_path: Path) -> None:
    prefix = mount_ns_prefix()
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    res = subprocess.run([*prefix, sys.executable, "-c", FILL_AND_RECORD, str(mnt), str(ledger_repo)],
                         capture_output=True, text=True, timeout=180)
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    full = subprocess.CompletedProcess([], out["full"]["rc"], out["full"]["stdout"], out["full"]["stderr"])
    assert_coded(full, "VM-GIT-FAILED")
    assert "No space left on device" in full.stderr and "disk" in full.stderr.split("hint:")[1], full.stderr
    assert out["refs_unchanged"]
    assert out["fsck"]["rc"] == 0 and not out["fsck"]["out"].strip(), out["fsck"]
    assert out["locks"] == []
    assert out["after"]["rc"] == 0, out["after"]
    assert out["verify"]["rc"] == 0, out["verify"]


def test_file_size_limit_is_a_coded_error(ledger_repo: Path) -> None:
    """`ulimit -f` (RLIMIT_FSIZE): the staged object cannot be written (EFBIG). It used to be a traceback."""
    import resource

    before = refs(ledger_repo)

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (200, 200))

    res = run_cli(ledger_repo, "record", "HEAD", "--environment", "fsize", preexec_fn=limit)
    assert_coded(res, "VM-IO-FAILED")
    assert "File too large" in res.stderr
    assert refs(ledger_repo) == before
    fsck_clean(ledger_repo)


# --- missing and hung tools ----------------------------------------------------------------------------------
def test_missing_gpg_is_tool_missing(ledger_repo: Path, tmp_path: Path) -> None:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    git_exe = shutil.which("git")
    assert git_exe is not None
    (bindir / "git").symlink_to(git_exe)
    before = refs(ledger_repo)
    res = run_cli(ledger_repo, "record", "HEAD", "--environment", "nogpg", env={"PATH": str(bindir)})
    assert_coded(res, "VM-TOOL-MISSING")
    assert "gpg" in res.stderr
    assert refs(ledger_repo) == before
    res = run_cli(ledger_repo, "verify", "--all", env={"PATH": str(bindir)})
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert "VM-TOOL-MISSING" in res.stdout + res.stderr, res.stdout + res.stderr


def agent_pid(home: str) -> int:
    out = subprocess.run(["gpg-connect-agent", "getinfo pid", "/bye"], env=dict(os.environ, GNUPGHOME=home),
                         capture_output=True, text=True, timeout=30).stdout
    return int(next(line.split()[1] for line in out.splitlines() if line.startswith("D ")))


def test_stopped_gpg_agent_times_out_within_gpg_timeout(ledger_repo: Path, gpg_key: GpgKey) -> None:
    git(ledger_repo, "config", "vaultmesh.gpgTimeout", "2")
    before = refs(ledger_repo)
    pid = agent_pid(gpg_key.home)
    os.kill(pid, signal.SIGSTOP)
    try:
        t0 = time.monotonic()
        res = run_cli(ledger_repo, "record", "HEAD", "--environment", "hung")
        elapsed = time.monotonic() - t0
    finally:
        os.kill(pid, signal.SIGCONT)
    assert_coded(res, "VM-TOOL-TIMEOUT")
    assert "within 2 s" in res.stderr
    assert elapsed < 10, f"{elapsed:.1f} s for a 2 s timeout"
    assert refs(ledger_repo) == before


PINENTRY = """#!/bin/sh
# A pinentry that never answers GETPIN (a dialog nobody sees); it exits when gpg-agent closes the pipe.
echo "OK Pleased to meet you"
while read -r cmd rest; do
  case "$cmd" in
    GETPIN) while read -r _; do :; done; exit 0;;
    GETINFO) [ "$rest" = pid ] && echo "D $$"; echo OK;;
    BYE) echo OK; exit 0;;
    *) echo OK;;
  esac
done
"""


def test_pinentry_that_never_answers_times_out_at_signing(repo: Path) -> None:
    """Listing the key works; only the signature needs the passphrase. The signing call used to ignore
    vaultmesh.gpgTimeout and wait its built-in 30 s."""
    home = make_gpg_home()
    env = {"GNUPGHOME": home}
    try:
        uid = "Locked <locked@example.org>"
        genv = dict(os.environ, GNUPGHOME=home)
        (Path(home) / "gpg-agent.conf").write_text("s2k-count 65536\n")  # a cheap passphrase protection
        subprocess.run(["gpg", "--batch", "--pinentry-mode", "loopback", "--passphrase", "pw", "--quick-gen-key",
                        uid, "ed25519", "sign", "never"], check=True, env=genv, capture_output=True)
        fpr = [line.split(":")[9] for line in subprocess.run(
            ["gpg", "--batch", "--with-colons", "--list-secret-keys", uid], env=genv, capture_output=True, text=True,
            check=True).stdout.splitlines() if line.startswith("fpr:")][0]
        (Path(home) / "pinentry.sh").write_text(PINENTRY)
        (Path(home) / "pinentry.sh").chmod(0o755)
        (Path(home) / "gpg-agent.conf").write_text(
            f"s2k-count 65536\npinentry-program {home}/pinentry.sh\nallow-loopback-pinentry\n")
        kill_agent(home)
        git(repo, "config", "vaultmesh.signingKey", fpr)
        git(repo, "config", "vaultmesh.gpgTimeout", "2")
        t0 = time.monotonic()
        res = run_cli(repo, "init", env=env)
        elapsed = time.monotonic() - t0
        assert_coded(res, "VM-TOOL-TIMEOUT")
        assert elapsed < 10, f"{elapsed:.1f} s for a 2 s timeout"
        assert refs(repo) == {}
        # with the passphrase cached the ledger is made; once the agent forgets it, record must time out too
        kill_agent(home)  # the agent would keep waiting on the silent pinentry (and serialise everything behind it)
        subprocess.run(["gpg", "--batch", "--pinentry-mode", "loopback", "--passphrase", "pw", "--local-user", fpr,
                        "--detach-sign", "-o", "/dev/null"], input=b"x", env=genv, check=True, capture_output=True)
        vm_ok(repo, "init", env=env)
        before = refs(repo)
        subprocess.run(["gpgconf", "--reload", "gpg-agent"], env=genv, check=True, capture_output=True)
        t0 = time.monotonic()
        res = run_cli(repo, "record", "HEAD", "--environment", "locked", env=env)
        elapsed = time.monotonic() - t0
        assert_coded(res, "VM-TOOL-TIMEOUT")
        assert elapsed < 10, f"{elapsed:.1f} s for a 2 s timeout"
        assert refs(repo) == before
    finally:
        kill_agent(home)
        shutil.rmtree(home, ignore_errors=True)


# --- unreadable artifacts ------------------------------------------------------------------------------------
def test_artifact_that_fails_on_read_is_unreadable(ledger_repo: Path) -> None:
    """/proc/self/mem opens fine and fails with EIO on the first read: a real I/O error mid-file."""
    before = refs(ledger_repo)
    res = vm(ledger_repo, "record", "HEAD", "--artifact", "/proc/self/mem")
    assert_coded(res, "VM-ARTIFACT-UNREADABLE")
    assert "/proc/self/mem" in res.stderr
    assert refs(ledger_repo) == before


def test_artifact_without_permission_is_unreadable(ledger_repo: Path, tmp_path: Path) -> None:
    prefix = unprivileged_prefix()
    art = tmp_path / "secret.tar"
    art.write_bytes(b"payload")
    art.chmod(0)
    res = run_cli(ledger_repo, "record", "HEAD", "--artifact", str(art), prefix=prefix)
    assert_coded(res, "VM-ARTIFACT-UNREADABLE")
    assert "Permission denied" in res.stderr and str(art) in res.stderr


# --- SHA-256 repositories ----------------------------------------------------------------------------------
def test_sha256_repository_end_to_end(tmp_path: Path, gpg_key: GpgKey) -> None:
    repo = tmp_path / "sha256"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main", "--object-format=sha256")
    for i in range(3):
        (repo / f"f{i}").write_text(f"{i}\n")
        git(repo, "add", ".")
        git(repo, "commit", "-q", "-m", f"c{i}")
        if i == 1:
            git(repo, "tag", "-a", "v1.0", "-m", "v1.0")
    git(repo, "tag", "-a", "v1.1", "-m", "v1.1")
    git(repo, "config", "vaultmesh.signingKey", gpg_key.fingerprint)
    vm_ok(repo, "init")
    vm_ok(repo, "record", "v1.0")
    rel = json.loads(vm_ok(repo, "record", "v1.1", "--json"))
    assert len(rel["body"]["subject"]["commit"]) == 64 and rel["body"]["history"]["size"] == 3
    vm_ok(repo, "record", "HEAD~1", "--environment", "prod")
    out = json.loads(vm(repo, "verify", "--all", "--json").stdout)
    assert out["ok"], out
    first = git(repo, "rev-list", "--max-parents=0", "HEAD")
    bundle = tmp_path / "proof.json"
    vm_ok(repo, "prove", first, "--in", "v1.1", "--from", "v1.0", "-o", str(bundle))
    vm_ok(tmp_path, "check-proof", "--trust-root", gpg_key.fingerprint, str(bundle))
    vm_ok(repo, "doctor")
    assert len(git(repo, "rev-parse", "refs/vaultmesh/log")) == 64


# --- the error catalogue -------------------------------------------------------------------------------------
def _package_calls() -> Iterator[tuple[Path, ast.Call, str]]:
    """Every VaultMeshError(...) / tsa._fail(...) call in the package whose code is a literal."""
    for path in sorted((ROOT / "git_vaultmesh").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in (
                    "VaultMeshError", "_fail") and node.args and isinstance(node.args[0], ast.Constant):
                yield path, node, str(node.args[0].value)


def test_every_code_the_package_uses_is_registered() -> None:
    used: dict[str, str] = {}
    for path in sorted((ROOT / "git_vaultmesh").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and CODE_RE.fullmatch(node.value):
                used.setdefault(node.value, f"{path.relative_to(ROOT)}:{node.lineno}")
    constructed = {code for _, _, code in _package_calls()}
    assert constructed, "found no VaultMeshError construction: is the scan broken?"
    unknown = {c: where for c, where in used.items() if c not in CODES}
    assert not unknown, f"codes used but not in errors.CODES: {unknown}"
    for code in CODES:
        assert CODE_RE.fullmatch(code), f"{code} is not an upper-case VM- code"


def test_every_code_has_a_hint_in_the_registry() -> None:
    """Code, cause and a fix: each code declares what to do next once, in the registry; an error raised or a
    check failed without a more specific hint carries that one (never None)."""
    from git_vaultmesh.verification.report import Report

    for code, entry in CODES.items():
        assert entry.hint.strip() and entry.hint != entry.meaning, code
        assert VaultMeshError(code, "cause").hint == entry.hint
        report = Report()
        report.failed("c", code, "detail")
        assert report.checks[0].hint == entry.hint
    assert VaultMeshError("VM-USAGE", "cause", "specific").hint == "specific"
    with pytest.raises(ValueError):
        VaultMeshError("VM-NO-SUCH-CODE", "cause")


def test_errors_doc_is_generated_from_the_registry() -> None:
    doc = (ROOT / "docs" / "errors.md").read_text()
    out = subprocess.run([sys.executable, "-m", "git_vaultmesh.errors"], capture_output=True, text=True, check=True)
    assert out.stdout == errors_markdown()
    assert doc == out.stdout, "docs/errors.md is stale: python -m git_vaultmesh.errors > docs/errors.md"


def test_every_code_appears_in_some_test() -> None:
    """Each registered code is named by at least one test file (this check's own source excluded)."""
    own = inspect.getsource(test_every_code_appears_in_some_test)
    text = []
    for path in sorted((ROOT / "tests").rglob("*.py")):
        body = path.read_text()
        if path.resolve() == Path(__file__).resolve():
            body = body.replace(own, "")
        text.append(body)
    corpus = "\n".join(text)
    named = set(CODE_RE.findall(corpus))
    missing = sorted(c for c in CODES if c not in named)
    assert not missing, f"codes no test names: {missing}"
