"""Fixed-point encoding into Z_{2^k}: golden numbers, clipping, exact sums and the overflow budget."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fleettune.privacy.secagg import FixedPoint, Ring, SecAggConfig


def test_golden_encode_decode() -> None:
    codec = FixedPoint(frac_bits=8, clip=4.0, ring_bits=32)
    values = [0.5, -0.5, 1 / 3, -4.0, 10.0, -10.0, 0.0019, 2.5 / 256, 3.5 / 256]
    encoded = codec.encode(values)
    # 1/3 * 256 = 85.33 -> 85; +-10 clip to +-4 -> +-1024; 2.5 and 3.5 round half to even -> 2 and 4
    assert encoded.dtype == np.uint32
    assert encoded.tolist() == [128, 2**32 - 128, 85, 2**32 - 1024, 1024, 2**32 - 1024, 0, 2, 4]
    assert codec.decode(encoded).tolist() == [0.5, -0.5, 85 / 256, -4.0, 4.0, -4.0, 0.0, 2 / 256, 4 / 256]
    assert codec.clipped(values) == 2


def test_golden_64_bit_ring() -> None:
    codec = FixedPoint(frac_bits=32, clip=2.0, ring_bits=64)
    encoded = codec.encode([1.0, -1.0, -2.0])
    assert encoded.dtype == np.uint64
    assert encoded.tolist() == [2**32, 2**64 - 2**32, 2**64 - 2**33]
    assert codec.decode(encoded).tolist() == [1.0, -1.0, -2.0]


def test_sum_of_encodings_wraps_to_the_exact_signed_sum() -> None:
    codec = FixedPoint(frac_bits=16, clip=1.0)
    ring = codec.ring
    a, b, c = codec.encode([-1.0, 0.75]), codec.encode([-1.0, 0.5]), codec.encode([0.25, -1.0])
    total = ring.add(ring.add(a, b), c)
    assert codec.decode(total).tolist() == [-1.75, 0.25]


@settings(max_examples=40)
@given(
    n=st.integers(1, 50),
    values=st.lists(st.floats(-3.0, 3.0, allow_nan=False), min_size=1, max_size=30),
    ring_bits=st.sampled_from([32, 64]),
)
def test_decoded_sum_is_within_n_half_steps(n: int, values: list[float], ring_bits: int) -> None:
    codec = FixedPoint.for_clients(n, clip=3.0, ring_bits=ring_bits)
    x = np.asarray(values)
    ring = codec.ring
    total = ring.zeros(x.size)
    for _ in range(n):
        total = ring.add(total, codec.encode(x))
    assert np.all(np.abs(codec.decode(total) - n * x) <= n * 0.5 * codec.resolution + 1e-12)


def test_for_clients_picks_the_finest_resolution_that_fits() -> None:
    codec = FixedPoint.for_clients(6, clip=1.0)
    # 6 * 2^28 < 2^31 - 1 < 6 * 2^29
    assert codec.frac_bits == 28
    assert codec.max_clients >= 6
    assert FixedPoint.for_clients(2**20, clip=1.0).frac_bits == 10
    assert FixedPoint.for_clients(10, clip=1.0, ring_bits=64).frac_bits == 59


def test_overflow_budget_is_validated() -> None:
    codec = FixedPoint(frac_bits=16, clip=1.0)
    assert codec.max_clients == (2**31 - 1) // 2**16 == 32767
    codec.check_capacity(32767)
    with pytest.raises(ValueError, match=r"sum of 32768 vectors clipped to ±1.0 .* can overflow the 32-bit ring"):
        codec.check_capacity(32768)
    with pytest.raises(ValueError, match="overflow"):
        SecAggConfig(tuple(f"c{i}" for i in range(10)), 6, 4, FixedPoint(frac_bits=28, clip=1.0))
    with pytest.raises(ValueError, match="overflow a 32-bit ring even at integer resolution"):
        FixedPoint.for_clients(4, clip=2.0**30)
    with pytest.raises(ValueError, match="does not fit a 32-bit ring"):
        FixedPoint(frac_bits=30, clip=4.0)


def test_bad_parameters_and_inputs() -> None:
    with pytest.raises(ValueError, match="ring size must be one of"):
        FixedPoint(8, 1.0, ring_bits=16)
    with pytest.raises(ValueError, match="clip must be a positive finite number"):
        FixedPoint(8, float("inf"))
    with pytest.raises(ValueError, match="below the resolution"):
        FixedPoint(2, 0.01)
    with pytest.raises(ValueError, match="frac_bits must be in"):
        FixedPoint(31, 1.0)
    codec = FixedPoint(8, 1.0)
    with pytest.raises(ValueError, match="NaN or infinite"):
        codec.encode([0.0, float("nan")])
    with pytest.raises(ValueError, match="1-D vector"):
        codec.encode(np.zeros((2, 2)))


def test_ring_bytes_are_little_endian_words() -> None:
    ring = Ring(32)
    data = ring.to_bytes(np.array([1, 2**32 - 1], dtype=np.uint32))
    assert data == b"\x01\x00\x00\x00\xff\xff\xff\xff"
    assert ring.from_bytes(data, 2).tolist() == [1, 2**32 - 1]
    assert Ring(64).sub(np.array([0], dtype=np.uint64), np.array([1], dtype=np.uint64)).tolist() == [2**64 - 1]
