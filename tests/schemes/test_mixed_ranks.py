"""Clients with LoRA ranks of their own (fleet files' lora_rank) in real split runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from fleettune.cli.main import main
from fleettune.errors import ConfigError
from fleettune.runtime.events import Activity
from fleettune.schemes.base import SchemeResult
from tests.schemes.conftest import RunScheme

COMMON = {"rounds": 3, "eval_every": 1}


def _fleet(tmp_path: Path, ranks: tuple[int | None, ...], cuts: tuple[int, ...] = (1, 2, 3)) -> str:
    lines = ['name = "ranked"', "[server]", 'kind = "rtx-4080-super"']
    for index, (rank, cut) in enumerate(zip(ranks, cuts, strict=True)):
        lines += ["[[device]]", f'id = "d{index}"', 'kind = "raspberry-pi-5"', f"cut_layer = {cut}"]
        if rank is not None:
            lines.append(f"lora_rank = {rank}")
    path = tmp_path / f"ranked-{'-'.join(str(r) for r in ranks)}.toml"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def test_one_rank_given_in_the_fleet_is_the_same_run_as_the_run_rank(run_scheme: RunScheme, tmp_path: Path) -> None:
    plain = run_scheme("mesfl", **COMMON, fleet=_fleet(tmp_path, (None, None, None)))
    ranked = run_scheme("mesfl", **COMMON, fleet=_fleet(tmp_path, (4, 4, 4)))
    assert ranked.step_losses == plain.step_losses
    assert ranked.final.scores.accuracy == plain.final.scores.accuracy


@pytest.mark.parametrize("method", ["hetlora", "flora"])
def test_mesfl_equals_splitfed_with_mixed_ranks(run_scheme: RunScheme, tmp_path: Path, method: str) -> None:
    """The shared server with per-client adapters of different ranks computes what per-client copies do,
    whichever way the ranks are combined (with flora, both fold the stacked update into base weights)."""
    fleet = _fleet(tmp_path, (2, 4, None))
    shared = run_scheme("mesfl", **COMMON, fleet=fleet, lora__mixed_ranks=method)
    copies = run_scheme("splitfed", **COMMON, fleet=fleet, lora__mixed_ranks=method)
    assert shared.step_losses == pytest.approx(copies.step_losses, abs=1e-6)
    assert shared.final.scores.accuracy == copies.final.scores.accuracy
    assert shared.server_memory.total < copies.server_memory.total


def test_the_two_ways_differ_and_both_train(run_scheme: RunScheme, tmp_path: Path) -> None:
    fleet = _fleet(tmp_path, (2, 4, 8))
    longer = {**COMMON, "rounds": 12, "eval_every": 12, "lr": 1e-2}
    hetlora = run_scheme("mesfl", **longer, fleet=fleet)
    flora = run_scheme("mesfl", **longer, fleet=fleet, lora__mixed_ranks="flora")
    # Round 1 trains from the same start; the aggregations differ, so round 2 does too.
    assert flora.history[0].train_loss == hetlora.history[0].train_loss
    assert flora.history[1].train_loss != hetlora.history[1].train_loss
    for result in (hetlora, flora):
        assert sum(result.step_losses[-4:]) < sum(result.step_losses[:4])
    # flora sends each client the stacked factors of its layers (rank 2 + 4 + 8) instead of its own-rank part.
    assert flora.traffic.total_downlink() > hetlora.traffic.total_downlink()


def test_mixed_ranks_change_the_client_stage_sizes(run_scheme: RunScheme, tmp_path: Path) -> None:
    same = run_scheme("mesfl", **COMMON, fleet=_fleet(tmp_path, (4, 4, 4), cuts=(2, 2, 2)))
    mixed = run_scheme("mesfl", **COMMON, fleet=_fleet(tmp_path, (2, 4, 8), cuts=(2, 2, 2)))
    trainable = {c: m.trainable for c, m in mixed.client_memory.items()}
    assert trainable["d0"] < same.client_memory["d0"].trainable < trainable["d2"]
    assert trainable["d1"] == same.client_memory["d1"].trainable


def test_each_clients_compute_is_counted_at_its_own_rank(run_scheme: RunScheme, tmp_path: Path) -> None:
    """Three devices alike at one cut: a larger rank costs more FLOPs on both sides of the cut, and the clock
    counts each client's (before, the first client counted stood for every client at its cut)."""
    padded = {**COMMON, "padding": "max_length"}  # every batch the same shape
    mixed = run_scheme("mesfl", **padded, fleet=_fleet(tmp_path, (2, 4, 8), cuts=(2, 2, 2)))
    same = run_scheme("mesfl", **padded, fleet=_fleet(tmp_path, (8, 8, 8), cuts=(2, 2, 2)))

    def seconds(result: SchemeResult, activity: Activity) -> dict[str, float]:
        return {
            e.client or e.party: e.end_s - e.start_s for e in result.events if e.round == 0 and e.activity == activity
        }

    for activity in (Activity.CLIENT_FORWARD, Activity.CLIENT_BACKWARD, Activity.SERVER_COMPUTE):
        ranked = seconds(mixed, activity)
        assert ranked["d0"] < ranked["d1"] < ranked["d2"], activity
        assert ranked["d2"] == seconds(same, activity)["d0"], activity


@pytest.mark.parametrize("scheme", ["sl", "cpsl", "fl"])
def test_schemes_without_rank_mixing_refuse_mixed_ranks(run_scheme: RunScheme, tmp_path: Path, scheme: str) -> None:
    with pytest.raises(ConfigError, match="different LoRA ranks"):
        run_scheme(scheme, **COMMON, fleet=_fleet(tmp_path, (2, 4, None)))


def test_cli_rejects_mixed_ranks_for_sl_in_one_line(
    tmp_path: Path, tiny_model_dir: Path, tiny_data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["run", "--scheme", "sl", "--model", str(tiny_model_dir), "--dataset", "local"]
    argv += ["--data-dir", str(tiny_data_dir), "--fleet", _fleet(tmp_path, (2, 4, None)), "--out", str(tmp_path / "o")]
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "different LoRA ranks" in err
    assert not (tmp_path / "o" / "report.json").exists()


def test_an_unknown_way_to_mix_ranks_is_a_config_error(run_scheme: RunScheme, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="mixed_ranks"):
        run_scheme("mesfl", **COMMON, fleet=_fleet(tmp_path, (2, 4, None)), lora__mixed_ranks="average")
