"""What the server sees of one client: a masked vector that looks uniform whatever the input.

The statistical checks use fixed seeds and significance level 0.001 with critical values written out
(chi-square with 63 degrees of freedom: 103.44; two-sample Kolmogorov-Smirnov: 1.9495 * sqrt(2 / N)),
so they are deterministic and would flag any visible dependence of the masked vector on the input.
"""

from __future__ import annotations

import numpy as np
import pytest
from numpy.typing import NDArray

from tests.privacy.secagg_support import Run, encoded_sum, make_config

LENGTH = 20_000
CHI2_63_AT_0_001 = 103.44
KS_C_AT_0_001 = 1.9495


def masked_vector_of_dev0(dev0_input: NDArray[np.float64], seed: int | None) -> NDArray[np.uint32]:
    config = make_config(3, 2, LENGTH)
    inputs = {"dev0": dev0_input, "dev1": np.zeros(LENGTH), "dev2": np.zeros(LENGTH)}
    run = Run(config, seed=seed)
    run.advertise()
    run.share()
    run.mask(inputs)
    return run.masked["dev0"].masked.astype(np.uint32)


def chi_square_top_bits(values: NDArray[np.uint32], bits: int = 6) -> float:
    counts = np.bincount(values >> (32 - bits), minlength=2**bits)
    expected = values.size / 2**bits
    return float(np.sum((counts - expected) ** 2 / expected))


def ks_two_sample(a: NDArray[np.uint32], b: NDArray[np.uint32]) -> float:
    a, b = np.sort(a), np.sort(b)
    grid = np.concatenate([a, b])
    cdf_a = np.searchsorted(a, grid, side="right") / a.size
    cdf_b = np.searchsorted(b, grid, side="right") / b.size
    return float(np.max(np.abs(cdf_a - cdf_b)))


@pytest.fixture(scope="module")
def masked_pair() -> tuple[NDArray[np.uint32], NDArray[np.uint32]]:
    zeros = masked_vector_of_dev0(np.zeros(LENGTH), seed=101)
    extreme = masked_vector_of_dev0(np.where(np.arange(LENGTH) % 2 == 0, 1.0, -1.0), seed=202)
    return zeros, extreme


def test_masked_vectors_are_uniform_over_the_ring(masked_pair: tuple[NDArray[np.uint32], NDArray[np.uint32]]) -> None:
    for masked in masked_pair:
        statistic = chi_square_top_bits(masked)
        assert statistic < CHI2_63_AT_0_001, f"chi-square {statistic:.1f} of the top 6 bits exceeds the 0.001 level"
        low = chi_square_top_bits(
            np.left_shift(masked, np.uint32(26))
        )  # the low 6 bits too: masks must cover every bit
        assert low < CHI2_63_AT_0_001, f"chi-square {low:.1f} of the low 6 bits exceeds the 0.001 level"


def test_masked_vectors_of_very_different_inputs_are_indistinguishable(
    masked_pair: tuple[NDArray[np.uint32], NDArray[np.uint32]],
) -> None:
    zeros, extreme = masked_pair
    distance = ks_two_sample(zeros, extreme)
    critical = KS_C_AT_0_001 * np.sqrt(2 / LENGTH)
    assert distance < critical, f"two-sample KS distance {distance:.4f} exceeds the 0.001 critical value {critical:.4f}"
    # and the masked vector does not track the input entry by entry
    sign = np.where(np.arange(LENGTH) % 2 == 0, 1.0, -1.0)
    correlation = float(np.corrcoef(sign, extreme.view(np.int32).astype(np.float64))[0, 1])
    assert abs(correlation) < 4 / np.sqrt(LENGTH), f"masked vector correlates with the input: r = {correlation:.4f}"


def test_masks_differ_between_runs_with_the_same_input() -> None:
    x = np.linspace(-1, 1, LENGTH)
    first, second = masked_vector_of_dev0(x, seed=None), masked_vector_of_dev0(x, seed=None)
    assert np.mean(first != second) > 0.999
    seeded, replayed = masked_vector_of_dev0(x, seed=5), masked_vector_of_dev0(x, seed=5)
    np.testing.assert_array_equal(seeded, replayed)


def test_masks_cancel_only_in_the_complete_sum() -> None:
    config = make_config(4, 3, 1000)
    inputs = {c: np.full(1000, 0.25) for c in config.clients}
    run = Run(config, seed=9)
    aggregate = run.all(inputs)
    ring = config.codec.ring
    partial = ring.zeros(1000)
    for c in ("dev0", "dev1", "dev2"):
        partial = ring.add(partial, run.masked[c].masked)
    # three of four masked vectors summed still look random: far from 0.75 anywhere
    assert np.mean(np.abs(config.codec.decode(partial) - 0.75) < 0.01) < 0.01
    np.testing.assert_array_equal(aggregate.ring_sum, encoded_sum(config, inputs, config.clients))
