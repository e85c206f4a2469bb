"""Server-ordering policies side by side: one training step's makespan on several fleets and models.

    python benchmarks/scheduling/run.py --models minilm,mpnet-base --out benchmarks/scheduling/results

Each step is priced by the cost model (FLOPs counted on the real stages, encoded payload bytes,
the shared server's measured adapter switch). Besides the `mesfl` policies and the preemptive lower
bound, the same jobs are run under processor sharing, which is how SplitFed-V1's per-client server
copies share one server (no adapter switch).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from fleettune.fleet import Fleet, generate_fleet, load_fleet
from fleettune.fleet.feasibility import ClientMemoryModel, resolve_fleet_cuts
from fleettune.models.catalog import resolve_model
from fleettune.models.loading import task_models
from fleettune.models.lora import LoraSpec
from fleettune.models.stages import Task
from fleettune.planning.step import fleet_step_phases
from fleettune.scheduling import Job, compare_policies, sharing_schedule

BATCH, LENGTH = 16, 128


def fleets() -> dict[str, Fleet]:
    """The case study's fleet, and generated fleets with every device at cut 1 (the server runs all
    other layers) where the server is loaded: many clients, fast links."""
    return {
        "paper6": load_fleet("paper6"),
        "gen20 cut 1 (100 Mbps)": generate_fleet(20, 1, cut_layer=1),
        "gen60 cut 1 (1 Gbps)": generate_fleet(60, 2, uplink_mbps=1000.0, downlink_mbps=1000.0, cut_layer=1),
        "gen60 cut 1 (200-1000 Mbps)": generate_fleet(
            60, 3, uplink_mbps=(200.0, 1000.0), downlink_mbps=(200.0, 1000.0), cut_layer=1
        ),
    }


def price(fleet: Fleet, model: str) -> dict[str, Any]:
    new_model = task_models(resolve_model(model), Task.CLASSIFICATION, num_labels=6)
    lora = LoraSpec(rank=16)
    num_layers = int(new_model().config.num_hidden_layers)
    memory = ClientMemoryModel(new_model, lora, Task.CLASSIFICATION)
    devices = resolve_fleet_cuts(fleet, num_layers, memory.of_cut(BATCH, LENGTH))
    phases = fleet_step_phases(devices, new_model, lora, Task.CLASSIFICATION, BATCH, LENGTH)
    jobs = [Job(p.client, p.release_s, p.switch_s + p.server_s, p.tail_s) for p in phases]
    makespans = compare_policies(jobs)
    shared = [Job(p.client, p.release_s, p.server_s, p.tail_s) for p in phases]
    makespans["processor sharing (splitfed)"] = sharing_schedule(shared).makespan_s
    optimal = makespans["optimal"]
    busy = sum(j.processing_s for j in jobs)
    return {
        "devices": len(jobs),
        "switch_ms": phases[0].switch_s * 1e3,
        "server_busy_fraction": busy / optimal,
        "makespan_ms": {k: v * 1e3 for k, v in makespans.items()},
        "ratio_to_optimal": {k: v / optimal for k, v in makespans.items()},
        "schrage_not_above_fifo": makespans["schrage"] <= makespans["fifo"] + 1e-12,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="minilm,mpnet-base")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    results: dict[str, dict[str, Any]] = {}
    for model in args.models.split(","):
        for name, fleet in fleets().items():
            numbers = price(fleet, model)
            results[f"{model} / {name}"] = numbers
            ratios = numbers["ratio_to_optimal"]
            print(
                f"{model:10s} {name:24s} server busy {numbers['server_busy_fraction']:6.1%}  "
                + "  ".join(f"{k.split(' ')[0]} {v:.4f}" for k, v in ratios.items())
            )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
