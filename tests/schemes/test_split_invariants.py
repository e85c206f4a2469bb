"""Split schemes compute what they should: equal to central with one client, mesfl equal to splitfed,
and the server's order changing time but never numbers."""

from __future__ import annotations

import pytest

from tests.schemes.conftest import RunScheme

SPLIT = ["sl", "cpsl", "splitfed", "mesfl"]


@pytest.mark.parametrize(("cut", "seed"), [(2, 0), (1, 3), (3, 11)])
@pytest.mark.parametrize("scheme", SPLIT)
def test_one_client_split_scheme_equals_central_step_by_step(
    scheme: str, cut: int, seed: int, run_scheme: RunScheme
) -> None:
    # 96 rows, batch 8: one epoch of central is 12 steps; 12 rounds of one client is the same 12 batches.
    central = run_scheme("central", epochs=1, clients=1, cut_layer=cut, seed=seed)
    split = run_scheme(scheme, rounds=12, clients=1, cut_layer=cut, seed=seed)
    assert len(central.step_losses) == len(split.step_losses) == 12
    for step, (want, got) in enumerate(zip(central.step_losses, split.step_losses, strict=True)):
        assert got == pytest.approx(want, abs=1e-6), f"step {step}"
    assert split.final.scores.accuracy == central.final.scores.accuracy


@pytest.mark.parametrize(
    ("clients", "cut", "every", "seed"),
    [(3, None, 1, 0), (6, None, 1, 4), (4, 3, 1, 9), (5, None, 2, 2)],
    ids=["cuts-1-1-2", "cuts-1-1-2-2-3-3", "all-at-3", "every-2"],
)
def test_mesfl_equals_splitfed_numerically(
    clients: int, cut: int | None, every: int, seed: int, run_scheme: RunScheme
) -> None:
    # Fleets are paper6 resized (cuts 1, 1, 2, 2, 3, 3, ...) unless one cut is given for every client.
    common = {"rounds": 4, "clients": clients, "aggregate_every": every, "seed": seed, "cut_layer": cut}
    mesfl = run_scheme("mesfl", **common)
    splitfed = run_scheme("splitfed", **common)
    assert mesfl.step_losses == pytest.approx(splitfed.step_losses, abs=1e-6)
    assert mesfl.final.scores.accuracy == splitfed.final.scores.accuracy


@pytest.mark.parametrize("seed", [0, 6])
def test_scheduler_changes_mesfl_times_not_numbers(seed: int, run_scheme: RunScheme) -> None:
    runs = {
        policy: run_scheme("mesfl", rounds=3, clients=6, scheduler=policy, aggregate_every=2, seed=seed)
        for policy in ("fifo", "greedy", "schrage", "optimal")
    }
    fifo, greedy, schrage, optimal = runs.values()
    assert greedy.step_losses == fifo.step_losses and greedy.final == fifo.final
    assert fifo.step_losses == schrage.step_losses == optimal.step_losses
    assert fifo.final == schrage.final
    assert optimal.sim_time_s <= schrage.sim_time_s + 1e-12
    assert optimal.sim_time_s <= fifo.sim_time_s + 1e-12
    assert optimal.sim_time_s <= greedy.sim_time_s + 1e-12


@pytest.mark.parametrize("cut", [1, 2, 3])
def test_splitfed_server_holds_a_model_copy_per_client(cut: int, run_scheme: RunScheme) -> None:
    mesfl = run_scheme("mesfl", rounds=1, clients=6, cut_layer=cut)
    splitfed = run_scheme("splitfed", rounds=1, clients=6, cut_layer=cut)
    # Every client cut at layer `cut`: splitfed keeps six copies of layers [cut, 4) and the head, mesfl one.
    assert splitfed.server_memory.weights == 6 * mesfl.server_memory.weights
    extra = splitfed.server_memory.total - mesfl.server_memory.total
    assert extra >= 5 * mesfl.server_memory.weights


def test_dropout_draws_line_up_between_mesfl_and_splitfed(run_scheme: RunScheme) -> None:
    # LoRA dropout on: each client and the server's work for it draw from their own streams in either scheme.
    # (That a client stage and a server stage draw the unsplit model's masks is `tests/models/test_stages.py`'s.)
    splitfed = run_scheme("splitfed", rounds=3, clients=3, **{"lora__dropout": 0.1})
    mesfl3 = run_scheme("mesfl", rounds=3, clients=3, **{"lora__dropout": 0.1})
    assert mesfl3.step_losses == pytest.approx(splitfed.step_losses, abs=1e-6)
    without = run_scheme("mesfl", rounds=3, clients=3)
    # LoRA's B factors start at zero, so its dropout first acts from the second step on.
    assert mesfl3.step_losses[1:] != pytest.approx(without.step_losses[1:], abs=1e-6)
