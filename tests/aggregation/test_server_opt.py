"""Server optimizers: golden numbers for two steps of each, FedAvg as a special case, state round trips."""

from __future__ import annotations

import pytest
import torch

from fleettune.aggregation.fedavg import fedavg
from fleettune.aggregation.policy import AggregationPolicy, PolicySpec
from fleettune.aggregation.server_opt import ServerOptSpec, make_server_optimizer
from fleettune.errors import RegistryError

START = {"w": torch.tensor([1.0, -2.0], dtype=torch.float64)}
UPDATES = [{"w": torch.tensor([0.1, -0.2], dtype=torch.float64)}, {"w": torch.tensor([0.3, 0.0], dtype=torch.float64)}]

# x after each of the two updates, worked out by hand from the formulas with lr 0.01, beta1 0.9, beta2 0.99,
# tau 1e-3 (m from 0, v from tau^2, no bias correction).
GOLDEN = {
    "fedadagrad": [(1.00099004999875, -2.000995012499922), (1.0022194444526418, -2.001890523749852)],
    "fedadam": [(1.0090502831185222, -2.0095126051675587), (1.0210052361369673, -2.0181150190345463)],
    "fedyogi": [(1.0090498756211208, -2.0095124921972505), (1.0209989233963748, -2.018073735174776)],
}


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_adaptive_server_optimizers_take_their_golden_steps(name: str) -> None:
    optimizer = make_server_optimizer(ServerOptSpec(name, lr=0.01, beta1=0.9, beta2=0.99, tau=1e-3))
    state = dict(START)
    for update, expected in zip(UPDATES, GOLDEN[name], strict=True):
        state = optimizer.step(state, update)
        assert state["w"].tolist() == pytest.approx(expected, abs=1e-12)


def test_fedavgm_accumulates_momentum() -> None:
    optimizer = make_server_optimizer(ServerOptSpec("fedavgm", lr=1.0, momentum=0.5))
    first = optimizer.step(START, UPDATES[0])
    assert first["w"].tolist() == pytest.approx([1.1, -2.2], abs=1e-12)  # v = D1
    second = optimizer.step(first, UPDATES[1])
    assert second["w"].tolist() == pytest.approx([1.45, -2.3], abs=1e-12)  # v = 0.5 D1 + D2


def test_fedavgm_at_rate_one_without_momentum_is_fedavg_through_the_policy() -> None:
    torch.manual_seed(0)
    previous = {"a": torch.randn(3, 4), "b": torch.randn(5)}
    views = [{k: v + 0.1 * torch.randn_like(v) for k, v in previous.items()} for _ in range(3)]
    counts = [10, 30, 20]
    spec = PolicySpec(server_opt=ServerOptSpec("fedavgm", lr=1.0, momentum=0.0))
    assert not spec.plain
    policy = AggregationPolicy(spec, torch.Generator().manual_seed(0))
    combined = policy.combine(previous, views, ["c0", "c1", "c2"], counts, 0)
    expected = fedavg(views, [c / sum(counts) for c in counts])
    for key, value in expected.items():
        torch.testing.assert_close(combined[key], value, atol=1e-6, rtol=0)
        assert combined[key].dtype == previous[key].dtype


def test_a_restored_optimizer_goes_on_exactly_as_the_original() -> None:
    spec = ServerOptSpec("fedadam", lr=0.01, tau=1e-3)
    original = make_server_optimizer(spec)
    state = original.step(START, UPDATES[0])
    copy = make_server_optimizer(spec)
    copy.restore(original.state())
    assert sorted(original.state()) == ["m/w", "steps", "v/w"]
    assert torch.equal(copy.step(state, UPDATES[1])["w"], original.step(state, UPDATES[1])["w"])


def test_malformed_optimizer_state_and_unknown_names_are_refused() -> None:
    optimizer = make_server_optimizer(ServerOptSpec("fedavgm", lr=1.0))
    with pytest.raises(ValueError, match="server optimizer state has an entry 'm/w'"):
        optimizer.restore({"m/w": torch.zeros(2)})
    with pytest.raises(RegistryError, match="unknown server optimizer 'sgd'"):
        make_server_optimizer(ServerOptSpec("sgd", lr=1.0))
    plain = AggregationPolicy(PolicySpec(), torch.Generator())
    assert plain.optimizer_state() == {}
    with pytest.raises(ValueError, match="keeps no optimizer state"):
        plain.restore_optimizer({"v/w": torch.zeros(2)})


@pytest.mark.parametrize("schedule", ["constant", "onecycle"])
def test_bias_corrected_fedadam_is_adam_on_the_negated_updates(schedule: str) -> None:
    # tau is Adam's eps, and updates of its size (some far below it) make it count: each step is torch's Adam
    # step with the negated mean update as the gradient, at the scheduled rate.
    torch.manual_seed(3)
    scales = torch.tensor([1e-2, 1e-3, 1e-4, 1e-5, 1e-7], dtype=torch.float64)
    updates = [{"w": scales * torch.randn(5, dtype=torch.float64)} for _ in range(6)]
    spec = ServerOptSpec(
        "fedadam", lr=0.05, beta1=0.9, beta2=0.999, tau=1e-4, bias_correction=True, lr_schedule=schedule, total_steps=6
    )
    optimizer = make_server_optimizer(spec)
    state = {"w": torch.linspace(-1, 1, 5, dtype=torch.float64)}
    param = torch.nn.Parameter(state["w"].clone())
    adam = torch.optim.Adam([param], lr=0.05, betas=(0.9, 0.999), eps=1e-4)
    for index, update in enumerate(updates):
        state = optimizer.step(state, update)
        adam.param_groups[0]["lr"] = spec.rate(index)
        param.grad = -update["w"]
        adam.step()
        torch.testing.assert_close(state["w"], param.detach(), atol=1e-12, rtol=0)


def test_the_server_rate_follows_its_schedule_over_the_aggregations() -> None:
    # onecycle over 4 steps: warm-up of max(1, int(0.3 * 4)) = 1 step, then cosine: factors 1, 1, 0.75, 0.25.
    spec = ServerOptSpec("fedavgm", lr=2.0, momentum=0.0, lr_schedule="onecycle", total_steps=4)
    assert [spec.rate(i) for i in range(4)] == pytest.approx([2.0, 2.0, 1.5, 0.5], abs=1e-12)
    optimizer = make_server_optimizer(spec)
    state = {"w": torch.zeros(1, dtype=torch.float64)}
    for _ in range(4):
        state = optimizer.step(state, {"w": torch.ones(1, dtype=torch.float64)})
    assert state["w"].item() == pytest.approx(6.0, abs=1e-12)


def test_bias_correction_golden_first_step_and_the_step_count_survives_a_restore() -> None:
    # First step: m = 0.1 D, v = 0.01 D^2 (from zero, as in Adam); corrected m / 0.1 = D, v / 0.01 = D^2.
    spec = ServerOptSpec("fedadam", lr=0.01, tau=1e-3, bias_correction=True)
    optimizer = make_server_optimizer(spec)
    first = optimizer.step(START, UPDATES[0])
    expected = [1.0 + 0.01 * d / (abs(d) + 1e-3) for d in (0.1, -0.2)]
    assert first["w"].tolist() == pytest.approx([expected[0], -2.0 + expected[1] - 1.0], abs=1e-12)
    copy = make_server_optimizer(spec)
    copy.restore(optimizer.state())
    assert int(optimizer.state()["steps"]) == 1
    assert torch.equal(copy.step(first, UPDATES[1])["w"], optimizer.step(first, UPDATES[1])["w"])
