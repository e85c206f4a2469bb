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


def test_compare_reuse_keeps_finished_reports_and_retrains_the_rest(
    tiny_model_dir: Path, tiny_data_dir: Path, tmp_path: Path, capsys
) -> None:
    argv = ["compare", "--schemes", "sl,cpsl,mesfl", *_argv(tiny_model_dir, tiny_data_dir), "--out", str(tmp_path)]
    main(argv)
    first = {s: (tmp_path / s / "report.json").read_text() for s in ("sl", "cpsl", "mesfl")}
    # cpsl as if Ctrl-C had stopped it; mesfl as if the compare had ended before it started.
    stopped = json.loads(first["cpsl"])
    stopped["stopped"] = "interrupted"
    (tmp_path / "cpsl" / "report.json").write_text(json.dumps(stopped))
    (tmp_path / "mesfl" / "report.json").unlink()
    capsys.readouterr()
    main([*argv, "--reuse"])
    err = capsys.readouterr().err
    assert f"sl: kept the finished report in {tmp_path / 'sl'}" in err
    assert "cpsl: kept" not in err and "mesfl: kept" not in err
    assert (tmp_path / "sl" / "report.json").read_text() == first["sl"]  # not trained again
    for scheme in ("cpsl", "mesfl"):  # trained again: the same numbers, a finished run
        again = json.loads((tmp_path / scheme / "report.json").read_text())
        assert again["stopped"] != "interrupted"
        before = json.loads(first[scheme])["history"]
        for key in ("train_loss", "accuracy", "sim_time_s"):
            assert [h[key] for h in again["history"]] == [h[key] for h in before]
    assert set(json.loads((tmp_path / "comparison.json").read_text())) == {"sl", "cpsl", "mesfl"}


def test_compare_reuse_refuses_a_report_of_another_configuration(
    tiny_model_dir: Path, tiny_data_dir: Path, tmp_path: Path, capsys
) -> None:
    argv = ["compare", "--schemes", "sl", *_argv(tiny_model_dir, tiny_data_dir), "--out", str(tmp_path)]
    main(argv)
    before = (tmp_path / "sl" / "report.json").read_text()
    capsys.readouterr()
    with pytest.raises(SystemExit) as info:  # mesfl, listed first, has no report: it must not train either
        main(["compare", "--schemes", "mesfl,sl", *argv[3:], "--lr", "0.002", "--reuse"])
    err = capsys.readouterr().err.strip()
    assert info.value.code == 2 and len(err.splitlines()) == 1
    assert err == (
        f"fleettune: error: --reuse: {tmp_path / 'sl'} holds a report of another configuration (differs in lr); "
        "use another --out or remove that folder"
    )
    assert (tmp_path / "sl" / "report.json").read_text() == before
    assert not (tmp_path / "mesfl").exists()


@pytest.mark.parametrize(
    ("schemes", "extra", "message"),
    [
        ("mesfl,bogus", [], "scheme: unknown scheme 'bogus'"),
        ("mesfl,sl", ["--set", "server_optimizer.name=fedavgm"], "which scheme sl does not do"),
        ("mesfl,fl", ["--set", "plan_cuts=true"], "plan_cuts: scheme fl has no cut layers"),
    ],
)
def test_compare_checks_every_schemes_config_before_training_any(
    schemes: str, extra: list[str], message: str, tiny_model_dir: Path, tiny_data_dir: Path, tmp_path: Path, capsys
) -> None:
    with pytest.raises(SystemExit) as info:
        main(["compare", "--schemes", schemes, *_argv(tiny_model_dir, tiny_data_dir), *extra, "--out", str(tmp_path)])
    err = capsys.readouterr().err.strip()
    assert info.value.code == 2 and len(err.splitlines()) == 1 and message in err
    assert not (tmp_path / "mesfl").exists()  # listed first, yet never trained


def test_reuse_is_for_compare(tiny_model_dir: Path, tiny_data_dir: Path, tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as info:
        main(["run", *_argv(tiny_model_dir, tiny_data_dir), "--reuse", "--out", str(tmp_path)])
    assert info.value.code == 2 and "--reuse belongs to `fleettune compare`" in capsys.readouterr().err


def test_compare_needs_schemes(tiny_model_dir: Path, tiny_data_dir: Path, tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as info:
        main(["compare", *_argv(tiny_model_dir, tiny_data_dir), "--out", str(tmp_path)])
    assert info.value.code == 2 and "--schemes" in capsys.readouterr().err


def test_schedule_prints_each_policy_and_the_bound(tiny_model_dir: Path, capsys) -> None:
    main(["schedule", "--fleet", "paper6", "--model", str(tiny_model_dir), "--max-length", "16", "--batch-size", "4"])
    out = capsys.readouterr().out
    for word in ("fifo", "greedy", "schrage", "optimal", "preemptive bound", "splitfed copies", "jetson-nano"):
        assert word in out


def test_schedule_cut_layer_puts_every_device_at_that_cut(tiny_model_dir: Path, capsys) -> None:
    argv = ["schedule", "--fleet", "paper6", "--model", str(tiny_model_dir), "--max-length", "16", "--batch-size", "4"]
    main([*argv, "--cut-layer", "2"])
    rows = [line.split("│") for line in capsys.readouterr().out.splitlines() if "│ jetson" in line or "│ apple" in line]
    assert len(rows) == 4 and {row[2].strip() for row in rows} == {"2"}
    with pytest.raises(SystemExit) as info:
        main([*argv, "--cut-layer", "0"])
    assert info.value.code == 2 and "cut_layer" in capsys.readouterr().err


def test_run_logs_a_line_per_evaluation_when_not_on_a_terminal(
    tiny_model_dir: Path, tiny_data_dir: Path, tmp_path: Path, capsys
) -> None:
    argv = _argv(tiny_model_dir, tiny_data_dir)
    main(["run", "--scheme", "mesfl", *argv, "--set", "eval_every=1", "--out", str(tmp_path)])
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("mesfl round ")]
    assert [line.split(":")[0] for line in lines] == ["mesfl round 1/2", "mesfl round 2/2"]
    history = json.loads((tmp_path / "report.json").read_text())["history"]
    assert all(f"acc {h['accuracy']:.4f}" in line for h, line in zip(history, lines, strict=True))
