"""`config` / `config check` and the refusal of malformed security settings, on real repos and git config."""

from __future__ import annotations

import json
import subprocess

from conftest import vm


def test_config_check_reports_file_line_and_near_miss(repo):
    (repo / ".vaultmesh.toml").write_text('[vaultmesh]\ntsajobs = "many"\ngpgtimout = 3\n')
    subprocess.run(["git", "-C", str(repo), "config", "vaultmesh.signingkye", "ABC"], check=True)
    r = vm(repo, "config", "check")
    assert r.returncode == 1
    assert ".vaultmesh.toml:2: vaultmesh.tsaJobs = 'many'" in r.stderr
    assert ".vaultmesh.toml:3: unknown key vaultmesh.gpgtimout (did you mean vaultmesh.gpgtimeout?)" in r.stderr
    assert "unknown key vaultmesh.signingkye (did you mean vaultmesh.signingkey?)" in r.stderr
    assert "Traceback" not in r.stderr
    listing = json.loads(vm(repo, "config", "--json").stdout)["settings"]
    jobs = [s for s in listing if s["key"] == "tsajobs"]
    assert jobs[0]["value"] == "many" and jobs[0]["origin"].endswith(".vaultmesh.toml:2")
    assert {s["key"] for s in listing} >= {"signingkey", "trustroot", "gpgtimeout"}


def test_clean_config_passes(repo):
    subprocess.run(["git", "-C", str(repo), "config", "vaultmesh.tsaJobs", "4"], check=True)
    r = vm(repo, "config", "check")
    assert r.returncode == 0, r.stderr
    assert "all valid" in r.stdout


def test_every_verb_refuses_a_malformed_trust_root(repo):
    subprocess.run(["git", "-C", str(repo), "config", "vaultmesh.trustRoot", "not-a-fingerprint"], check=True)
    for verb in (["log"], ["verify"], ["show", "HEAD"]):
        r = vm(repo, *verb)
        assert r.returncode == 2, (verb, r.stderr)
        assert "VM-CONFIG-INVALID" in r.stderr and "vaultmesh.trustRoot" in r.stderr


def test_settings_page_matches_the_schema():
    from pathlib import Path

    from git_vaultmesh.config import settings_page

    page = Path(__file__).resolve().parent.parent / "docs" / "settings.md"
    assert page.read_text() == settings_page(), "regenerate: python -m git_vaultmesh.config > docs/settings.md"
