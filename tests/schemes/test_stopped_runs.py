"""A run asked to stop ends after the round in progress, evaluated, with what a run planned that long computes;
`fleettune run` and `compare` write the report of the rounds run and exit 130 on the first Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch

from fleettune.config import build_config
from fleettune.report import build_report, finished_report
from fleettune.runner import PreparedRun, execute, prepare
from fleettune.runtime.progress import RoundRecord
from fleettune.schemes import SchemeResult
from tests.schemes.conftest import tiny_flags


def _stopped_at(model: Path, data: Path, scheme: str, after: int, **flags: Any) -> tuple[PreparedRun, SchemeResult]:
    """A run of 4 planned rounds whose stop is requested during round `after` (as a Ctrl-C would be): between
    rounds `after - 1` and `after`, once the former's record is out."""
    holder: list[PreparedRun] = []

    def on_round(record: RoundRecord) -> None:
        if record.round == after - 1:
            holder[0].setup.stop.request()

    holder.append(prepare(build_config(flags=tiny_flags(model, data, scheme, rounds=4, **flags)), on_round))
    return holder[0], execute(holder[0])


def _numbers(history: list[RoundRecord]) -> list[RoundRecord]:
    return [replace(r, wall_time_s=0.0) for r in history]


def _planned(model: Path, data: Path, scheme: str, rounds: int, **flags: Any) -> SchemeResult:
    return execute(prepare(build_config(flags=tiny_flags(model, data, scheme, rounds=rounds, **flags))))


@pytest.mark.parametrize(
    ("scheme", "flags"),
    [
        ("central", {"clients": 1}),
        ("fl", {"clients": 3, "local_steps": 1}),
        ("sl", {"clients": 3}),
        ("cpsl", {"clients": 4, "cluster_size": 2}),
        ("splitfed", {"clients": 3}),
        ("mesfl", {"clients": 3}),
    ],
)
def test_a_stopped_run_equals_a_run_planned_that_long(
    scheme: str, flags: dict[str, Any], tiny_model_dir: Path, tiny_data_dir: Path
) -> None:
    # The stop arrives during round 2; the run ends after it, evaluated there (eval_every is 1000).
    prepared, stopped = _stopped_at(tiny_model_dir, tiny_data_dir, scheme, 2, eval_every=1000, **flags)
    planned = _planned(tiny_model_dir, tiny_data_dir, scheme, 2, eval_every=1000, **flags)
    assert [r.round for r in stopped.history] == [1, 2]
    assert stopped.history[-1].accuracy is not None and stopped.history[0].accuracy is None
    assert stopped.step_losses == planned.step_losses
    assert _numbers(stopped.history) == _numbers(planned.history)
    assert stopped.final == planned.final
    report = build_report(prepared, stopped, 1.0)
    assert report["stopped"] == "interrupted" and report["rounds_planned"] == 4
    assert report["final"]["accuracy"] == stopped.history[-1].accuracy


@pytest.mark.parametrize("scheme", ["splitfed", "mesfl"])
def test_stopped_between_aggregations_keeps_the_average_it_scored(
    scheme: str, tiny_model_dir: Path, tiny_data_dir: Path
) -> None:
    # Aggregating every third round, a stop at round 2 scores the average the clients' parts give now, which is
    # the aggregate a run planned for 2 rounds makes at its (always aggregating) last round; the saved adapter
    # is that average, not the initial one. Only the upload that aggregation costs separates their clocks.
    flags = {"clients": 3, "aggregate_every": 3, "eval_every": 1000}
    _, stopped = _stopped_at(tiny_model_dir, tiny_data_dir, scheme, 2, **flags)
    planned = _planned(tiny_model_dir, tiny_data_dir, scheme, 2, **flags)
    assert stopped.step_losses == planned.step_losses
    assert stopped.final.scores == planned.final.scores
    assert stopped.adapter is not None and planned.adapter is not None
    assert stopped.adapter.keys() == planned.adapter.keys()
    for key, value in planned.adapter.items():
        torch.testing.assert_close(stopped.adapter[key], value, rtol=0, atol=1e-6, msg=key)
    assert stopped.sim_time_s < planned.sim_time_s


def test_a_run_stopped_at_its_target_says_so(tiny_model_dir: Path, tiny_data_dir: Path) -> None:
    flags = tiny_flags(
        tiny_model_dir, tiny_data_dir, "mesfl", clients=3, rounds=6, target_accuracy=0.01, stop_at_target=True
    )
    prepared = prepare(build_config(flags=flags))
    result = execute(prepared)
    assert len(result.history) == 1
    assert build_report(prepared, result, 1.0)["stopped"] == "target"
    full = prepare(build_config(flags={**flags, "stop_at_target": False}))
    assert build_report(full, execute(full), 1.0)["stopped"] == "planned"


def _interrupt_cli(argv: list[str], tmp_path: Path) -> tuple[int, str]:
    """Start the command line as its own process, send SIGINT once its first round is logged, wait for it."""
    log = tmp_path / "stderr.txt"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with log.open("w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "fleettune.cli.main", *argv],
            stdout=subprocess.DEVNULL,
            stderr=err,
            env=env,
        )
        deadline = time.monotonic() + 240
        while " round 1/" not in log.read_text() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert proc.poll() is None, log.read_text()
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=240)
    return code, log.read_text()


def _cli_argv(model: Path, data: Path) -> list[str]:
    return [
        "--model", str(model), "--dataset", "local", "--data-dir", str(data), "--batch-size", "8",
        "--max-length", "16", "--rounds", "100000", "--clients", "3", "--eval-every", "1", "--set", "switch_ms=1.7",
    ]  # fmt: skip


def test_ctrl_c_on_run_writes_the_report_so_far_and_exits_130(
    tiny_model_dir: Path, tiny_data_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    argv = ["run", "--scheme", "mesfl", *_cli_argv(tiny_model_dir, tiny_data_dir), "--out", str(out)]
    code, err = _interrupt_cli(argv, tmp_path)
    assert code == 130, err
    report = json.loads((out / "report.json").read_text())
    ran = len(report["history"])
    assert report["stopped"] == "interrupted" and report["rounds_planned"] == 100000 and 1 <= ran < 100000
    assert report["history"][-1]["accuracy"] == report["final"]["accuracy"]
    assert (out / "config.json").is_file()
    assert "Traceback" not in err and "press Ctrl-C again" in err
    assert err.strip().splitlines()[-1] == (
        f"fleettune: stopped: mesfl interrupted after round {ran} of 100000; its report is in {out / 'report.json'}"
    )


def test_ctrl_c_on_compare_keeps_the_schemes_run_and_starts_no_more(
    tiny_model_dir: Path, tiny_data_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    argv = ["compare", "--schemes", "sl,mesfl", *_cli_argv(tiny_model_dir, tiny_data_dir), "--out", str(out)]
    code, err = _interrupt_cli(argv, tmp_path)
    assert code == 130, err
    table = json.loads((out / "comparison.json").read_text())
    assert set(table) == {"sl"} and table["sl"]["stopped"] == "interrupted"
    assert not (out / "mesfl").exists()
    assert (out / "memory.png").is_file() and "Traceback" not in err


def test_only_reports_of_runs_that_ran_to_their_end_are_reused(tmp_path: Path) -> None:
    for name, stopped in (("planned", "planned"), ("target", "target"), ("cut", "interrupted"), ("old", None)):
        report = {"scheme": "mesfl", "history": []} | ({} if stopped is None else {"stopped": stopped})
        (tmp_path / f"{name}.json").write_text(json.dumps(report))
    assert finished_report(tmp_path / "planned.json") == {"scheme": "mesfl", "history": [], "stopped": "planned"}
    assert finished_report(tmp_path / "target.json") is not None
    assert finished_report(tmp_path / "old.json") == {"scheme": "mesfl", "history": []}  # written before "stopped"
    assert finished_report(tmp_path / "cut.json") is None
    assert finished_report(tmp_path / "missing.json") is None
