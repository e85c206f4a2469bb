"""The six-device case study: every scheme on CARER and the paper6 fleet, ratios next to the paper's.

    python benchmarks/casestudy/run.py --model minilm --lr 1e-3 --out benchmarks/casestudy/results/minilm-lr1e-3

Writes one report per scheme, results.json (headline numbers, ratios, the fl memory check) and
plots into --out. Runs stop at the target accuracy (or after --max-rounds). Schemes listed in
--short run only --short-rounds rounds: enough for their memory and their virtual time per round
(constant here: every batch has the same padded shape). --reuse keeps the reports already in --out.
--set KEY=VALUE sets a config key of every scheme this run trains.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from fleettune.cli.run import train_one
from fleettune.config import build_config
from fleettune.errors import RunInterrupted
from fleettune.fleet import load_fleet
from fleettune.report import finished_report
from fleettune.report.comparison import comparison
from fleettune.report.plots import accuracy_over_time, memory_bars, round_gantt

PAPER = {  # ratios ours/baseline reported for the case study (FACTS section 1)
    "server_memory_mesfl_over_splitfed": 0.21,
    "server_memory_mesfl_over_cpsl": 1.10,
    "time_to_target_mesfl_over_cpsl": 0.60,
    "time_to_target_mesfl_over_splitfed": 0.94,
}
GIB = 2**30


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else a / b


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="minilm")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--data-dir", default="../shared/data/carer", help="run from the repository root")
    parser.add_argument("--schemes", default="sl,cpsl,splitfed,mesfl,fl")
    parser.add_argument("--max-rounds", type=int, default=400)
    parser.add_argument("--eval-every", type=int, default=10)
    parser.add_argument("--max-eval-samples", type=int, default=1000)
    parser.add_argument("--partition", default="iid")
    parser.add_argument("--aggregate-every", type=int, default=1, help="I: rounds between mesfl/splitfed aggregations")
    parser.add_argument("--server-opt", default="none", help="server_optimizer.name of mesfl, splitfed and fl")
    parser.add_argument("--server-lr", type=float, default=None, help="server_optimizer.lr (default: its own)")
    parser.add_argument("--short", default="", help="schemes run for --short-rounds rounds only")
    parser.add_argument("--short-rounds", type=int, default=5)
    parser.add_argument(
        "--set",
        dest="sets",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a config key for every scheme this run trains (repeatable), e.g. optimizer=sgd",
    )
    parser.add_argument("--reuse", action="store_true", help="keep reports already written in --out")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    short = set(filter(None, args.short.split(",")))

    common: dict[str, Any] = {
        "model": args.model,
        "dataset": "carer",
        "data_dir": args.data_dir,
        "fleet": "paper6",
        "partition": args.partition,
        "lora.rank": 16,
        "batch_size": 16,
        "max_length": 128,
        "padding": "max_length",  # the paper's fixed 128-token cut tensors
        "lr": args.lr,
        "lr_schedule": "constant",
        "target_accuracy": 0.89,
        "stop_at_target": True,
        "eval_every": args.eval_every,
        "max_eval_samples": args.max_eval_samples,
        "rounds": args.max_rounds,
    }
    reports: dict[str, dict[str, Any]] = {}
    started = time.perf_counter()
    for scheme in args.schemes.split(","):
        existing = finished_report(args.out / scheme / "report.json") if args.reuse else None
        if existing is not None:
            reports[scheme] = existing
            continue
        flags = {**common, "scheme": scheme}
        if scheme == "fl":
            flags["local_steps"] = 1  # one batch per client per round, like the split schemes
        if scheme in ("mesfl", "splitfed"):
            flags["aggregate_every"] = args.aggregate_every
        if scheme in ("fl", "mesfl", "splitfed") and args.server_opt != "none":
            flags["server_optimizer.name"] = args.server_opt
            if args.server_lr is not None:
                flags["server_optimizer.lr"] = args.server_lr
        if scheme in short:
            flags.update(rounds=args.short_rounds, stop_at_target=False, eval_every=args.short_rounds)
        try:
            reports[scheme] = train_one(build_config(flags=flags, overrides=args.sets), args.out / scheme)
        except RunInterrupted as stopped:  # its report is written; --reuse will train it again
            raise SystemExit(f"{stopped}; the schemes before it are kept for --reuse") from None
    numbers = comparison(reports)
    for scheme, report in reports.items():
        history = report["history"]
        numbers[scheme]["sim_time_per_round_s"] = history[-1]["sim_time_s"] / len(history)

    def get(scheme: str, key: str) -> float | None:
        return numbers.get(scheme, {}).get(key)

    ours = {
        "server_memory_mesfl_over_splitfed": _ratio(
            get("mesfl", "server_peak_bytes"), get("splitfed", "server_peak_bytes")
        ),
        "server_memory_mesfl_over_cpsl": _ratio(get("mesfl", "server_peak_bytes"), get("cpsl", "server_peak_bytes")),
        "time_to_target_mesfl_over_cpsl": _ratio(get("mesfl", "time_to_target_s"), get("cpsl", "time_to_target_s")),
        "time_to_target_mesfl_over_splitfed": _ratio(
            get("mesfl", "time_to_target_s"), get("splitfed", "time_to_target_s")
        ),
    }
    # A mesfl run stopped below the target still bounds its ratio from below: it needs more than its run's time.
    bounds = {
        f"mesfl_over_{other}": _ratio(get("mesfl", "sim_time_s"), get(other, "time_to_target_s"))
        for other in ("cpsl", "splitfed")
        if get("mesfl", "time_to_target_s") is None and get(other, "time_to_target_s") is not None
    }
    fleet = load_fleet("paper6")
    feasibility = {}
    if "fl" in reports:
        need = max(reports["fl"]["memory_bytes"]["clients_peak"].values())
        feasibility = {
            d.id: {
                "memory_gib": d.hardware.memory_gib,
                "fl_needs_gib": need / GIB,
                "fits": need <= d.hardware.memory_gib * GIB,
            }
            for d in fleet.devices
        }
    per_round = {
        f"time_per_round_mesfl_over_{other}": _ratio(
            get("mesfl", "sim_time_per_round_s"), get(other, "sim_time_per_round_s")
        )
        for other in ("cpsl", "splitfed", "sl")
    }
    results = {
        "settings": {
            **{k: v for k, v in common.items() if k != "data_dir"},
            "aggregate_every": args.aggregate_every,
            "server_optimizer": args.server_opt,
            "server_lr": args.server_lr,
            "set": args.sets,
        },
        "short_runs": sorted(short & set(reports)),
        "schemes": numbers,
        "ratios": {k: {"ours": ours[k], "paper": PAPER[k]} for k in PAPER},
        "time_to_target_at_least": bounds,
        "per_round_time_ratios": per_round,
        "fl_memory_feasibility": feasibility,
        "benchmark_wall_time_s": time.perf_counter() - started,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    memory_bars(reports, args.out / "memory.png")
    accuracy_over_time(reports, 0.89, args.out / "accuracy_time.png")
    if "mesfl" in reports:
        round_gantt(reports["mesfl"]["timeline"], 0, "mesfl: one round", args.out / "mesfl_round.png")
    print(json.dumps({"ratios": results["ratios"], "time_to_target_at_least": bounds}, indent=2))


if __name__ == "__main__":
    main()
