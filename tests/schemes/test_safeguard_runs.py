"""Privacy and robustness inside real runs: DP accounting, calibration, robust rules against attacks, refusals."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from fleettune.config import build_config
from fleettune.errors import ConfigError
from fleettune.privacy.accounting import epsilon_for
from fleettune.report import build_report
from fleettune.runner import PreparedRun, execute, prepare
from tests.schemes.conftest import RunScheme, tiny_flags
from tests.schemes.test_mixed_ranks import _fleet

DP = {"privacy__dp_noise": 1.3, "privacy__dp_clip": 0.5}
LEARNING = {"rounds": 5, "local_steps": 5, "lr": 1e-2, "clients": 8}  # enough for the tiny task to learn
SIGN_FLIP = {"security__attack": "sign_flip", "security__malicious_fraction": 0.25}
# Negated updates scaled up: plain negation is lost in the honest clients' noise on the tiny task (docs/privacy.md).
BOOSTED_FLIP = {"security__attack": "scale", "security__attack_scale": -10.0, "security__malicious_fraction": 0.25}


@pytest.fixture
def prepare_scheme(tiny_model_dir: Path, tiny_data_dir: Path) -> Any:
    def build(scheme: str, **overrides: Any) -> PreparedRun:
        return prepare(build_config(flags=tiny_flags(tiny_model_dir, tiny_data_dir, scheme, **overrides)))

    return build


def test_fl_reports_the_epsilon_of_its_aggregations(run_scheme: RunScheme) -> None:
    # Each of 6 clients sampled with probability 0.5 (Poisson, as DP on a share of the clients defaults to):
    # the accountant's sample rate is 0.5, one step per round that aggregated (every round for this seed).
    result = run_scheme("fl", rounds=3, local_steps=1, client_fraction=0.5, **DP)
    assert all(h.participants for h in result.history)
    expected = [epsilon_for(1.3, 0.5, r, 1e-5) for r in (1, 2, 3)]
    assert [h.epsilon for h in result.history] == expected


def test_mesfl_accounts_one_step_per_aggregation(run_scheme: RunScheme) -> None:
    # Rounds 2 and 3 aggregate (every 2 rounds, and always the last); every client takes part: q = 1.
    result = run_scheme("mesfl", rounds=3, clients=3, aggregate_every=2, **DP)
    assert [h.epsilon for h in result.history] == [0.0, epsilon_for(1.3, 1.0, 1, 1e-5), epsilon_for(1.3, 1.0, 2, 1e-5)]
    assert [a.round for a in result.aggregations] == [2, 3]


def test_target_epsilon_calibrates_sigma_within_budget(prepare_scheme: Any) -> None:
    prepared = prepare_scheme("fl", rounds=3, local_steps=1, privacy__dp_target_epsilon=4.0, privacy__dp_clip=1.0)
    dp = prepared.setup.safeguards.dp
    assert dp is not None and dp.noise_multiplier is not None and dp.target_epsilon == 4.0
    result = execute(prepared)
    final = result.history[-1].epsilon
    assert final is not None and 4.0 - 0.01 <= final <= 4.0
    report = build_report(prepared, result, 0.0)
    assert report["privacy"] == {
        "mechanism": "rdp",
        "noise_multiplier": dp.noise_multiplier,
        "clip": 1.0,
        "delta": 1e-5,
        "sample_rate": 1.0,
        "sampling": "all",
        "target_epsilon": 4.0,
        "epsilon": final,
        "membership": None,
        "inversion": None,
        "activations": None,
        "dpsgd": None,
        "secure_aggregation": None,
    }


def test_huge_noise_changes_the_numbers_and_a_huge_clip_alone_does_not(run_scheme: RunScheme) -> None:
    plain = run_scheme("fl", rounds=2, local_steps=2)
    noisy = run_scheme("fl", rounds=2, local_steps=2, privacy__dp_noise=1e3, privacy__dp_clip=1.0)
    clipped = run_scheme("fl", rounds=2, local_steps=2, privacy__dp_clip=1e6)
    assert noisy.history[0].train_loss == plain.history[0].train_loss  # before any aggregation
    assert noisy.history[1].train_loss != pytest.approx(plain.history[1].train_loss, abs=1e-3)
    # Clipping only: no accountant; a bound no update reaches leaves FedAvg's result up to rounding.
    assert all(h.epsilon is None for h in clipped.history)
    assert [h.train_loss for h in clipped.history] == pytest.approx([h.train_loss for h in plain.history], abs=1e-5)


def test_default_options_are_bit_identical_to_a_run_without_them(run_scheme: RunScheme) -> None:
    plain = run_scheme("fl", rounds=2, local_steps=2)
    spelled = run_scheme(
        "fl", rounds=2, local_steps=2, security__aggregator="fedavg", security__attack="none", privacy__dp_delta=1e-5
    )
    assert [h.train_loss for h in spelled.history] == [h.train_loss for h in plain.history]
    assert spelled.final == plain.final and spelled.aggregations == []
    split = run_scheme("mesfl", rounds=2, clients=3, security__aggregator="fedavg")
    assert split.step_losses == run_scheme("mesfl", rounds=2, clients=3).step_losses


def test_multikrum_drops_boosted_sign_flippers_and_stays_near_the_clean_run(
    run_scheme: RunScheme, prepare_scheme: Any
) -> None:
    clean = run_scheme("fl", **LEARNING)
    fedavg = run_scheme("fl", **LEARNING, **BOOSTED_FLIP)
    prepared = prepare_scheme("fl", **LEARNING, **BOOSTED_FLIP, security__aggregator="multikrum", security__byzantine=2)
    malicious = set(prepared.setup.safeguards.malicious)
    assert len(malicious) == 2  # ceil(0.25 x 8)
    krum = execute(prepared)
    assert len(krum.aggregations) == LEARNING["rounds"]
    for note in krum.aggregations:
        assert note.selected is not None and set(note.clients) - set(note.selected) == malicious

    def gap(run: Any) -> float:
        return sum(abs(a.train_loss - b.train_loss) for a, b in zip(run.history, clean.history, strict=True))

    # Over several random initialisations of the tiny model the ratio stayed below 0.55.
    assert gap(krum) < 0.75 * gap(fedavg)
    security = build_report(prepared, krum, 0.0)["security"]
    assert set(security["malicious_clients"]) == malicious and security["aggregator"] == "multikrum"
    assert security["aggregations"][0]["selected"] == list(krum.aggregations[0].selected or ())


def test_flame_bounds_boosted_sign_flippers_and_reports_whom_it_kept(
    run_scheme: RunScheme, prepare_scheme: Any
) -> None:
    # On the tiny task the honest updates are nearly orthogonal (cosines within about +-0.3), so there is no
    # honest cluster for the flippers to stand apart from and clustering keeps some of them; what holds them back
    # here is the clipping to the median norm (theirs are ten times the honest ones).
    clean = run_scheme("fl", **LEARNING)
    fedavg = run_scheme("fl", **LEARNING, **BOOSTED_FLIP)
    prepared = prepare_scheme("fl", **LEARNING, **BOOSTED_FLIP, security__aggregator="flame")
    flame = execute(prepared)
    assert len(flame.aggregations) == LEARNING["rounds"]
    for note in flame.aggregations:
        assert note.selected is not None and len(note.selected) >= len(note.clients) // 2 + 1

    def gap(run: Any) -> float:
        return sum(abs(a.train_loss - b.train_loss) for a, b in zip(run.history, clean.history, strict=True))

    # gap(flame) / gap(fedavg) was 0.71, 0.27, 0.56 and 0.79 for seeds 0 to 3: better than FedAvg, not Krum-good.
    assert gap(flame) < gap(fedavg)
    security = build_report(prepared, flame, 0.0)["security"]
    assert security["aggregator"] == "flame" and security["flame_noise"] == 0.001


@pytest.mark.parametrize("rule", ["trimmed_mean", "flame", "foolsgold"])
def test_mesfl_equals_splitfed_with_dp_and_a_robust_rule(run_scheme: RunScheme, rule: str) -> None:
    options = {**DP, **SIGN_FLIP, "security__aggregator": rule, "security__trim": 0.2}
    mesfl = run_scheme("mesfl", rounds=3, clients=6, **options)
    splitfed = run_scheme("splitfed", rounds=3, clients=6, **options)
    assert mesfl.step_losses == pytest.approx(splitfed.step_losses, abs=1e-6)
    assert mesfl.final.scores.accuracy == splitfed.final.scores.accuracy
    assert [h.epsilon for h in mesfl.history] == [h.epsilon for h in splitfed.history]
    plain = run_scheme("mesfl", rounds=3, clients=6)
    assert mesfl.step_losses != pytest.approx(plain.step_losses, abs=1e-6)


def test_label_flip_changes_only_the_malicious_clients_labels(prepare_scheme: Any) -> None:
    clean = prepare_scheme("fl", rounds=1)
    flipped = prepare_scheme("fl", rounds=1, security__attack="label_flip", security__malicious_fraction=0.3)
    malicious = set(flipped.setup.safeguards.malicious)
    assert len(malicious) == 2  # ceil(0.3 x 6)
    assert flipped.setup.safeguards.plain  # a data attack: aggregation stays FedAvg
    for before, after in zip(clean.setup.clients, flipped.setup.clients, strict=True):
        assert after.train.texts == before.train.texts
        if before.id in malicious:
            assert after.train.labels == [2 - label for label in before.train.labels]
        else:
            assert after.train.labels == before.train.labels


@pytest.mark.parametrize("scheme", ["sl", "cpsl"])
def test_sequential_schemes_refuse_the_options(prepare_scheme: Any, scheme: str) -> None:
    with pytest.raises(ConfigError, match=scheme):
        prepare_scheme(scheme, rounds=1, **DP)
    with pytest.raises(ConfigError, match=scheme):
        prepare_scheme(scheme, rounds=1, security__aggregator="median")


def test_robust_rule_needing_more_clients_is_refused_before_training(prepare_scheme: Any) -> None:
    with pytest.raises(ConfigError, match=r"2f\+3"):
        prepare_scheme("fl", rounds=1, clients=4, security__aggregator="krum", security__byzantine=1)
    with pytest.raises(ConfigError, match=r"privacy\.dp_clip"):
        prepare_scheme("fl", rounds=1, security__aggregator="normbound")


def test_mixed_ranks_refuse_dp_and_robust_rules(prepare_scheme: Any, tmp_path: Path) -> None:
    fleet = _fleet(tmp_path, (2, 4, None))
    with pytest.raises(ConfigError, match="mixed ranks"):
        prepare_scheme("mesfl", rounds=1, fleet=fleet, **DP)
    with pytest.raises(ConfigError, match="mixed ranks"):
        prepare_scheme("splitfed", rounds=1, fleet=fleet, security__aggregator="median")
