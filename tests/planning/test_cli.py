"""`fleettune plan` on the tiny BERT folder, and its bad-input contract (one line, exit code 2)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fleettune.cli.main import main

FLEET = """name = "tiny"
[server]
tflops = 0.001
memory_gib = 8
power_w = 100

[[device]]
id = "fast"
tflops = 0.001
memory_gib = 1
power_w = 5
lora_rank = "auto"
uplink_mbps = 1000
downlink_mbps = 1000

[[device]]
id = "own-rank"
tflops = 0.001
memory_gib = 1
power_w = 5
lora_rank = 4

[[device]]
id = "slow"
tflops = 0.0001
memory_gib = 1
power_w = 5
cut_layer = 2
"""

STARVED = """
[[device]]
id = "starved-sensor"
tflops = 0.001
memory_gib = 0.001
power_w = 1
"""


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        main(argv)
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture
def fleet_file(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.toml"
    path.write_text(FLEET)
    return path


def _argv(fleet: Path, model: Path, *extra: str) -> list[str]:
    return [
        "plan", "--fleet", str(fleet), "--model", str(model), "--batch-size", "2", "--max-length", "8",
        "--lora-rank", "4", "--ranks", "2,4,8", "--set", "switch_ms=0", *extra,
    ]  # fmt: skip


def test_plan_prints_a_table_and_writes_json(
    fleet_file: Path, tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "plans" / "plan.json"
    code, stdout, _ = _run(_argv(fleet_file, tiny_model_dir, "--json", str(out)), capsys)
    assert code == 0
    assert "planned round (schrage, adapters averaged every round)" in stdout
    assert "best uniform cut" in stdout and "(lower bound)" in stdout and "adapter up/down (ms)" in stdout
    assert all(name in stdout for name in ("fast", "own-rank", "slow"))
    plan = json.loads(out.read_text())
    assert plan["layers"] == 4 and plan["policy"] == "schrage" and plan["switch_s"] == 0.0
    devices = {d["id"]: d for d in plan["devices"]}
    assert list(devices) == ["fast", "own-rank", "slow"]
    assert all(1 <= d["cut_layer"] <= 3 for d in devices.values())
    assert all(d["memory_bytes"] <= d["memory_budget_bytes"] for d in devices.values())
    assert devices["fast"]["lora_rank"] == 8  # "auto": the largest candidate, as 1 GiB holds it
    assert devices["own-rank"]["lora_rank"] == 4 and devices["slow"]["lora_rank"] == 4
    assert plan["aggregate_every"] == 1 and plan["local_steps"] == 1 and plan["scheme"] == "mesfl"
    assert plan["round_s"] <= plan["uniform_round_s"] and plan["round_s"] <= plan["written_round_s"]
    assert plan["ratio_to_uniform"] == pytest.approx(plan["round_s"] / plan["uniform_round_s"])
    assert 0 < plan["lower_bound_s"] <= plan["round_s"]
    # every round aggregates: the step plus the adapter parts' round trip
    assert plan["round_s"] == pytest.approx(plan["aggregating_s"]) and plan["aggregating_s"] > plan["makespan_s"]
    assert all(d["adapter_bytes"] > 0 and d["adapter_upload_s"] > 0 for d in devices.values())


def test_a_compressed_cut_shrinks_the_planned_uplink(
    fleet_file: Path, tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plain, packed = tmp_path / "fp32.json", tmp_path / "int8.json"
    assert _run(_argv(fleet_file, tiny_model_dir, "--json", str(plain)), capsys)[0] == 0
    argv = _argv(fleet_file, tiny_model_dir, "--set", "compression.activations=int8", "--json", str(packed))
    assert _run(argv, capsys)[0] == 0
    fp32, int8 = json.loads(plain.read_text()), json.loads(packed.read_text())
    assert int8["compression"]["activations"] == "int8"
    assert all(b["up_bytes"] < a["up_bytes"] / 2 for a, b in zip(fp32["devices"], int8["devices"], strict=True))


def test_rarer_aggregations_and_the_schemes_that_hand_one_adapter_on(
    fleet_file: Path, tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every fourth round, a plan's round is three plain steps and the aggregating one, over four; `sl` plans
    turns of one device: each device's hand-off download, step and upload, first come, first served."""
    rare, handed = tmp_path / "rare.json", tmp_path / "sl.json"
    code, stdout, _ = _run(_argv(fleet_file, tiny_model_dir, "--aggregate-every", "4", "--json", str(rare)), capsys)
    assert code == 0 and "adapters averaged every 4 rounds" in stdout
    plan = json.loads(rare.read_text())
    assert plan["aggregate_every"] == 4
    assert plan["round_s"] == pytest.approx((3 * plan["makespan_s"] + plan["aggregating_s"]) / 4, rel=1e-12)
    code, stdout, _ = _run(_argv(fleet_file, tiny_model_dir, "--set", "scheme=sl", "--json", str(handed)), capsys)
    assert code == 0 and "planned round (fifo, one device a turn)" in stdout and "adapter up/down" in stdout
    plan = json.loads(handed.read_text())
    assert plan["aggregate_every"] is None and plan["aggregating_s"] is None
    assert (plan["cluster_size"], plan["cluster_by"], plan["local_steps"]) == (1, "speed", 1)
    assert plan["round_s"] == plan["makespan_s"]
    turns = [
        d["adapter_download_s"] + d["release_s"] + d["processing_s"] + d["tail_s"] + d["adapter_upload_s"]
        for d in plan["devices"]
    ]
    assert plan["round_s"] == pytest.approx(sum(turns), rel=1e-12)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"--fleet": "no-such-fleet"}, "unknown fleet 'no-such-fleet'"),
        ({"--model": "no-such-model"}, "unknown model 'no-such-model'"),
        ({"--policy": "lifo"}, "unknown policy 'lifo'"),
        ({"--ranks": "4,eight"}, "--ranks"),
        ({"--ranks": "0,4"}, "rank candidates"),
        ({"--real-tokens": "9"}, "--real-tokens"),
        ({"--aggregate-every": "0"}, "aggregate_every"),
    ],
)
def test_bad_input_exits_2_with_one_line(
    change: dict[str, str],
    message: str,
    fleet_file: Path,
    tiny_model_dir: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = _argv(fleet_file, tiny_model_dir)
    for flag, value in change.items():
        argv += [flag, value]  # a repeated option: the last one wins
    code, _, err = _run(argv, capsys)
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("fleettune: error:") and message in err


def test_a_device_that_fits_no_cut_exits_2_naming_it(
    tmp_path: Path, tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "starved.toml"
    path.write_text(FLEET + STARVED)
    code, _, err = _run(_argv(path, tiny_model_dir), capsys)
    assert code == 2
    assert err.count("\n") == 1 and "starved-sensor: no cut fits" in err
