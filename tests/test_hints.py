"""The hints audit: each error code, raised in its real situation, prints a hint that names the right remedy.

REMEDY holds one keyword per code: the word of the hint a user acts on. `assert_hints_fit` checks every
failed check of a verify report against it; the tamper matrix (tests/adversarial/test_tamper_matrix.py) calls
it on each row's report, so every code the matrix raises is audited there at no extra cost. The table below
raises the codes of the other verbs (and a few verify situations the matrix has no row for).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from git_vaultmesh.errors import CODES

from conftest import GIT_ENV, GpgKey, gen_gpg_key, git, make_repo, throwaway_gpg_home, vm, vm_ok

# VM-USAGE is left out: its remedy is the situation's own (each Case below names the word it needs)
REMEDY: dict[str, str] = {
    "VM-NOT-A-REPO": "-C|git repository",
    "VM-CONFIG-INVALID": "fingerprint|config check|git config",
    "VM-BAD-REV": "git tag|no commits|fetch|a commit",
    "VM-REV-AMBIGUOUS": "full refname",
    "VM-ARTIFACT-UNREADABLE": "path",
    "VM-BAD-DIGEST": "64",
    "VM-NO-SIGNING-KEY": "signingKey",
    "VM-SIGNER-NOT-IN-POLICY": "add-signer",
    "VM-NOT-INITIALIZED": "init",
    "VM-ALREADY-INITIALIZED": "log|policy",
    "VM-ALREADY-RECORDED": "--if-missing",
    "VM-NOT-RECORDED": "record",
    "VM-REMOTE-FAILED": "refs/vaultmesh/log",
    "VM-FILE-UNREADABLE": "path",
    "VM-LOG-CORRUPT": "replica",
    "VM-LOG-GAP": "replica",
    "VM-LOG-NOT-APPEND-ONLY": "replica",
    "VM-LOG-ROLLBACK": "replica",
    "VM-LOG-FORKED": "replica",
    "VM-LOG-GENESIS": "do not trust",
    "VM-TRUST-ROOT-MISMATCH": "pinned|trust root",
    "VM-CHECKPOINT-MISSING": "replica",
    "VM-CHECKPOINT-MALFORMED": "replica",
    "VM-CHECKPOINT-MISMATCH": "replica",
    "VM-CHECKPOINT-SIG": "replica",
    "VM-NOTES-MISMATCH": "doctor --repair",
    "VM-ENTRY-MALFORMED": "replica",
    "VM-ENTRY-UNKNOWN-TYPE": "upgrade",
    "VM-ENTRY-WRONG-LOG": "another ledger",
    "VM-ENTRY-DUPLICATE": "counts once",
    "VM-ENTRY-REF-INVALID": "forged",
    "VM-SIG-MISSING": "replica",
    "VM-SIG-MALFORMED": "replica",
    "VM-SIG-INVALID": "replica",
    "VM-SIG-UNPINNED": "add-signer",
    "VM-SIG-NOT-AUTHORIZED": "types",
    "VM-SIG-KEY-EXPIRED": "expir",
    "VM-SIG-KEY-REVOKED": "current",
    "VM-SIG-PENDING": "cosign",
    "VM-TAG-MISSING": "fetch",
    "VM-TAG-MOVED": "restore|git replace -d",
    "VM-SUBJECT-MISSING": "fetch",
    "VM-HISTORY-MISMATCH": "restore|git replace -d",
    "VM-HISTORY-BASE": "replica",
    "VM-TREE-DIGEST-MISMATCH": "restore|git replace -d",
    "VM-ARTIFACT-MISMATCH": "do not use",
    "VM-ARTIFACT-NOT-RECORDED": "show|recorded",
    "VM-PROOF-MALFORMED": "prove",
    "VM-PROOF-INVALID": "new bundle",
    "VM-PROOF-NO-PATH": "commit|is-ancestor",
    "VM-PROOF-INCOMPLETE": "prove",
    "VM-TSA-PENDING": "timestamp --pending|timestamp --archive",
    "VM-TSA-UNREACHABLE": "URL",
    "VM-TSA-EXPIRED-UNANCHORED": "timestamp --archive",
    "VM-TSA-UNKNOWN": "tsa add",
    "VM-TSA-OTHER-ENTRY": "timestamp --pending",
    "VM-TSA-IMPRINT": "new token|token over",
    "VM-TSA-SIGNATURE": "new token",
    "VM-TSA-CHAIN": "CA certificate",
    "VM-TSA-PIN": "pin",
}


def hint_fits(code: str, hint: str | None) -> bool:
    want = REMEDY.get(code)
    return want is None or (hint is not None and any(w.lower() in hint.lower() for w in want.split("|")))


def assert_hints_fit(report: dict[str, Any]) -> None:
    """Every failed check of a verify --json report whose code is audited carries a fitting hint."""
    wrong = [f"{c['code']}: hint {c.get('hint')!r} does not name {REMEDY[c['code']]!r} ({c['detail'][:120]})"
             for c in report.get("checks", []) if not c["ok"] and c.get("code") in REMEDY
             and not hint_fits(c["code"], c.get("hint"))]
    assert not wrong, "\n".join(wrong)


def test_remedy_table_names_registered_codes() -> None:
    assert set(REMEDY) <= set(CODES), set(REMEDY) - set(CODES)
    # the default hint of every audited code fits on its own (a raiser without a hint prints it)
    misfits = [c for c in REMEDY if not hint_fits(c, CODES[c].hint)]
    assert not misfits, {c: CODES[c].hint for c in misfits}


# --- the situations ---------------------------------------------------------------------------------------


def hints(res: subprocess.CompletedProcess[str]) -> dict[str, list[str]]:
    """code -> hints printed: `error: CODE: …` + `hint: …` on stderr, and failed checks of a JSON report."""
    found: dict[str, list[str]] = {}
    lines = res.stderr.splitlines()
    for i, line in enumerate(lines):
        m = re.match(r"error: (VM-[A-Z0-9-]+):", line)
        if m:
            nxt = lines[i + 1] if i + 1 < len(lines) else ""
            found.setdefault(m.group(1), []).append(nxt[len("hint: "):] if nxt.startswith("hint: ") else "")
    try:
        report = json.loads(res.stdout)
    except ValueError:
        report = None
    if isinstance(report, dict):
        for c in report.get("checks", []):
            if not c["ok"] and c.get("code"):
                found.setdefault(c["code"], []).append(c.get("hint") or "")
    return found


class Case(NamedTuple):
    code: str
    fixture: str  # "ledger" (initialised, Alice signs), "repo" (not initialised), "empty", "nowhere"
    act: Callable[[Path, dict[str, Any]], subprocess.CompletedProcess[str]]
    remedy: str  # the keyword this situation's hint must carry (may be more specific than REMEDY's)


def _record(repo: Path, *extra: str) -> None:
    vm_ok(repo, "record", "v1.0", *extra)


def _artifact(repo: Path, w: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    art = repo.parent / "app.tar.gz"
    art.write_bytes(b"the release\n")
    _record(repo, "--artifact", str(art))
    art.write_bytes(b"something else\n")
    return vm(repo, "verify", "v1.0", "--artifact", str(art), "--json")


def _moved_tag(repo: Path, w: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    _record(repo)
    git(repo, "tag", "-f", "-a", "v1.0", "-m", "moved", "HEAD~1")
    return vm(repo, "verify", "v1.0", "--json")


def _deleted_tag(repo: Path, w: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    _record(repo)
    git(repo, "tag", "-d", "v1.0")
    return vm(repo, "verify", "--all", "--json")


def _rolled_back(repo: Path, w: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    _record(repo)
    vm_ok(repo, "verify", "--all")  # remembered here
    git(repo, "update-ref", "refs/vaultmesh/log", "refs/vaultmesh/log~1")
    return vm(repo, "verify", "--all", "--json")


def _notes_gone(repo: Path, w: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    _record(repo)
    git(repo, "update-ref", "-d", "refs/notes/vaultmesh")
    return vm(repo, "verify", "v1.0", "--json")


def _not_in_policy(repo: Path, w: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    bob: GpgKey = gen_gpg_key(w["gpg"].home, "Bob")
    git(repo, "config", "vaultmesh.signingKey", bob.fingerprint)
    return vm(repo, "record", "v1.0")


def _no_remote_ledger(repo: Path, w: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    bare = repo.parent / "empty.git"
    git(repo.parent, "init", "-q", "--bare", str(bare))
    git(repo, "remote", "add", "origin", str(bare))
    return vm(repo, "pull", "origin")


def _ambiguous(repo: Path, w: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    git(repo, "update-ref", "refs/v1.0", "HEAD~1")
    return vm(repo, "record", "v1.0")


def _not_in_release(repo: Path, w: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    _record(repo)
    (repo / "later.txt").write_text("after the release\n")
    git(repo, "add", "later.txt")
    git(repo, "commit", "-q", "-m", "later")
    return vm(repo, "prove", "HEAD", "--in", "v1.0", "-o", str(repo.parent / "p.json"))


def _expired_tsa(repo: Path, w: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    from git_vaultmesh.rfc3161.server import TsaServer, make_identity

    now = datetime.now(UTC).replace(microsecond=0)
    ca = make_identity("ec")
    short = make_identity(ca=ca, not_before=now - timedelta(hours=1), not_after=now + timedelta(days=1))
    pem = repo.parent / "tsa-ca.pem"
    pem.write_bytes(short.ca_cert_pem)
    with TsaServer(short, max_lifetime=60) as srv:
        vm_ok(repo, "tsa", "add", "main", "--url", srv.url, "--ca-cert", str(pem))
        _record(repo)
    later = (now + timedelta(days=3)).strftime("%Y-%m-%dT%H:%M:%SZ")
    return vm(repo, "verify", "v1.0", "--json", env={"VAULTMESH_NOW": later})


def _tsa_down(repo: Path, w: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    from git_vaultmesh.rfc3161.server import make_identity

    pem = repo.parent / "tsa-ca.pem"
    pem.write_bytes(make_identity("ec").ca_cert_pem)
    vm_ok(repo, "tsa", "add", "main", "--url", "http://127.0.0.1:9/tsr", "--ca-cert", str(pem), "--offline")
    git(repo, "config", "vaultmesh.tsaTimeout", "2")
    vm_ok(repo, "record", "v1.0")  # recorded, pending
    return vm(repo, "verify", "v1.0", "--json")


def _tsa_unreachable(repo: Path, w: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    from git_vaultmesh.rfc3161.server import make_identity

    pem = repo.parent / "tsa-ca.pem"
    pem.write_bytes(make_identity("ec").ca_cert_pem)
    git(repo, "config", "vaultmesh.tsaTimeout", "2")
    return vm(repo, "tsa", "add", "main", "--url", "http://127.0.0.1:9/tsr", "--ca-cert", str(pem))


CASES = [
    Case("VM-NOT-A-REPO", "nowhere", lambda d, w: vm(d, "log"), "git repository"),
    Case("VM-BAD-REV", "empty", lambda d, w: vm(d, "record", "v1.0"), "no commits"),
    Case("VM-BAD-REV", "ledger", lambda d, w: vm(d, "record", "v9.9"), "git tag -s v9.9"),
    Case("VM-NOT-INITIALIZED", "repo", lambda d, w: vm(d, "log"), "git vaultmesh init"),
    Case("VM-ALREADY-INITIALIZED", "ledger", lambda d, w: vm(d, "init"), "git vaultmesh policy"),
    Case("VM-NO-SIGNING-KEY", "repo", lambda d, w: vm(d, "init"), "signingKey"),
    Case("VM-CONFIG-INVALID", "ledger", lambda d, w: vm(d, "check-proof", "--trust-root", "FPR", "p.json"),
         "fingerprint"),
    Case("VM-USAGE", "ledger", lambda d, w: vm(d, "tsa"), "tsa add"),
    Case("VM-ARTIFACT-UNREADABLE", "ledger", lambda d, w: vm(d, "record", "v1.0", "--artifact", "dist/none.tgz"),
         "path"),
    Case("VM-BAD-DIGEST", "ledger", lambda d, w: vm(d, "record", "v1.0", "--sha256", "app=xyz"), "64"),
    Case("VM-ALREADY-RECORDED", "ledger", lambda d, w: (_record(d), vm(d, "record", "v1.0"))[1], "--if-missing"),
    Case("VM-NOT-RECORDED", "ledger", lambda d, w: vm(d, "show", "v1.0"), "record"),
    Case("VM-ARTIFACT-MISMATCH", "ledger", _artifact, "do not use"),
    Case("VM-TAG-MOVED", "ledger", _moved_tag, "restore"),
    Case("VM-TAG-MISSING", "ledger", _deleted_tag, "fetch"),
    Case("VM-TRUST-ROOT-MISMATCH", "ledger",
         lambda d, w: vm(d, "verify", "--all", "--json", "--trust-root", "1" * 40), "pinned"),
    Case("VM-LOG-ROLLBACK", "ledger", _rolled_back, "replica"),
    Case("VM-NOTES-MISMATCH", "ledger", _notes_gone, "doctor --repair"),
    Case("VM-SIGNER-NOT-IN-POLICY", "ledger", _not_in_policy, "add-signer"),
    Case("VM-REMOTE-FAILED", "ledger", _no_remote_ledger, "refs/vaultmesh/log"),
    Case("VM-REV-AMBIGUOUS", "ledger", _ambiguous, "full refname"),
    Case("VM-PROOF-NO-PATH", "ledger", _not_in_release, "is-ancestor"),
    Case("VM-USAGE", "ledger", lambda d, w: (_record(d), vm(d, "prove", "HEAD", "--in", "v1.0", "--from", "v1.0"))[1],
         "earlier release"),
    Case("VM-FILE-UNREADABLE", "ledger",
         lambda d, w: vm(d, "check-proof", "--trust-root", w["gpg"].fingerprint, "missing.json"), "path"),
    Case("VM-PROOF-MALFORMED", "ledger",
         lambda d, w: ((d.parent / "p.json").write_text("{}"),
                       vm(d, "check-proof", "--trust-root", w["gpg"].fingerprint, str(d.parent / "p.json")))[1],
         "prove"),
    Case("VM-TSA-PENDING", "ledger", _expired_tsa, "timestamp --archive"),
    Case("VM-TSA-PENDING", "ledger", _tsa_down, "timestamp --pending"),
    Case("VM-TSA-UNREACHABLE", "ledger", _tsa_unreachable, "URL"),
]


@pytest.fixture(scope="module")
def _pristine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, GpgKey]]:
    """Built once: a repository (three commits, tag v1.0) and its initialised copy; each case gets a copy."""
    root = tmp_path_factory.mktemp("hints")
    with throwaway_gpg_home() as home, pytest.MonkeyPatch.context() as mp:
        for k, v in {"GNUPGHOME": home, "HOME": str(root), **GIT_ENV}.items():
            mp.setenv(k, v)  # the function-scoped identity fixture has not run yet
        key = gen_gpg_key(home, "Alice")
        make_repo(root / "repo")
        shutil.copytree(root / "repo", root / "ledger", symlinks=True)
        git(root / "ledger", "config", "vaultmesh.signingKey", key.fingerprint)
        vm_ok(root / "ledger", "init")
        yield root, key


@pytest.mark.parametrize("case", CASES, ids=[f"{c.code}-{c.remedy.split()[-1]}" for c in CASES])
def test_hint_names_the_remedy(case: Case, _pristine: tuple[Path, GpgKey], tmp_path: Path,
                               monkeypatch: pytest.MonkeyPatch) -> None:
    root, key = _pristine
    monkeypatch.setenv("GNUPGHOME", key.home)
    world: dict[str, Any] = {"gpg": key}
    where = tmp_path / "work"
    if case.fixture in ("ledger", "repo"):
        shutil.copytree(root / case.fixture, where, symlinks=True)
    else:
        where.mkdir()
        if case.fixture == "empty":
            git(where, "init", "-q")
            git(where, "config", "vaultmesh.signingKey", key.fingerprint)
    res = case.act(where, world)
    assert res.returncode != 0, res.stdout + res.stderr
    assert "Traceback" not in res.stderr, res.stderr
    printed = hints(res)
    assert case.code in printed, f"expected {case.code}, got {printed}\n{res.stderr}"
    assert any(case.remedy.lower() in h.lower() for h in printed[case.code]), \
        f"{case.code}: hint(s) {printed[case.code]} do not name {case.remedy!r}"
    # and every other code printed on the way fits its remedy too
    wrong = {c: hs for c, hs in printed.items() if not all(hint_fits(c, h) for h in hs)}
    assert not wrong, wrong
