"""The first things a new user reads: the component name every clone agrees on, `log` rows, `timestamp`'s
summary, `demo`'s last words. (The quickstart's own transcript is checked by tests/test_docs.py.)"""

from __future__ import annotations

import re
from pathlib import Path

from git_vaultmesh.commands.log import describe
from git_vaultmesh.rfc3161.server import TsaServer, make_identity

from cli_helpers import ok, ok_json
from conftest import git


def _component(repo: Path, *extra: str) -> str:
    return str(ok_json(repo, "record", "HEAD", "--json", *extra)["body"]["component"])


def test_component_is_a_name_every_clone_agrees_on(ledger_repo: Path) -> None:
    assert _component(ledger_repo) == "repo"  # no origin: the folder
    git(ledger_repo, "remote", "add", "origin", "https://example.org/group/shop.git/")
    assert _component(ledger_repo) == "shop"  # the origin URL's last part, whatever the clone's folder
    git(ledger_repo, "remote", "set-url", "origin", "git@example.org:group/api")
    assert _component(ledger_repo) == "api"
    git(ledger_repo, "config", "vaultmesh.component", "storefront")
    assert _component(ledger_repo) == "storefront"
    assert _component(ledger_repo, "--component", "cli") == "cli"
    assert "vaultmesh.component" in ok(ledger_repo, "record", "--help")


def test_log_rows_name_targets_the_way_rows_are_named() -> None:
    digest, entry_id = "ab" * 32, "cd" * 32
    targets = {digest: (3, entry_id), entry_id: (3, entry_id)}
    assert describe({"type": "cosign", "entry": digest}, targets) == f"-> #3 {entry_id[:12]}"
    assert describe({"type": "timestamp", "entry": entry_id}, targets) == f"-> #3 {entry_id[:12]}"
    assert describe({"type": "timestamp", "checkpoint": "7"}, targets) == "-> checkpoint size 7"
    assert describe({"type": "cosign", "entry": "ef" * 32}, targets).endswith("(not in this log)")
    assert describe({"type": "deploy", "component": "shop", "environment": "prod",
                     "subject": {"ref": "refs/heads/main"}}) == "shop refs/heads/main env=prod"


def test_timestamp_pending_names_one_entry_once(ledger_repo: Path, tmp_path: Path) -> None:
    ident = make_identity("ec")
    pem = tmp_path / "ca.pem"
    pem.write_bytes(ident.ca_cert_pem)
    ok(ledger_repo, "tsa", "add", "main", "--url", "http://127.0.0.1:9/tsr", "--ca-cert", str(pem), "--offline")
    git(ledger_repo, "config", "vaultmesh.tsaTimeout", "2")
    seq = ok_json(ledger_repo, "record", "v1.0", "--json")["seq"]
    with TsaServer(ident, max_lifetime=60) as srv:
        git(ledger_repo, "config", "vaultmesh.tsa.main.url", srv.url)
        out = ok(ledger_repo, "timestamp", "--pending")
    assert re.search(r"for 1 entry in one append \(entry #\d+\)", out), out
    assert ".." not in out.split("in one append")[1].splitlines()[0], out
    assert int(re.findall(r"entry #(\d+)\)", out)[0]) > seq


def test_demo_without_keep_prints_no_path_that_is_gone(tmp_path: Path) -> None:
    out = ok(tmp_path, "demo")
    line = next(ln for ln in out.splitlines() if ln.startswith("demo repository: "))
    assert "removed when the demo ends" in line, line
    assert not Path(line.split()[2]).exists()
    assert "kept:" not in out
