"""The step that ends with an aggregation: server orders chosen with and without the adapter upload in each tail.

    python benchmarks/scheduling/aggregating.py --models minilm,mpnet-base --out benchmarks/scheduling/results

In a round of `mesfl` that aggregates, each device sends its client-side adapter as soon as its own backward
ends, and the aggregation starts when the last upload has arrived. A device at a deep cut has a large adapter
part to send. Each policy orders the server once on the step's tails (downlink + client backward) and once on
tails that add the upload; both orders are scored by the moment the last upload arrives. Steps are priced by
the cost model (FLOPs counted on the real stages, encoded payload bytes, the measured adapter switch); each
upload is the encoded fp32 payload of the client-side adapter at the device's cut.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np

from fleettune.compression import parse_cut_codec, send_state
from fleettune.compression.specs import parse_update_codec
from fleettune.fleet import Fleet, generate_fleet, load_fleet
from fleettune.fleet.cost import uplink_s
from fleettune.messages import FP32_PADDED, CutWire
from fleettune.models.adapters import read_adapter
from fleettune.models.catalog import resolve_model
from fleettune.models.loading import task_models
from fleettune.models.lora import LoraSpec
from fleettune.models.stages import Task, client_stage
from fleettune.planning.step import fleet_step_phases
from fleettune.scheduling import SCHEDULERS, Job

BATCH, LENGTH = 16, 128
POLICIES = ("fifo", "greedy", "schrage", "optimal")
FAST_KINDS = ("snapdragon-8-gen3", "snapdragon-8s-gen3", "apple-a17-pro", "jetson-orin-nano")


def mixed_cuts(fleet: Fleet, seed: int, deepest: int) -> Fleet:
    """`fleet` with each device's cut drawn uniformly from 1..`deepest`."""
    cuts = np.random.default_rng(seed).integers(1, deepest + 1, size=len(fleet.devices))
    devices = tuple(dataclasses.replace(d, cut_layer=int(c)) for d, c in zip(fleet.devices, cuts, strict=True))
    return dataclasses.replace(fleet, devices=devices)


def scenarios() -> dict[str, tuple[Fleet, CutWire, int | None]]:
    """The case study's fleet as the paper runs it, and a loaded server: 60 fast devices at 1 Gbps with
    int8 unpadded cut tensors of CARER-length texts (24 tokens), cuts 1 to 3."""
    int8 = parse_cut_codec("int8", "int8")
    loaded = generate_fleet(60, 4, kinds=FAST_KINDS, uplink_mbps=1000.0, downlink_mbps=1000.0, cut_layer=1)
    return {
        "paper6 (fp32 padded, 100 Mbps)": (load_fleet("paper6"), FP32_PADDED, None),
        "gen60 cuts 1-3 (int8 unpadded, 1 Gbps)": (mixed_cuts(loaded, 5, 3), CutWire(int8, int8, True), 24),
    }


def last_upload_s(jobs: list[Job], upload: dict[str, float], policy: str, with_upload: bool) -> float:
    """When the last adapter upload arrives if `policy` orders the server on tails with or without it."""
    ordered = [dataclasses.replace(j, tail_s=j.tail_s + upload[j.id]) for j in jobs] if with_upload else jobs
    schedule = SCHEDULERS.get(policy)(ordered)
    return max(schedule.completion_s[j.id] + j.tail_s + upload[j.id] for j in jobs)


def price(model: str, fleet: Fleet, wire: CutWire, real_tokens: int | None) -> dict[str, Any]:
    new_model = task_models(resolve_model(model), Task.CLASSIFICATION, num_labels=6)
    lora = LoraSpec(rank=16)
    fp32 = parse_update_codec("fp32")
    part_bytes = {
        cut: len(send_state(fp32, read_adapter(client_stage(new_model(), cut, lora, Task.CLASSIFICATION).peft)))
        for cut in sorted({int(d.cut_layer) for d in fleet.devices})
    }
    phases = fleet_step_phases(fleet, new_model, lora, Task.CLASSIFICATION, BATCH, LENGTH, wire, real_tokens)
    devices = {d.id: d for d in fleet.devices}
    upload = {p.client: uplink_s(devices[p.client], part_bytes[int(devices[p.client].cut_layer)]) for p in phases}
    jobs = [Job(p.client, p.release_s, p.switch_s + p.server_s, p.tail_s) for p in phases]
    ends = {
        policy: {
            "step_tails_ms": last_upload_s(jobs, upload, policy, False) * 1e3,
            "tails_with_upload_ms": last_upload_s(jobs, upload, policy, True) * 1e3,
        }
        for policy in POLICIES
    }
    best = ends["optimal"]["tails_with_upload_ms"]
    for row in ends.values():
        row["gain"] = row["tails_with_upload_ms"] / row["step_tails_ms"]
        row["step_tails_to_best"] = row["step_tails_ms"] / best
        row["with_upload_to_best"] = row["tails_with_upload_ms"] / best
    busy = sum(j.processing_s for j in jobs)
    return {
        "devices": len(jobs),
        "adapter_part_bytes": part_bytes,
        "server_busy_fraction": busy / (best / 1e3),
        "last_upload": ends,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="minilm,mpnet-base")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    results: dict[str, dict[str, Any]] = {}
    for model in args.models.split(","):
        for name, (fleet, wire, real_tokens) in scenarios().items():
            numbers = price(model, fleet, wire, real_tokens)
            results[f"{model} / {name}"] = numbers
            print(f"{model:10s} {name:40s} server busy {numbers['server_busy_fraction']:6.1%}")
            for policy, row in numbers["last_upload"].items():
                print(
                    f"    {policy:8s} step tails {row['step_tails_ms']:9.1f} ms  with upload "
                    f"{row['tails_with_upload_ms']:9.1f} ms  ratio {row['gain']:.4f}"
                )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "aggregating.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
