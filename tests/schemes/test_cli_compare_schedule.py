"""`fleettune compare` writes every report, comparison.json and the plots; `schedule` prints policies."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fleettune.cli.main import main


def _argv(model: Path, data: Path) -> list[str]:
    return [
        "--model", str(model), "--dataset", "local", "--data-dir", str(data), "--batch-size", "8",
        "--max-length", "16", "--rounds", "2", "--clients", "3", "--set", "switch_ms=1.7",
    ]  # fmt: skip


def test_compare_writes_reports_comparison_and_plots(tiny_model_dir: Path, tiny_data_dir: Path, tmp_path: Path) -> None:
    main(["compare", "--schemes", "sl,mesfl", *_argv(tiny_model_dir, tiny_data_dir), "--out", str(tmp_path)])
    for scheme in ("sl", "mesfl"):
        report = json.loads((tmp_path / scheme / "report.json").read_text())
        assert report["scheme"] == scheme and report["time_basis"] == "cost-model"
    table = json.loads((tmp_path / "comparison.json").read_text())
    assert set(table) == {"sl", "mesfl"} and table["mesfl"]["server_peak_bytes"] > 0
    for plot in ("memory.png", "accuracy_time.png", "mesfl_round.png"):
        assert (tmp_path / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_compare_needs_schemes(tiny_model_dir: Path, tiny_data_dir: Path, tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as info:
        main(["compare", *_argv(tiny_model_dir, tiny_data_dir), "--out", str(tmp_path)])
    assert info.value.code == 2 and "--schemes" in capsys.readouterr().err


def test_schedule_prints_each_policy_and_the_bound(tiny_model_dir: Path, capsys) -> None:
    main(["schedule", "--fleet", "paper6", "--model", str(tiny_model_dir), "--max-length", "16", "--batch-size", "4"])
    out = capsys.readouterr().out
    for word in ("fifo", "greedy", "schrage", "optimal", "preemptive bound", "splitfed copies", "jetson-nano"):
        assert word in out


def test_run_logs_a_line_per_evaluation_when_not_on_a_terminal(
    tiny_model_dir: Path, tiny_data_dir: Path, tmp_path: Path, capsys
) -> None:
    argv = _argv(tiny_model_dir, tiny_data_dir)
    main(["run", "--scheme", "mesfl", *argv, "--set", "eval_every=1", "--out", str(tmp_path)])
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("mesfl round ")]
    assert [line.split(":")[0] for line in lines] == ["mesfl round 1/2", "mesfl round 2/2"]
    history = json.loads((tmp_path / "report.json").read_text())["history"]
    assert all(f"acc {h['accuracy']:.4f}" in line for h, line in zip(history, lines, strict=True))
