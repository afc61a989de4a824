"""A strict DER reader (ITU-T X.690 §8 and §10) and the few encoders an RFC 3161 request needs.

Why our own: the token verifier runs inside `record`, whose whole timestamping budget is 50 ms, and the
general ASN.1 libraries cost more than that to import (asn1crypto's CMS and cryptography's X.509: ~55 ms of
CPU, measured). The structures a token holds (TimeStampResp, CMS SignedData, TSTInfo, X.509 certificates)
are read field by field with `Reader`, which knows no schema: tsa.py states each one, so what is accepted is
visible in one place.

Strictness, so that every byte sequence has one reading: definite, minimal lengths; minimal INTEGERs;
BOOLEAN only 00/FF; primitive strings only; BIT STRING unused bits zero; times in their DER forms (Z, seconds,
no trailing fraction zeros); nothing after the outermost element. Anything else raises DerError.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone

BOOLEAN = 0x01
INTEGER = 0x02
BIT_STRING = 0x03
OCTET_STRING = 0x04
NULL = 0x05
OID = 0x06
UTF8_STRING = 0x0C
PRINTABLE_STRING = 0x13
IA5_STRING = 0x16
UTC_TIME = 0x17
GENERALIZED_TIME = 0x18
SEQUENCE = 0x30
SET = 0x31

_MAX_LENGTH_OCTETS = 4  # 4 GiB: far beyond any token; more is hostile input

_NAMES = {BOOLEAN: "BOOLEAN", INTEGER: "INTEGER", BIT_STRING: "BIT STRING", OCTET_STRING: "OCTET STRING",
          NULL: "NULL", OID: "OBJECT IDENTIFIER", UTF8_STRING: "UTF8String", PRINTABLE_STRING: "PrintableString",
          IA5_STRING: "IA5String", UTC_TIME: "UTCTime", GENERALIZED_TIME: "GeneralizedTime", SEQUENCE: "SEQUENCE",
          SET: "SET"}

# Character strings as X.509 names use them (RFC 5280 §4.1.2.4): tag -> codec.
_STRINGS = {UTF8_STRING: "utf-8", PRINTABLE_STRING: "ascii", IA5_STRING: "ascii", 0x12: "ascii", 0x1A: "ascii",
            0x14: "latin-1", 0x1E: "utf-16-be", 0x1C: "utf-32-be"}
_UTC_TIME = re.compile(rb"\d{12}Z")
_GENERALIZED_TIME = re.compile(rb"(\d{14})(?:\.(\d*[1-9]))?Z")


class DerError(ValueError):
    """Not DER, or not the structure expected. `truncated`: the input ended inside an element."""

    def __init__(self, detail: str, truncated: bool = False) -> None:
        super().__init__(detail)
        self.detail = detail
        self.truncated = truncated


def ctx(number: int, constructed: bool = True) -> int:
    """The tag byte of context-specific [number] (IMPLICIT primitive, or constructed/EXPLICIT)."""
    return (0xA0 if constructed else 0x80) | number


def tag_name(tag: int) -> str:
    if tag in _NAMES:
        return _NAMES[tag]
    if tag & 0xC0 == 0x80:
        return f"[{tag & 0x1F}]"
    return f"tag 0x{tag:02x}"


def header(buf: bytes, pos: int, limit: int) -> tuple[int, int, int]:
    """(tag byte, content start, content end) of the element at pos, which must end within buf[:limit]."""
    start = pos
    if pos >= limit:
        raise DerError(f"an element at offset {start} has no tag", truncated=True)
    tag = buf[pos]
    if tag & 0x1F == 0x1F:
        raise DerError(f"the tag at offset {start} uses the high-tag-number form, which no field here uses")
    pos += 1
    if pos >= limit:
        raise DerError(f"the element at offset {start} has no length", truncated=True)
    lead = buf[pos]
    pos += 1
    if lead < 0x80:
        length = lead
    elif lead == 0x80:
        raise DerError(f"indefinite length at offset {start} (BER, not DER)")
    else:
        count = lead & 0x7F
        if count > _MAX_LENGTH_OCTETS:
            raise DerError(f"a {count}-byte length at offset {start}")
        if pos + count > limit:
            raise DerError(f"the length at offset {start} is cut off", truncated=True)
        length = int.from_bytes(buf[pos:pos + count], "big")
        if buf[pos] == 0 or length < 0x80:
            raise DerError(f"a non-minimal length encoding at offset {start} (BER, not DER)")
        pos += count
    if pos + length > limit:
        raise DerError(f"the element at offset {start} declares {length} content bytes, only {limit - pos} "
                       "are present", truncated=True)
    return tag, pos, pos + length


class Node:
    """One element of a DER buffer, by offsets (no copies until asked)."""

    __slots__ = ("buf", "tag", "start", "body", "end")

    def __init__(self, buf: bytes, tag: int, start: int, body: int, end: int) -> None:
        self.buf = buf
        self.tag = tag
        self.start = start
        self.body = body
        self.end = end

    @property
    def raw(self) -> bytes:
        """The whole element, header included, exactly as received."""
        return self.buf[self.start:self.end]

    @property
    def content(self) -> bytes:
        return self.buf[self.body:self.end]

    def children(self) -> list[Node]:
        if not self.tag & 0x20:
            raise DerError(f"a {tag_name(self.tag)} is primitive where a constructed value was required")
        out: list[Node] = []
        pos = self.body
        while pos < self.end:
            tag, body, end = header(self.buf, pos, self.end)
            out.append(Node(self.buf, tag, pos, body, end))
            pos = end
        return out

    def reader(self, what: str, tag: int = SEQUENCE) -> Reader:
        """Read the fields of this element, which must carry `tag` (a SEQUENCE unless told otherwise)."""
        if self.tag != tag:
            raise DerError(f"{what}: {tag_name(tag)} was required, found {tag_name(self.tag)}")
        return Reader(self, what)

    def only(self, what: str) -> Node:
        """The single element inside an EXPLICIT tag."""
        kids = self.children()
        if len(kids) != 1:
            raise DerError(f"{what}: {len(kids)} elements inside an explicit tag; exactly one was required")
        return kids[0]

    # --- primitive values ------------------------------------------------------------------------------
    def _primitive(self, what: str, tag: int) -> bytes:
        if self.tag != tag:
            if self.tag == tag | 0x20:
                raise DerError(f"{what} is constructed (BER), a primitive encoding was required")
            raise DerError(f"{what}: {tag_name(tag)} was required, found {tag_name(self.tag)}")
        return self.content

    # Each reader checks the element's tag: its universal one, or `tag` for an IMPLICIT [n] field.
    def integer(self, what: str = "an INTEGER", tag: int = INTEGER) -> int:
        c = self._primitive(what, tag)
        if not c:
            raise DerError(f"{what} has no content octets")
        if len(c) > 1 and ((c[0] == 0 and c[1] < 0x80) or (c[0] == 0xFF and c[1] >= 0x80)):
            raise DerError(f"{what} is not minimally encoded (BER, not DER)")
        return int.from_bytes(c, "big", signed=True)

    def boolean(self, what: str = "a BOOLEAN") -> bool:
        c = self._primitive(what, BOOLEAN)
        if c not in (b"\x00", b"\xff"):
            raise DerError(f"{what} is encoded as {c.hex() or 'nothing'}; DER allows only 00 or ff")
        return c == b"\xff"

    def null(self, what: str = "a NULL") -> None:
        if self._primitive(what, NULL):
            raise DerError(f"{what} has content octets")

    def octets(self, what: str = "an OCTET STRING", tag: int = OCTET_STRING) -> bytes:
        return self._primitive(what, tag)

    def bits(self, what: str = "a BIT STRING") -> tuple[bytes, int]:
        """(octets, unused bits in the last one)."""
        c = self._primitive(what, BIT_STRING)
        if not c or c[0] > 7 or (len(c) == 1 and c[0]) or (c[0] and c[-1] & ((1 << c[0]) - 1)):
            raise DerError(f"{what} has a malformed unused-bits count or non-zero unused bits")
        return c[1:], c[0]

    def oid(self, what: str = "an OBJECT IDENTIFIER") -> str:
        c = self._primitive(what, OID)
        if not c or c[-1] & 0x80:
            raise DerError(f"{what} is empty or cut inside a sub-identifier (not DER, X.690 8.19.2)")
        arcs: list[int] = []
        value = 0
        fresh = True
        for octet in c:
            if fresh and octet == 0x80:
                raise DerError(f"{what} has a sub-identifier with a leading 0x80 octet (not minimal)")
            value = (value << 7) | (octet & 0x7F)
            fresh = not octet & 0x80
            if fresh:
                arcs.append(value)
                value = 0
        first = min(arcs[0] // 40, 2)
        return ".".join(str(a) for a in (first, arcs[0] - 40 * first, *arcs[1:]))

    def time(self, what: str = "a time") -> datetime:
        """UTCTime or GeneralizedTime in their DER forms, as an aware UTC datetime."""
        c = self._primitive(what, self.tag if self.tag in (UTC_TIME, GENERALIZED_TIME) else UTC_TIME)
        if self.tag == UTC_TIME and _UTC_TIME.fullmatch(c):
            yy = int(c[:2])
            text, fraction = (b"19" if yy >= 50 else b"20") + c[:12], None
        elif self.tag == GENERALIZED_TIME and (m := _GENERALIZED_TIME.fullmatch(c)):
            text, fraction = m.group(1), m.group(2)
        else:
            raise DerError(f"{what} {c[:40]!r} is not a DER {tag_name(self.tag)} (YYMMDDHHMMSSZ / "
                           "YYYYMMDDHHMMSS[.f]Z)")
        # By hand rather than strptime, whose first call imports _strptime, locale and calendar (~4 ms).
        try:
            moment = datetime(int(text[0:4]), int(text[4:6]), int(text[6:8]), int(text[8:10]), int(text[10:12]),
                              int(text[12:14]), tzinfo=timezone.utc)
        except ValueError:
            raise DerError(f"{what} {c.decode()!r} is not a calendar date and time") from None
        if fraction:
            moment = moment.replace(microsecond=int(fraction[:6].decode().ljust(6, "0")))
        return moment

    def string(self, what: str = "a string") -> str:
        codec = _STRINGS.get(self.tag)
        if codec is None:
            raise DerError(f"{what} is a {tag_name(self.tag)}, not a character string")
        try:
            return self._primitive(what, self.tag).decode(codec)
        except UnicodeDecodeError:
            raise DerError(f"{what} is not valid {codec}") from None


class Reader:
    """The elements of one constructed value, taken in order; `done` refuses anything left over."""

    def __init__(self, node: Node, what: str) -> None:
        self._items = node.children()
        self._at = 0
        self.what = what

    def peek(self) -> int | None:
        return self._items[self._at].tag if self._at < len(self._items) else None

    def take(self, tag: int, name: str) -> Node:
        found = self.peek()
        if found != tag:
            got = "nothing" if found is None else tag_name(found)
            raise DerError(f"{self.what}: {name} ({tag_name(tag)}) was required, found {got}")
        node = self._items[self._at]
        self._at += 1
        return node

    def opt(self, tag: int) -> Node | None:
        if self.peek() != tag:
            return None
        node = self._items[self._at]
        self._at += 1
        return node

    def any(self, name: str) -> Node:
        if self._at >= len(self._items):
            raise DerError(f"{self.what}: {name} was required, found nothing")
        node = self._items[self._at]
        self._at += 1
        return node

    def rest(self) -> list[Node]:
        """Every element not taken yet (a SEQUENCE OF), leaving none."""
        out, self._at = self._items[self._at:], len(self._items)
        return out

    def done(self) -> None:
        if self._at < len(self._items):
            raise DerError(f"{self.what}: unexpected {tag_name(self._items[self._at].tag)} after its last field")


def parse(buf: bytes) -> Node:
    """The single element that buf must consist of."""
    tag, body, end = header(buf, 0, len(buf))
    if end != len(buf):
        raise DerError(f"{len(buf) - end} bytes of trailing data after the {end}-byte DER element")
    return Node(buf, tag, 0, body, end)


# --- encoding (what a TimeStampReq needs) ------------------------------------------------------------


def encode(tag: int, content: bytes) -> bytes:
    n = len(content)
    if n < 0x80:
        return bytes((tag, n)) + content
    size = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes((tag, 0x80 | len(size))) + size + content


def encode_int(value: int) -> bytes:
    size = (value + (value < 0)).bit_length() // 8 + 1  # the fewest octets in two's complement
    return encode(INTEGER, value.to_bytes(size, "big", signed=True))


def encode_oid(dotted: str) -> bytes:
    arcs = [int(a) for a in dotted.split(".")]
    out = bytearray()
    for arc in (40 * arcs[0] + arcs[1], *arcs[2:]):
        chunk = [arc & 0x7F]
        arc >>= 7
        while arc:
            chunk.append(0x80 | (arc & 0x7F))
            arc >>= 7
        out += bytes(reversed(chunk))
    return encode(OID, bytes(out))
