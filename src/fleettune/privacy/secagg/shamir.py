"""Shamir secret sharing over a prime field: any `threshold` shares rebuild a secret, fewer reveal nothing.

The default field is GF(2^521 - 1), a Mersenne prime large enough to hold a 32-byte secret (a mask seed or
an X25519 private key) in one element, so each share is a single 66-byte number. Share i is the value at
x = i of a random polynomial of degree threshold - 1 whose constant term is the secret.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from fleettune.privacy.secagg.errors import SecAggError
from fleettune.privacy.secagg.randomness import RandomSource

PRIME = 2**521 - 1
SHARE_BYTES = (PRIME.bit_length() + 7) // 8  # 66
SECRET_BYTES = 32


def split(secret: int, threshold: int, xs: Iterable[int], rng: RandomSource, prime: int = PRIME) -> dict[int, int]:
    """Shares {x: f(x)} of `secret` at the nonzero points `xs`, with f random of degree `threshold` - 1."""
    points = list(xs)
    if not 0 <= secret < prime:
        raise ValueError(f"a secret must lie in [0, {prime}), got {secret}")
    if threshold < 1:
        raise ValueError(f"a sharing threshold must be at least 1, got {threshold}")
    if len(points) < threshold:
        raise ValueError(f"{len(points)} share points cannot reach the threshold {threshold}")
    if len(set(points)) != len(points) or any(not 0 < x < prime for x in points):
        raise ValueError(f"share points must be distinct and in [1, {prime}), got {points}")
    coefficients = [secret] + [rng.below(prime) for _ in range(threshold - 1)]
    return {x: _evaluate(coefficients, x, prime) for x in points}


def reconstruct(shares: Mapping[int, int], threshold: int, prime: int = PRIME) -> int:
    """The secret behind `shares`, interpolated from `threshold` of them.

    Shares beyond the threshold are checked against the interpolated polynomial, so a corrupted or
    mismatched share is reported instead of silently yielding a wrong secret.
    """
    if len(shares) < threshold:
        raise SecAggError(f"{len(shares)} shares cannot rebuild a secret; the threshold is {threshold}")
    points = sorted(shares.items())
    if any(not 0 < x < prime for x, _ in points) or any(not 0 <= y < prime for _, y in points):
        raise SecAggError("a share lies outside the field")
    basis, extra = points[:threshold], points[threshold:]
    for x, y in extra:
        if _interpolate(basis, x, prime) != y:
            raise SecAggError(f"share at x={x} is inconsistent with the other {len(points) - 1} shares")
    return _interpolate(basis, 0, prime)


def _evaluate(coefficients: list[int], x: int, prime: int) -> int:
    """f(x) by Horner's rule, coefficients from the constant term up."""
    value = 0
    for c in reversed(coefficients):
        value = (value * x + c) % prime
    return value


def _interpolate(points: list[tuple[int, int]], at: int, prime: int) -> int:
    """The value at `at` of the unique polynomial of degree < len(points) through `points` (Lagrange form)."""
    total = 0
    for i, (xi, yi) in enumerate(points):
        numerator, denominator = 1, 1
        for j, (xj, _) in enumerate(points):
            if i != j:
                numerator = numerator * (at - xj) % prime
                denominator = denominator * (xi - xj) % prime
        total = (total + yi * numerator * pow(denominator, -1, prime)) % prime
    return total


def secret_to_int(secret: bytes) -> int:
    """A 32-byte secret as a field element (big-endian)."""
    if len(secret) != SECRET_BYTES:
        raise ValueError(f"a shared secret must be {SECRET_BYTES} bytes, got {len(secret)}")
    return int.from_bytes(secret, "big")


def int_to_secret(value: int) -> bytes:
    """The 32-byte secret a reconstructed field element stands for."""
    if not 0 <= value < 1 << (8 * SECRET_BYTES):
        raise SecAggError(f"a rebuilt secret does not fit in {SECRET_BYTES} bytes: the shares were not of one secret")
    return value.to_bytes(SECRET_BYTES, "big")


def share_to_bytes(value: int) -> bytes:
    """A share value of the default field as fixed-width big-endian bytes."""
    return value.to_bytes(SHARE_BYTES, "big")


def share_from_bytes(data: bytes) -> int:
    if len(data) != SHARE_BYTES:
        raise SecAggError(f"a share must be {SHARE_BYTES} bytes, got {len(data)}")
    value = int.from_bytes(data, "big")
    if value >= PRIME:
        raise SecAggError("a share lies outside the field")
    return value
