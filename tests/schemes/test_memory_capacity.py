"""report.json's memory section: each party's peak next to its hardware's memory, and who exceeds it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from rich.console import Console

from fleettune.report.comparison import headline
from fleettune.report.summary import summary_table
from tests.cli.invoke import run_cli

GIB = 2**30
ROW = "peak above the party's memory"


def _fleet(server_gib: float, device_gib: float) -> str:
    """A server and a small device of the given memory, and a roomy M3."""
    return f"""
name = "cramped"

[server]
tflops = 10
memory_gib = {server_gib}
power_w = 100

[[device]]
id = "tiny-mcu"
tflops = 0.1
memory_gib = {device_gib}
power_w = 1

[[device]]
id = "roomy"
kind = "apple-m3"
"""


def _report(
    scheme: str, fleet: str, model: Path, data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> dict:
    path = tmp_path / "cramped.toml"
    path.write_text(fleet)
    out = tmp_path / scheme
    argv = [
        "run", "--scheme", scheme, "--model", str(model), "--dataset", "local", "--data-dir", str(data),
        "--fleet", str(path), "--batch-size", "4", "--max-length", "16", "--rounds", "1", "--out", str(out),
    ]  # fmt: skip
    code, err = run_cli(argv, capsys)
    assert code == 0, err
    return json.loads((out / "report.json").read_text())


def _stub() -> dict:
    """The report keys `headline` reads besides memory."""
    final = {"accuracy": 0.5, "macro_f1": 0.5, "worst_client_accuracy": 0.5}
    return {
        "final": final, "time_to_target_s": None, "history": [], "sim_time_s": 1.0, "wall_time_s": 1.0,
        "communication_bytes": {"uplink": 0, "downlink": 0}, "energy_j": {"server": 0.0, "clients": {}},
    }  # fmt: skip


def _summary(report: dict) -> str:
    console = Console(record=True, width=200)
    console.print(summary_table(report))
    return console.export_text()


def test_fl_reports_the_device_whose_whole_model_exceeds_its_memory(
    tiny_model_dir: Path, tiny_data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # 1 MiB on the device: the tiny model alone is about 4 MiB. fl's server holds the global adapter only.
    fleet = _fleet(server_gib=10 / 1024, device_gib=1 / 1024)
    memory = _report("fl", fleet, tiny_model_dir, tiny_data_dir, tmp_path, capsys)["memory_bytes"]
    assert memory["server_capacity"] == 10 * 2**20
    assert memory["clients_capacity"] == {"tiny-mcu": 2**20, "roomy": 16 * GIB}
    assert memory["clients_peak"]["tiny-mcu"] > 2**20 and memory["server_peak"] < 10 * 2**20
    assert memory["over_capacity"] == {"server": False, "clients": ["tiny-mcu"]}
    assert headline({**_stub(), "memory_bytes": memory})["over_capacity"] == memory["over_capacity"]


def test_a_split_server_over_its_memory_is_named_in_the_report_the_summary_and_the_comparison(
    tiny_model_dir: Path, tiny_data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # 1 MiB on the server: SplitFed's two server-side copies of the tiny model's layers need more.
    report = _report("splitfed", _fleet(1 / 1024, 1), tiny_model_dir, tiny_data_dir, tmp_path, capsys)
    memory = report["memory_bytes"]
    assert memory["server_peak"] > memory["server_capacity"] == 2**20
    assert memory["over_capacity"] == {"server": True, "clients": []}
    assert headline(report)["over_capacity"] == {"server": True, "clients": []}
    assert f"{ROW} │ server {memory['server_peak'] / 2**20:,.1f} MiB / 1.0 MiB" in _summary(report)


def test_a_run_within_every_partys_memory_names_nobody(
    tiny_model_dir: Path, tiny_data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report = _report("mesfl", _fleet(16, 1), tiny_model_dir, tiny_data_dir, tmp_path, capsys)
    assert report["memory_bytes"]["over_capacity"] == {"server": False, "clients": []}
    assert headline(report)["over_capacity"] == {"server": False, "clients": []}
    assert ROW not in _summary(report)
    older = {**report, "memory_bytes": {k: v for k, v in report["memory_bytes"].items() if k != "over_capacity"}}
    assert headline(older)["over_capacity"] is None  # a report from before the key: unknown, not "nobody"


def _numbers(over: dict | None) -> dict:
    return {
        "accuracy": 0.5,
        "sim_time_s": 1.0,
        "time_to_target_s": None,
        "server_peak_bytes": 2**20,
        "over_capacity": over,
    }


def _rendered(table: object) -> str:
    console = Console(record=True, width=200)
    console.print(table)
    return console.export_text()


def test_the_compare_table_gains_a_column_only_when_a_party_exceeded_its_memory() -> None:
    from fleettune.cli.run import comparison_table

    above = _numbers({"server": True, "clients": ["nano-1"]})
    text = _rendered(comparison_table({"splitfed": above, "mesfl": _numbers(None)}))
    assert "above its memory" in text
    assert "│ server, nano-1" in text and text.count(" - ") >= 2  # mesfl: no target time, nobody above
    within = _numbers({"server": False, "clients": []})
    assert "above its memory" not in _rendered(comparison_table({"mesfl": within, "sl": _numbers(None)}))
