"""Shamir sharing: any threshold shares rebuild the secret, fewer are consistent with every secret."""

from __future__ import annotations

import itertools
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fleettune.privacy.secagg import SecAggError, SeededRandom
from fleettune.privacy.secagg.shamir import (
    PRIME,
    SHARE_BYTES,
    int_to_secret,
    reconstruct,
    secret_to_int,
    share_from_bytes,
    share_to_bytes,
    split,
)


class FixedCoefficients:
    """A random source that hands out given coefficients, for golden examples."""

    def __init__(self, values: list[int]) -> None:
        self._values = iter(values)

    def token_bytes(self, n: int) -> bytes:
        raise AssertionError("not used")

    def below(self, bound: int) -> int:
        return next(self._values)


def test_golden_small_field_example() -> None:
    # f(x) = 42 + 5x + 7x^2 over GF(97): f(1) = 54, f(2) = 80, f(3) = 120 mod 97 = 23, f(4) = 174 mod 97 = 77
    shares = split(42, 3, [1, 2, 3, 4], FixedCoefficients([5, 7]), prime=97)
    assert shares == {1: 54, 2: 80, 3: 23, 4: 77}
    assert reconstruct({2: 80, 3: 23, 4: 77}, 3, prime=97) == 42
    assert reconstruct({1: 54, 4: 77, 3: 23}, 3, prime=97) == 42


def test_every_threshold_subset_rebuilds_a_32_byte_secret() -> None:
    secret = bytes(range(32))
    shares = split(secret_to_int(secret), 4, range(1, 8), SeededRandom(3))
    for subset in itertools.combinations(sorted(shares), 4):
        assert int_to_secret(reconstruct({x: shares[x] for x in subset}, 4)) == secret


@settings(max_examples=30)
@given(
    secret=st.integers(0, 2**256 - 1),
    n=st.integers(2, 9),
    data=st.data(),
)
def test_any_threshold_shares_rebuild(secret: int, n: int, data: st.DataObject) -> None:
    threshold = data.draw(st.integers(1, n))
    shares = split(secret, threshold, range(1, n + 1), SeededRandom(data.draw(st.integers(0, 2**32))))
    subset = data.draw(st.lists(st.sampled_from(sorted(shares)), min_size=threshold, max_size=n, unique=True))
    assert reconstruct({x: shares[x] for x in subset}, threshold) == secret


@pytest.mark.parametrize(("prime", "threshold", "points"), [(11, 2, [3]), (7, 3, [1, 5]), (5, 4, [1, 2, 3])])
def test_fewer_than_threshold_shares_are_uniform_whatever_the_secret(
    prime: int, threshold: int, points: list[int]
) -> None:
    """Exhaustively over all polynomials: every secret gives every (t-1)-share tuple equally often."""
    for secret in range(prime):
        seen: Counter[tuple[int, ...]] = Counter()
        for coefficients in itertools.product(range(prime), repeat=threshold - 1):
            holders = [*points, prime - 1]  # one more holder, whose share is left unseen
            shares = split(secret, threshold, holders, FixedCoefficients(list(coefficients)), prime=prime)
            seen[tuple(shares[x] for x in points)] += 1
        assert len(seen) == prime ** len(points)
        assert set(seen.values()) == {1}


def test_t_minus_one_shares_are_consistent_with_every_secret() -> None:
    """For t-1 real shares and any candidate secret, some degree t-1 polynomial fits all of them."""
    shares = split(secret_to_int(b"\x07" * 32), 3, [1, 2, 3], SeededRandom(0))
    known = {1: shares[1], 2: shares[2]}
    for candidate in (0, 1, 12345, 2**256 - 1):
        # the polynomial through (0, candidate) and the two known shares is a valid sharing of the candidate
        fitted = {**known, 3: _value_at(3, {0: candidate, **known})}
        assert reconstruct(fitted, 3) == candidate


def _value_at(x: int, points: dict[int, int]) -> int:
    total = 0
    for xi, yi in points.items():
        term = yi
        for xj in points:
            if xj != xi:
                term = term * (x - xj) * pow(xi - xj, -1, PRIME) % PRIME
        total = (total + term) % PRIME
    return total


def test_an_inconsistent_extra_share_is_reported() -> None:
    shares = split(99, 3, [1, 2, 3, 4], SeededRandom(1))
    shares[4] = (shares[4] + 1) % PRIME
    with pytest.raises(SecAggError, match="x=4 is inconsistent"):
        reconstruct(shares, 3)


def test_too_few_shares_and_bad_parameters() -> None:
    shares = split(5, 3, [1, 2, 3], SeededRandom(0))
    with pytest.raises(SecAggError, match="2 shares cannot rebuild a secret; the threshold is 3"):
        reconstruct({1: shares[1], 2: shares[2]}, 3)
    with pytest.raises(ValueError, match="distinct"):
        split(5, 2, [1, 1], SeededRandom(0))
    with pytest.raises(ValueError, match="distinct"):
        split(5, 2, [0, 1], SeededRandom(0))
    with pytest.raises(ValueError, match="cannot reach the threshold"):
        split(5, 3, [1, 2], SeededRandom(0))


def test_share_and_secret_encodings() -> None:
    value = PRIME - 1
    assert len(share_to_bytes(value)) == SHARE_BYTES == 66
    assert share_from_bytes(share_to_bytes(value)) == value
    with pytest.raises(SecAggError, match="outside the field"):
        share_from_bytes(PRIME.to_bytes(SHARE_BYTES, "big"))
    with pytest.raises(SecAggError, match="must be 66 bytes"):
        share_from_bytes(b"\x00" * 65)
    with pytest.raises(SecAggError, match="does not fit in 32 bytes"):
        int_to_secret(2**256)
    with pytest.raises(ValueError, match="must be 32 bytes"):
        secret_to_int(b"short")
