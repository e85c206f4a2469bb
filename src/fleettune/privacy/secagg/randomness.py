"""Where the protocol's randomness comes from: the operating system, or a seeded source for repeatable tests.

Every secret (private keys, self-mask seeds, Shamir coefficients, AEAD nonces) is drawn through a
`RandomSource`, so a test can replay a whole run exactly while production code stays on `secrets`.
"""

from __future__ import annotations

import random
import secrets
from typing import Protocol


class RandomSource(Protocol):
    """The two draws the protocol needs."""

    def token_bytes(self, n: int) -> bytes:
        """`n` uniformly random bytes."""
        ...

    def below(self, bound: int) -> int:
        """A uniformly random integer in [0, bound)."""
        ...


class SystemRandom:
    """Cryptographically secure randomness from the operating system (`secrets`). The default everywhere."""

    def token_bytes(self, n: int) -> bytes:
        return secrets.token_bytes(n)

    def below(self, bound: int) -> int:
        return secrets.randbelow(bound)


class SeededRandom:
    """A repeatable, NOT secure source (Mersenne Twister) for tests and reproducible simulations only."""

    def __init__(self, seed: int) -> None:
        self._random = random.Random(seed)

    def token_bytes(self, n: int) -> bytes:
        return self._random.randbytes(n)

    def below(self, bound: int) -> int:
        return self._random.randrange(bound)


def resolve(rng: RandomSource | int | None) -> RandomSource:
    """`None` means the operating system, an int seeds a repeatable source, anything else is used as given."""
    if rng is None:
        return SystemRandom()
    if isinstance(rng, int):
        return SeededRandom(rng)
    return rng
