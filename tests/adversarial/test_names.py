"""Names git resolves differently: a ref outside refs/tags/ that git picks before the tag must never be signed
or shown as the tag's; every ambiguous name is refused with VM-REV-AMBIGUOUS, the full refname is accepted."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from conftest import git, vm


def _impostor(repo: Path) -> str:
    """refs/v1.0 at another commit: `git checkout v1.0` now builds this one, not the tag."""
    other = git(repo, "rev-parse", "HEAD~1").strip()
    git(repo, "update-ref", "refs/v1.0", other)
    return other


def _coded(res: subprocess.CompletedProcess[str], code: str) -> None:
    out = res.stderr + res.stdout
    assert "Traceback" not in out, out
    assert res.returncode == 1, out
    assert code in out, out


def test_record_refuses_a_ref_git_resolves_before_the_tag(ledger_repo: Path) -> None:
    other = _impostor(ledger_repo)
    assert git(ledger_repo, "rev-parse", "v1.0^{commit}").strip() == other  # git itself picks the impostor
    _coded(vm(ledger_repo, "record", "v1.0"), "VM-REV-AMBIGUOUS")
    _coded(vm(ledger_repo, "record", "v1.0", "--type", "deploy"), "VM-REV-AMBIGUOUS")
    res = vm(ledger_repo, "record", "refs/tags/v1.0", "--json")  # the full refname says which one is meant
    assert res.returncode == 0, res.stderr
    body = json.loads(res.stdout)["body"]
    assert body["type"] == "release" and body["subject"]["ref"] == "refs/tags/v1.0"
    assert body["subject"]["commit"] == git(ledger_repo, "rev-parse", "refs/tags/v1.0^{commit}").strip() != other


@pytest.mark.parametrize("where", ["refs/heads/v1.0", "refs/remotes/v1.0", "refs/remotes/v1.0/HEAD"])
def test_tag_and_branch_or_remote_of_one_name(ledger_repo: Path, where: str) -> None:
    git(ledger_repo, "update-ref", where, "HEAD~2")
    _coded(vm(ledger_repo, "record", "v1.0"), "VM-REV-AMBIGUOUS")


def test_show_and_cosign_refuse_ambiguous_names(ledger_repo: Path) -> None:
    assert vm(ledger_repo, "record", "v1.0").returncode == 0
    _impostor(ledger_repo)
    _coded(vm(ledger_repo, "show", "v1.0"), "VM-REV-AMBIGUOUS")
    _coded(vm(ledger_repo, "cosign", "v1.0"), "VM-REV-AMBIGUOUS")
    assert vm(ledger_repo, "show", "refs/tags/v1.0").returncode == 0


def test_short_hex_branch_shadowing_an_object(ledger_repo: Path) -> None:
    """git prefers a ref named like an abbreviated object id over the object, silently."""
    head = git(ledger_repo, "rev-parse", "HEAD").strip()
    git(ledger_repo, "branch", head[:8], "HEAD~2")
    _coded(vm(ledger_repo, "record", head[:8]), "VM-REV-AMBIGUOUS")


@pytest.mark.parametrize("verb", ["record", "show", "cosign"])
@pytest.mark.parametrize("rev", ["v1.0\udcff", "", "-x", "a" * 5000, "v1\n0"])
def test_hostile_revs_are_coded_errors(ledger_repo: Path, verb: str, rev: str) -> None:
    res = vm(ledger_repo, verb, "--", rev) if rev.startswith("-") else vm(ledger_repo, verb, rev)
    out = res.stderr + res.stdout
    assert "Traceback" not in out, out
    assert res.returncode in (1, 2) and any(c in out for c in ("VM-BAD-REV", "VM-NOT-RECORDED", "VM-USAGE")), out
