"""The entry parser's quick path (no duplicate-key hook when a line re-encodes to itself) must give the strict
reading's verdict on every line: these are the lines where the two could differ."""

from __future__ import annotations

import pytest

from git_vaultmesh.entry import canonical, parse_line
from git_vaultmesh.errors import VaultMeshError

BODY = {"type": "decision", "log": "0" * 32, "recorded_at": "2025-10-01T00:00:00Z", "title": "t"}
SIG = {"format": "openpgp", "signer": "A" * 40, "sig": "x"}
GOOD = canonical({"v": 1, "body": BODY, "sigs": [SIG]})


def cause(line: bytes) -> str:
    with pytest.raises(VaultMeshError) as exc:
        parse_line(line)
    assert exc.value.code == "VM-ENTRY-MALFORMED"
    return exc.value.cause


def test_canonical_line_parses() -> None:
    assert parse_line(GOOD).body == BODY


@pytest.mark.parametrize("line", [
    GOOD.replace(b'"title":"t"', b'"title":"t","title":"t"'),  # the same value twice: re-encodes shorter
    GOOD.replace(b'"type":"decision"', b'"type":"decision","type":"policy"'),
    GOOD.replace(b'"format":"openpgp"', b'"format":"openpgp","format":"openpgp"'),
    GOOD[:-1] + b',"v":1}',  # at the top level
])
def test_repeated_key_is_named_as_such(line: bytes) -> None:
    assert "duplicate key" in cause(line)


def test_non_ascii_escape_goes_to_the_strict_reading() -> None:
    escaped = GOOD.replace(b'"title":"t"', b'"title":"\\u00e9"')  # JCS writes the character itself
    assert "canonical form" in cause(escaped)
    literal = canonical({"v": 1, "body": {**BODY, "title": "\u00e9"}, "sigs": [SIG]})
    assert parse_line(literal).body["title"] == "\u00e9"


@pytest.mark.parametrize("bad,what", [
    (GOOD.replace(b'"title":"t"', b'"title":NaN'), "non-JSON number"),
    (GOOD.replace(b'"title":"t"', b'"title":1.5'), "non-integer"),
    (GOOD.replace(b'"title":"t"', b'"title":9007199254740993'), "outside"),
    (GOOD.replace(b'{"body"', b'{ "body"'), "canonical form"),
])
def test_other_faults_keep_their_causes(bad: bytes, what: str) -> None:
    assert what in cause(bad)


def test_merged_view_reading_equals_the_strict_parse() -> None:
    """The merged view slices JCS(body) out of a judged line instead of serialising the body again: the two
    must agree, also for a body whose strings spell the signature key, and a line of another shape goes to the
    strict parse (or is left out)."""
    from git_vaultmesh.federation import _read_copy

    tricky = {**BODY, "title": 'x,"sigs":[y', "message": "\u00e9\\\"],\"v\":1}"}
    batch = {**SIG, "batch": {"size": 2, "index": 1, "proof": ["e" * 64]}}
    lines = [GOOD, canonical({"v": 1, "body": tricky, "sigs": [batch, SIG]}), b"not json", b""]
    got = _read_copy(lines)
    for line, content in zip(lines[:2], got[:2]):
        assert content is not None
        strict = parse_line(line)
        assert content.body == strict.body and content.body_bytes == strict.body_bytes
        assert content.id == strict.id and content.type == strict.type
    assert got[2:] == [None, None]
