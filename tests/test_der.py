"""der.py: the strict DER reader under the token verifier. Each DER rule it enforces is tried with the
encoding that breaks it, and its readings are checked against asn1crypto (an independent parser)."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
from asn1crypto import core
from hypothesis import given, settings
from hypothesis import strategies as st

from git_vaultmesh.rfc3161 import der
from git_vaultmesh.rfc3161.der import DerError


def node(hexstr: str) -> der.Node:
    return der.parse(bytes.fromhex(hexstr))


@pytest.mark.parametrize(
    ("hexstr", "truncated", "word"),
    [
        ("", True, "no tag"),
        ("30", True, "no length"),
        ("3003020101ff", False, "trailing"),
        ("308103020101", False, "non-minimal"),  # long form for a length < 128
        ("30820003020101", False, "non-minimal"),  # leading zero length octet
        ("3080020101" + "0000", False, "indefinite"),
        ("3085ffffffffff", False, "5-byte length"),
        ("3005020101", True, "declares 5"),
        ("3f2200", False, "high-tag-number"),
    ],
)
def test_header_rules(hexstr: str, truncated: bool, word: str) -> None:
    with pytest.raises(DerError) as info:
        der.parse(bytes.fromhex(hexstr))
    assert info.value.truncated is truncated
    assert word in info.value.detail


@pytest.mark.parametrize(
    ("hexstr", "value"),
    [("020100", 0), ("02017f", 127), ("02020080", 128), ("0201ff", -1), ("020180", -128), ("0202ff7f", -129),
     ("020900ffffffffffffffff", 2**64 - 1)],
)
def test_integers(hexstr: str, value: int) -> None:
    assert node(hexstr).integer() == value == core.Integer.load(bytes.fromhex(hexstr)).native
    assert der.encode_int(value) == bytes.fromhex(hexstr)


@pytest.mark.parametrize("hexstr", ["0200", "02020001", "0202ff80", "2203020101"])
def test_integers_not_der(hexstr: str) -> None:
    with pytest.raises(DerError):
        node(hexstr).integer()


def test_booleans_and_null() -> None:
    assert node("0101ff").boolean() is True
    assert node("010100").boolean() is False
    for bad in ("010101", "0100", "01020000"):
        with pytest.raises(DerError, match="00 or ff"):
            node(bad).boolean()
    node("0500").null()
    with pytest.raises(DerError):
        node("050100").null()


def test_bit_strings() -> None:
    assert node("03020780").bits() == (b"\x80", 7)
    assert node("030100").bits() == (b"", 0)
    for bad in ("0300", "030108", "03020781", "03020880"):  # no count; count with no octets; unused bit set; >7
        with pytest.raises(DerError):
            node(bad).bits()


@pytest.mark.parametrize("dotted", ["1.2.840.113549.1.9.16.1.4", "2.16.840.1.101.3.4.2.1", "0.9.2342.19200300.100.1.25",
                                    "2.999.3", "1.3.6.1.5.5.7.3.8"])
def test_oids_round_trip(dotted: str) -> None:
    encoded = der.encode_oid(dotted)
    assert encoded == core.ObjectIdentifier(dotted).dump()
    assert der.parse(encoded).oid() == dotted


@pytest.mark.parametrize("hexstr", ["0600", "060188", "06028001", "0603808001"])
def test_oids_not_der(hexstr: str) -> None:
    with pytest.raises(DerError):
        node(hexstr).oid()


@pytest.mark.parametrize(
    ("raw", "tag", "expected"),
    [
        (b"491231235959Z", der.UTC_TIME, datetime(2049, 12, 31, 23, 59, 59, tzinfo=timezone.utc)),
        (b"500101000000Z", der.UTC_TIME, datetime(1950, 1, 1, tzinfo=timezone.utc)),
        (b"20261126120000Z", der.GENERALIZED_TIME, datetime(2026, 11, 26, 12, tzinfo=timezone.utc)),
        (b"20261126120000.25Z", der.GENERALIZED_TIME, datetime(2026, 11, 26, 12, 0, 0, 250000, tzinfo=timezone.utc)),
    ],
)
def test_times(raw: bytes, tag: int, expected: datetime) -> None:
    assert der.parse(der.encode(tag, raw)).time() == expected


@pytest.mark.parametrize(
    ("raw", "tag"),
    [
        (b"4912312359Z", der.UTC_TIME),  # no seconds
        (b"491231235959+0000", der.UTC_TIME),  # offset instead of Z
        (b"20261126120000.50Z", der.GENERALIZED_TIME),  # trailing zero in the fraction
        (b"20261126120000.Z", der.GENERALIZED_TIME),
        (b"20261126120000", der.GENERALIZED_TIME),  # local time
        (b"20260230120000Z", der.GENERALIZED_TIME),  # 30 February
        (b"20261126246000Z", der.GENERALIZED_TIME),
        (b"\xd9\xa0" * 7 + b"Z", der.GENERALIZED_TIME),  # non-ASCII digits
    ],
)
def test_times_not_der(raw: bytes, tag: int) -> None:
    with pytest.raises(DerError):
        der.parse(der.encode(tag, raw)).time()


def test_strings_and_constructed_forms() -> None:
    assert der.parse(der.encode(der.UTF8_STRING, "Zoë".encode())).string() == "Zoë"
    assert der.parse(der.encode(der.PRINTABLE_STRING, b"TSA 1")).string() == "TSA 1"
    with pytest.raises(DerError, match="not a character string"):
        node("0403616263").string()
    with pytest.raises(DerError, match="constructed"):  # BER constructed OCTET STRING
        node("2405040361626" + "3").octets()


def test_reader_takes_fields_in_order_and_refuses_leftovers() -> None:
    seq = node("300b02010106022a03a0020500")
    r = seq.reader("the test SEQUENCE")
    assert r.take(der.INTEGER, "version").integer() == 1
    assert r.opt(der.BOOLEAN) is None
    assert r.take(der.OID, "type").oid() == "1.2.3"
    with pytest.raises(DerError, match=r"the test SEQUENCE: unexpected \[0\]"):
        r.done()
    r2 = seq.reader("the test SEQUENCE")
    with pytest.raises(DerError, match=r"serial \(OBJECT IDENTIFIER\) was required, found INTEGER"):
        r2.take(der.OID, "serial")
    assert r2.any("x").tag == der.INTEGER


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.binary(max_size=64))
def test_random_bytes_raise_only_der_error(blob: bytes) -> None:
    """Whatever the input, reading it fails only with DerError (never IndexError and the like), and what
    it accepts asn1crypto reads as the same element."""
    try:
        top = der.parse(blob)
        stack = [top]
        while stack:
            n = stack.pop()
            if n.tag & 0x20:
                stack.extend(n.children())
    except DerError:
        return
    parsed = core.Asn1Value.load(blob, strict=True)
    assert parsed.dump() == blob
