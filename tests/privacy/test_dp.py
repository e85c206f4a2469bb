"""DP mechanisms: client-level DP-FedAvg, sample-level DP-SGD and activation protection at the cut.

Clipping is pinned to hand-computed numbers, DP-SGD to a per-sample autograd loop, and the noise to its
standard deviation measured over many draws (a 200k-sample estimate of a std is within 1% at ~6 standard errors).
"""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from fleettune.errors import ConfigError
from fleettune.privacy.accounting import PrivacyAccountant, epsilon_for
from fleettune.privacy.activations import (
    activation_accountant,
    activation_epsilon,
    activation_norms,
    protect_activations,
)
from fleettune.privacy.dp import clip_update, dp_fedavg, noisy_aggregate, update_norm
from fleettune.privacy.dpsgd import (
    assign_gradients,
    clip_and_noise,
    per_sample_gradients,
    private_gradients,
)

pytest.importorskip("opacus")


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def assert_std(values: torch.Tensor, expected: float) -> None:
    values = values.to(torch.float64).flatten()
    assert float(values.std()) == pytest.approx(expected, rel=0.01)
    assert abs(float(values.mean())) < 5 * expected / values.numel() ** 0.5


# --- client-level DP (DP-FedAvg) -------------------------------------------------------------------------------


def test_clip_update_golden() -> None:
    update = {"a": torch.tensor([3.0, 0.0]), "b": torch.tensor([[4.0]], dtype=torch.float16)}
    assert update_norm(update) == 5.0
    clipped, norm = clip_update(update, 1.0)
    assert norm == 5.0
    torch.testing.assert_close(clipped["a"], torch.tensor([0.6, 0.0]))
    torch.testing.assert_close(clipped["b"], torch.tensor([[0.8]], dtype=torch.float16))
    assert update["a"].tolist() == [3.0, 0.0]  # the input is left alone
    within, norm = clip_update(update, 5.0)
    assert norm == 5.0
    assert torch.equal(within["a"], update["a"]) and torch.equal(within["b"], update["b"])


def test_noisy_aggregate_without_noise_golden() -> None:
    updates = [{"v": torch.tensor([1.0, 0.0])}, {"v": torch.tensor([0.0, 1.0])}, {"v": torch.tensor([0.5, 0.5])}]
    g = seeded()
    assert noisy_aggregate(updates, 1.0, 0.0, g)["v"].tolist() == [0.5, 0.5]
    # Weights 2:1:1 -> scales 1, 0.5, 0.5; sum [1.25, 0.75] over D = 2 is the weighted mean.
    torch.testing.assert_close(noisy_aggregate(updates, 1.0, 0.0, g, [2, 1, 1])["v"], torch.tensor([0.625, 0.375]))
    # A fixed public denominator replaces the sum of the scales.
    torch.testing.assert_close(noisy_aggregate(updates, 1.0, 0.0, g, denominator=4)["v"], torch.tensor([0.375, 0.375]))


@pytest.mark.parametrize(
    ("weights", "denominator", "expected_std"),
    [
        (None, None, 1.5 * 2.0 / 4),  # sigma * C / n
        ([3, 1, 1, 1], None, 1.5 * 2.0 * 3 / 6),  # sigma * C * max(w) / sum(w)
        (None, 10.0, 1.5 * 2.0 / 10),  # sigma * C / denominator
    ],
)
def test_noisy_aggregate_noise_has_the_documented_std(
    weights: list[float] | None, denominator: float | None, expected_std: float
) -> None:
    updates = [{"a": torch.zeros(100_000), "b": torch.zeros(100, 1000)} for _ in range(4)]
    out = noisy_aggregate(updates, 2.0, 1.5, seeded(1), weights, denominator)
    assert_std(torch.cat([out["a"], out["b"].flatten()]), expected_std)


def test_noisy_aggregate_is_deterministic_given_the_generator() -> None:
    updates = [{"v": torch.ones(5) * 0.1}, {"v": torch.zeros(5)}]
    first = noisy_aggregate(updates, 1.0, 1.0, seeded(7))
    assert torch.equal(first["v"], noisy_aggregate(updates, 1.0, 1.0, seeded(7))["v"])
    assert not torch.equal(first["v"], noisy_aggregate(updates, 1.0, 1.0, seeded(8))["v"])


def test_dp_fedavg_clips_then_aggregates() -> None:
    updates = [{"v": torch.tensor([3.0, 4.0])}, {"v": torch.tensor([0.0, 1.0])}]
    out, norms = dp_fedavg(updates, 2.0, 0.0, seeded())
    assert norms == [5.0, 1.0]
    torch.testing.assert_close(out["v"], torch.tensor([0.6, 1.3]))


def test_noisy_aggregate_rejects_unclipped_updates_and_bad_parameters() -> None:
    with pytest.raises(ValueError, match="clip it with clip_update first"):
        noisy_aggregate([{"v": torch.tensor([3.0, 4.0])}], 1.0, 1.0, seeded())
    with pytest.raises(ValueError, match="one weight per update"):
        noisy_aggregate([{"v": torch.zeros(2)}], 1.0, 1.0, seeded(), [1, 1])
    for clip in (0.0, -1.0, float("inf")):
        with pytest.raises(ConfigError, match="clip"):
            clip_update({"v": torch.zeros(2)}, clip)
    with pytest.raises(ConfigError, match="noise_multiplier must be a finite number >= 0"):
        noisy_aggregate([{"v": torch.zeros(2)}], 1.0, -0.5, seeded())


# --- sample-level DP-SGD ---------------------------------------------------------------------------------------


def tiny_model(freeze_first: bool) -> nn.Sequential:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
    if freeze_first:  # like a frozen base layer under trainable adapters
        model[0].requires_grad_(False)
    return model


def cross_entropy(forward: object, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    assert callable(forward)
    return F.cross_entropy(forward(x), y)


def looped_gradients(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> list[dict[str, torch.Tensor]]:
    """Plain autograd, one sample at a time."""
    out = []
    for i in range(len(x)):
        model.zero_grad()
        F.cross_entropy(model(x[i : i + 1]), y[i : i + 1]).backward()
        out.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    return out


BATCH_X = torch.tensor([[1.0, -2.0, 0.5], [0.0, 3.0, 1.0], [-1.0, 0.5, 2.0], [2.0, 2.0, -1.0], [0.1, 0.1, 0.1]])
BATCH_Y = torch.tensor([0, 1, 1, 0, 1])


@pytest.mark.parametrize("freeze_first", [True, False])
def test_per_sample_gradients_match_an_autograd_loop(freeze_first: bool) -> None:
    model = tiny_model(freeze_first)
    per_sample = per_sample_gradients(model, cross_entropy, BATCH_X, BATCH_Y)
    expected = looped_gradients(model, BATCH_X, BATCH_Y)
    assert sorted(per_sample) == sorted(expected[0])
    assert ("0.weight" in per_sample) is not freeze_first
    for name, tensor in per_sample.items():
        torch.testing.assert_close(tensor, torch.stack([g[name] for g in expected]))


class Branchy(nn.Module):
    """A forward that branches on a tensor value, which vmap cannot trace (as transformers models do on masks)."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(3, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.linear(x)
        return out * 2 if bool(x.sum() > 0) else out


def test_the_autograd_loop_gives_the_same_gradients_and_backs_up_vmap() -> None:
    model = tiny_model(freeze_first=False)
    vmapped = per_sample_gradients(model, cross_entropy, BATCH_X, BATCH_Y, method="vmap")
    looped = per_sample_gradients(model, cross_entropy, BATCH_X, BATCH_Y, method="loop")
    for name, tensor in vmapped.items():
        torch.testing.assert_close(looped[name], tensor)
    torch.manual_seed(0)
    branchy = Branchy()
    with pytest.raises(RuntimeError):
        per_sample_gradients(branchy, cross_entropy, BATCH_X, BATCH_Y, method="vmap")
    auto = per_sample_gradients(branchy, cross_entropy, BATCH_X, BATCH_Y)
    expected = looped_gradients(branchy, BATCH_X, BATCH_Y)
    torch.testing.assert_close(auto["linear.weight"], torch.stack([g["linear.weight"] for g in expected]))


def test_clipped_gradient_without_noise_matches_a_hand_computation() -> None:
    model = tiny_model(freeze_first=True)
    expected_samples = looped_gradients(model, BATCH_X, BATCH_Y)
    norms = [sum(float(g.pow(2).sum()) for g in grads.values()) ** 0.5 for grads in expected_samples]
    clip = sorted(norms)[2]  # the median: some samples get clipped, some do not
    expected = {name: torch.zeros_like(g) for name, g in expected_samples[0].items()}
    for grads, norm in zip(expected_samples, norms, strict=True):
        for name, g in grads.items():
            expected[name] += g * min(1.0, clip / norm)
    result = private_gradients(
        model, cross_entropy, BATCH_X, BATCH_Y, clip=clip, noise_multiplier=0.0, generator=seeded()
    )
    torch.testing.assert_close(result.norms, torch.tensor(norms, dtype=torch.float64))
    for name, total in expected.items():
        torch.testing.assert_close(result.grads[name], total / len(BATCH_X))


def test_dpsgd_noise_has_std_sigma_clip_over_batch() -> None:
    per_sample = {"w": torch.zeros(8, 150_000), "b": torch.zeros(8, 50_000)}
    result = clip_and_noise(per_sample, 0.5, 2.0, seeded(3))
    assert_std(torch.cat([result.grads["w"], result.grads["b"]]), 2.0 * 0.5 / 8)
    # With a public denominator (the expected batch size) it divides by that instead.
    result = clip_and_noise(per_sample, 0.5, 2.0, seeded(3), denominator=20.0)
    assert_std(torch.cat([result.grads["w"], result.grads["b"]]), 2.0 * 0.5 / 20)


def test_assign_gradients_feeds_an_optimizer() -> None:
    model = tiny_model(freeze_first=True)
    before = model[2].weight.detach().clone()
    result = private_gradients(
        model, cross_entropy, BATCH_X, BATCH_Y, clip=1.0, noise_multiplier=1.0, generator=seeded()
    )
    assign_gradients(model, result.grads)
    assert model[0].weight.grad is None
    torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1).step()
    torch.testing.assert_close(model[2].weight.detach(), before - 0.1 * result.grads["2.weight"])
    with pytest.raises(ValueError, match="does not have"):
        assign_gradients(model, {"nope": torch.zeros(1)})


def test_dpsgd_bad_parameters() -> None:
    model = tiny_model(freeze_first=True)
    with pytest.raises(ConfigError, match="clip"):
        private_gradients(model, cross_entropy, BATCH_X, BATCH_Y, clip=0.0, noise_multiplier=1.0, generator=seeded())
    with pytest.raises(ConfigError, match="noise_multiplier"):
        clip_and_noise({"w": torch.zeros(2, 3)}, 1.0, -1.0, seeded())


# --- activations at the cut ------------------------------------------------------------------------------------


def test_protect_activations_golden_without_noise() -> None:
    hidden = torch.tensor(
        [
            [[3.0, 0.0], [0.0, 0.0], [0.0, 4.0]],  # all real, norm 5: scaled by 2/5
            [[0.0, 1.0], [0.0, 0.0], [9.0, 9.0]],  # last position padded: real norm 1, kept
        ]
    )
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    assert activation_norms(hidden, mask).tolist() == [5.0, 1.0]
    out = protect_activations(hidden, mask, 2.0, 0.0, seeded())
    expected = torch.tensor([[[1.2, 0.0], [0.0, 0.0], [0.0, 1.6]], [[0.0, 1.0], [0.0, 0.0], [0.0, 0.0]]])
    torch.testing.assert_close(out, expected)
    # Without a mask every position is real.
    torch.testing.assert_close(activation_norms(hidden), torch.tensor([5.0, (1 + 81 + 81) ** 0.5]))


def test_activation_noise_has_std_sigma_clip_on_real_tokens_only() -> None:
    hidden = torch.zeros(4, 64, 1024)
    mask = torch.ones(4, 64, dtype=torch.long)
    mask[1, 40:] = 0
    mask[3, 10:] = 0
    out = protect_activations(hidden, mask, 3.0, 0.7, seeded(5))
    real = mask.bool()
    assert_std(out[real], 0.7 * 3.0)
    assert torch.count_nonzero(out[~real]) == 0


def test_protect_activations_keeps_dtype_and_gradients() -> None:
    hidden = torch.randn(2, 5, 8, generator=seeded(2)).to(torch.bfloat16)
    assert protect_activations(hidden, None, 1.0, 1.0, seeded()).dtype == torch.bfloat16
    source = torch.zeros(2, 3, 4)
    source[0] = 10.0  # clipped; sample 1 is all zeros (a zero norm must not give NaN)
    source.requires_grad_(True)
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    protect_activations(source, mask, 1.0, 0.5, seeded()).sum().backward()
    assert source.grad is not None
    assert bool(torch.isfinite(source.grad).all())
    assert torch.count_nonzero(source.grad[0, 2]) == 0  # padding gets no gradient
    torch.testing.assert_close(source.grad[1], torch.ones(3, 4))  # unclipped: identity


def test_activation_epsilon_per_release_and_composed() -> None:
    # Replace adjacency: sensitivity 2C, so sigma 4 is accounted as the Gaussian mechanism at sigma 2, q = 1.
    assert activation_epsilon(4.0, 1e-5) == pytest.approx(2.1657156590294435, abs=1e-6)
    assert activation_epsilon(4.0, 1e-5) == epsilon_for(2.0, 1.0, 1, 1e-5)
    assert activation_epsilon(2.0, 1e-5, adjacency="zero_out") == epsilon_for(2.0, 1.0, 1, 1e-5)
    assert activation_epsilon(4.0, 1e-5, releases=3) == epsilon_for(2.0, 1.0, 3, 1e-5)
    assert activation_epsilon(4.0, 1e-5, releases=0) == 0.0
    accountant = activation_accountant(4.0, 1e-5)
    assert isinstance(accountant, PrivacyAccountant)
    for _ in range(3):
        accountant.step()
    assert [steps for steps, _ in accountant.history] == [1, 2, 3]
    assert accountant.epsilon() == activation_epsilon(4.0, 1e-5, releases=3)
    assert activation_epsilon(4.0, 1e-5, releases=3) > activation_epsilon(4.0, 1e-5)


def test_activation_bad_parameters() -> None:
    hidden = torch.zeros(1, 2, 3)
    with pytest.raises(ConfigError, match="clip"):
        protect_activations(hidden, None, -1.0, 1.0, seeded())
    with pytest.raises(ConfigError, match="noise_multiplier"):
        protect_activations(hidden, None, 1.0, -1.0, seeded())
    with pytest.raises(ConfigError, match="unknown adjacency 'swap'; expected one of: replace, zero_out"):
        activation_epsilon(1.0, 1e-5, adjacency="swap")
    with pytest.raises(ConfigError, match="delta"):
        activation_epsilon(1.0, 0.0)
    with pytest.raises(ConfigError, match="steps"):
        activation_epsilon(1.0, 1e-5, releases=-1)
    with pytest.raises(ValueError, match="does not match"):
        protect_activations(hidden, torch.ones(1, 3), 1.0, 1.0, seeded())
