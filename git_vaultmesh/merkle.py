"""RFC 6962 / RFC 9162 Merkle trees: roots, inclusion and consistency proofs, compact ranges.

Both the log tree and each release's history tree use this hashing, so that any off-the-shelf CT verifier can
check our proofs. Generation follows the RFC's recursive definitions (MTH, PATH, SUBPROOF) unrolled into loops;
verification is the RFC 9162 §2.1.3.2 / §2.1.4.2 algorithms step by step, because a verifier that merely
recomputes the generator's output would share the generator's bugs.

Verifiers answer False, never raise, on malformed input: their inputs come from untrusted bundles and refs.
Generators raise ValueError: their inputs are our own and a bad one is a programming error.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence

__all__ = [
    "HASH_SIZE",
    "CompactRange",
    "consistency_proof",
    "consistency_proof_from_frontier",
    "empty_root",
    "inclusion_proof",
    "leaf_hash",
    "node_hash",
    "root_from_leaf_hashes",
    "verify_consistency",
    "verify_inclusion",
]

HASH_SIZE = 32

_sha256 = hashlib.sha256
_EMPTY_ROOT = _sha256(b"").digest()


def leaf_hash(data: bytes) -> bytes:
    """The 0x00 prefix separates leaves from nodes, so no node can pass for a leaf (second preimages)."""
    return _sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return _sha256(b"\x01" + left + right).digest()


def empty_root() -> bytes:
    """MTH({}) = SHA-256 of the empty string."""
    return _EMPTY_ROOT


# --- helpers ----------------------------------------------------------------------------------------------


def _is_int(value: object) -> bool:
    # bool is an int subclass; a True index is a caller's bug, not leaf 1.
    return isinstance(value, int) and not isinstance(value, bool)


def _is_hash(value: object) -> bool:
    return isinstance(value, (bytes, bytearray)) and len(value) == HASH_SIZE


def _split(n: int) -> int:
    """The largest power of two strictly smaller than n (n >= 2): where the RFC cuts a tree of n leaves."""
    return 1 << ((n - 1).bit_length() - 1)


def _check_leaf_hashes(leaf_hashes: Sequence[bytes]) -> None:
    for i, h in enumerate(leaf_hashes):
        if not _is_hash(h):
            raise ValueError(f"leaf hash {i} is not a {HASH_SIZE}-byte hash")


def _mth(hashes: Sequence[bytes]) -> bytes:
    """MTH over already-hashed leaves, level by level.

    Pairing neighbours and carrying an odd last node up unchanged builds exactly the RFC's tree: the left part of
    every split is a perfect subtree of even width at each level, so no pair ever straddles a split.
    """
    n = len(hashes)
    if n == 0:
        return _EMPTY_ROOT
    level = list(hashes)
    sha = _sha256
    while n > 1:
        nxt = [sha(b"\x01" + level[i] + level[i + 1]).digest() for i in range(0, n - 1, 2)]
        if n & 1:
            nxt.append(level[-1])
        level = nxt
        n = len(level)
    return bytes(level[0])


def root_from_leaf_hashes(leaf_hashes: Sequence[bytes]) -> bytes:
    """MTH(D_n) given the leaf hashes, in O(n) hashes without recursion."""
    _check_leaf_hashes(leaf_hashes)
    return _mth(leaf_hashes)


# --- inclusion --------------------------------------------------------------------------------------------


def inclusion_proof(leaf_hashes: Sequence[bytes], index: int) -> list[bytes]:
    """PATH(index, D_n) of RFC 9162 §2.1.3.1, leaf-side first."""
    n = len(leaf_hashes)
    if not _is_int(index) or not 0 <= index < n:
        raise ValueError(f"leaf index {index!r} is out of range for a tree of {n} leaves")
    _check_leaf_hashes(leaf_hashes)
    # Walk down from the root; each step contributes the sibling subtree's MTH. The RFC appends the sibling
    # after the deeper sub-path, so the nodes collected top-down are reversed at the end.
    top_down: list[bytes] = []
    lo, hi, m = 0, n, index
    while hi - lo > 1:
        k = _split(hi - lo)
        if m < k:
            top_down.append(_mth(leaf_hashes[lo + k : hi]))
            hi = lo + k
        else:
            top_down.append(_mth(leaf_hashes[lo : lo + k]))
            lo += k
            m -= k
    top_down.reverse()
    return top_down


def verify_inclusion(index: int, size: int, leaf_hash: bytes, proof: Sequence[bytes], root: bytes) -> bool:
    """RFC 9162 §2.1.3.2, step by step."""
    try:
        if not (_is_int(index) and _is_int(size) and _is_hash(leaf_hash) and _is_hash(root)):
            return False
        if isinstance(proof, (bytes, bytearray, str)) or not all(_is_hash(p) for p in proof):
            return False
        # 1. leaf_index >= tree_size fails (and so does any negative index).
        if index < 0 or index >= size:
            return False
        # 2.
        fn, sn = index, size - 1
        # 3.
        r = bytes(leaf_hash)
        # 4.
        for p in proof:
            if sn == 0:
                return False
            if fn & 1 or fn == sn:
                r = node_hash(bytes(p), r)
                if not fn & 1:
                    while not fn & 1 and fn != 0:
                        fn >>= 1
                        sn >>= 1
            else:
                r = node_hash(r, bytes(p))
            fn >>= 1
            sn >>= 1
        # 5.
        return sn == 0 and r == bytes(root)
    except Exception:  # a verifier fails closed on anything odd, e.g. a proof that is not a sequence
        return False


# --- consistency ------------------------------------------------------------------------------------------


def _subproof(old_size: int, new_size: int, range_root: Callable[[int, int], bytes]) -> list[bytes]:
    """PROOF(m, D_n) = SUBPROOF(m, D_n, true) of RFC 9162 §2.1.4.1, unrolled.

    `range_root(lo, hi)` yields MTH(D[lo:hi]); it is the only access to the leaves, which lets the same walk run
    over a full leaf list or over a compact range plus the new leaves.
    """
    if old_size == 0 or old_size == new_size:
        return []
    top_down: list[bytes] = []
    lo, hi, m, known = 0, new_size, old_size, True
    while m != hi - lo:
        k = _split(hi - lo)
        if m <= k:
            # D[k:n] exists only in the new tree: commit to it and prove the left side.
            top_down.append(range_root(lo + k, hi))
            hi = lo + k
        else:
            # D[0:k] is identical in both trees: commit to it and prove the right side.
            top_down.append(range_root(lo, lo + k))
            lo += k
            m -= k
            known = False
    if not known:
        top_down.append(range_root(lo, hi))
    top_down.reverse()
    return top_down


def consistency_proof(leaf_hashes: Sequence[bytes], old_size: int) -> list[bytes]:
    """PROOF(old_size, D_n). Empty when old_size is 0 (nothing to prove) or equals n."""
    n = len(leaf_hashes)
    if not _is_int(old_size) or not 0 <= old_size <= n:
        raise ValueError(f"old size {old_size!r} is out of range for a tree of {n} leaves")
    _check_leaf_hashes(leaf_hashes)
    return _subproof(old_size, n, lambda lo, hi: _mth(leaf_hashes[lo:hi]))


def verify_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> bool:
    """RFC 9162 §2.1.4.2, step by step, plus the cases the RFC leaves out (old size 0, equal sizes)."""
    try:
        if not (_is_int(old_size) and _is_int(new_size) and _is_hash(old_root) and _is_hash(new_root)):
            return False
        if isinstance(proof, (bytes, bytearray, str)) or not all(_is_hash(p) for p in proof):
            return False
        if old_size < 0 or new_size < old_size:
            return False
        old_root, new_root = bytes(old_root), bytes(new_root)
        path = [bytes(p) for p in proof]
        if old_size == 0:
            # Every tree extends the empty one; there is nothing to prove and no proof to accept.
            return old_root == _EMPTY_ROOT and not path and (new_size > 0 or new_root == _EMPTY_ROOT)
        if old_size == new_size:
            return not path and old_root == new_root
        # 1.
        if not path:
            return False
        # 2. A perfect old tree is itself a node of the new one; the proof leaves its hash out.
        if old_size & (old_size - 1) == 0:
            path.insert(0, old_root)
        # 3.
        fn, sn = old_size - 1, new_size - 1
        # 4.
        while fn & 1:
            fn >>= 1
            sn >>= 1
        # 5.
        fr = sr = path[0]
        # 6.
        for c in path[1:]:
            if sn == 0:
                return False
            if fn & 1 or fn == sn:
                fr = node_hash(c, fr)
                sr = node_hash(c, sr)
                if not fn & 1:
                    while not fn & 1 and fn != 0:
                        fn >>= 1
                        sn >>= 1
            else:
                sr = node_hash(sr, c)
            fn >>= 1
            sn >>= 1
        # 7.
        return fr == old_root and sr == new_root and sn == 0
    except Exception:  # fail closed
        return False


# --- compact ranges ---------------------------------------------------------------------------------------


class CompactRange:
    """The right edge of a tree of `size` leaves: the roots of its maximal perfect subtrees, left to right
    (one per set bit of size, largest first). Lets a tree be extended without the old leaves."""

    __slots__ = ("size", "hashes")

    size: int
    hashes: list[bytes]

    def __init__(self) -> None:
        self.size = 0
        self.hashes = []

    @classmethod
    def from_leaf_hashes(cls, leaf_hashes: Sequence[bytes]) -> CompactRange:
        cr = cls()
        cr.extend(leaf_hashes)
        return cr

    @classmethod
    def from_frontier(cls, size: int, hashes: Sequence[bytes]) -> CompactRange:
        """Rebuild from a stored frontier; the shape check is all that can be checked without the leaves."""
        if not _is_int(size) or size < 0:
            raise ValueError(f"compact range size {size!r} is not a non-negative integer")
        if isinstance(hashes, (bytes, bytearray, str)):
            raise ValueError("compact range hashes must be a sequence of hashes")
        hs = list(hashes)
        if len(hs) != size.bit_count():
            raise ValueError(f"a compact range of size {size} has {size.bit_count()} hashes, not {len(hs)}")
        for i, h in enumerate(hs):
            if not _is_hash(h):
                raise ValueError(f"compact range hash {i} is not a {HASH_SIZE}-byte hash")
        cr = cls()
        cr.size = size
        cr.hashes = [bytes(h) for h in hs]
        return cr

    def append(self, leaf_hash: bytes) -> None:
        """Each trailing 1 bit of the old size is a perfect subtree the new leaf completes into a bigger one."""
        if not _is_hash(leaf_hash):
            raise ValueError(f"leaf hash is not a {HASH_SIZE}-byte hash")
        h = bytes(leaf_hash)
        s = self.size
        hashes = self.hashes
        while s & 1:
            h = _sha256(b"\x01" + hashes.pop() + h).digest()
            s >>= 1
        hashes.append(h)
        self.size += 1

    def extend(self, leaf_hashes: Iterable[bytes]) -> None:
        """`append` for many leaves, inlined: a release's history feeds 100k+ leaves through here."""
        s = self.size
        hashes = self.hashes
        size = HASH_SIZE
        for leaf in leaf_hashes:
            if type(leaf) is not bytes:  # noqa: E721 - exact type: bytearray is copied below
                if not _is_hash(leaf):
                    raise ValueError(f"leaf hash is not a {HASH_SIZE}-byte hash")
                leaf = bytes(leaf)
            elif len(leaf) != size:
                raise ValueError(f"leaf hash is not a {HASH_SIZE}-byte hash")
            h = leaf
            t = s
            while t & 1:
                h = _sha256(b"\x01" + hashes.pop() + h).digest()
                t >>= 1
            hashes.append(h)
            s += 1
            self.size = s

    def root(self) -> bytes:
        """Folding right to left is MTH: each split point is the highest set bit of what remains."""
        if not self.hashes:
            return _EMPTY_ROOT
        r = self.hashes[-1]
        for h in reversed(self.hashes[:-1]):
            r = node_hash(h, r)
        return r

    def copy(self) -> CompactRange:
        cr = CompactRange()
        cr.size = self.size
        cr.hashes = list(self.hashes)
        return cr

    def subtrees(self) -> list[tuple[int, int, bytes]]:
        """(start, width, hash) of each perfect subtree, left to right."""
        out: list[tuple[int, int, bytes]] = []
        start = 0
        bits = [1 << b for b in range(self.size.bit_length() - 1, -1, -1) if self.size >> b & 1]
        for width, h in zip(bits, self.hashes, strict=True):
            out.append((start, width, h))
            start += width
        return out

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, CompactRange):
            return NotImplemented
        return self.size == other.size and self.hashes == other.hashes

    def __repr__(self) -> str:
        return f"CompactRange(size={self.size}, hashes=[{', '.join(h.hex()[:12] for h in self.hashes)}])"


def consistency_proof_from_frontier(old: CompactRange, new_leaf_hashes: Sequence[bytes]) -> list[bytes]:
    """PROOF(old.size, D_n) for n = old.size + len(new_leaf_hashes), without the old leaves.

    SUBPROOF only ever asks for a range that either lies wholly among the new leaves, or lies wholly among the
    old ones; an old-side range is always [lo, lo+k) with lo the sum of the higher set bits of old.size and k a
    set bit of it, i.e. exactly one of the compact range's subtrees. So the walk is the same as
    consistency_proof's, with a different way to get MTH of a range.
    """
    if not isinstance(old, CompactRange):
        raise ValueError("old must be a CompactRange")
    _check_leaf_hashes(new_leaf_hashes)
    m = old.size
    n = m + len(new_leaf_hashes)
    known = {(start, start + width): h for start, width, h in old.subtrees()}

    def range_root(lo: int, hi: int) -> bytes:
        if lo >= m:
            return _mth(new_leaf_hashes[lo - m : hi - m])
        try:
            return known[(lo, hi)]
        except KeyError:  # pragma: no cover - unreachable by the argument above; the tests check all shapes
            raise AssertionError(f"SUBPROOF asked for [{lo}, {hi}), which straddles old size {m}") from None

    return _subproof(m, n, range_root)


def inclusion_proofs(leaf_hashes: Sequence[bytes]) -> list[list[bytes]]:
    """PATH(i, D_n) for every i at once, in O(n log n) hashes: each subtree's MTH is computed once, where n
    calls of inclusion_proof recompute them (O(n^2); 10k entries of one batch took minutes)."""
    _check_leaf_hashes(leaf_hashes)
    if not leaf_hashes:
        return []
    sha = _sha256

    def walk(lo: int, hi: int) -> tuple[bytes, list[list[bytes]]]:
        if hi - lo == 1:
            return bytes(leaf_hashes[lo]), [[]]
        k = _split(hi - lo)
        left, lproofs = walk(lo, lo + k)
        right, rproofs = walk(lo + k, hi)
        for p in lproofs:
            p.append(right)
        for p in rproofs:
            p.append(left)
        return sha(b"\x01" + left + right).digest(), lproofs + rproofs

    return walk(0, len(leaf_hashes))[1]
