"""The CLI as users run it (`git vaultmesh …`, `git-vaultmesh`, `python -m git_vaultmesh`): verify's JSON
contract, show/log output, bare repositories, `git -c`, trust roots on fresh clones, and every verb's -h.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import rfc8785
from ruamel.yaml import YAML

from git_vaultmesh.cli import COMMANDS, build_parser
from git_vaultmesh.errors import CODES

from cli_helpers import (
    GpgKey,
    assert_error,
    commit_file,
    gen_gpg_key,
    git,
    git_config,
    git_vm,
    ledger_refs,
    log_json,
    ok,
    ok_json,
    run,
    script_env,
)

LEDGER_REFSPECS = ("refs/vaultmesh/*:refs/vaultmesh/*", "refs/notes/vaultmesh:refs/notes/vaultmesh")


@pytest.fixture
def recorded(ledger_repo: Path, tmp_path: Path) -> Path:
    """ledger_repo with v1.0 recorded as a release carrying one artifact (tmp_path/dist/app.tar.gz)."""
    dist = tmp_path / "dist"
    dist.mkdir()
    (dist / "app.tar.gz").write_bytes(b"release bytes\n" * 100)
    ok(ledger_repo, "record", "v1.0", "--artifact", str(dist / "app.tar.gz"))
    return ledger_repo


def check_report_schema(report: Any) -> None:
    """DESIGN §4: {"ok", "trust", "checks": [{"check","ok","code","detail","hint"}]}, code null iff ok."""
    assert isinstance(report, dict)
    assert set(report) - {"allowed"} == {"ok", "trust", "checks"}
    assert isinstance(report["ok"], bool) and report["trust"] in ("pinned", "tofu")
    assert isinstance(report["checks"], list) and report["checks"]
    for c in report["checks"]:
        assert set(c) == {"check", "ok", "code", "detail", "hint"}, c
        assert isinstance(c["check"], str) and c["check"]
        assert isinstance(c["ok"], bool) and isinstance(c["detail"], str) and c["detail"]
        assert c["hint"] is None or (isinstance(c["hint"], str) and c["hint"])
        if c["ok"]:
            assert c["code"] is None, c
        else:
            assert isinstance(c["code"], str) and c["code"] in CODES, c
    assert report["ok"] == all(c["ok"] for c in report["checks"])


def verify_json(repo: Path, *args: str, expect_ok: bool = True) -> dict[str, Any]:
    res = run(repo, "verify", *args, "--json")
    report: dict[str, Any] = json.loads(res.stdout)
    check_report_schema(report)
    assert res.returncode == (0 if expect_ok else 1), res.stdout + res.stderr
    assert report["ok"] is expect_ok
    return report


def failed_codes(report: dict[str, Any]) -> list[str]:
    return [c["code"] for c in report["checks"] if not c["ok"]]


# --- verify ------------------------------------------------------------------------------------------------
def test_verify_exit_codes_and_json_schema(recorded: Path, tmp_path: Path) -> None:
    art = tmp_path / "dist" / "app.tar.gz"
    text = ok(recorded, "verify", "v1.0")
    assert text.splitlines()[-1] == "verify v1.0: OK; pinned trust root"
    report = verify_json(recorded, "v1.0", "--artifact", str(art))
    assert report["trust"] == "pinned"
    names = {c["check"] for c in report["checks"]}
    assert {"log.trust-root", "release.tag", "release.history", "release.tree-digest", "artifact"} <= names
    verify_json(recorded, "--all")
    verify_json(recorded)  # no REV: every entry
    # failures keep the same schema, carry codes, and exit 1
    art.write_bytes(b"tampered")
    assert failed_codes(verify_json(recorded, "v1.0", "--artifact", str(art), expect_ok=False)) == [
        "VM-ARTIFACT-MISMATCH"]
    other = tmp_path / "other.bin"
    other.write_bytes(b"x")
    assert failed_codes(verify_json(recorded, "v1.0", "--artifact", str(other), expect_ok=False)) == [
        "VM-ARTIFACT-NOT-RECORDED"]
    assert failed_codes(verify_json(recorded, "v1.0", "--artifact", str(tmp_path / "gone"), expect_ok=False)) == [
        "VM-ARTIFACT-UNREADABLE"]
    assert failed_codes(verify_json(recorded, "HEAD~1", expect_ok=False)) == ["VM-NOT-RECORDED"]
    assert failed_codes(verify_json(recorded, "v7.7", expect_ok=False)) == ["VM-BAD-REV"]
    res = run(recorded, "verify", "v7.7")
    assert res.returncode == 1 and "VM-BAD-REV" in res.stdout and "FAILED" in res.stdout.splitlines()[-1]


# --- show / log --------------------------------------------------------------------------------------------
def test_show_json_yaml_and_selectors(recorded: Path) -> None:
    rows = ok_json(recorded, "show", "v1.0")
    assert len(rows) == 1
    row = rows[0]
    assert {"seq", "id", "body_digest", "entry"} <= set(row) and row["seq"] == 1
    line = rfc8785.dumps(row["entry"])
    assert row["id"] == hashlib.sha256(line).hexdigest()
    assert row["body_digest"] == hashlib.sha256(rfc8785.dumps(row["entry"]["body"])).hexdigest()
    assert row["entry"]["v"] == 1 and row["entry"]["body"]["type"] == "release"
    # the entry shown is byte for byte the one in the log
    blob = subprocess.run(["git", "cat-file", "blob", "refs/vaultmesh/log:entries/000/000/000000000001.json"],
                          cwd=recorded, capture_output=True, check=True).stdout
    assert blob == line + b"\n"
    yaml_out = ok(recorded, "show", "v1.0", "--yaml")
    assert YAML(typ="safe").load(io.StringIO(yaml_out)) == rows
    commit = git(recorded, "rev-parse", "v1.0^{commit}")
    for selector in ("refs/tags/v1.0", "#1", row["id"], row["id"][:12], commit, "HEAD", "main"):
        assert ok_json(recorded, "show", selector) == rows, selector
    text = ok(recorded, "show", "v1.0")
    assert f"entry #1 {row['id']}" in text and "history:" in text and "tree_digest:" in text
    assert "artifact:    app.tar.gz sha256:" in text
    assert ok_json(recorded, "show", "#0")[0]["entry"]["body"]["type"] == "policy"
    for missing in ("#99", "v7.7", "HEAD~1"):
        assert_error(run(recorded, "show", missing), "VM-NOT-RECORDED")


def test_log_newest_first(recorded: Path) -> None:
    ok(recorded, "record", "HEAD", "--environment", "staging", env={"SOURCE_DATE_EPOCH": "1800000000"})
    ok(recorded, "record", "HEAD", "--environment", "prod", env={"SOURCE_DATE_EPOCH": "1800000060"})
    rows = log_json(recorded)
    assert [r["seq"] for r in rows] == [3, 2, 1, 0]
    assert [r["entry"]["body"]["type"] for r in rows] == ["deploy", "deploy", "release", "policy"]
    assert [r["entry"]["body"].get("environment") for r in rows[:2]] == ["prod", "staging"]
    assert all({"seq", "id", "body_digest", "entry"} <= set(r) for r in rows)
    lines = ok(recorded, "log").splitlines()
    assert [ln.split()[0] for ln in lines] == ["#3", "#2", "#1", "#0"]
    assert [ln.split()[1] for ln in lines] == [r["id"][:12] for r in rows]
    assert "release" in lines[2] and "v1.0" in lines[2] and "refs/tags/v1.0" in lines[2]
    assert [r["seq"] for r in ok_json(recorded, "log", "-n", "2")] == [3, 2]
    assert [r["seq"] for r in ok_json(recorded, "log", "--type", "deploy")] == [3, 2]
    assert [r["seq"] for r in ok_json(recorded, "log", "--type", "release", "-n", "5")] == [1]
    assert ok_json(recorded, "log", "-n", "0") == []


# --- bare repositories, git -c, trust roots -----------------------------------------------------------------
def test_bare_clone_verifies_and_records(recorded: Path, tmp_path: Path, gpg_key: GpgKey) -> None:
    bare = tmp_path / "bare.git"
    git(tmp_path, "clone", "-q", "--bare", str(recorded), str(bare))
    git(recorded, "push", "-q", str(bare), *LEDGER_REFSPECS)
    assert ledger_refs(bare) == ledger_refs(recorded)
    res = git_vm(bare, "verify", "v1.0", "--trust-root", gpg_key.fingerprint)
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.splitlines()[-1] == "verify v1.0: OK; pinned trust root"
    # a new commit arrives by push; the release is recorded in the bare repo itself
    commit_file(recorded, "new.txt", "new\n")
    git(recorded, "push", "-q", str(bare), "main")
    git(bare, "tag", "-a", "v1.1", "-m", "v1.1", "main")
    git(bare, "config", "vaultmesh.signingKey", gpg_key.fingerprint)
    git(bare, "config", "vaultmesh.trustRoot", gpg_key.fingerprint)
    res = git_vm(bare, "record", "v1.1", "--json")
    assert res.returncode == 0, res.stdout + res.stderr
    body = json.loads(res.stdout)["body"]
    # the component is the origin's name (.../repo), not the clone's folder (bare.git)
    assert body["component"] == "repo" and body["history"]["size"] == 4
    assert body["history"]["base"]["size"] == 3
    for args in (["verify", "v1.1"], ["verify", "--all"], ["verify", "v1.0"]):
        res = git_vm(bare, *args)
        assert res.returncode == 0, res.stdout + res.stderr
    # and `-C` reaches it from outside
    res = run(tmp_path, "-C", str(bare), "log", "--json")
    assert res.returncode == 0 and [r["seq"] for r in json.loads(res.stdout)] == [2, 1, 0]


def test_git_dash_c_signing_key(recorded: Path, gpg_key: GpgKey) -> None:
    git(recorded, "config", "--unset", "vaultmesh.signingKey")
    commit_file(recorded, "x.txt", "x\n")
    git(recorded, "tag", "-a", "v1.1", "-m", "v1.1")
    refs = ledger_refs(recorded)
    res = git_vm(recorded, "record", "v1.1")
    assert_error(res, "VM-NO-SIGNING-KEY")
    assert ledger_refs(recorded) == refs
    res = git_vm(recorded, "record", "v1.1", git_opts=["-c", f"vaultmesh.signingKey={gpg_key.fingerprint}"])
    assert res.returncode == 0, res.stdout + res.stderr
    assert "recorded release" in res.stdout
    assert git_config(recorded, "vaultmesh.signingKey") is None
    # settings given with -c reach verify too
    wrong = "A" * 40
    res = git_vm(recorded, "verify", "v1.1", "--json", git_opts=["-c", f"vaultmesh.trustRoot={wrong}"])
    assert res.returncode == 1
    assert failed_codes(json.loads(res.stdout)) == ["VM-TRUST-ROOT-MISMATCH"]
    assert git_vm(recorded, "verify", "--all").returncode == 0


def test_trust_root_on_a_fresh_clone(recorded: Path, tmp_path: Path, gpg_key: GpgKey) -> None:
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", str(recorded), str(clone))
    git(clone, "fetch", "-q", "origin", *LEDGER_REFSPECS)
    assert git_config(clone, "vaultmesh.trustRoot") is None
    # no pin: trust on first use, said in the text and in the JSON
    res = run(clone, "verify", "v1.0")
    assert res.returncode == 0
    assert "TRUST ON FIRST USE" in res.stdout.splitlines()[-1]
    report = verify_json(clone, "v1.0")
    assert report["trust"] == "tofu"
    assert any("trusted on first use" in c["detail"] for c in report["checks"])
    # the right pin
    assert verify_json(clone, "v1.0", "--trust-root", gpg_key.fingerprint)["trust"] == "pinned"
    assert verify_json(clone, "--all", "--trust-root", gpg_key.fingerprint.lower())["trust"] == "pinned"
    # a wrong pin: another real key, or a made-up fingerprint
    bob = gen_gpg_key(gpg_key.home, "Bob")
    for wrong in (bob.fingerprint, "0" * 40):
        report = verify_json(clone, "v1.0", "--trust-root", wrong, expect_ok=False)
        assert report["trust"] == "pinned"
        assert failed_codes(report) == ["VM-TRUST-ROOT-MISMATCH"]
        res = run(clone, "verify", "v1.0", "--trust-root", wrong)
        assert res.returncode == 1 and "VM-TRUST-ROOT-MISMATCH" in res.stdout
    # the pin from config, and a flag that overrides it
    git(clone, "config", "vaultmesh.trustRoot", bob.fingerprint)
    assert failed_codes(verify_json(clone, "v1.0", expect_ok=False)) == ["VM-TRUST-ROOT-MISMATCH"]
    verify_json(clone, "v1.0", "--trust-root", gpg_key.fingerprint)


# --- help ----------------------------------------------------------------------------------------------------
def _subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_every_verb_has_help(tmp_path: Path) -> None:
    subs = _subparsers()
    assert set(subs) == set(COMMANDS)
    for name, sub in subs.items():
        res = run(tmp_path, name, "-h")
        assert res.returncode == 0, (name, res.stderr)
        assert res.stdout.startswith(f"usage: git vaultmesh {name}"), res.stdout
        for action in sub._actions:
            if action.option_strings:
                assert action.help, f"{name} {action.option_strings} has no help text"
                for opt in action.option_strings:
                    assert opt in res.stdout, f"{name} -h does not document {opt}"
            else:
                assert (action.metavar or action.dest) in res.stdout, (name, action.dest)
    res = run(tmp_path, "--help")
    assert res.returncode == 0
    for name in subs:
        assert name in res.stdout


def test_console_script_and_git_subcommand_help(tmp_path: Path) -> None:
    res = subprocess.run(["git-vaultmesh", "--help"], cwd=tmp_path, capture_output=True, text=True,
                         env=script_env())
    assert res.returncode == 0 and res.stdout.startswith("usage: git vaultmesh"), res.stderr
    assert "record" in res.stdout and "verify" in res.stdout and "exit status" in res.stdout
    res = git_vm(tmp_path, "-h")
    assert res.returncode == 0 and "usage: git vaultmesh" in res.stdout
    res = git_vm(tmp_path, "record", "-h")
    assert res.returncode == 0 and "--if-missing" in res.stdout
    res = git_vm(tmp_path, "--version")
    assert res.returncode == 0 and res.stdout.startswith("git-vaultmesh ")


def test_bad_usage_is_exit_2_without_traceback(ledger_repo: Path) -> None:
    refs = ledger_refs(ledger_repo)
    for args in (["record", "--type", "bogus"], ["frobnicate"], ["log", "-n", "many"], ["show"], []):
        res = run(ledger_repo, *args)
        assert res.returncode == 2, (args, res.stderr)
    assert ledger_refs(ledger_repo) == refs


def test_dash_c_to_a_missing_directory(tmp_path: Path) -> None:
    assert_error(run(tmp_path, "-C", str(tmp_path / "missing"), "log"), "VM-NOT-A-REPO")
