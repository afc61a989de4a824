"""--timings: per-step times and the tool's own peak memory, on stderr and in --json."""

from __future__ import annotations

from pathlib import Path

from cli_helpers import ok_json, run


def test_timings_in_json_and_on_stderr(ledger_repo: Path) -> None:
    out = ok_json(ledger_repo, "record", "v1.0", "--timings", "--json")
    steps = out["timings"]
    assert steps["total"] > 0 and all(isinstance(v, float) for v in steps.values())
    assert 5 < out["peak_rss_mb"] < 2000  # the interpreter alone is over 5 MB
    res = run(ledger_repo, "verify", "v1.0", "--timings")
    assert res.returncode == 0, res.stderr
    assert "timings:" in res.stderr and "peak RSS" in res.stderr
    assert "peak_rss_mb" not in ok_json(ledger_repo, "verify", "v1.0", "--json")  # only when asked
