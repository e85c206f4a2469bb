"""Split schemes compute what they should: equal to central with one client, mesfl equal to splitfed,
and the server's order changing time but never numbers."""

from __future__ import annotations

import pytest

from tests.schemes.conftest import RunScheme

SPLIT = ["sl", "cpsl", "splitfed", "mesfl"]


@pytest.mark.parametrize("scheme", SPLIT)
def test_one_client_split_scheme_equals_central_step_by_step(scheme: str, run_scheme: RunScheme) -> None:
    # 96 rows, batch 8: one epoch of central is 12 steps; 12 rounds of one client is the same 12 batches.
    central = run_scheme("central", epochs=1, clients=1, cut_layer=2)
    split = run_scheme(scheme, rounds=12, clients=1, cut_layer=2)
    assert len(central.step_losses) == len(split.step_losses) == 12
    for step, (want, got) in enumerate(zip(central.step_losses, split.step_losses, strict=True)):
        assert got == pytest.approx(want, abs=1e-6), f"step {step}"
    assert split.final.scores.accuracy == central.final.scores.accuracy


def test_mesfl_equals_splitfed_numerically(run_scheme: RunScheme) -> None:
    mesfl = run_scheme("mesfl", rounds=4, clients=3, aggregate_every=1)
    splitfed = run_scheme("splitfed", rounds=4, clients=3, aggregate_every=1)
    assert mesfl.step_losses == pytest.approx(splitfed.step_losses, abs=1e-6)
    assert mesfl.final.scores.accuracy == splitfed.final.scores.accuracy


def test_scheduler_changes_mesfl_times_not_numbers(run_scheme: RunScheme) -> None:
    fifo = run_scheme("mesfl", rounds=3, clients=6, scheduler="fifo", aggregate_every=2)
    schrage = run_scheme("mesfl", rounds=3, clients=6, scheduler="schrage", aggregate_every=2)
    optimal = run_scheme("mesfl", rounds=3, clients=6, scheduler="optimal", aggregate_every=2)
    assert fifo.step_losses == schrage.step_losses == optimal.step_losses
    assert fifo.final == schrage.final
    assert optimal.sim_time_s <= schrage.sim_time_s + 1e-12
    assert optimal.sim_time_s <= fifo.sim_time_s + 1e-12


def test_splitfed_server_holds_a_model_copy_per_client(run_scheme: RunScheme) -> None:
    mesfl = run_scheme("mesfl", rounds=1, clients=6, cut_layer=2)
    splitfed = run_scheme("splitfed", rounds=1, clients=6, cut_layer=2)
    # Every client cut at layer 2: splitfed keeps six copies of layers [2, 4) and the head, mesfl one.
    assert splitfed.server_memory.weights == 6 * mesfl.server_memory.weights
    extra = splitfed.server_memory.total - mesfl.server_memory.total
    assert extra >= 5 * mesfl.server_memory.weights


def test_dropout_draws_line_up_across_schemes(run_scheme: RunScheme) -> None:
    # LoRA dropout on: schemes must draw the same masks in the same order as the unsplit model.
    central = run_scheme("central", epochs=1, clients=1, cut_layer=1, **{"lora__dropout": 0.1})
    mesfl = run_scheme("mesfl", rounds=12, clients=1, cut_layer=1, **{"lora__dropout": 0.1})
    assert mesfl.step_losses == pytest.approx(central.step_losses, abs=1e-6)
    splitfed = run_scheme("splitfed", rounds=3, clients=3, **{"lora__dropout": 0.1})
    mesfl3 = run_scheme("mesfl", rounds=3, clients=3, **{"lora__dropout": 0.1})
    assert mesfl3.step_losses == pytest.approx(splitfed.step_losses, abs=1e-6)
