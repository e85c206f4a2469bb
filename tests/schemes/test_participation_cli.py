"""`fleettune run` with drop-outs: the participation keys of report.json, and bad settings exiting 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fleettune.cli.main import main

FLEET = 'name = "pair"\n[server]\nkind = "rtx-4080-super"\n[[device]]\nid = "a"\nkind = "apple-m3"\n{a}\n'
FLEET += '[[device]]\nid = "b"\nkind = "jetson-nano"\ncut_layer = 2\n{b}\n'


def _argv(model: Path, data: Path, fleet: Path) -> list[str]:
    return [
        "run", "--scheme", "mesfl", "--model", str(model), "--dataset", "local", "--data-dir", str(data),
        "--batch-size", "8", "--max-length", "16", "--rounds", "3", "--fleet", str(fleet), "--set", "switch_ms=1.7",
    ]  # fmt: skip


def _fleet(tmp_path: Path, a: str = "", b: str = "") -> Path:
    path = tmp_path / "pair.toml"
    path.write_text(FLEET.format(a=a, b=b))
    return path


def test_report_has_participation_per_round_and_in_total(
    tiny_model_dir: Path, tiny_data_dir: Path, tmp_path: Path
) -> None:
    (tmp_path / "trace.csv").write_text("round,device_id,online\n2,b,0\n")
    fleet = _fleet(tmp_path, "drop_probability = 1", 'availability_trace = "trace.csv"')
    main([*_argv(tiny_model_dir, tiny_data_dir, fleet), "--out", str(tmp_path / "out")])
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    history = report["history"]
    assert [h["offline"] for h in history] == [[], ["b"], []]
    assert [h["participants"] for h in history] == [["a", "b"], ["a"], ["a", "b"]]
    assert all(h["dropped_disconnect"] == ["a"] and h["dropped_deadline"] == [] for h in history)
    assert history[1]["train_loss"] is None  # nobody completed round 2
    part = report["participation"]
    assert part["rounds"] == 3 and part["client_rounds"] == 5 and part["completed"] == 2 and part["offline"] == 1
    assert part["dropped"] == {"deadline": 0, "disconnect": 3, "total": 3} and part["rounds_without_update"] == 1
    lost = part["lost_work"]
    sent = report["communication_bytes"]["per_client"]["a"]
    assert lost["uplink_bytes"] == sent["uplink"] and lost["downlink_bytes"] == sent["downlink"]
    assert lost["client_s"] > 0 and lost["server_s"] >= 0 and part["deadline_s"] is None


@pytest.mark.parametrize(
    ("setting", "needle"),
    [
        (["--set", "deadline_s=-1"], "deadline_s"),
        (["--set", "deadline_s=0"], "deadline_s"),
        (["--set", "availability=1.5"], "availability"),
        (["--set", "drop_probability=-0.2"], "drop_probability"),
        (["FLEET", "drop_probability = 1.2", ""], "device.0.drop_probability"),
        (["FLEET", "", "availability = -1"], "device.1.availability"),
        (["FLEET", 'availability_trace = "gone.csv"', ""], "gone.csv does not exist"),
        (["FLEET", 'availability_trace = "bad.csv"', ""], "bad.csv line 3: online must be 0 or 1"),
    ],
)
def test_bad_participation_settings_exit_2_with_one_line(
    setting: list[str],
    needle: str,
    tiny_model_dir: Path,
    tiny_data_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    (tmp_path / "bad.csv").write_text("round,device_id,online\n1,a,1\n2,a,maybe\n")
    argv = _argv(tiny_model_dir, tiny_data_dir, _fleet(tmp_path))
    if setting[0] == "FLEET":
        argv = _argv(tiny_model_dir, tiny_data_dir, _fleet(tmp_path, setting[1], setting[2]))
    else:
        argv += setting
    with pytest.raises(SystemExit) as info:
        main([*argv, "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip() and "preparing" not in line]
    assert info.value.code == 2 and len(lines) == 1, err
    assert needle in lines[0] and "Traceback" not in err
