"""`doctor`: every health area, and the incremental ledger check — the same checks as `doctor --full`, run
over what was appended since the last clean doctor, with a full sweep whenever that is in doubt."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from git_vaultmesh import ledger
from git_vaultmesh.git import Repo

from cli_helpers import GpgKey, ok, run
from conftest import git


def doctor(cwd: Path, *args: str) -> tuple[int, dict[str, Any]]:
    res = run(cwd, "doctor", "--json", *args)
    assert res.returncode in (0, 1), res.stderr
    data = json.loads(res.stdout)
    assert data["ok"] == (res.returncode == 0) == (not data["problems"]), data
    assert list(data["areas"]) == ["ledger", "index", "config", "keys", "tsas", "hooks"], data
    for area in data["areas"].values():  # the stable schema: every area says ok and why
        assert isinstance(area["ok"], bool) and isinstance(area["detail"], str) and area["detail"], area
    return res.returncode, data


def size(cwd: Path) -> int:
    with Repo.discover(cwd) as r:
        return ledger.read_head(r).size


def codes(data: dict[str, Any]) -> set[str]:
    return {p.rsplit("(", 1)[-1].rstrip(")") for p in data["problems"]}


def append_deploy(cwd: Path, key_fpr: str, subject: dict[str, str] | None, n: int = 1) -> None:
    """Bodies appended in-process by the bulk append (a subject that is not in the repository included)."""
    from git_vaultmesh.signing import resolve_signing_key

    with Repo.discover(cwd) as r:
        head = ledger.read_head(r)
        key = resolve_signing_key("openpgp", key_fpr)
        bodies = [{"type": "deploy", "log": head.log_id, "recorded_at": "2025-10-01T00:00:00Z", "component": "web",
                   "version": f"v{i}", "environment": "prod", **({"subject": subject} if subject else {})}
                  for i in range(n)]
        ledger.append_bodies(r, key, bodies)


def test_the_second_doctor_checks_only_what_was_appended(ledger_repo: Path) -> None:
    ok(ledger_repo, "record", "v1.0")
    code, first = doctor(ledger_repo)
    assert code == 0, first
    assert first["mode"] == "full" and "no clean state" in first["reason"] and first["checked"] == size(ledger_repo)
    code, again = doctor(ledger_repo)
    assert code == 0 and again["mode"] == "incremental" and again["checked"] == 0, again
    before = size(ledger_repo)
    ok(ledger_repo, "record", "HEAD", "--environment", "staging")
    ok(ledger_repo, "record", "HEAD~1", "--environment", "prod")
    code, after = doctor(ledger_repo)
    assert code == 0, after
    assert after["mode"] == "incremental" and after["checked"] == size(ledger_repo) - before > 0, after
    assert after["areas"]["ledger"]["size"] == size(ledger_repo)
    # --full judges every entry, whatever is remembered
    code, full = doctor(ledger_repo, "--full")
    assert code == 0 and full["mode"] == "full" and full["checked"] == size(ledger_repo), full


def test_notes_damaged_by_hand_after_a_clean_run_are_found(ledger_repo: Path) -> None:
    ok(ledger_repo, "record", "v1.0")
    assert doctor(ledger_repo)[0] == 0
    commit = git(ledger_repo, "rev-parse", "v1.0^{commit}")
    git(ledger_repo, "notes", "--ref", "vaultmesh", "add", "-f", "-m", "forged", commit)
    code, data = doctor(ledger_repo)
    assert code == 1 and "VM-NOTES-MISMATCH" in codes(data), data
    assert data["mode"] == "full" and "notes" in data["reason"], data  # the log did not move: nothing explains it
    assert not data["areas"]["ledger"]["ok"]
    ok(ledger_repo, "doctor", "--repair")
    code, data = doctor(ledger_repo)
    assert code == 0 and data["checked"] == 0, data


def test_a_note_of_a_new_entry_damaged_before_doctor_ran_is_found_incrementally(ledger_repo: Path) -> None:
    assert doctor(ledger_repo)[0] == 0
    ok(ledger_repo, "record", "v1.0")
    commit = git(ledger_repo, "rev-parse", "v1.0^{commit}")
    git(ledger_repo, "notes", "--ref", "vaultmesh", "append", "-m", "extra line", commit)
    code, data = doctor(ledger_repo)
    assert code == 1 and codes(data) == {"VM-NOTES-MISMATCH"}, data
    assert data["mode"] == "incremental" and data["checked"] == 1, data


def test_a_missing_subject_of_a_new_entry_is_found(ledger_repo: Path, gpg_key: GpgKey) -> None:
    ok(ledger_repo, "record", "v1.0")
    assert doctor(ledger_repo)[0] == 0
    append_deploy(ledger_repo, gpg_key.fingerprint, None, n=3)
    append_deploy(ledger_repo, gpg_key.fingerprint, {"commit": "1" * 40, "tree": "2" * 40})
    code, data = doctor(ledger_repo)
    assert code == 1 and codes(data) == {"VM-SUBJECT-MISSING"}, data
    assert data["mode"] == "incremental" and data["checked"] == 4, data
    # not remembered as clean: the next doctor finds it again
    code, data = doctor(ledger_repo)
    assert code == 1 and codes(data) == {"VM-SUBJECT-MISSING"} and data["checked"] == 4, data


def test_a_rewritten_log_is_swept_whole(ledger_repo: Path) -> None:
    ok(ledger_repo, "record", "v1.0")
    ok(ledger_repo, "record", "HEAD", "--environment", "staging")
    assert doctor(ledger_repo)[0] == 0
    log = git(ledger_repo, "rev-parse", "refs/vaultmesh/log")
    notes = git(ledger_repo, "rev-parse", "refs/notes/vaultmesh")
    git(ledger_repo, "update-ref", "refs/vaultmesh/log", f"{log}~1", log)  # rewound by one append
    git(ledger_repo, "update-ref", "refs/notes/vaultmesh", f"{notes}~1", notes)
    _, data = doctor(ledger_repo)
    assert data["mode"] == "full" and "does not simply extend" in data["reason"], data
    assert data["checked"] == size(ledger_repo)


def test_a_state_of_another_log_or_an_unreadable_one_means_a_full_sweep(ledger_repo: Path) -> None:
    assert doctor(ledger_repo)[0] == 0
    state = ledger_repo / ".git" / "vaultmesh" / "doctor-state.json"
    remembered = json.loads(state.read_text())
    state.write_text(json.dumps({**remembered, "log_id": "0" * 32}))
    _, data = doctor(ledger_repo)
    assert data["mode"] == "full" and "log id" in data["reason"], data
    state.write_text("{not json")
    _, data = doctor(ledger_repo)
    assert data["mode"] == "full" and "no clean state" in data["reason"], data


def test_index_states_are_reported_and_never_a_failure(ledger_repo: Path) -> None:
    code, data = doctor(ledger_repo)
    assert code == 0 and data["areas"]["index"]["state"] == "absent" and data["areas"]["index"]["ok"], data
    ok(ledger_repo, "list", "all")  # builds it
    assert doctor(ledger_repo)[1]["areas"]["index"]["state"] == "fresh"
    ok(ledger_repo, "record", "v1.0")
    assert doctor(ledger_repo)[1]["areas"]["index"]["state"] == "behind"
    (ledger_repo / ".git" / "vaultmesh" / "index.sqlite").write_bytes(b"not a database" * 100)
    code, data = doctor(ledger_repo)
    assert code == 0 and data["areas"]["index"]["state"] == "unreadable", data


def test_a_missing_or_replaced_hook_is_a_problem(ledger_repo: Path) -> None:
    code, data = doctor(ledger_repo)
    assert code == 0 and data["areas"]["hooks"]["installed"] is False, data
    ok(ledger_repo, "install")
    code, data = doctor(ledger_repo)
    assert code == 0 and data["areas"]["hooks"]["installed"] is True, data
    hooks = ledger_repo / ".git" / "hooks"
    (hooks / "pre-push").unlink()
    code, data = doctor(ledger_repo)
    assert code == 1 and codes(data) == {"VM-HOOK-MISSING"} and not data["areas"]["hooks"]["ok"], data
    assert any("pre-push" in p for p in data["problems"])
    (hooks / "pre-commit").write_text("#!/bin/sh\nexit 0\n")
    os.chmod(hooks / "pre-commit", 0o755)
    assert sum("pre-commit" in p for p in doctor(ledger_repo)[1]["problems"]) == 1
    (hooks / "pre-commit").unlink()
    ok(ledger_repo, "install")  # puts both back
    assert doctor(ledger_repo)[0] == 0


def test_config_keys_and_tsa_urls(ledger_repo: Path) -> None:
    code, data = doctor(ledger_repo)
    assert code == 0 and data["areas"]["keys"]["configured"] is True, data
    git(ledger_repo, "config", "vaultmesh.tsaTimeout", "soon")
    git(ledger_repo, "config", "vaultmesh.tsa.main.url", "ftp://tsa.example")
    code, data = doctor(ledger_repo)
    assert code == 1 and not data["areas"]["config"]["ok"] and not data["areas"]["tsas"]["ok"], data
    assert any("tsaTimeout" in p for p in data["problems"]) and any("ftp://" in p for p in data["problems"])
    git(ledger_repo, "config", "--unset", "vaultmesh.tsaTimeout")
    git(ledger_repo, "config", "vaultmesh.tsa.main.url", "https://tsa.example/rfc3161")
    git(ledger_repo, "config", "vaultmesh.signingFormat", "x509")  # a malformed security setting is reported
    code, data = doctor(ledger_repo)
    assert code == 1 and not data["areas"]["keys"]["ok"] and not data["areas"]["config"]["ok"], data
    git(ledger_repo, "config", "--unset", "vaultmesh.signingFormat")
    git(ledger_repo, "config", "--unset", "vaultmesh.signingKey")
    code, data = doctor(ledger_repo)  # a clone that only verifies is healthy
    assert code == 0 and data["areas"]["keys"]["configured"] is False, data


def test_full_asks_gpg_for_the_signing_key(ledger_repo: Path) -> None:
    assert doctor(ledger_repo, "--full")[1]["areas"]["keys"]["ok"]
    git(ledger_repo, "config", "vaultmesh.signingKey", "F" * 40)  # no such key in this keyring
    code, data = doctor(ledger_repo)
    assert code == 0, data  # the default doctor does not start gpg
    code, data = doctor(ledger_repo, "--full")
    assert code == 1 and not data["areas"]["keys"]["ok"], data


def test_human_output_names_every_area(ledger_repo: Path) -> None:
    out = ok(ledger_repo, "doctor")
    for area in ("ledger", "index", "config", "keys", "tsas", "hooks"):
        assert f"ok   {area}: " in out, out
    assert out.rstrip().endswith("doctor: nothing to report")


def test_tsa_expiry_facts_are_remembered_and_recomputed_after_a_new_timestamp(ledger_repo: Path,
                                                                               tmp_path: Path) -> None:
    from datetime import datetime, timedelta, timezone

    from git_vaultmesh.rfc3161.server import TsaServer, make_identity
    from git_vaultmesh.rfc3161.timestamping import iso

    now = datetime.now(timezone.utc).replace(microsecond=0)
    ca = make_identity("ec")
    (tmp_path / "ca.pem").write_bytes(ca.ca_cert_pem)
    short = make_identity(ca=ca, not_before=now - timedelta(hours=1), not_after=now + timedelta(days=1))
    with TsaServer(short, max_lifetime=120) as srv:
        ok(ledger_repo, "tsa", "add", "main", "--url", srv.url, "--ca-cert", str(tmp_path / "ca.pem"))
        ok(ledger_repo, "record", "v1.0")
    code, first = doctor(ledger_repo)
    assert code == 0 and first["mode"] == "full", first
    assert any("TSA main" in w and "expires" in w for w in first["warnings"]), first
    assert first["areas"]["tsas"]["detail"].startswith("1 configured, 1 in the policy"), first
    # nothing appended: the remembered facts give the warnings, judged at the time asked for
    code, again = doctor(ledger_repo)
    assert code == 0 and again["mode"] == "incremental" and again["checked"] == 0, again
    assert again["warnings"] == first["warnings"]
    res = run(ledger_repo, "doctor", "--json", env={"VAULTMESH_NOW": iso(now + timedelta(days=3))})
    later = json.loads(res.stdout)
    assert later["checked"] == 0 and any("expired" in w for w in later["warnings"]), later
    # an archive timestamp by a long-lived signer protects the tokens: appended, so the facts are recomputed
    with TsaServer(make_identity(ca=ca), max_lifetime=120) as srv:
        git(ledger_repo, "config", "vaultmesh.tsa.main.url", srv.url)
        ok(ledger_repo, "timestamp", "--archive")
    code, after = doctor(ledger_repo)
    assert code == 0 and after["mode"] == "incremental" and after["checked"] == 1, after
    assert after["warnings"] == [], after


def test_a_repository_without_a_ledger_is_reported(repo: Path) -> None:
    code, data = doctor(repo)
    assert code == 1 and "VM-NOT-INITIALIZED" in codes(data) and data["reason"] == "there is no log", data


def test_a_removed_keep_ref_means_a_full_sweep(ledger_repo: Path) -> None:
    ok(ledger_repo, "record", "HEAD~1", "--environment", "staging")
    assert doctor(ledger_repo)[0] == 0
    keep = git(ledger_repo, "for-each-ref", "--format=%(refname)", "refs/vaultmesh/keep/").split()
    assert keep, "record keeps its subject"
    git(ledger_repo, "update-ref", "-d", keep[0])
    code, data = doctor(ledger_repo)
    assert data["mode"] == "full" and "keep ref" in data["reason"], data
    assert code == 0, data  # main still holds the commit
    assert doctor(ledger_repo)[1]["mode"] == "incremental"  # the state found clean now lacks that keep ref
