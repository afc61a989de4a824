"""C2SP signed notes (c2sp.org/signed-note, Ed25519, type 0x01) and tlog cosignatures (c2sp.org/tlog-cosignature,
cosignature/v1, type 0x04): what a transparency-log witness speaks, so our witness entries are cosignatures any
tlog client can check. Hand-written because no maintained Python package implements them; the cryptography is
`cryptography`'s Ed25519, and both formats are held to their specs' own examples in tests/test_federation.py.
"""

from __future__ import annotations

import base64
import hashlib
import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .errors import VaultMeshError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

ED25519 = 0x01
COSIGNATURE_V1 = 0x04
DASH = "\u2014"


def _bad(cause: str) -> VaultMeshError:
    return VaultMeshError("VM-SIG-MALFORMED", cause, "the note or cosignature was not written by a C2SP signer")


def key_id(name: str, sig_type: int, public: bytes) -> bytes:
    """SHA-256(key name || 0x0A || signature type || public key)[:4] (signed-note §Signatures)."""
    return hashlib.sha256(name.encode() + b"\n" + bytes([sig_type]) + public).digest()[:4]


def _check_name(name: str) -> None:
    if not name or any(c.isspace() or c == "+" for c in name):
        raise _bad(f"key name {name!r} is empty or holds a space or '+'")


@dataclass(frozen=True)
class NoteKey:
    """An Ed25519 key for notes and cosignatures: the 32-byte seed (secret) and its key name."""

    name: str
    seed: bytes

    @classmethod
    def parse(cls, skey: str) -> NoteKey:
        """`PRIVATE+KEY+<name>+<hex id>+<base64(0x01 || seed)>`, the Go x/mod/sumdb/note encoding."""
        parts = skey.split("+", 4)
        if len(parts) != 5 or parts[:2] != ["PRIVATE", "KEY"]:
            raise _bad("not a PRIVATE+KEY+<name>+<id>+<key> note signer key")
        raw = base64.b64decode(parts[4])
        if len(raw) != 33 or raw[0] != ED25519:
            raise _bad("the note signer key is not an Ed25519 key")
        key = cls(parts[2], raw[1:])
        if key_id(key.name, ED25519, key.public).hex() != parts[3]:
            raise _bad("the note signer key's id does not match its key")
        return key

    def encode(self) -> str:
        return f"PRIVATE+KEY+{self.name}+{key_id(self.name, ED25519, self.public).hex()}+" \
               f"{base64.b64encode(bytes([ED25519]) + self.seed).decode()}"

    @classmethod
    def generate(cls, name: str) -> NoteKey:
        import os

        _check_name(name)
        return cls(name, os.urandom(32))

    def _private(self) -> Ed25519PrivateKey:
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        return Ed25519PrivateKey.from_private_bytes(self.seed)

    @property
    def public(self) -> bytes:
        from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

        return bytes(self._private().public_key().public_bytes(Encoding.Raw, PublicFormat.Raw))

    def vkey(self) -> str:
        """The verifier key `<name>+<hex id>+<base64(0x01 || public key)>` a client pins."""
        return f"{self.name}+{key_id(self.name, ED25519, self.public).hex()}+" \
               f"{base64.b64encode(bytes([ED25519]) + self.public).decode()}"

    def sign_note(self, text: str) -> str:
        """The whole signed note: text, a blank line, one signature line."""
        if not text.endswith("\n"):
            raise _bad("a note text ends in a newline")
        sig = self._private().sign(text.encode())
        blob = key_id(self.name, ED25519, self.public) + sig
        return f"{text}\n{DASH} {self.name} {base64.b64encode(blob).decode()}\n"

    def cosign(self, checkpoint: str, timestamp: int) -> str:
        """A cosignature/v1 signature line over a checkpoint body (tlog-cosignature §Ed25519 signed message)."""
        sig = self._private().sign(cosigned_message(checkpoint, timestamp))
        blob = key_id(self.name, COSIGNATURE_V1, self.public) + struct.pack(">Q", timestamp) + sig
        return f"{DASH} {self.name} {base64.b64encode(blob).decode()}\n"


@dataclass(frozen=True)
class Verifier:
    name: str
    public: bytes

    @classmethod
    def parse(cls, vkey: str) -> Verifier:
        parts = vkey.split("+", 2)
        if len(parts) != 3:
            raise _bad("a verifier key is <name>+<hex id>+<base64 key>")
        _check_name(parts[0])
        try:
            raw = base64.b64decode(parts[2], validate=True)
        except ValueError:
            raise _bad("the verifier key is not base64") from None
        if len(raw) != 33 or raw[0] != ED25519:
            raise _bad("the verifier key is not an Ed25519 key")
        v = cls(parts[0], raw[1:])
        if key_id(v.name, ED25519, v.public).hex() != parts[1]:
            raise _bad("the verifier key's id does not match its key")
        return v

    def _ok(self, sig: bytes, message: bytes) -> bool:
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

        try:
            Ed25519PublicKey.from_public_bytes(self.public).verify(sig, message)
            return True
        except (InvalidSignature, ValueError):
            return False

    def open_note(self, note: str) -> str:
        """The note's text when a signature line of this key verifies over it; raises otherwise."""
        text, lines = split_note(note)
        want = key_id(self.name, ED25519, self.public)
        for name, blob in lines:
            if name == self.name and blob[:4] == want:
                if self._ok(blob[4:], text.encode()):
                    return text
                raise VaultMeshError("VM-SIG-INVALID", f"the note signature by {self.name} does not verify",
                                     "the note text or its signature was altered")
        raise VaultMeshError("VM-SIG-MISSING", f"the note carries no signature by {self.name}",
                             "only signatures by a pinned key count")

    def check_cosignature(self, checkpoint: str, line: str) -> int:
        """The cosignature's timestamp when `line` is this key's valid cosignature/v1 over `checkpoint`."""
        name, blob = parse_signature_line(line)
        if name != self.name or blob[:4] != key_id(self.name, COSIGNATURE_V1, self.public) or len(blob) != 76:
            raise VaultMeshError("VM-SIG-UNPINNED", f"the cosignature is not by the pinned key {self.name}",
                                 "only cosignatures by a pinned witness key count")
        (timestamp,) = struct.unpack(">Q", blob[4:12])
        if timestamp >= 1 << 63 or not self._ok(blob[12:], cosigned_message(checkpoint, timestamp)):
            raise VaultMeshError("VM-SIG-INVALID", f"the cosignature by {self.name} does not verify",
                                 "the checkpoint or the cosignature was altered")
        return int(timestamp)


def cosigned_message(checkpoint: str, timestamp: int) -> bytes:
    return f"cosignature/v1\ntime {timestamp}\n{checkpoint}".encode()


def parse_signature_line(line: str) -> tuple[str, bytes]:
    line = line.rstrip("\n")
    if not line.startswith(DASH + " "):
        raise _bad("a signature line starts with an em dash and a space")
    name, _, b64 = line[2:].partition(" ")
    _check_name(name)
    try:
        blob = base64.b64decode(b64, validate=True)
    except ValueError:
        raise _bad("the signature is not base64") from None
    if len(blob) < 5:
        raise _bad("the signature is shorter than a key id")
    return name, blob


def split_note(note: str) -> tuple[str, list[tuple[str, bytes]]]:
    """(text, signature lines): the text ends at the last blank line (signed-note §Format)."""
    if not note.endswith("\n") or any(ord(c) < 0x20 and c != "\n" for c in note):
        raise _bad("a note ends in a newline and holds no control characters")
    cut = note.rfind("\n\n")
    if cut < 0:
        raise _bad("a signed note has a blank line before its signatures")
    text, sigs = note[:cut + 1], note[cut + 2:]
    return text, [parse_signature_line(x) for x in sigs.splitlines()]
