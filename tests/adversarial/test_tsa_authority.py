"""Timestamps: distinct means distinct authorities, and a token cannot predate the entry it stamps.

Real repositories, real gpg, the built-in TSA on 127.0.0.1 (two URLs of one server = two policy TSAs that
share one signing key)."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from git_vaultmesh.rfc3161.server import TsaIdentity, TsaServer, make_identity

from cli_helpers import ok_json, run


@pytest.fixture(scope="module")
def ident() -> TsaIdentity:
    return make_identity("ec")


@pytest.fixture
def server(ident: TsaIdentity) -> Iterator[TsaServer]:
    with TsaServer(ident, max_lifetime=120) as srv:
        yield srv


def _add(repo: Path, name: str, url: str, ca: Path, *extra: str) -> dict[str, Any]:
    return ok_json(repo, "tsa", "add", name, "--url", url, "--ca-cert", str(ca), *extra)  # type: ignore[no-any-return]


def _verify(repo: Path, *args: str) -> tuple[int, dict[str, Any]]:
    res = run(repo, "verify", *args, "--json")
    return res.returncode, json.loads(res.stdout)


def _failed(report: dict[str, Any]) -> list[dict[str, Any]]:
    return [c for c in report["checks"] if not c["ok"]]


def test_two_policy_tsas_sharing_a_signing_key_count_once(ledger_repo: Path, server: TsaServer,
                                                          tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_bytes(server.identity.ca_cert_pem)
    _add(ledger_repo, "alpha", server.url, ca)
    # --offline skips the probe, so tsa add cannot see that "beta" is the same key behind another URL
    _add(ledger_repo, "beta", server.url + "/beta", ca, "--offline", "--require", "2")
    out = ok_json(ledger_repo, "record", "v1.0", "--json")
    stamped = out["timestamps"]["tsas"]
    assert sorted(stamped) == ["alpha", "beta"], out  # both URLs answered, with two different tokens
    code, report = _verify(ledger_repo, "v1.0")
    assert code == 1
    pending = [c for c in _failed(report) if c["code"] == "VM-TSA-PENDING"]
    assert pending, _failed(report)
    assert "1 of required 2" in pending[0]["detail"] and "same signing key" in pending[0]["detail"], pending


def test_an_entry_recorded_after_its_token_was_issued_is_refused(ledger_repo: Path, server: TsaServer,
                                                                 tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_bytes(server.identity.ca_cert_pem)
    _add(ledger_repo, "main", server.url, ca)
    ahead = str(int(time.time()) + 86400)  # the recorder's clock a day ahead of the TSA's
    res = run(ledger_repo, "record", "v1.0", "--json", env=dict(os.environ, SOURCE_DATE_EPOCH=ahead))
    code, report = _verify(ledger_repo, "v1.0")
    assert code == 1, report
    bad = [c for c in _failed(report) if c["code"] == "VM-TSA-BEFORE-ENTRY"]
    assert bad and "recorded at" in bad[0]["detail"], (_failed(report), res.stdout, res.stderr)


def test_within_the_clock_allowance_a_token_counts(ledger_repo: Path, server: TsaServer, tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_bytes(server.identity.ca_cert_pem)
    _add(ledger_repo, "main", server.url, ca)
    slightly = str(int(time.time()) + 120)  # two minutes ahead: inside the ten-minute allowance
    ok_json(ledger_repo, "record", "v1.0", "--json", env=dict(os.environ, SOURCE_DATE_EPOCH=slightly))
    code, report = _verify(ledger_repo, "v1.0")
    assert code == 0, _failed(report)
