"""Vectors over the ring Z_{2^k} (k = 32 or 64), stored as unsigned numpy integers.

Unsigned numpy arithmetic on arrays wraps modulo 2^k, which is exactly the ring's addition; every
operation here still names its dtype so no silent promotion to a wider or signed type can slip in.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from fleettune.privacy.secagg.errors import SecAggError

RingVector = NDArray[np.unsignedinteger]
SUPPORTED_BITS = (32, 64)


@dataclass(frozen=True)
class Ring:
    """Z_{2^bits}; elements travel as little-endian words of bits/8 bytes."""

    bits: int = 32

    def __post_init__(self) -> None:
        if self.bits not in SUPPORTED_BITS:
            raise ValueError(f"ring size must be one of {SUPPORTED_BITS} bits, got {self.bits}")

    @property
    def dtype(self) -> np.dtype[np.unsignedinteger]:
        return np.dtype(np.uint32) if self.bits == 32 else np.dtype(np.uint64)

    @property
    def signed_dtype(self) -> np.dtype[np.signedinteger]:
        return np.dtype(np.int32) if self.bits == 32 else np.dtype(np.int64)

    @property
    def itemsize(self) -> int:
        return self.bits // 8

    def zeros(self, length: int) -> RingVector:
        return np.zeros(length, dtype=self.dtype)

    def add(self, a: RingVector, b: RingVector) -> RingVector:
        return np.add(a, b, dtype=self.dtype)

    def sub(self, a: RingVector, b: RingVector) -> RingVector:
        return np.subtract(a, b, dtype=self.dtype)

    def to_signed(self, a: RingVector) -> NDArray[np.signedinteger]:
        """Elements read as two's-complement integers in [-2^(k-1), 2^(k-1))."""
        return a.astype(self.dtype, copy=False).view(self.signed_dtype)

    def from_signed(self, a: NDArray[np.signedinteger]) -> RingVector:
        """Signed integers (already within the signed range) as ring elements."""
        return a.astype(self.signed_dtype).view(self.dtype)

    def to_bytes(self, a: RingVector) -> bytes:
        return a.astype(self.dtype.newbyteorder("<"), copy=False).tobytes()

    def from_bytes(self, data: bytes | memoryview, length: int) -> RingVector:
        if len(data) != length * self.itemsize:
            raise SecAggError(f"{length} ring elements need {length * self.itemsize} bytes, got {len(data)}")
        return np.frombuffer(data, dtype=self.dtype.newbyteorder("<"), count=length).astype(self.dtype)
