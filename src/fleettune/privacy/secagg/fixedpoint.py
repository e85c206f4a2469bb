"""Fixed-point encoding of float vectors into Z_{2^k}, sized so a sum over all clients cannot wrap around.

A value x is clipped to [-clip, clip] and encoded as round(x * 2^frac_bits) in two's complement. The
sum of n encodings lies in [-n*m, n*m] with m = round(clip * 2^frac_bits); it decodes exactly as long
as n*m <= 2^(k-1) - 1, which `check_capacity` enforces. Each value carries a rounding error of at most
2^-(frac_bits+1), so a decoded sum of n vectors is within n / 2^(frac_bits+1) of the float sum.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from fleettune.privacy.secagg.ring import Ring, RingVector


@dataclass(frozen=True)
class FixedPoint:
    """Encoding with 2^frac_bits steps per unit, clipping range [-clip, clip], in a ring of ring_bits bits."""

    frac_bits: int
    clip: float
    ring_bits: int = 32

    def __post_init__(self) -> None:
        Ring(self.ring_bits)  # validates the ring size
        if not 0 <= self.frac_bits <= self.ring_bits - 2:
            raise ValueError(f"frac_bits must be in [0, {self.ring_bits - 2}] for a {self.ring_bits}-bit ring")
        if not (math.isfinite(self.clip) and self.clip > 0):
            raise ValueError(f"clip must be a positive finite number, got {self.clip}")
        if self.clip * self.scale > self.half:
            raise ValueError(
                f"clip {self.clip} at 2^{self.frac_bits} steps per unit does not fit a {self.ring_bits}-bit ring"
            )
        if self.max_level < 1:
            raise ValueError(f"clip {self.clip} is below the resolution 2^-{self.frac_bits}: every value encodes to 0")

    @classmethod
    def for_clients(cls, n_clients: int, clip: float, ring_bits: int = 32) -> FixedPoint:
        """The finest encoding whose sum over `n_clients` vectors clipped to [-clip, clip] cannot overflow."""
        if n_clients < 1:
            raise ValueError(f"n_clients must be at least 1, got {n_clients}")
        if not (math.isfinite(clip) and clip > 0):
            raise ValueError(f"clip must be a positive finite number, got {clip}")
        half = 2 ** (ring_bits - 1) - 1
        for frac_bits in range(ring_bits - 2, -1, -1):
            level = clip * 2.0**frac_bits
            if level <= half and n_clients * round(level) <= half:
                return cls(frac_bits, clip, ring_bits)
        raise ValueError(
            f"{n_clients} clients with values up to {clip} overflow a {ring_bits}-bit ring even at integer resolution"
        )

    @property
    def ring(self) -> Ring:
        return Ring(self.ring_bits)

    @property
    def scale(self) -> float:
        return 2.0**self.frac_bits

    @property
    def resolution(self) -> float:
        """The step between two encodable values: 2^-frac_bits."""
        return 1.0 / self.scale

    @property
    def half(self) -> int:
        """The largest signed value of the ring: 2^(k-1) - 1."""
        return 2 ** (self.ring_bits - 1) - 1

    @property
    def max_level(self) -> int:
        """The encoding of the clipping bound: the largest magnitude a single encoded value can have."""
        return round(self.clip * self.scale)

    @property
    def max_clients(self) -> int:
        """How many clipped vectors can be summed without overflow."""
        return self.half // self.max_level

    def check_capacity(self, n_clients: int) -> None:
        """Raise ValueError unless the sum of `n_clients` encoded vectors is guaranteed to decode exactly."""
        if n_clients > self.max_clients:
            raise ValueError(
                f"a sum of {n_clients} vectors clipped to ±{self.clip} at 2^{self.frac_bits} steps per unit can "
                f"overflow the {self.ring_bits}-bit ring (at most {self.max_clients} fit): lower frac_bits or clip, "
                f"or use ring_bits=64"
            )

    def encode(self, values: ArrayLike) -> RingVector:
        """Clip, scale and round a 1-D float vector into ring elements. NaN or infinite values are refused."""
        x = np.asarray(values, dtype=np.float64)
        if x.ndim != 1:
            raise ValueError(f"fixed-point encoding takes a 1-D vector, got shape {x.shape}")
        if not np.all(np.isfinite(x)):
            raise ValueError("cannot encode NaN or infinite values")
        levels = np.rint(np.clip(x, -self.clip, self.clip) * self.scale)
        levels = np.clip(levels, -self.max_level, self.max_level)  # rounding of the bound itself cannot overshoot
        return self.ring.from_signed(levels.astype(np.int64))

    def decode(self, encoded: RingVector) -> NDArray[np.float64]:
        """Ring elements (an encoding or a sum of encodings) back to floats."""
        return self.ring.to_signed(encoded).astype(np.float64) / self.scale

    def clipped(self, values: ArrayLike) -> int:
        """How many entries of `values` lie outside [-clip, clip] and would be clipped by `encode`."""
        return int(np.count_nonzero(np.abs(np.asarray(values, dtype=np.float64)) > self.clip))
