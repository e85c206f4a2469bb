"""Privacy accounting: pinned to Opacus called directly, to literal golden epsilons, and calibration round trips."""

from __future__ import annotations

import math

import pytest

from fleettune.errors import ConfigError
from fleettune.privacy.accounting import (
    CALIBRATION_TOLERANCE,
    EXTRA_RDP_ORDERS,
    PrivacyAccountant,
    calibrate_noise,
    epsilon_for,
    rdp_orders,
)

opacus_accountants = pytest.importorskip("opacus.accountants")

CASES = [
    # (noise_multiplier, sample_rate, steps, delta)
    (1.0, 0.01, 1000, 1e-5),
    (1.1, 0.05, 200, 1e-6),
    (0.8, 1.0, 3, 1e-5),
    (5.0, 0.001, 10000, 1e-5),
]


def opacus_epsilon(mechanism: str, sigma: float, q: float, steps: int, delta: float) -> float:
    """Opacus's own accountant, stepped through its public API one step at a time."""
    accountant = opacus_accountants.create_accountant(mechanism)
    for _ in range(steps):
        accountant.step(noise_multiplier=sigma, sample_rate=q)
    if mechanism == "rdp":
        orders = list(opacus_accountants.RDPAccountant.DEFAULT_ALPHAS) + EXTRA_RDP_ORDERS
        return float(accountant.get_epsilon(delta=delta, alphas=orders))
    return float(accountant.get_epsilon(delta=delta))


@pytest.mark.filterwarnings("ignore::UserWarning", "ignore::RuntimeWarning")
@pytest.mark.parametrize("mechanism", ["rdp", "prv"])
@pytest.mark.parametrize(("sigma", "q", "steps", "delta"), CASES)
def test_epsilon_matches_opacus(mechanism: str, sigma: float, q: float, steps: int, delta: float) -> None:
    assert epsilon_for(sigma, q, steps, delta, mechanism) == pytest.approx(
        opacus_epsilon(mechanism, sigma, q, steps, delta), abs=1e-6
    )


def test_literal_golden_epsilons() -> None:
    # Computed once with opacus 1.6.0 and pasted here, so a change of behaviour shows up.
    assert epsilon_for(1.0, 0.01, 1000, 1e-5, "rdp") == pytest.approx(2.1013652716430564, abs=1e-6)
    assert epsilon_for(1.0, 0.01, 1000, 1e-5, "prv") == pytest.approx(1.838371637017295, abs=1e-6)
    assert epsilon_for(1.1, 0.05, 200, 1e-6, "rdp") == pytest.approx(5.0431380506058, abs=1e-6)
    # Large noise: the optimum is Opacus's largest default order (63), as its own accountant reports.
    assert epsilon_for(20.0, 1.0, 1, 1e-5, "rdp") == pytest.approx(0.18161725121127972, abs=1e-6)


@pytest.mark.parametrize(("sigma", "steps"), [(2.0, 1), (1.5, 4), (20.0, 1)])
def test_rdp_without_sampling_is_the_gaussian_closed_form(sigma: float, steps: int) -> None:
    # At q = 1, RDP of order a is steps * a / (2 sigma^2); Opacus converts it with Balle et al. (2020), Thm 21.
    delta = 1e-5
    expected = min(
        steps * a / (2 * sigma**2) + math.log((a - 1) / a) - (math.log(delta) + math.log(a)) / (a - 1)
        for a in rdp_orders()
    )
    assert epsilon_for(sigma, 1.0, steps, delta, "rdp") == pytest.approx(expected, abs=1e-9)


def test_zero_steps_spend_nothing() -> None:
    assert epsilon_for(1.0, 0.1, 0, 1e-5) == 0.0
    assert epsilon_for(1.0, 0.1, 0, 1e-5, "prv") == 0.0


def test_epsilon_grows_with_steps_and_sample_rate_and_shrinks_with_noise() -> None:
    base = epsilon_for(1.0, 0.01, 100, 1e-5)
    assert epsilon_for(1.0, 0.01, 400, 1e-5) > base
    assert epsilon_for(1.0, 0.04, 100, 1e-5) > base
    assert epsilon_for(2.0, 0.01, 100, 1e-5) < base


@pytest.mark.parametrize(("mechanism", "target"), [("rdp", 0.5), ("rdp", 3.0), ("prv", 3.0)])
def test_calibration_round_trips(mechanism: str, target: float) -> None:
    sigma = calibrate_noise(target, 0.02, 500, 1e-5, mechanism)
    spent = epsilon_for(sigma, 0.02, 500, 1e-5, mechanism)
    assert spent <= target
    assert target - spent <= CALIBRATION_TOLERANCE + 1e-9


def test_calibration_matches_opacus_get_noise_multiplier() -> None:
    from opacus.accountants.utils import get_noise_multiplier

    orders = list(opacus_accountants.RDPAccountant.DEFAULT_ALPHAS) + EXTRA_RDP_ORDERS
    expected = get_noise_multiplier(
        target_epsilon=2.0, target_delta=1e-5, sample_rate=0.01, steps=300, accountant="rdp", alphas=orders
    )
    assert calibrate_noise(2.0, 0.01, 300, 1e-5) == expected


def test_accountant_history_and_epsilon() -> None:
    accountant = PrivacyAccountant(noise_multiplier=1.0, sample_rate=0.01, delta=1e-5)
    assert accountant.epsilon() == 0.0
    assert accountant.history == []
    accountant.step()
    accountant.step(99)
    accountant.step(900)
    assert accountant.steps == 1000
    assert [steps for steps, _ in accountant.history] == [1, 100, 1000]
    epsilons = [eps for _, eps in accountant.history]
    assert epsilons == sorted(epsilons)
    assert epsilons[1] == epsilon_for(1.0, 0.01, 100, 1e-5)
    assert accountant.epsilon() == pytest.approx(2.1013652716430564, abs=1e-6)


def test_prv_accountant_agrees_with_epsilon_for() -> None:
    accountant = PrivacyAccountant(mechanism="prv", noise_multiplier=1.1, sample_rate=0.05, delta=1e-6)
    accountant.step(200)
    assert accountant.epsilon() == epsilon_for(1.1, 0.05, 200, 1e-6, "prv")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((0.0, 0.1, 10, 1e-5, "rdp"), "noise_multiplier must be"),
        ((-1.0, 0.1, 10, 1e-5, "rdp"), "noise_multiplier must be"),
        ((1.0, 0.0, 10, 1e-5, "rdp"), "sample_rate must be in \\(0, 1\\]"),
        ((1.0, 1.5, 10, 1e-5, "rdp"), "sample_rate must be in \\(0, 1\\]"),
        ((1.0, 0.1, -1, 1e-5, "rdp"), "steps must be an integer >= 0"),
        ((1.0, 0.1, 2.5, 1e-5, "rdp"), "steps must be an integer >= 0"),
        ((1.0, 0.1, 10, 0.0, "rdp"), "delta must be in \\(0, 1\\)"),
        ((1.0, 0.1, 10, 1.0, "rdp"), "delta must be in \\(0, 1\\)"),
        ((1.0, 0.1, 10, 1e-5, "gdp"), "unknown privacy accountant 'gdp'; expected one of: rdp, prv"),
    ],
)
def test_bad_parameters_are_one_line_config_errors(args: tuple, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        epsilon_for(*args)
    assert "\n" not in str(caught.value)


def test_bad_calibration_and_accountant_parameters() -> None:
    with pytest.raises(ConfigError, match="target_epsilon"):
        calibrate_noise(0.0, 0.1, 10, 1e-5)
    with pytest.raises(ConfigError, match="steps must be an integer >= 1"):
        calibrate_noise(1.0, 0.1, 0, 1e-5)
    with pytest.raises(ConfigError, match="no noise multiplier up to 1e6"):
        calibrate_noise(1e-9, 1.0, 10, 1e-5)
    with pytest.raises(ConfigError, match="delta"):
        PrivacyAccountant(noise_multiplier=1.0, sample_rate=0.1, delta=2.0)
    accountant = PrivacyAccountant(noise_multiplier=1.0, sample_rate=0.1, delta=1e-5)
    with pytest.raises(ConfigError, match="steps must be an integer >= 1"):
        accountant.step(0)
