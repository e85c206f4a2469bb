"""Which clients an `fl` round samples: fixed-size or Poisson, and which one DP's accountant is told about."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fleettune.config import build_config
from fleettune.errors import ConfigError
from fleettune.privacy.accounting import epsilon_for
from fleettune.report import build_report
from fleettune.runner import execute, prepare
from fleettune.schemes.fl import draw_clients
from tests.schemes.conftest import RunScheme, tiny_flags

DP = {"privacy__dp_noise": 1.3, "privacy__dp_clip": 0.5}


def test_fixed_sampling_takes_the_rounded_share_without_replacement() -> None:
    rng = np.random.default_rng(0)
    for _ in range(50):
        chosen = draw_clients(rng, 7, 0.4, "fixed")
        assert len(chosen) == 3 and chosen == sorted(set(chosen)) and all(0 <= i < 7 for i in chosen)


def test_poisson_sampling_takes_each_client_independently_at_the_rate() -> None:
    rng = np.random.default_rng(0)
    draws = [draw_clients(rng, 10, 0.3, "poisson") for _ in range(4000)]
    sizes = np.array([len(d) for d in draws])
    counts = np.bincount(np.concatenate([np.array(d, dtype=int) for d in draws]), minlength=10)
    # Binomial(10, 0.3): mean 3, variance 2.1; each client in 30% of the rounds; some rounds empty (0.7^10 = 2.8%).
    assert sizes.mean() == pytest.approx(3.0, abs=0.1)
    assert sizes.var() == pytest.approx(2.1, abs=0.2)
    assert np.all(np.abs(counts / 4000 - 0.3) < 0.03)
    assert 0.015 < np.mean(sizes == 0) < 0.045
    assert all(d == sorted(set(d)) for d in draws)


def test_an_unknown_sampling_is_refused_by_the_draw() -> None:
    with pytest.raises(ValueError, match="stratified"):
        draw_clients(np.random.default_rng(0), 4, 0.5, "stratified")


def test_poisson_draws_repeat_for_a_seed() -> None:
    first = [draw_clients(np.random.default_rng(5), 6, 0.5, "poisson") for _ in range(3)]
    assert first[0] == first[1] == first[2]
    assert first[0] == [int(i) for i in np.flatnonzero(np.random.default_rng(5).random(6) < 0.5)]


@pytest.mark.parametrize(
    ("scheme", "extra", "expected"),
    [
        ("fl", {"client_fraction": 0.4, **DP}, "poisson"),  # auto: DP on a sample of the clients
        ("fl", {"client_fraction": 0.4}, "fixed"),  # auto without DP
        ("fl", DP, "fixed"),  # auto, every client every round
        ("fl", {"client_fraction": 0.4, "client_sampling": "fixed", **DP}, "fixed"),
        ("fl", {"client_fraction": 0.4, "client_sampling": "poisson"}, "poisson"),
        ("mesfl", {"client_fraction": 0.4, **DP}, "fixed"),  # the split schemes take every client
    ],
)
def test_auto_sampling_is_poisson_exactly_when_dp_accounts_a_sample(
    scheme: str, extra: dict[str, object], expected: str, tiny_model_dir: Path, tiny_data_dir: Path
) -> None:
    flags = tiny_flags(tiny_model_dir, tiny_data_dir, scheme, rounds=1, **extra)
    assert prepare(build_config(flags=flags)).setup.plan.client_sampling == expected


def test_the_accountant_and_the_report_see_the_sampling(tiny_model_dir: Path, tiny_data_dir: Path) -> None:
    # Six clients at 0.4: Poisson accounts q = 0.4 itself; a fixed sample of round(2.4) = 2 accounts 2 / 6.
    for sampling, rate in (("poisson", 0.4), ("fixed", 2 / 6)):
        flags = tiny_flags(
            tiny_model_dir,
            tiny_data_dir,
            "fl",
            rounds=2,
            local_steps=1,
            client_fraction=0.4,
            client_sampling=sampling,
            **DP,
        )
        prepared = prepare(build_config(flags=flags))
        dp = prepared.setup.safeguards.dp
        assert dp is not None and dp.sample_rate == pytest.approx(rate) and dp.sampling == sampling
        result = execute(prepared)
        steps = len(result.aggregations)
        assert result.history[-1].epsilon == epsilon_for(1.3, rate, steps, 1e-5)
        privacy = build_report(prepared, result, 0.0)["privacy"]
        assert (privacy["sampling"], privacy["sample_rate"]) == (sampling, pytest.approx(rate))


def test_a_round_nobody_was_sampled_for_passes_without_update_or_time(run_scheme: RunScheme) -> None:
    # Three clients at rate 0.2: half of all rounds are empty (0.8^3 = 0.51); seed 0 gives some of each.
    result = run_scheme("fl", rounds=6, clients=3, local_steps=1, client_fraction=0.2, client_sampling="poisson")
    assert len(result.history) == 6
    empty = [h for h in result.history if not h.participants]
    assert 0 < len(empty) < 6
    times = [0.0] + [h.sim_time_s for h in result.history]
    for h in empty:
        assert h.train_loss is None and times[h.round] == times[h.round - 1]
    assert result.participation.rounds_without_update == len(empty)
    assert len(result.aggregations) == 0 or all(a.round not in {h.round for h in empty} for a in result.aggregations)


def test_an_unknown_sampling_is_a_config_error(tiny_model_dir: Path, tiny_data_dir: Path) -> None:
    with pytest.raises(ConfigError, match="client_sampling"):
        build_config(flags=tiny_flags(tiny_model_dir, tiny_data_dir, "fl", client_sampling="stratified"))


def test_secure_aggregation_never_opens_a_round_poisson_left_one_client_in(run_scheme: RunScheme) -> None:
    result = run_scheme(
        "fl",
        rounds=8,
        clients=4,
        local_steps=1,
        client_fraction=0.4,
        privacy__secure_aggregation=True,
        privacy__dp_clip=0.5,
        privacy__dp_noise=1.0,
    )
    alone = {h.round for h in result.history if len(h.participants) == 1}
    together = {h.round for h in result.history if len(h.participants) >= 2}
    assert alone and together  # seed 0 gives both kinds of round
    assert {a.round for a in result.aggregations} == together
    totals = result.secure_aggregation
    assert totals is not None and (totals.aggregations, totals.aborted) == (len(together), len(alone))
