"""DP-SGD of the devices' own parameters in runs: per-sample gradients off the graph, clipping, and the epsilon."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fleettune.config import build_config
from fleettune.errors import ConfigError
from fleettune.privacy import dpsgd
from fleettune.privacy.accounting import PrivacyAccountant
from fleettune.privacy.client import ClientPrivacy
from fleettune.privacy.dpsgd import graph_per_sample_gradients, per_sample_gradients
from fleettune.report import build_report
from fleettune.runner import execute, prepare
from fleettune.schemes import SchemeResult
from tests.privacy.split_support import applied_gradients, cut_gradient, padded_batch, tiny_client
from tests.schemes.conftest import RunScheme, tiny_flags

SHORT = {"clients": 3, "rounds": 2, "local_steps": 2}  # 32 samples per client, batches of 8
STEPS = {"fl": 2, "mesfl": 1, "splitfed": 1}  # local steps per round: fewer where every step crosses the cut


def _model_and_batch() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3))
    model[0].bias.requires_grad_(False)  # a frozen parameter must be left out
    return model, torch.randn(6, 5), torch.tensor([0, 1, 2, 0, 1, 2])


@pytest.mark.parametrize("batched", [True, False])
def test_per_sample_gradients_off_the_graph_match_one_backward_per_sample(
    batched: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    model, x, y = _model_and_batch()
    expected = per_sample_gradients(model, lambda f, xi, yi: F.cross_entropy(f(xi), yi), x, y, method="loop")
    if not batched:  # an operation without a batching rule: the loop must give the same
        grad = torch.autograd.grad

        def refuse(*args: object, **kwargs: object) -> object:
            if kwargs.get("is_grads_batched"):
                raise RuntimeError("no batching rule")
            return grad(*args, **kwargs)  # type: ignore[arg-type]

        monkeypatch.setattr(dpsgd.torch.autograd, "grad", refuse)
    losses = F.cross_entropy(model(x), y, reduction="none")
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    got = graph_per_sample_gradients(losses, torch.ones_like(losses), params)
    assert set(got) == set(expected) == {"0.weight", "2.weight", "2.bias"}
    for name, value in expected.items():
        assert torch.allclose(got[name], value, atol=1e-6), name


def test_split_client_gradient_is_clipped_per_sample_and_a_huge_clip_leaves_it_alone() -> None:
    batch = padded_batch()
    grad = cut_gradient(torch.Size((4, 6, 32)))
    plain = applied_gradients(tiny_client(), batch, grad)
    loose = applied_gradients(tiny_client(ClientPrivacy(dpsgd_clip=1e6)), batch, grad)
    tight = applied_gradients(tiny_client(ClientPrivacy(dpsgd_clip=1e-3)), batch, grad)
    assert set(plain) == set(loose) == set(tight)
    for name, value in plain.items():
        assert torch.allclose(loose[name], value, atol=1e-7, rtol=1e-5), name
    # The mean of four clipped gradients: its norm is at most the clip.
    norm = torch.sqrt(sum(g.double().pow(2).sum() for g in tight.values()))
    assert 0 < float(norm) <= 1e-3 * (1 + 1e-6)


def _final(result: SchemeResult) -> dict[str, torch.Tensor]:
    assert result.adapter is not None
    return result.adapter


@pytest.mark.parametrize("scheme", ["fl", "mesfl"])
def test_zero_noise_and_a_huge_clip_train_as_the_plain_run(scheme: str, run_scheme: RunScheme) -> None:
    short = {**SHORT, "local_steps": STEPS[scheme]}
    plain = run_scheme(scheme, **short)
    private = run_scheme(scheme, **short, privacy__dpsgd_clip=1e6)
    assert [h.train_loss for h in private.history] == pytest.approx([h.train_loss for h in plain.history], abs=1e-6)
    for key, value in _final(plain).items():
        assert torch.allclose(_final(private)[key], value, atol=1e-6), key
    assert private.client_steps == dict.fromkeys(private.client_steps, 2 * STEPS[scheme])
    assert len(private.client_steps) == 3


@pytest.mark.parametrize("scheme", ["fl", "splitfed"])
def test_reports_the_worst_clients_epsilon_from_the_accountant(
    scheme: str, tiny_model_dir: Path, tiny_data_dir: Path
) -> None:
    dpsgd = {"privacy__dpsgd_clip": 1.0, "privacy__dpsgd_noise": 1.1}
    flags = tiny_flags(tiny_model_dir, tiny_data_dir, scheme, **{**SHORT, "local_steps": STEPS[scheme]}, **dpsgd)
    flags["partition"] = "quantity:1.0"  # unequal clients: the smallest has the highest sample rate
    prepared = prepare(build_config(flags=flags))
    result = execute(prepared)
    section = build_report(prepared, result, 0.0)["privacy"]["dpsgd"]
    sizes = {c.id: len(c.train) for c in prepared.setup.clients}
    steps = SHORT["rounds"] * STEPS[scheme]
    expected = {}
    for client, size in sizes.items():
        accountant = PrivacyAccountant(noise_multiplier=1.1, sample_rate=min(1.0, 8 / size), delta=1e-5)
        accountant.step(steps)
        expected[client] = accountant.epsilon()
        assert section["clients"][client]["steps"] == steps
        assert section["clients"][client]["epsilon"] == pytest.approx(expected[client], abs=1e-6)
    worst = max(expected, key=lambda c: expected[c])
    assert section["worst_client"] == worst == min(sizes, key=lambda c: sizes[c])
    assert section["epsilon"] == pytest.approx(expected[worst], abs=1e-6)
    assert (section["clip"], section["noise_multiplier"], section["delta"]) == (1.0, 1.1, 1e-5)


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        ({"privacy.dpsgd_clip": -1.0}, "privacy.dpsgd_clip"),
        ({"privacy.dpsgd_clip": 1.0, "privacy.dpsgd_noise": -1.0}, "privacy.dpsgd_noise"),
        ({"privacy.dpsgd_noise": 1.0}, "privacy.dpsgd_clip"),
        ({"privacy.dpsgd_clip": 1.0, "privacy.dpsgd_noise": float("nan")}, "privacy.dpsgd_noise"),
        ({"privacy.dpsgd_clip": 1.0, "scheme": "central"}, "privacy.dpsgd_clip"),
        ({"privacy.dpsgd_clip": 1.0, "privacy.dp_delta": 0.0}, "privacy.dp_delta"),
    ],
)
def test_bad_dpsgd_settings_stop_naming_the_field(
    overrides: dict[str, object], needle: str, tiny_model_dir: Path, tiny_data_dir: Path
) -> None:
    flags = {**tiny_flags(tiny_model_dir, tiny_data_dir, "fl"), **overrides}
    with pytest.raises(ConfigError, match=needle) as caught:
        prepare(build_config(flags=flags))
    assert "\n" not in str(caught.value)
