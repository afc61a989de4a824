"""Every verb with hostile argv (non-UTF-8, very long, option-like, empty): a clear error, never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import vm

VERBS = [["record"], ["verify"], ["show"], ["log", "--type"], ["cosign"], ["prove", "--in", "v1.0"],
         ["check-proof", "--trust-root", "AB" * 20], ["pull"], ["doctor"], ["policy", "sign"],
         ["tsa", "add", "x", "--url", "http://127.0.0.1:1/", "--ca-cert"], ["timestamp", "--pending"]]
HOSTILE = ["\udcff\udcfe", "x" * 20000, "--no-such-option", ""]


@pytest.mark.parametrize("verb", VERBS, ids=lambda v: v[0])
@pytest.mark.parametrize("arg", HOSTILE, ids=["non-utf8", "long", "option", "empty"])
def test_no_traceback(ledger_repo: Path, verb: list[str], arg: str) -> None:
    res = vm(ledger_repo, *verb, arg)
    out = res.stderr + res.stdout
    assert "Traceback" not in out, out[-2000:]
    assert res.returncode != 0 or verb[0] in ("doctor", "pull", "log") or "timestamp" in verb, out[-2000:]
    if res.returncode == 1:
        assert "VM-" in out, out[-2000:]
