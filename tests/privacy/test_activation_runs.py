"""Protection of cut activations in runs: what leaves the client, the gradient it trains on, the epsilon reported."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from fleettune.config import build_config
from fleettune.errors import ConfigError
from fleettune.privacy.activations import activation_epsilon, activation_norms, protect_activations
from fleettune.privacy.client import ClientPrivacy
from fleettune.report import build_report
from fleettune.runner import execute, prepare
from fleettune.schemes.base import DEVICE_NOISE_STREAM
from tests.privacy.split_support import applied_gradients, cut_gradient, padded_batch, tiny_client
from tests.schemes.conftest import RunScheme, tiny_flags


def test_what_leaves_the_client_is_clipped_per_sample_then_noised_from_its_own_seed() -> None:
    batch = padded_batch()
    mask = batch.attention_mask.unsqueeze(-1).float()
    torch.manual_seed(0)
    clipped = tiny_client(ClientPrivacy(activation_clip=0.5)).forward(batch, 0).hidden
    assert torch.all(activation_norms(clipped, batch.attention_mask) <= 0.5 * (1 + 1e-6))
    assert torch.all(clipped * (1 - mask) == 0)  # padding leaves as zeros
    torch.manual_seed(0)
    noisy = tiny_client(ClientPrivacy(activation_clip=0.5, activation_noise=2.0, noise_seed=7)).forward(batch, 0)
    expected = 2.0 * 0.5 * torch.randn(clipped.shape, generator=torch.Generator().manual_seed(7)) * mask
    assert torch.allclose(noisy.hidden - clipped, expected, atol=1e-6)


def test_the_client_backpropagates_through_the_clipping() -> None:
    batch = padded_batch()
    client = tiny_client(ClientPrivacy(activation_clip=0.5))
    grad = cut_gradient(torch.Size((4, 6, 32)))
    got = applied_gradients(client, batch, grad)
    params = {n: p for n, p in client.stage.named_parameters() if p.requires_grad}
    torch.manual_seed(0)
    hidden = client.stage(batch.input_ids, batch.attention_mask)
    protected = protect_activations(hidden, batch.attention_mask, 0.5, 0.0, torch.Generator())
    through_clip = torch.autograd.grad((protected * grad).sum(), list(params.values()), retain_graph=True)
    around_clip = torch.autograd.grad((hidden * grad).sum(), list(params.values()))
    for name, want in zip(params, through_clip, strict=True):
        assert torch.allclose(got[name], want, atol=1e-7), name
    assert any(not torch.allclose(a, b) for a, b in zip(through_clip, around_clip, strict=True))


def test_mesfl_reports_epsilon_per_release_and_over_the_run(tiny_model_dir: Path, tiny_data_dir: Path) -> None:
    # 3 clients of 32 samples, batches of 8: 4 batches per pass, 5 rounds of 1 step send each sample twice at most.
    flags = tiny_flags(tiny_model_dir, tiny_data_dir, "mesfl", clients=3, rounds=5, privacy__inversion_samples=4)
    flags.update({"privacy.activation_clip": 1.0, "privacy.activation_noise": 2.0})
    flags["privacy.activation_adjacency"] = "zero_out"
    prepared = prepare(build_config(flags=flags))
    privacy = prepared.setup.privacy_for(1)
    seed = int(np.random.default_rng([0, DEVICE_NOISE_STREAM, 1]).integers(2**62))  # the run's seed 0, client 1
    assert privacy is not None and privacy.noise_seed == seed
    result = execute(prepared)
    section = build_report(prepared, result, 0.0)["privacy"]
    activations = section["activations"]
    assert result.cut_batches == dict.fromkeys(activations["client_releases"], 5)
    assert activations["releases_per_sample"] == 2 and activations["releases_counted"] == "exact"
    per_release = activation_epsilon(2.0, 1e-5, 1, "rdp", "zero_out")
    assert activations["epsilon_per_release"] == pytest.approx(per_release, abs=1e-6)
    assert activations["epsilon"] == pytest.approx(activation_epsilon(2.0, 1e-5, 2, "rdp", "zero_out"), abs=1e-6)
    assert activations["epsilon"] > per_release and math.isfinite(activations["epsilon"])
    # The server's inversion attack sees the releases the run made: protected, with its clip and noise.
    inversion = section["inversion"]
    assert (inversion["protected"], inversion["clip"], inversion["noise_multiplier"]) == (True, 1.0, 2.0)


def test_a_clip_no_activation_reaches_changes_nothing_and_noise_does(run_scheme: RunScheme) -> None:
    plain = run_scheme("splitfed", clients=3, rounds=1)
    loose = run_scheme("splitfed", clients=3, rounds=1, privacy__activation_clip=1e6)
    noisy = run_scheme("splitfed", clients=3, rounds=1, privacy__activation_clip=1.0, privacy__activation_noise=1.0)
    assert plain.adapter is not None and loose.adapter is not None and noisy.adapter is not None
    for key, value in plain.adapter.items():
        assert torch.allclose(loose.adapter[key], value, atol=1e-6), key
    assert [h.train_loss for h in loose.history] == pytest.approx([h.train_loss for h in plain.history], abs=1e-6)
    assert noisy.history[0].train_loss != pytest.approx(plain.history[0].train_loss, abs=1e-4)


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        ({"privacy.activation_clip": 0.0}, "privacy.activation_clip"),
        ({"privacy.activation_clip": 1.0, "privacy.activation_noise": -0.5}, "privacy.activation_noise"),
        ({"privacy.activation_noise": 1.0}, "privacy.activation_clip"),
        ({"privacy.activation_clip": 1.0, "privacy.activation_adjacency": "swap"}, "privacy.activation_adjacency"),
        ({"privacy.activation_clip": 1.0, "scheme": "fl"}, "privacy.activation_clip"),
        ({"privacy.activation_clip": 1.0, "privacy.dp_delta": 1.0}, "privacy.dp_delta"),
    ],
)
def test_bad_activation_settings_stop_naming_the_field(
    overrides: dict[str, object], needle: str, tiny_model_dir: Path, tiny_data_dir: Path
) -> None:
    flags = {**tiny_flags(tiny_model_dir, tiny_data_dir, "mesfl"), **overrides}
    with pytest.raises(ConfigError, match=needle) as caught:
        prepare(build_config(flags=flags))
    assert "\n" not in str(caught.value)
