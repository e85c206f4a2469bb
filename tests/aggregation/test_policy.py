"""The aggregation policy: plain FedAvg by default, then attack, clip, rule and noise in that order."""

from __future__ import annotations

import pytest
import torch

from fleettune.aggregation.fedavg import fedavg, sample_weights
from fleettune.aggregation.policy import AggregationPolicy, DpSpec, PolicySpec
from fleettune.aggregation.robust import make_aggregator
from fleettune.errors import ConfigError
from fleettune.privacy.accounting import epsilon_for
from fleettune.privacy.dp import clip_update, noisy_aggregate
from fleettune.security.attacks import UpdateAttack

CLIENTS = ["a", "b", "c", "d", "e"]
COUNTS = [10, 20, 30, 20, 20]


def _states(seed: int = 0) -> tuple[dict[str, torch.Tensor], list[dict[str, torch.Tensor]]]:
    gen = torch.Generator().manual_seed(seed)
    previous = {"w": torch.randn(3, 4, generator=gen), "b": torch.randn(4, generator=gen)}
    views = [{k: v + 0.1 * torch.randn(v.shape, generator=gen) for k, v in previous.items()} for _ in CLIENTS]
    return previous, views


def _policy(spec: PolicySpec, seed: int = 5) -> AggregationPolicy:
    """A policy whose noise generator is seeded with `seed`."""
    return AggregationPolicy(spec, torch.Generator().manual_seed(seed))


def test_defaults_are_exactly_fedavg_of_the_adapters() -> None:
    previous, views = _states()
    policy = _policy(PolicySpec())
    out = policy.combine(previous, views, CLIENTS, COUNTS, 0)
    expected = fedavg(views, sample_weights(COUNTS))
    assert all(torch.equal(out[k], expected[k]) for k in expected)
    assert policy.plain and policy.notes == [] and policy.epsilon() is None


def test_fedavg_of_updates_equals_fedavg_of_adapters_up_to_rounding() -> None:
    previous, views = _states()
    # A huge clip that nothing reaches takes the update path without changing anything.
    spec = PolicySpec(dp=DpSpec(clip=1e9, noise_multiplier=None, delta=1e-5, mechanism="rdp", sample_rate=1.0))
    out = _policy(spec).combine(previous, views, CLIENTS, COUNTS, 0)
    expected = fedavg(views, sample_weights(COUNTS))
    assert all(torch.allclose(out[k], expected[k], atol=1e-6) for k in expected)


def test_dp_mean_is_previous_plus_the_noisy_mean_of_clipped_updates() -> None:
    previous, views = _states()
    dp = DpSpec(clip=0.2, noise_multiplier=0.8, delta=1e-5, mechanism="rdp", sample_rate=0.5)
    policy = _policy(PolicySpec(dp=dp), seed=11)
    out = policy.combine(previous, views, CLIENTS, COUNTS, 0)
    updates = [{k: v[k].double() - previous[k].double() for k in previous} for v in views]
    clipped = [clip_update(u, 0.2)[0] for u in updates]
    step = noisy_aggregate(clipped, 0.2, 0.8, torch.Generator().manual_seed(11), sample_weights(COUNTS))
    assert all(torch.equal(out[k], (previous[k].double() + step[k]).float()) for k in previous)
    assert policy.epsilon() == epsilon_for(0.8, 0.5, 1, 1e-5)


def test_same_seed_same_noise_other_seed_other_noise() -> None:
    previous, views = _states()
    dp = DpSpec(clip=0.2, noise_multiplier=1.0, delta=1e-5, mechanism="rdp", sample_rate=1.0)
    spec = PolicySpec(aggregator="median", dp=dp)
    first = _policy(spec, 3).combine(previous, views, CLIENTS, COUNTS, 0)
    again = _policy(spec, 3).combine(previous, views, CLIENTS, COUNTS, 0)
    other = _policy(spec, 4).combine(previous, views, CLIENTS, COUNTS, 0)
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert not torch.equal(first["w"], other["w"])


def test_robust_rule_runs_on_clipped_poisoned_updates() -> None:
    previous, views = _states()
    attack = UpdateAttack("scale", frozenset({"b"}), scale=-50.0)
    spec = PolicySpec(aggregator="krum", byzantine=1, attack=attack, malicious=("b",))
    policy = _policy(spec)
    out = policy.combine(previous, views, CLIENTS, COUNTS, 2)
    updates = [{k: v[k].double() - previous[k].double() for k in previous} for v in views]
    updates[1] = {k: -50.0 * t for k, t in updates[1].items()}
    result = make_aggregator("krum", byzantine=1).aggregate(updates, sample_weights(COUNTS))
    assert all(torch.equal(out[k], (previous[k].double() + result.state[k]).float()) for k in previous)
    (note,) = policy.notes
    assert note.round == 3 and note.clients == tuple(CLIENTS) and note.selected is not None
    assert "b" not in note.selected and len(note.selected) == 1


def test_flame_noise_comes_from_the_run_generator_and_its_note_names_the_kept_clients() -> None:
    previous, views = _states()
    # Every client moves the same way plus a little of its own; flipping b and d makes them point away.
    common = {k: torch.ones_like(v) for k, v in previous.items()}
    views = [{k: v[k] + common[k] for k in v} for v in views]
    attack = UpdateAttack("sign_flip", frozenset({"b", "d"}))
    spec = PolicySpec(aggregator="flame", attack=attack, malicious=("b", "d"), flame_noise=0.5)
    policy = _policy(spec, seed=7)
    out = policy.combine(previous, views, CLIENTS, COUNTS, 0)
    updates = [policy.client_update(previous, view, client) for view, client in zip(views, CLIENTS, strict=True)]
    result = make_aggregator("flame", noise=0.5).aggregate(updates, sample_weights(COUNTS))
    assert result.noise_std > 0
    noisy = _policy(PolicySpec(), seed=7).noised(result.state, result.noise_std)
    assert all(torch.equal(out[k], (previous[k].double() + noisy[k]).float()) for k in previous)
    (note,) = policy.notes
    assert note.selected == ("a", "c", "e")


def test_foolsgold_remembers_clients_across_aggregations_and_its_state_is_the_policys() -> None:
    previous, views = _states()
    policy = _policy(PolicySpec(aggregator="foolsgold"))
    policy.combine(previous, views, CLIENTS, COUNTS, 0)
    policy.combine(previous, views[:3], CLIENTS[:3], COUNTS[:3], 1)
    state = policy.rule_state()
    assert sorted(state) == CLIENTS
    updates = [policy.client_update(previous, v, c) for v, c in zip(views, CLIENTS, strict=True)]
    flat = [torch.cat([u["w"].reshape(-1), u["b"]]) for u in updates]
    assert torch.equal(state["a"], 2 * flat[0]) and torch.equal(state["e"], flat[4])
    with pytest.raises(ValueError, match="keeps no rule state"):
        _policy(PolicySpec()).restore_rule(state)


def test_sign_flip_negates_only_malicious_updates() -> None:
    attack = UpdateAttack("sign_flip", frozenset({"x"}))
    update = {"w": torch.tensor([1.0, -2.0])}
    assert torch.equal(attack.apply("x", update)["w"], torch.tensor([-1.0, 2.0]))
    assert torch.equal(attack.apply("y", update)["w"], update["w"])


def test_rule_that_cannot_combine_that_many_updates_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="bulyan"):
        PolicySpec(aggregator="bulyan", byzantine=1).check_count(6)
    PolicySpec(aggregator="bulyan", byzantine=1).check_count(7)


def test_robust_rules_resist_sign_flippers_that_pull_fedavg_away() -> None:
    # Seven honest clients agree on a direction; three negate theirs.
    gen = torch.Generator().manual_seed(2)
    previous = {"w": torch.zeros(50, dtype=torch.float64)}
    direction = torch.randn(50, generator=gen, dtype=torch.float64)
    clients = [f"c{i}" for i in range(10)]
    views = [{"w": direction + 0.1 * torch.randn(50, generator=gen, dtype=torch.float64)} for _ in clients]
    attack = UpdateAttack("sign_flip", frozenset(clients[:3]))

    def error(aggregator: str, byzantine: int = 0) -> float:
        malicious = tuple(clients[:3])
        spec = PolicySpec(aggregator, byzantine, trim=0.3, attack=attack, malicious=malicious)
        out = _policy(spec).combine(previous, views, clients, [1] * 10, 0)
        return float(torch.linalg.vector_norm(out["w"] - direction))

    fedavg_error = error("fedavg")
    assert fedavg_error > 0.5 * float(torch.linalg.vector_norm(direction))  # pulled 60% of the way back
    for name, f in [("median", 0), ("krum", 3), ("multikrum", 3), ("trimmed_mean", 0)]:
        assert error(name, f) < 0.2 * fedavg_error, name
