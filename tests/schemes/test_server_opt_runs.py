"""Server optimizers inside real runs: the split invariants still hold, the numbers change, refusals."""

from __future__ import annotations

from pathlib import Path

import pytest

from fleettune.config import build_config
from fleettune.errors import ConfigError
from fleettune.runner import prepare
from tests.schemes.conftest import RunScheme, tiny_flags
from tests.schemes.test_mixed_ranks import _fleet

FEDADAM = {"server_optimizer__name": "fedadam", "server_optimizer__lr": 1e-2}


def test_mesfl_still_equals_splitfed_with_a_server_optimizer(run_scheme: RunScheme) -> None:
    mesfl = run_scheme("mesfl", rounds=4, clients=3, aggregate_every=1, **FEDADAM)
    splitfed = run_scheme("splitfed", rounds=4, clients=3, aggregate_every=1, **FEDADAM)
    assert mesfl.step_losses == pytest.approx(splitfed.step_losses, abs=1e-6)


@pytest.mark.parametrize("scheme", ["fl", "mesfl"])
def test_a_server_optimizer_changes_the_numbers_after_the_first_aggregation(scheme: str, run_scheme: RunScheme) -> None:
    extra = {"local_steps": 1} if scheme == "fl" else {"aggregate_every": 2}
    plain = run_scheme(scheme, rounds=4, clients=3, **extra)
    adam = run_scheme(scheme, rounds=4, clients=3, **extra, **FEDADAM)
    first = 1 if scheme == "fl" else 2  # the rounds before the first aggregation's result is trained from
    assert [h.train_loss for h in adam.history[:first]] == [h.train_loss for h in plain.history[:first]]
    assert adam.history[-1].train_loss != pytest.approx(plain.history[-1].train_loss, abs=1e-4)


def test_sgd_clients_keep_no_optimizer_state_and_mesfl_still_equals_splitfed(run_scheme: RunScheme) -> None:
    flags = {**FEDADAM, "optimizer": "sgd", "lr": 0.5, "server_optimizer__bias_correction": True}
    mesfl = run_scheme("mesfl", rounds=3, clients=3, **flags)
    splitfed = run_scheme("splitfed", rounds=3, clients=3, **flags)
    assert mesfl.step_losses == pytest.approx(splitfed.step_losses, abs=1e-6)
    adamw = run_scheme("mesfl", rounds=3, clients=3, **FEDADAM)
    # Same start, so the first round's mean loss agrees; the optimizers then part ways.
    assert mesfl.step_losses[0] == pytest.approx(adamw.step_losses[0], abs=1e-6)
    assert mesfl.step_losses[-1] != pytest.approx(adamw.step_losses[-1], abs=1e-4)
    assert all(m.optimizer == 0 for m in mesfl.client_memory.values())
    assert all(m.optimizer > 0 for m in adamw.client_memory.values())
    assert mesfl.server_memory.optimizer == 0 < adamw.server_memory.optimizer


def test_fedavgm_at_rate_one_without_momentum_trains_as_fedavg(run_scheme: RunScheme) -> None:
    plain = run_scheme("mesfl", rounds=3, clients=3)
    fedavgm = run_scheme("mesfl", rounds=3, clients=3, server_optimizer__name="fedavgm", server_optimizer__momentum=0.0)
    assert fedavgm.step_losses == pytest.approx(plain.step_losses, abs=1e-6)


def test_server_optimizers_need_one_rank_and_an_aggregating_scheme(
    tiny_model_dir: Path, tiny_data_dir: Path, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError, match=r"server_optimizer applies to aggregation.*scheme sl"):
        prepare(build_config(flags=tiny_flags(tiny_model_dir, tiny_data_dir, "sl", **FEDADAM)))
    flags = tiny_flags(tiny_model_dir, tiny_data_dir, "mesfl", fleet=_fleet(tmp_path, (2, 4, 8)), **FEDADAM)
    with pytest.raises(ConfigError, match="one LoRA rank for every device"):
        prepare(build_config(flags=flags))


def test_one_sgd_device_under_a_bias_corrected_adam_server_trains_as_central_adam(run_scheme: RunScheme) -> None:
    # SGD at rate c makes the device's update c times its negated gradient, and Adam does not depend on the
    # gradient's scale when eps scales with it: so the server's bias-corrected Adam step (tau = c x torch's eps)
    # is the step central's Adam takes on the same batch. A large c keeps the update exact in float32 (at
    # c = 1 the update of a weight near 0.1 rounds its smallest gradients, and Adam magnifies them).
    lr, c = 1e-2, 1e4
    central = run_scheme("central", epochs=1, clients=1, cut_layer=2, lr=lr, weight_decay=0.0)
    adam_server = {
        "server_optimizer__name": "fedadam",
        "server_optimizer__lr": lr,
        "server_optimizer__bias_correction": True,
        "server_optimizer__beta1": 0.9,
        "server_optimizer__beta2": 0.999,
        "server_optimizer__tau": 1e-8 * c,
    }
    sgd = {"optimizer": "sgd", "lr": c, "weight_decay": 0.0}
    mesfl = run_scheme("mesfl", rounds=12, clients=1, cut_layer=2, **sgd, **adam_server)
    assert len(mesfl.step_losses) == len(central.step_losses) == 12
    assert mesfl.step_losses == pytest.approx(central.step_losses, abs=1e-6)
    assert mesfl.final.scores.accuracy == central.final.scores.accuracy
