"""Time to target of `mesfl` against `cpsl` over several seeds of one setting.

    python benchmarks/casestudy/seeds.py benchmarks/casestudy/results/minilm-fedavgm-lr2-I3 \\
        benchmarks/casestudy/results/minilm-fedavgm-lr2-I3-seed1 ... --out benchmarks/casestudy/results/SUMMARY.json

Each directory is one `run.py --out` holding a `cpsl` and a `mesfl` report trained with the same seed. A run
that stopped below the target counts as not reached; its ratio is then bounded from below by its run's
virtual time. Writes the per-seed table as JSON and prints it as markdown.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from fleettune.report import finished_report, round_to_target


def _scheme(run: Path, scheme: str) -> dict[str, Any]:
    report = finished_report(run / scheme / "report.json")
    if report is None:
        raise SystemExit(
            f"error: {run / scheme / 'report.json'} is missing or its run was interrupted; "
            "expected the report of a finished run.py run"
        )
    history = report["history"]
    return {
        "seed": report["seed"],
        "rounds_run": len(history),
        "round_to_target": round_to_target(report),
        "time_to_target_s": report["time_to_target_s"],
        "sim_time_s": report["sim_time_s"],
        "best_accuracy": max((h["accuracy"] for h in history if h["accuracy"] is not None), default=None),
    }


def seed_row(run: Path) -> dict[str, Any]:
    """One seed: both schemes' figures and mesfl/cpsl's time-to-target ratio (or its lower bound)."""
    cpsl, mesfl = _scheme(run, "cpsl"), _scheme(run, "mesfl")
    if cpsl["seed"] != mesfl["seed"]:
        raise SystemExit(f"error: {run}: cpsl has seed {cpsl['seed']} and mesfl seed {mesfl['seed']}; expected one")
    row: dict[str, Any] = {"run": run.name, "seed": cpsl["seed"], "cpsl": cpsl, "mesfl": mesfl}
    base = cpsl["time_to_target_s"]
    if base is None:
        row["ratio"], row["ratio_at_least"] = None, None
    elif mesfl["time_to_target_s"] is not None:
        row["ratio"], row["ratio_at_least"] = mesfl["time_to_target_s"] / base, None
    else:
        row["ratio"], row["ratio_at_least"] = None, mesfl["sim_time_s"] / base
    return row


def _cell(scheme: dict[str, Any]) -> str:
    if scheme["round_to_target"] is None:
        return f"not reached in {scheme['rounds_run']} rounds (best {scheme['best_accuracy']:.3f})"
    return f"round {scheme['round_to_target']}, {scheme['time_to_target_s']:.1f} s"


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = ["| seed | cpsl: 0.89 at | mesfl: 0.89 at | mesfl / cpsl |", "|---|---|---|---|"]
    for row in rows:
        ratio = f"{row['ratio']:.3f}" if row["ratio"] is not None else f"> {row['ratio_at_least']:.3f}"
        lines.append(f"| {row['seed']} | {_cell(row['cpsl'])} | {_cell(row['mesfl'])} | {ratio} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run.py output directories, one per seed")
    parser.add_argument("--out", type=Path, required=True, help="JSON file for the per-seed table")
    args = parser.parse_args()
    rows = [seed_row(run) for run in args.runs]
    met = sum(1 for row in rows if row["ratio"] is not None and row["ratio"] <= 0.60)
    summary = {"seeds": rows, "met_0_60": met, "of": len(rows)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=2) + "\n")
    print(markdown(rows))
    print(f"\nmesfl / cpsl <= 0.60 in {met} of {len(rows)} seeds")


if __name__ == "__main__":
    main()
