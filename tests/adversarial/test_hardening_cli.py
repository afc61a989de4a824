"""No tracebacks: a reader that leaves early (broken pipe), and security settings that are empty or malformed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from git_vaultmesh.config import validated
from git_vaultmesh.errors import VaultMeshError


def test_log_into_a_closed_pipe(ledger_repo: Path) -> None:
    for i in range(3):
        assert subprocess.run([sys.executable, "-m", "git_vaultmesh", "record", "HEAD", "-m", f"d{i}" * 3000],
                              cwd=ledger_repo, capture_output=True).returncode == 0
    res = subprocess.run(f"{sys.executable} -m git_vaultmesh log | head -c 1", shell=True, cwd=ledger_repo,
                         capture_output=True, text=True)
    assert "Traceback" not in res.stderr and "BrokenPipe" not in res.stderr, res.stderr


@pytest.mark.parametrize("value", ["", " ", "xyz", "ABCD", "0" * 39, "SHA256:", "\udcff" * 40])
def test_malformed_trust_root_is_refused_naming_the_setting(value: str) -> None:
    with pytest.raises(VaultMeshError) as exc:
        validated("trustRoot", value)
    assert exc.value.code == "VM-CONFIG-INVALID" and "vaultmesh.trustRoot" in exc.value.cause


def test_wellformed_trust_root() -> None:
    assert validated("trustRoot", "ab" * 20) == "AB" * 20
    assert validated("trustRoot", None) is None
