"""Expansion of a 32-byte seed into a uniformly random ring vector (a mask) with the ChaCha20 keystream.

The keystream is uniform over bytes, so reading it as little-endian k-bit words gives uniform elements of
Z_{2^k}. Each seed is used for one mask only; the nonce merely separates the two kinds of mask.
"""

from __future__ import annotations

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

from fleettune.privacy.secagg.ring import Ring, RingVector

SEED_BYTES = 32
SELF_MASK = b"self-mask\x00\x00\x00"  # 12-byte nonce labels; ChaCha20 takes a 4-byte counter + 12-byte nonce
PAIR_MASK = b"pair-mask\x00\x00\x00"


def expand(seed: bytes, length: int, ring: Ring, label: bytes) -> RingVector:
    """`length` pseudorandom ring elements derived from `seed` (and the mask kind `label`)."""
    if len(seed) != SEED_BYTES:
        raise ValueError(f"a mask seed must be {SEED_BYTES} bytes, got {len(seed)}")
    if len(label) != 12:
        raise ValueError(f"a mask label must be 12 bytes, got {len(label)}")
    encryptor = Cipher(algorithms.ChaCha20(seed, bytes(4) + label), mode=None).encryptor()
    stream = encryptor.update(bytes(length * ring.itemsize))
    return ring.from_bytes(stream, length)
