"""The case study's per-seed summary: ratios, lower bounds for runs stopped below the target, refusals."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "casestudy" / "seeds.py"


@pytest.fixture(scope="module")
def seeds() -> ModuleType:
    spec = importlib.util.spec_from_file_location("casestudy_seeds", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _report(
    run: Path, scheme: str, seed: int, accuracies: list[float], per_round_s: float, stopped: str = "planned"
) -> None:
    history: list[dict[str, Any]] = [
        {"round": r, "sim_time_s": r * per_round_s, "accuracy": acc} for r, acc in enumerate(accuracies, start=1)
    ]
    reached = [h["sim_time_s"] for h in history if h["accuracy"] >= 0.89]
    report = {
        "seed": seed,
        "target_accuracy": 0.89,
        "history": history,
        "time_to_target_s": reached[0] if reached else None,
        "sim_time_s": history[-1]["sim_time_s"],
        "stopped": stopped,
    }
    (run / scheme).mkdir(parents=True)
    (run / scheme / "report.json").write_text(json.dumps(report))


def test_reached_ratio_and_lower_bound(seeds: ModuleType, tmp_path: Path) -> None:
    _report(tmp_path / "a", "cpsl", 0, [0.5, 0.7, 0.9, 0.91], 2.0)  # 0.89 at round 3: 6 s
    _report(tmp_path / "a", "mesfl", 0, [0.5, 0.95], 1.5)  # round 2: 3 s
    _report(tmp_path / "b", "cpsl", 1, [0.5, 0.9], 4.0)  # round 2: 8 s
    _report(tmp_path / "b", "mesfl", 1, [0.6, 0.6, 0.6, 0.7], 1.0)  # never: ran 4 s
    a, b = seeds.seed_row(tmp_path / "a"), seeds.seed_row(tmp_path / "b")
    assert a["ratio"] == pytest.approx(0.5) and a["ratio_at_least"] is None
    assert a["mesfl"]["round_to_target"] == 2 and a["cpsl"]["round_to_target"] == 3
    assert b["ratio"] is None and b["ratio_at_least"] == pytest.approx(0.5)
    assert b["mesfl"]["best_accuracy"] == pytest.approx(0.7)
    table = seeds.markdown([a, b])
    assert "| 0 | round 3, 6.0 s | round 2, 3.0 s | 0.500 |" in table
    assert "| 1 | round 2, 8.0 s | not reached in 4 rounds (best 0.700) | > 0.500 |" in table


def test_main_writes_summary_and_refuses_mixed_seeds(
    seeds: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _report(tmp_path / "a", "cpsl", 0, [0.9], 2.0)
    _report(tmp_path / "a", "mesfl", 0, [0.9], 1.0)
    out = tmp_path / "summary.json"
    monkeypatch.setattr(sys, "argv", ["seeds.py", str(tmp_path / "a"), "--out", str(out)])
    seeds.main()
    summary = json.loads(out.read_text())
    assert (summary["met_0_60"], summary["of"]) == (1, 1)  # 1 s / 2 s = 0.5
    _report(tmp_path / "mixed", "cpsl", 0, [0.9], 2.0)
    _report(tmp_path / "mixed", "mesfl", 3, [0.9], 1.0)
    monkeypatch.setattr(sys, "argv", ["seeds.py", str(tmp_path / "mixed"), "--out", str(out)])
    with pytest.raises(SystemExit, match="cpsl has seed 0 and mesfl seed 3"):
        seeds.main()
    monkeypatch.setattr(sys, "argv", ["seeds.py", str(tmp_path / "none"), "--out", str(out)])
    with pytest.raises(SystemExit, match=r"report\.json is missing or its run was interrupted"):
        seeds.main()
    _report(tmp_path / "cut", "cpsl", 0, [0.9], 2.0)
    _report(tmp_path / "cut", "mesfl", 0, [0.6, 0.7], 1.0, stopped="interrupted")  # not a run to its end
    monkeypatch.setattr(sys, "argv", ["seeds.py", str(tmp_path / "cut"), "--out", str(out)])
    with pytest.raises(SystemExit, match=r"mesfl/report\.json is missing or its run was interrupted"):
        seeds.main()
