"""`fleettune run` end to end on real data and the real MiniLM, and its bad-input contract."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fleettune.cli.main import main
from tests.cli.invoke import run_cli

TOP_KEYS = {
    "fleettune_version", "scheme", "seed", "config", "model", "dataset", "fleet", "history", "final",
    "target_accuracy", "time_to_target_s", "round_to_target", "memory_bytes", "communication_bytes", "energy_j",
    "sim_time_s", "wall_time_s",
}  # fmt: skip


def _fl_argv(shared_data: Path) -> list[str]:
    """A small FL run: 200 CARER rows, 3 clients, 2 rounds of 2 local steps."""
    return [
        "run", "--scheme", "fl", "--dataset", "carer", "--data-dir", str(shared_data / "carer"),
        "--max-train-samples", "200", "--max-eval-samples", "120", "--clients", "3", "--rounds", "2",
        "--local-steps", "2", "--max-length", "48", "--target-accuracy", "0.05",
    ]  # fmt: skip


@pytest.fixture(scope="module")
def fl_report(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> dict:
    out = tmp_path_factory.mktemp("fl")
    main([*_fl_argv(shared_data), "--out", str(out)])
    report = json.loads((out / "report.json").read_text())
    assert (out / "config.json").is_file()
    return report


def test_fl_report_has_every_contract_key(fl_report: dict) -> None:
    assert fl_report.keys() >= TOP_KEYS
    assert fl_report["scheme"] == "fl" and fl_report["model"]["layers"] == 6
    runtime = fl_report["runtime"]
    assert runtime["torch"] == torch.__version__ and runtime["torch_threads"] == torch.get_num_threads() >= 1
    assert runtime["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert fl_report["dataset"]["train_samples"] == 200 and len(fl_report["dataset"]["labels"]) == 6
    assert [r["round"] for r in fl_report["history"]] == [1, 2]
    assert set(fl_report["history"][0]) == {
        "round",
        "sim_time_s",
        "wall_time_s",
        "train_loss",
        "accuracy",
        "macro_f1",
        "participants",
        "offline",
        "dropped_deadline",
        "dropped_disconnect",
        "epsilon",
    }
    assert all(h["epsilon"] is None for h in fl_report["history"])
    assert fl_report["privacy"]["epsilon"] is None and fl_report["security"]["aggregator"] == "fedavg"
    assert all(len(h["participants"]) == 3 and not h["offline"] for h in fl_report["history"])
    assert fl_report["participation"]["client_rounds"] == 6 and fl_report["participation"]["dropped"]["total"] == 0
    final = fl_report["final"]
    ids = [d["id"] for d in fl_report["fleet"]["devices"]]
    assert len(ids) == 3 and set(final["per_client_accuracy"]) == set(ids)
    assert final["worst_client_accuracy"] == min(final["per_client_accuracy"].values())
    assert 0 <= final["accuracy"] <= 1 and 0 <= final["macro_f1"] <= 1
    assert set(fl_report["memory_bytes"]["clients_peak"]) == set(ids)
    assert all(v > 80 * 2**20 for v in fl_report["memory_bytes"]["clients_peak"].values())  # whole MiniLM
    assert set(fl_report["energy_j"]["clients"]) == set(ids) and fl_report["energy_j"]["server"] > 0
    # The target was low enough to be reached at the first evaluation.
    assert fl_report["time_to_target_s"] == fl_report["history"][0]["sim_time_s"]
    assert fl_report["round_to_target"] == fl_report["history"][0]["round"] == 1


def test_round_to_target_reads_the_key_or_an_older_report_s_history() -> None:
    from fleettune.report import round_to_target

    history = [{"round": r, "accuracy": a} for r, a in ((1, None), (2, 0.5), (3, 0.88), (4, 0.9), (5, None), (6, 0.95))]
    assert round_to_target({"target_accuracy": 0.89, "history": history}) == 4  # written before the key
    assert round_to_target({"target_accuracy": 0.5, "history": history}) == 2  # at the target counts
    assert round_to_target({"target_accuracy": 0.99, "history": history}) is None
    assert round_to_target({"target_accuracy": None, "history": history}) is None
    assert round_to_target({"round_to_target": 6, "target_accuracy": 0.89, "history": history}) == 6
    assert round_to_target({"round_to_target": None, "target_accuracy": 0.89, "history": history}) is None


def test_fl_uplink_is_clients_times_rounds_times_adapter_payload(fl_report: dict) -> None:
    from fleettune.compression import UpdateLink, parse_update_codec
    from fleettune.models.adapters import read_adapter
    from fleettune.models.catalog import resolve_model
    from fleettune.models.loading import load_task_model
    from fleettune.models.lora import LoraSpec
    from fleettune.models.stages import Task, full_model

    source = resolve_model("minilm")
    model = full_model(
        load_task_model(source.path, Task.CLASSIFICATION, num_labels=6, pad_token_id=0, seed=0),
        LoraSpec(),
        Task.CLASSIFICATION,
    )
    state = read_adapter(model.peft)
    payload = len(UpdateLink(parse_update_codec("fp32"), state).send(state))
    comm = fl_report["communication_bytes"]
    assert comm["uplink"] == 3 * 2 * payload
    assert comm["downlink"] == 3 * 2 * payload
    assert all(c == {"uplink": 2 * payload, "downlink": 2 * payload} for c in comm["per_client"].values())
    assert comm["by_kind"] == {"adapter": {"uplink": 3 * 2 * payload, "downlink": 3 * 2 * payload}}  # fl: no cut


def test_fl_is_deterministic_for_a_seed(fl_report: dict, tmp_path: Path, shared_data: Path) -> None:
    main([*_fl_argv(shared_data), "--out", str(tmp_path)])
    again = json.loads((tmp_path / "report.json").read_text())
    assert [r["train_loss"] for r in again["history"]] == [r["train_loss"] for r in fl_report["history"]]
    assert again["final"] == fl_report["final"]


def _no_label_dir(tmp_path: Path) -> Path:
    data = tmp_path / "nolabel"
    data.mkdir()
    (data / "train.csv").write_text("text,category\nhello there,a\nanother line,b\n")
    (data / "test.csv").write_text("text,category\nthird line,a\n")
    return data


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--scheme", "teleport"], "scheme"),
        (["--cut-layer", "6"], "cut_layer"),
        (["--dataset", "local", "--data-dir", "NOLABEL"], "label"),
        (["--dataset", "carer", "--data-dir", "/nonexistent/carer"], "/nonexistent/carer"),
        (["--partition", "dirichlet:x"], "partition"),
        (["--rounds", "zero"], "rounds"),
        (["--model", "no-such-model"], "no-such-model"),
        (["--fleet", "missing.toml"], "missing.toml"),
    ],
)
def test_bad_input_exits_2_with_one_line(
    argv: list[str], needle: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [str(_no_label_dir(tmp_path)) if a == "NOLABEL" else a for a in argv]
    code, err = run_cli(["run", *argv, "--out", str(tmp_path / "out")], capsys)
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.strip() and "preparing" not in line]
    assert len(lines) == 1, err
    assert needle in lines[0] and "Traceback" not in err


def test_console_script_reports_bad_input_without_traceback(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "fleettune.cli.main", "run", "--scheme", "nope", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("fleettune: error:") and "Traceback" not in proc.stderr
