"""Adversarial round two, timestamps: a TSA whose certificate has expired, an archive renewed only by the
certificate that is expiring, and genuine tokens carried over from ANOTHER ledger (for its entry or its
checkpoint). Real repositories, real gpg, the built-in TSA on 127.0.0.1. Listed in docs/threat-model.md,
"Adversarial round two"."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from git_vaultmesh import ledger, merkle
from git_vaultmesh.config import signing_key
from git_vaultmesh.git import Repo
from git_vaultmesh.rfc3161.server import TsaIdentity, TsaServer, make_identity
from git_vaultmesh.rfc3161.timestamping import archive_data, sign_bodies, timestamp_body

from cli_helpers import ok, ok_json, run
from conftest import GpgKey, git, make_repo, vm_ok
from policy_kit import entries, ledger_refs
from tsa_kit import token

UTC = timezone.utc


@pytest.fixture(scope="module")
def ca() -> TsaIdentity:
    return make_identity("ec")


@pytest.fixture
def server(ca: TsaIdentity) -> Iterator[TsaServer]:
    with TsaServer(make_identity(ca=ca), max_lifetime=120) as srv:
        yield srv


def _ca_file(tmp: Path, ident: TsaIdentity) -> str:
    path = tmp / "tsa-ca.pem"
    path.write_bytes(ident.ca_cert_pem)
    return str(path)


def _verify(repo: Path, *args: str, env: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
    res = run(repo, "verify", *args, "--json", env=env)
    return res.returncode, json.loads(res.stdout)


def _codes(report: dict[str, Any]) -> set[str]:
    return {c["code"] for c in report["checks"] if not c["ok"]}


def _stamp(repo: Path, tokens: list[tuple[str, bytes]], *, entry: str | None = None,
           checkpoint: int | None = None) -> int:
    """Append a timestamp entry carrying these tokens, signed by the repo's own key; its seq."""
    with Repo.discover(repo) as r:
        key = signing_key(r)
        head = ledger.read_head(r)
        assert head.log_id is not None
        (stamp,) = sign_bodies(key, [timestamp_body(head.log_id, tokens, entry=entry, checkpoint=checkpoint)])
        return ledger.append(r, key, [stamp]).first_seq


def _tokens_of(repo: Path, entry_id: str) -> list[tuple[str, bytes]]:
    return [(t["tsa"], base64.b64decode(t["tsr"])) for e in entries(repo)
            if e.type == "timestamp" and e.body.get("entry") == entry_id for t in e.body["tokens"]]


def _release(repo: Path) -> Any:
    return next(e for e in entries(repo) if e.type == "release")


def _other_ledger(tmp_path: Path, gpg_key: GpgKey, server: TsaServer) -> Path:
    """A second ledger (its own log id), same signer, same TSA, v1.0 recorded with a token."""
    other = make_repo(tmp_path / "other")
    git(other, "config", "vaultmesh.signingKey", gpg_key.fingerprint)
    vm_ok(other, "init")
    ok(other, "tsa", "add", "main", "--url", server.url, "--ca-cert", _ca_file(tmp_path, server.identity))
    ok(other, "record", "v1.0")
    return other


def test_tsa_add_refuses_a_tsa_whose_certificate_has_expired(ledger_repo: Path, ca: TsaIdentity,
                                                             tmp_path: Path) -> None:
    """The TSA's signer certificate expired yesterday (the server still answers): its tokens prove nothing,
    so `tsa add` (which probes) refuses it and the policy is unchanged."""
    now = datetime.now(UTC)
    expired = make_identity(ca=ca, not_before=now - timedelta(days=10), not_after=now - timedelta(days=1))
    before = ledger_refs(ledger_repo)
    with TsaServer(expired, max_lifetime=60) as srv:
        res = run(ledger_repo, "tsa", "add", "old", "--url", srv.url, "--ca-cert", _ca_file(tmp_path, expired))
    assert res.returncode == 1 and "error: VM-TSA-CERT-VALIDITY: " in res.stderr, res.stderr
    assert ledger_refs(ledger_repo) == before


def test_token_of_an_expired_tsa_certificate_does_not_count(ledger_repo: Path, ca: TsaIdentity,
                                                            tmp_path: Path) -> None:
    """The same TSA added --offline (no probe) and required: record gets tokens that do not verify, keeps the
    release pending, and a timestamp entry forced in with such a token is reported for what it is."""
    now = datetime.now(UTC)
    expired = make_identity(ca=ca, not_before=now - timedelta(days=10), not_after=now - timedelta(days=1))
    with TsaServer(expired, max_lifetime=60) as srv:
        ok_json(ledger_repo, "tsa", "add", "old", "--url", srv.url, "--ca-cert", _ca_file(tmp_path, expired),
                "--offline", "--require", "1")
        res = run(ledger_repo, "record", "v1.0", "--json")
    assert res.returncode in (0, 1) and "Traceback" not in res.stderr
    assert _release(ledger_repo) is not None
    code, report = _verify(ledger_repo, "v1.0")
    assert code == 1 and "VM-TSA-PENDING" in _codes(report), report
    release = _release(ledger_repo)
    seq = _stamp(ledger_repo, [("old", token(expired, release.line)[0])], entry=release.id)
    code, report = _verify(ledger_repo, "v1.0")
    mine = [c["code"] for c in report["checks"] if not c["ok"] and c["detail"].startswith(f"timestamp entry #{seq} ")]
    assert code == 1 and mine == ["VM-TSA-CERT-VALIDITY"], report


def test_archive_made_by_the_expiring_certificate_itself_does_not_anchor(ledger_repo: Path, ca: TsaIdentity,
                                                                        tmp_path: Path) -> None:
    """An archive timestamp is meant to renew tokens before their certificate expires; one made by that same
    short-lived certificate expires with it, so three days later nothing anchors the release's token."""
    now = datetime.now(UTC).replace(microsecond=0)
    short = make_identity(ca=ca, not_before=now - timedelta(hours=1), not_after=now + timedelta(days=1))
    with TsaServer(short, max_lifetime=60) as srv:
        ok(ledger_repo, "tsa", "add", "main", "--url", srv.url, "--ca-cert", _ca_file(tmp_path, short))
        ok(ledger_repo, "record", "v1.0")
        ok(ledger_repo, "timestamp", "--archive")
    assert _verify(ledger_repo, "--all")[0] == 0
    later = {"VAULTMESH_NOW": (now + timedelta(days=3)).strftime("%Y-%m-%dT%H:%M:%SZ")}
    code, report = _verify(ledger_repo, "v1.0", env=later)
    assert code == 1 and "VM-TSA-EXPIRED-UNANCHORED" in _codes(report), report


def test_token_of_another_ledgers_entry_for_our_entry(ledger_repo: Path, gpg_key: GpgKey, server: TsaServer,
                                                      tmp_path: Path) -> None:
    """A genuine token (our TSA, valid signature, valid certificate) obtained by ANOTHER ledger for its own
    v1.0 receipt, attached to our v1.0 receipt: its imprint is the other ledger's line."""
    other = _other_ledger(tmp_path, gpg_key, server)
    ok(ledger_repo, "tsa", "add", "main", "--url", server.url, "--ca-cert", _ca_file(tmp_path, server.identity),
       "--offline")
    ok(ledger_repo, "record", "v1.0")
    theirs = _tokens_of(other, _release(other).id)
    assert theirs
    seq = _stamp(ledger_repo, theirs, entry=_release(ledger_repo).id)
    code, report = _verify(ledger_repo, "--all")
    mine = [c["code"] for c in report["checks"] if not c["ok"] and c["detail"].startswith(f"timestamp entry #{seq} ")]
    assert code == 1 and mine == ["VM-TSA-IMPRINT"], report


def test_timestamp_entry_naming_another_ledgers_entry(ledger_repo: Path, gpg_key: GpgKey, server: TsaServer,
                                                      tmp_path: Path) -> None:
    """A timestamp entry that names the OTHER ledger's entry id, carrying that ledger's genuine token: it
    stamps nothing in this log, so it must not pass as a valid entry here."""
    other = _other_ledger(tmp_path, gpg_key, server)
    ok(ledger_repo, "tsa", "add", "main", "--url", server.url, "--ca-cert", _ca_file(tmp_path, server.identity),
       "--offline")
    foreign = _release(other).id
    _stamp(ledger_repo, _tokens_of(other, foreign), entry=foreign)
    code, report = _verify(ledger_repo, "--all")
    assert code == 1 and _codes(report) == {"VM-ENTRY-REF-INVALID"}, report


def test_archive_token_of_another_ledgers_checkpoint(ledger_repo: Path, gpg_key: GpgKey, server: TsaServer,
                                                     tmp_path: Path) -> None:
    """A genuine archive token over the OTHER ledger's checkpoint of the same size, appended to ours as an
    archive timestamp: checkpoints name their log, so the imprint cannot match."""
    other = _other_ledger(tmp_path, gpg_key, server)
    ok(ledger_repo, "tsa", "add", "main", "--url", server.url, "--ca-cert", _ca_file(tmp_path, server.identity),
       "--offline")
    ok(ledger_repo, "record", "v1.0")
    with Repo.discover(ledger_repo) as r:
        size = ledger.read_head(r).size
    with Repo.discover(other) as r:
        head = ledger.read_head(r)
        assert head.log_id is not None and head.size >= size
        leaves = [merkle.leaf_hash(e.line) for e in ledger.read_entries(r, str(head.commit))]
        foreign, _ = token(server.identity, archive_data(head.log_id, size, leaves))
    seq = _stamp(ledger_repo, [("main", foreign)], checkpoint=size)
    code, report = _verify(ledger_repo, "--all")
    mine = [c["code"] for c in report["checks"] if not c["ok"] and c["detail"].startswith(f"timestamp entry #{seq} ")]
    assert code == 1 and mine == ["VM-TSA-IMPRINT"], report


def test_archive_timestamp_of_a_checkpoint_beyond_the_log(ledger_repo: Path, server: TsaServer,
                                                          tmp_path: Path) -> None:
    """An archive timestamp claiming a checkpoint larger than the log at its position (a checkpoint that does
    not exist yet, so any token "covers" entries appended later)."""
    ok(ledger_repo, "tsa", "add", "main", "--url", server.url, "--ca-cert", _ca_file(tmp_path, server.identity))
    ok(ledger_repo, "record", "v1.0")
    with Repo.discover(ledger_repo) as r:
        head = ledger.read_head(r)
        assert head.log_id is not None
        leaves = [merkle.leaf_hash(e.line) for e in ledger.read_entries(r, str(head.commit))]
        data = archive_data(head.log_id, head.size, leaves)
    _stamp(ledger_repo, [("main", token(server.identity, data)[0])], checkpoint=head.size + 5)
    code, report = _verify(ledger_repo, "--all")
    assert code == 1 and _codes(report) == {"VM-ENTRY-REF-INVALID"}, report
