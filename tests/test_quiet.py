"""Quiet by default: `record` and `verify` print nothing on stderr but our own messages (gpg's status chatter,
"checking the trustdb", "gpg: ..." lines, is captured)."""

from __future__ import annotations

from conftest import vm


def test_record_and_verify_leave_stderr_empty(ledger_repo):
    for args in (["record", "v1.0"], ["verify", "v1.0"], ["-q", "log"], ["-v", "show", "v1.0"]):
        r = vm(ledger_repo, *args)
        assert r.returncode == 0, (args, r.stderr)
        assert "gpg:" not in r.stderr and "trustdb" not in r.stderr, (args, r.stderr)
        assert r.stderr == "", (args, r.stderr)



def test_a_stale_trustdb_stays_off_stderr(ledger_repo):
    """A missing trustdb makes gpg rebuild it; whatever gpg says about that stays captured."""
    import os
    from pathlib import Path

    trustdb = Path(os.environ["GNUPGHOME"]) / "trustdb.gpg"
    trustdb.unlink(missing_ok=True)
    r = vm(ledger_repo, "record", "v1.0")
    assert r.returncode == 0, r.stderr
    assert r.stderr == "", r.stderr
