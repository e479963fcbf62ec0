"""An append-only Merkle tree hashed as RFC 9162 (Certificate Transparency v2), section 2.1.

Standard library only: this module is also the core of the stand-alone verifier.

Hashing (RFC 9162 2.1.1), with H = SHA-256:

    MTH({})        = H("")                       (the empty tree)
    leaf hash      = H(0x00 || leaf bytes)
    node hash      = H(0x01 || left || right)
    MTH(D[n])      = node hash of MTH(D[0:k]) and MTH(D[k:n]), k the largest power of two < n

Nodes are addressed as (level, index): the node at level L, index i is the root of the perfect
subtree over leaves [i * 2**L, (i + 1) * 2**L); level 0 are the leaf hashes.

Building a tree incrementally: `CompactRange` keeps the roots of the perfect subtrees that make
up the tree so far (one per 1 bit of the size: at most 64 hashes), gives the root at its size,
and serialises to one short byte string. `CompactRange.append` returns the nodes each new leaf
completes, so a store may keep some of them to make proofs cheap (see `node_source`).

Proofs: `inclusion_path` and `consistency_path` produce the RFC 9162 2.1.3.1 / 2.1.4.1 paths
from a `get_hash(level, index)` function that returns stored node hashes; `verify_inclusion` and
`verify_consistency` are RFC 9162 2.1.3.2 / 2.1.4.2, step by step.

Cost of a proof for a tree of n leaves, depending on what the store keeps:

- leaf hashes only: `node_source(read, stride=0)` reads up to n - 1 leaf hashes and computes up
  to n - 1 node hashes for one path (the sibling of a half tree covers n/2 leaves): O(n). For a
  million leaves that is ~32 MB read and ~1 M SHA-256 (about a second).
- leaf hashes plus the completed nodes of every `stride`-th level (the nodes `append` returns,
  filtered by `keep_node(level, stride)`): at most 2**(stride - 1) stored hashes read per path
  element, O(2**stride * log n) in all; the extra storage is n / (2**stride - 1) hashes
  (stride 4: 1/15 of a hash per leaf, ~2.2 bytes).
"""
import hashlib
from typing import Callable, Iterable, Sequence

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()
MAX_SIZE = (1 << 64) - 1        # RFC 9162 tree sizes are uint64

GetHash = Callable[[int, int], bytes]   # (level, index) -> node hash


class VerificationError(ValueError):
    """A proof, checkpoint or leaf that does not verify; str() says why."""


def leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + bytes(data)).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two smaller than n (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


def _check_hash(value, what: str) -> bytes:
    if not isinstance(value, (bytes, bytearray)) or len(value) != HASH_SIZE:
        raise ValueError(f"{what} must be {HASH_SIZE} bytes")
    return bytes(value)


# ---------------------------------------------------------------------------- building

class CompactRange:
    """The tree's right frontier: the roots of the perfect subtrees whose concatenation is the
    whole tree, largest (leftmost) first. O(log n) hashes; `append` costs O(1) amortised."""

    __slots__ = ("size", "hashes")

    def __init__(self, size: int = 0, hashes: Iterable[bytes] = ()):
        hashes = [_check_hash(h, "a compact range hash") for h in hashes]
        if not 0 <= size <= MAX_SIZE or len(hashes) != bin(size).count("1"):
            raise ValueError(f"a compact range of size {size} has {bin(size).count('1')} "
                             f"hashes, not {len(hashes)}")
        self.size, self.hashes = size, hashes

    def append(self, leaf_hash: bytes) -> list[tuple[int, int, bytes]]:
        """Add the next leaf hash. Returns the nodes it completes as (level, index, hash), the
        leaf itself (level 0) first, each higher level next."""
        h = _check_hash(leaf_hash, "a leaf hash")
        index = self.size
        if index == MAX_SIZE:
            raise ValueError("the tree is full")
        done = [(0, index, h)]
        level, bits = 0, index
        while bits & 1:
            h = node_hash(self.hashes.pop(), h)
            level, bits = level + 1, bits >> 1
            done.append((level, index >> level, h))
        self.hashes.append(h)
        self.size = index + 1
        return done

    def extend(self, leaf_hashes: Iterable[bytes]) -> None:
        for h in leaf_hashes:
            self.append(h)

    def root(self) -> bytes:
        """MTH of the tree of `size` leaves."""
        if not self.hashes:
            return EMPTY_ROOT
        h = self.hashes[-1]
        for left in reversed(self.hashes[:-1]):
            h = node_hash(left, h)
        return h

    def to_bytes(self) -> bytes:
        """8 bytes big-endian size, then the hashes, largest subtree first."""
        return self.size.to_bytes(8, "big") + b"".join(self.hashes)

    @classmethod
    def from_bytes(cls, data: bytes) -> "CompactRange":
        data = bytes(data)
        if len(data) < 8 or (len(data) - 8) % HASH_SIZE:
            raise ValueError("not a serialised compact range: wrong length")
        hashes = [data[i:i + HASH_SIZE] for i in range(8, len(data), HASH_SIZE)]
        return cls(int.from_bytes(data[:8], "big"), hashes)

    def copy(self) -> "CompactRange":
        return CompactRange(self.size, self.hashes)

    def __eq__(self, other):
        return (isinstance(other, CompactRange) and self.size == other.size
                and self.hashes == other.hashes)

    def __repr__(self):
        return f"CompactRange(size={self.size}, root={self.root().hex()})"


def root(leaf_hashes: Iterable[bytes]) -> bytes:
    """MTH over a list of leaf hashes (not leaf data: hash those with `leaf_hash` first)."""
    frontier = CompactRange()
    frontier.extend(leaf_hashes)
    return frontier.root()


# ---------------------------------------------------------------------------- node sources

def keep_node(level: int, stride: int) -> bool:
    """Whether a store using `node_source(..., stride)` keeps a node of this level (besides the
    leaf hashes, which it always keeps)."""
    return stride > 0 and level > 0 and level % stride == 0


def node_source(read: Callable[[int, int, int], Sequence[bytes]], stride: int = 0) -> GetHash:
    """A `get_hash(level, index)` over what a store keeps.

    `read(level, start, end)` returns the stored hashes of the nodes of `level` with index in
    [start, end), in index order: level 0 (the leaf hashes) always, and the levels for which
    `keep_node(level, stride)` is true when `stride` > 0. Only nodes of complete subtrees inside
    the tree are ever asked for. A node of another level is computed from the stored level just
    below it: at most 2**(stride - 1) hashes read, or 2**level leaf hashes when stride is 0."""
    def get_hash(level: int, index: int) -> bytes:
        base = (level // stride) * stride if stride > 0 else 0
        span = level - base
        hashes = read(base, index << span, (index + 1) << span)
        if len(hashes) != 1 << span:
            raise LookupError(f"the store returned {len(hashes)} hashes of level {base} "
                              f"from index {index << span}, not {1 << span}")
        return root(hashes) if span else _check_hash(hashes[0], "a stored hash")
    return get_hash


def list_source(leaf_hashes: Sequence[bytes]) -> GetHash:
    """A `get_hash` over an in-memory list of leaf hashes (O(2**level) per node)."""
    return node_source(lambda _level, start, end: leaf_hashes[start:end])


# ---------------------------------------------------------------------------- proofs

def _range_hash(start: int, end: int, get_hash: GetHash) -> bytes:
    """MTH(D[start:end]) where start is a multiple of the smallest power of two >= end - start
    (true of every subtree an RFC 9162 path names): the fold of its perfect subtrees."""
    parts, pos, n = [], start, end - start
    for level in range(n.bit_length() - 1, -1, -1):
        if n >> level & 1:
            parts.append(get_hash(level, pos >> level))
            pos += 1 << level
    h = parts.pop()
    while parts:
        h = node_hash(parts.pop(), h)
    return h


def root_at(size: int, get_hash: GetHash) -> bytes:
    """MTH of the first `size` leaves of a stored tree: O(log n) calls to get_hash."""
    if size < 0:
        raise ValueError("a tree size cannot be negative")
    return _range_hash(0, size, get_hash) if size else EMPTY_ROOT


def inclusion_path(index: int, size: int, get_hash: GetHash) -> list[bytes]:
    """PATH(index, D[size]) of RFC 9162 2.1.3.1, leaf to root."""
    if not 0 <= index < size:
        raise ValueError(f"leaf index {index} is not in a tree of size {size}")
    ranges, lo, hi = [], 0, size
    while hi - lo > 1:
        k = _split(hi - lo)
        if index < lo + k:
            ranges.append((lo + k, hi))
            hi = lo + k
        else:
            ranges.append((lo, lo + k))
            lo += k
    return [_range_hash(a, b, get_hash) for a, b in reversed(ranges)]


def consistency_path(first: int, second: int, get_hash: GetHash) -> list[bytes]:
    """PROOF(first, D[second]) of RFC 9162 2.1.4.1 (empty when first == second)."""
    if not 0 < first <= second:
        raise ValueError(f"no consistency proof from size {first} to size {second}: "
                         "0 < first <= second is needed")
    ranges, lo, hi, m, whole = [], 0, second, first, True
    while True:
        n = hi - lo
        if m == n:                       # SUBPROOF(m, D[m], b): MTH(D[m]) unless b
            if not whole:
                ranges.append((lo, hi))
            break
        k = _split(n)
        if m <= k:
            ranges.append((lo + k, hi))
            hi = lo + k
        else:
            ranges.append((lo, lo + k))
            lo, m, whole = lo + k, m - k, False
    return [_range_hash(a, b, get_hash) for a, b in reversed(ranges)]


# ---------------------------------------------------------------------------- verification

def _hashes(values, what: str) -> list[bytes]:
    if values is None:
        return []
    if not isinstance(values, (list, tuple)):
        raise VerificationError(f"the {what} is not a list of hashes")
    for i, h in enumerate(values):
        if not isinstance(h, (bytes, bytearray)) or len(h) != HASH_SIZE:
            raise VerificationError(f"element {i} of the {what} is not a {HASH_SIZE}-byte hash")
    return [bytes(h) for h in values]


def _size(value, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_SIZE:
        raise VerificationError(f"the {what} is not an integer in 0..2**64-1")
    return value


def check_inclusion(leaf_hash: bytes, index: int, size: int, path, root: bytes) -> None:
    """RFC 9162 2.1.3.2; raises VerificationError saying why the proof fails."""
    index, size = _size(index, "leaf index"), _size(size, "tree size")
    path = _hashes(path, "inclusion path")
    r = _hashes([leaf_hash], "leaf hash")[0]
    root = _hashes([root], "root hash")[0]
    if index >= size:                                        # step 1
        raise VerificationError(f"leaf index {index} is not below tree size {size}")
    fn, sn = index, size - 1                                 # step 2
    for p in path:                                           # step 4
        if sn == 0:
            raise VerificationError("the inclusion path is longer than the tree is deep")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            r = node_hash(r, p)
        fn, sn = fn >> 1, sn >> 1
    if sn != 0:                                              # step 5
        raise VerificationError("the inclusion path is shorter than the tree is deep")
    if r != root:
        raise VerificationError("the inclusion path does not lead to the root hash")


def check_consistency(first: int, second: int, first_root: bytes, second_root: bytes,
                      path) -> None:
    """RFC 9162 2.1.4.2 for 0 < first < second; first == second needs an empty path and equal
    roots. A proof from size 0 is refused (every tree extends the empty one: it proves nothing).
    Raises VerificationError saying why the proof fails."""
    first, second = _size(first, "first tree size"), _size(second, "second tree size")
    path = _hashes(path, "consistency path")
    first_root = _hashes([first_root], "first root hash")[0]
    second_root = _hashes([second_root], "second root hash")[0]
    if first > second:
        raise VerificationError(f"the first tree size {first} is above the second {second}")
    if first == 0:
        raise VerificationError("a consistency proof from the empty tree proves nothing")
    if first == second:
        if path:
            raise VerificationError("two trees of the same size need an empty consistency path")
        if first_root != second_root:
            raise VerificationError(f"two different root hashes for the same tree size {first}")
        return
    if not path:                                             # step 1
        raise VerificationError("the consistency path is empty")
    if first & (first - 1) == 0:                             # step 2: first is a power of 2
        path = [first_root] + path
    fn, sn = first - 1, second - 1                           # step 3
    while fn & 1:                                            # step 4
        fn, sn = fn >> 1, sn >> 1
    fr = sr = path[0]                                        # step 5
    for c in path[1:]:                                       # step 6
        if sn == 0:
            raise VerificationError("the consistency path is longer than the tree is deep")
        if fn & 1 or fn == sn:
            fr, sr = node_hash(c, fr), node_hash(c, sr)
            while not fn & 1 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            sr = node_hash(sr, c)
        fn, sn = fn >> 1, sn >> 1
    if sn != 0:                                              # step 7
        raise VerificationError("the consistency path is shorter than the tree is deep")
    if fr != first_root:
        raise VerificationError(f"the consistency path does not lead to the root hash of "
                                f"tree size {first}")
    if sr != second_root:
        raise VerificationError(f"the consistency path does not lead to the root hash of "
                                f"tree size {second}")


def verify_inclusion(leaf_hash: bytes, index: int, size: int, path, root: bytes) -> bool:
    try:
        check_inclusion(leaf_hash, index, size, path, root)
    except VerificationError:
        return False
    return True


def verify_consistency(first: int, second: int, first_root: bytes, second_root: bytes,
                       path) -> bool:
    try:
        check_consistency(first, second, first_root, second_root, path)
    except VerificationError:
        return False
    return True
