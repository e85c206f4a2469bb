"""Fewer bytes at the cut: codecs and unpadding in real runs, a loaded server's schedulers, the planner.

    python benchmarks/communication/run.py --out benchmarks/communication/results \\
        --baseline benchmarks/communication/results/codecs/fp32-padded/report.json

Three parts, each written to its own JSON in --out (and summarised in summary.json):

* `codecs`: `mesfl` on CARER and `paper6` (MiniLM, the case study's settings: LoRA r16, batch 16,
  cut tensors padded to 128 tokens, lr 1e-3, target 0.89) with each cut codec, with and without
  unpadding. Per setting: cut bytes per step (both directions, from the runs' ledgers), virtual time
  per round, rounds and virtual time to 0.89 and the accuracy, next to fp32 padded. --baseline reuses
  an existing fp32-padded report of the same settings and clock instead of running it again.
* `schedulers`: one step of 60 fast devices (phones and Jetson Orins) at 1 Gbps sending int8 unpadded
  cut tensors of CARER-length texts, so that the server is the bottleneck; every ordering policy.
* `planner`: `fleettune plan`'s search on generated 20-device fleets against the best uniform cut, for
  MiniLM and MPNet, fp32 padded and int8 unpadded cut tensors, the catalogue's mix of devices at
  100 Mbps and fast devices at 1 Gbps.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from transformers import PreTrainedModel

from fleettune.cli.run import train_one
from fleettune.compression import parse_cut_codec
from fleettune.config import build_config
from fleettune.fleet import Fleet, generate_fleet
from fleettune.messages import CutWire
from fleettune.models.catalog import resolve_model
from fleettune.models.loading import task_models
from fleettune.models.lora import LoraSpec
from fleettune.models.stages import Task
from fleettune.planning import MeasuredCosts, plan_fleet
from fleettune.planning.step import fleet_step_phases
from fleettune.report import finished_report, round_to_target
from fleettune.scheduling import Job, compare_policies, sharing_schedule

DEFAULT_DATA = "../shared/data/carer"  # run from the repository root, with ../shared beside it
TARGET = 0.89
SETTINGS = {  # name: (activations codec, gradients codec, unpad)
    "fp32 padded": ("fp32", "fp32", False),
    "fp32 unpadded": ("fp32", "fp32", True),
    "fp16": ("fp16", "fp16", False),
    "bf16": ("bf16", "bf16", False),
    "int8": ("int8", "int8", False),
    "int4": ("int4", "int4", False),
    "topk:0.1": ("topk:0.1", "topk:0.1", False),
    "fp16 unpadded": ("fp16", "fp16", True),
    "int8 unpadded": ("int8", "int8", True),
}
FAST_KINDS = ("snapdragon-8-gen3", "snapdragon-8s-gen3", "apple-a17-pro", "jetson-orin-nano")
PLANNER_FAST_KINDS = (*FAST_KINDS, "apple-m3", "midrange-phone")


def _slug(name: str) -> str:
    return name.replace(" ", "-").replace(":", "")


def run_codecs(args: argparse.Namespace) -> dict[str, Any]:
    common: dict[str, Any] = {
        "scheme": "mesfl",
        "model": "minilm",
        "dataset": "carer",
        "data_dir": args.data_dir,
        "fleet": "paper6",
        "lora.rank": 16,
        "batch_size": 16,
        "max_length": 128,
        "padding": "max_length",
        "lr": 1e-3,
        "lr_schedule": "constant",
        "target_accuracy": TARGET,
        "stop_at_target": True,
        "eval_every": args.eval_every,
        "max_eval_samples": 1000,
        "rounds": args.max_rounds,
    }
    rows: dict[str, dict[str, Any]] = {}
    short = set(args.short.split(",")) if args.short else set()
    for name in args.settings.split(","):
        activations, gradients, unpad = SETTINGS[name]
        report_path = args.out / "codecs" / _slug(name) / "report.json"
        if name == "fp32 padded" and args.baseline is not None:
            report = json.loads(Path(args.baseline).read_text())
        elif args.reuse and (kept := finished_report(report_path)) is not None:
            report = kept
        else:
            flags = {
                **common,
                "compression.activations": activations,
                "compression.gradients": gradients,
                "compression.unpad": unpad,
            }
            if name in short:  # a prefix of the run only, compared round by round with fp32 padded
                flags.update(rounds=args.short_rounds, stop_at_target=False)
            report = train_one(build_config(flags=flags), report_path.parent)
        rows[name] = _summary(report)
    base = rows.get("fp32 padded")
    for row in rows.values():
        if base is not None:
            _compare(row, base)
    return rows


def _compare(row: dict[str, Any], base: dict[str, Any]) -> None:
    """`row` next to fp32 padded: byte and time ratios, accuracy at the rounds both evaluated, and whether its
    training was identical (the same mean loss every round it ran)."""
    row["cut_bytes_vs_fp32_padded"] = base["cut_bytes_per_step"] / row["cut_bytes_per_step"]
    row["time_per_round_vs_fp32_padded"] = row["sim_time_per_round_s"] / base["sim_time_per_round_s"]
    row["accuracy_at_matched_rounds"] = {
        r: [acc, base["accuracy_by_round"][r]]
        for r, acc in row["accuracy_by_round"].items()
        if r in base["accuracy_by_round"]
    }
    losses, base_losses = row["train_loss_by_round"], base["train_loss_by_round"]
    row["training_identical_to_fp32_padded"] = all(base_losses.get(r) == loss for r, loss in losses.items())
    if row["time_to_target_s"] is not None and base["time_to_target_s"] is not None:
        row["time_to_target_vs_fp32_padded"] = row["time_to_target_s"] / base["time_to_target_s"]
    elif row["training_identical_to_fp32_padded"] and base["rounds_to_target"] is not None:
        # Identical training reaches the target at fp32 padded's round; this setting's mean virtual time per
        # round (measured over the rounds it ran) prices those rounds. An estimate, labelled as one.
        estimate = base["rounds_to_target"] * row["sim_time_per_round_s"]
        row["estimated_time_to_target_s"] = estimate
        row["estimated_time_to_target_vs_fp32_padded"] = estimate / base["time_to_target_s"]


def _summary(report: dict[str, Any]) -> dict[str, Any]:
    history = report["history"]
    kinds = report["communication_bytes"].get("by_kind")
    steps = len(history) * len(report["fleet"]["devices"])  # one step per device per round here
    if kinds is not None:
        cut = kinds["cut"]["uplink"] + kinds["cut"]["downlink"]
    else:  # reports written before the ledger split its kinds: the adapter traffic is not separable
        cut = report["communication_bytes"]["uplink"] + report["communication_bytes"]["downlink"]
    evaluated = [h for h in history if h["accuracy"] is not None]
    compression = report["config"]["compression"]
    return {
        "compression": compression,
        "rounds": len(history),
        "cut_bytes_per_step": cut / steps,
        "cut_bytes_exact": kinds is not None,
        "sim_time_per_round_s": history[-1]["sim_time_s"] / len(history),
        "rounds_to_target": round_to_target(report),
        "time_to_target_s": report["time_to_target_s"],
        "final_accuracy": report["final"]["accuracy"],
        "accuracy_by_round": {str(h["round"]): h["accuracy"] for h in evaluated},
        "train_loss_by_round": {str(h["round"]): h["train_loss"] for h in history},
        "wall_time_s": report["wall_time_s"],
    }


def _new_model(name: str) -> Callable[[], PreTrainedModel]:
    """A factory of CARER-sized (6-label) task models of catalogue model `name`."""
    return task_models(resolve_model(name), Task.CLASSIFICATION, num_labels=6)


def run_schedulers(real_tokens: int) -> dict[str, Any]:
    new_model = _new_model("minilm")
    fleet = generate_fleet(60, 4, kinds=FAST_KINDS, uplink_mbps=1000.0, downlink_mbps=1000.0, cut_layer=1)
    wire = CutWire(parse_cut_codec("int8", "int8"), parse_cut_codec("int8", "int8"), True)
    phases = fleet_step_phases(fleet, new_model, LoraSpec(rank=16), Task.CLASSIFICATION, 16, 128, wire, real_tokens)
    jobs = [Job(p.client, p.release_s, p.switch_s + p.server_s, p.tail_s) for p in phases]
    started = time.perf_counter()
    makespans = compare_policies(jobs)
    solve_s = time.perf_counter() - started
    shared = [Job(p.client, p.release_s, p.server_s, p.tail_s) for p in phases]
    makespans["processor sharing (splitfed)"] = sharing_schedule(shared).makespan_s
    best = makespans["optimal"]
    busy = sum(j.processing_s for j in jobs)
    return {
        "fleet": "60 devices of " + ", ".join(FAST_KINDS) + ", cut 1, 1 Gbps, int8 unpadded",
        "real_tokens": real_tokens,
        "server_busy_fraction": busy / best,
        "makespan_s": makespans,
        "ratio_to_optimal": {k: v / best for k, v in makespans.items()},
        "policies_wall_s": solve_s,
    }


def _wires() -> dict[str, tuple[CutWire, int | None]]:
    fp32, int8 = parse_cut_codec("fp32", "fp32"), parse_cut_codec("int8", "int8")
    return {"fp32 padded": (CutWire(fp32, fp32, False), None), "int8 unpadded": (CutWire(int8, int8, True), 24)}


def planner_fleets(seed: int) -> dict[str, Fleet]:
    """The catalogue's mix at 100 Mbps (Raspberry Pis included), and fast devices at 1 Gbps."""
    return {
        "gen:20 (every kind, 100 Mbps)": generate_fleet(20, seed),
        "gen:20 (phones, Orin, M3, 1 Gbps)": generate_fleet(
            20, seed, kinds=PLANNER_FAST_KINDS, uplink_mbps=1000.0, downlink_mbps=1000.0
        ),
    }


def run_planner(models: list[str], seeds: list[int]) -> list[dict[str, Any]]:
    rows = []
    for model in models:
        new_model = _new_model(model)
        lora = LoraSpec(rank=16)
        for wire_name, (wire, real_tokens) in _wires().items():
            costs = MeasuredCosts(new_model, lora, Task.CLASSIFICATION, 16, 128, wire, real_tokens)
            switch_s = costs.switch_s([costs.cuts[0]] * 20)
            for seed in seeds:
                for fleet_name, fleet in planner_fleets(seed).items():
                    # One plain step (no cadence): this part compares cut-tensor codecs, not aggregations.
                    plan = plan_fleet(fleet, costs, lora.rank, "schrage", switch_s=switch_s)
                    rows.append(
                        {
                            "model": model,
                            "wire": wire_name,
                            "fleet": fleet_name,
                            "seed": seed,
                            "planned_makespan_s": plan.makespan_s,
                            "uniform_cut": plan.uniform_cut,
                            "uniform_makespan_s": plan.uniform_round_s,
                            "ratio_to_uniform": plan.ratio_to_uniform,
                            "lower_bound_s": plan.lower_bound_s,  # no plan's step is shorter, under any policy
                            "bound_to_uniform": plan.lower_bound_s / plan.uniform_round_s
                            if plan.uniform_round_s
                            else None,
                            "cuts": sorted(d.cut for d in plan.devices),
                            "devices_over_memory": [d.device for d in plan.devices if d.memory_bytes > d.budget_bytes],
                        }
                    )
                    bound = plan.lower_bound_s / plan.makespan_s if plan.makespan_s else 1.0
                    print(model, wire_name, fleet_name, seed, f"{plan.ratio_to_uniform:.3f} bound/plan {bound:.3f}")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default="codecs,schedulers,planner")
    parser.add_argument("--settings", default=",".join(SETTINGS))
    parser.add_argument("--max-rounds", type=int, default=600)
    parser.add_argument("--eval-every", type=int, default=5)
    parser.add_argument("--baseline", default=None, help="an fp32-padded mesfl report of the same settings")
    parser.add_argument("--reuse", action="store_true", help="keep codec reports already written in --out")
    parser.add_argument("--short", default="", help="codec settings to run for --short-rounds only, not to target")
    parser.add_argument("--short-rounds", type=int, default=20)
    parser.add_argument("--real-tokens", type=int, default=24, help="CARER's typical length, for the schedulers")
    parser.add_argument("--planner-seeds", default="0,1,2")
    parser.add_argument("--planner-models", default="minilm,mpnet-base")
    parser.add_argument("--data-dir", default=DEFAULT_DATA)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    parts = set(args.parts.split(","))
    summary: dict[str, Any] = {}
    if "schedulers" in parts:
        summary["schedulers"] = run_schedulers(args.real_tokens)
    if "planner" in parts:
        seeds = [int(s) for s in args.planner_seeds.split(",")]
        summary["planner"] = run_planner(args.planner_models.split(","), seeds)
    if "codecs" in parts:
        summary["codecs"] = run_codecs(args)
    for name, part in summary.items():
        (args.out / f"{name}.json").write_text(json.dumps(part, indent=2) + "\n")
    print(json.dumps({k: v for k, v in summary.items() if k != "codecs"}, indent=2))


if __name__ == "__main__":
    main()
