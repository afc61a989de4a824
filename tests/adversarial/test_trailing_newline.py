"""Python's `$` matches before a final newline: a pattern written `^hex$` accepted "hex\\n". bytes.fromhex and
git both skip the newline, so a field could carry two spellings of one value (an entry's bytes, and so its id
and leaf, changed while everything it names stays the same). Every anchored field pattern ends in `\\Z` now."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from git_vaultmesh.entry import canonical, parse_line
from git_vaultmesh.errors import VaultMeshError
from git_vaultmesh.policy import Policy

LOG = "0123456789abcdef0123456789abcdef"
SIG = {"format": "openpgp", "signer": "A" * 40, "sig": "x"}


def line(body: dict, sigs: list | None = None) -> bytes:  # type: ignore[type-arg]
    return canonical({"v": 1, "body": body, "sigs": sigs if sigs is not None else [SIG]})


BASE = {"type": "deploy", "log": LOG, "recorded_at": "2025-10-01T00:00:00Z", "component": "web", "version": "v1"}


def test_valid_base_parses() -> None:
    assert parse_line(line(BASE)).body == BASE


@pytest.mark.parametrize("field,value", [
    ("recorded_at", "2025-10-01T00:00:00Z\n"),
    ("log", LOG + "\n"),
    ("subject", {"commit": "a" * 40 + "\n", "tree": "b" * 40}),
    ("artifacts", [{"name": "app.tar", "sha256": "c" * 64 + "\n"}]),
    ("artifacts", [{"name": "app.tar\n", "sha256": "c" * 64}]),
])
def test_trailing_newline_in_a_field_is_malformed(field: str, value: object) -> None:
    with pytest.raises(VaultMeshError) as exc:
        parse_line(line({**BASE, field: value}))
    assert exc.value.code == "VM-ENTRY-MALFORMED"


def test_trailing_newline_in_a_batch_proof_is_malformed() -> None:
    ok = {**SIG, "batch": {"size": 2, "index": 0, "proof": ["d" * 64]}}
    assert parse_line(line(BASE, [ok])).sigs[0]["batch"]["proof"] == ["d" * 64]
    bad = {**SIG, "batch": {"size": 2, "index": 0, "proof": ["d" * 64 + "\n"]}}
    with pytest.raises(VaultMeshError) as exc:
        parse_line(line(BASE, [bad]))
    assert exc.value.code == "VM-ENTRY-MALFORMED"


@pytest.mark.parametrize("field,value", [("fingerprint", "A" * 40 + "\n"), ("name", "alice\n")])
def test_policy_signer_with_newline_is_refused(field: str, value: str) -> None:
    signer = {"name": "alice", "format": "openpgp", "fingerprint": "A" * 40, "public_key": "k", "types": ["*"]}
    assert Policy.from_body({"signers": [signer]}).signers[0].name == "alice"
    with pytest.raises(VaultMeshError) as exc:
        Policy.from_body({"signers": [{**signer, field: value}]})
    assert exc.value.code == "VM-POLICY-INVALID"


def test_no_field_pattern_ends_in_a_bare_dollar() -> None:
    """The rule itself, over the package: a compiled or matched pattern anchored with `$` is a bug."""
    root = Path(__file__).resolve().parents[2] / "git_vaultmesh"
    offenders = []
    for path in root.rglob("*.py"):
        for n, text in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if re.search(r"re\.(compile|match|fullmatch|search)\(r?[\"']\^.*\$[\"']", text):
                offenders.append(f"{path.relative_to(root)}:{n}")
    assert not offenders, offenders
