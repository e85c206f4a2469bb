"""Builds and writes report.json: every key CONTRACTS.md promises, from measured values only."""

from __future__ import annotations

import json
import os
import platform
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from fleettune import __version__
from fleettune.aggregation.policy import AggregationNote, DpSpec, PolicySpec
from fleettune.config import RunConfig, resolved_dict
from fleettune.fleet import Fleet
from fleettune.fleet.feasibility import GIB, memory_budget_bytes
from fleettune.report.privacy_runs import activations_section, dpsgd_section, secure_aggregation_section
from fleettune.runner import PreparedRun
from fleettune.runtime.memory import MemoryBreakdown
from fleettune.runtime.progress import RoundRecord
from fleettune.runtime.sim.participation import ParticipationTotals
from fleettune.schemes import SchemeResult, TrainingPlan


def _at_target(history: list[RoundRecord], target: float | None) -> RoundRecord | None:
    """The first round whose evaluated test accuracy reached `target`."""
    if target is None:
        return None
    return next((r for r in history if r.accuracy is not None and r.accuracy >= target), None)


def round_to_target(report: dict[str, Any]) -> int | None:
    """A report's first round whose evaluation reached its target accuracy (None if none did): its
    `round_to_target`, or for a report written before that key existed, read off its history."""
    if "round_to_target" in report:
        value = report["round_to_target"]
        return None if value is None else int(value)
    target = report.get("target_accuracy")
    if target is None:
        return None
    reached = (h["round"] for h in report["history"] if h["accuracy"] is not None and h["accuracy"] >= target)
    return next(reached, None)


def stop_reason(plan: TrainingPlan, history: list[RoundRecord], stop_requested: bool) -> str:
    """Why a run ended: "planned" (it ran every planned round), "target" (it stopped at its target accuracy, as
    asked) or "interrupted" (it was asked to stop and ended after the round in progress)."""
    if history and len(history) < plan.rounds:
        if plan.reached(history[-1].accuracy):
            return "target"
        if stop_requested:
            return "interrupted"
    # Every round ran: `central` may run one round fewer than planned when its fractional epochs round down to
    # whole batches.
    return "planned"


def _breakdown(memory: MemoryBreakdown) -> dict[str, int]:
    return {**asdict(memory), "total": memory.total}


def participation_section(totals: ParticipationTotals, rounds: int, deadline_s: float | None) -> dict[str, Any]:
    """Totals over the run in client-rounds, and the work spent by clients in rounds they were dropped from."""
    return {
        "rounds": rounds,
        "deadline_s": deadline_s,
        "client_rounds": totals.client_rounds,
        "completed": totals.completed,
        "offline": totals.offline,
        "dropped": {
            "deadline": totals.dropped_deadline,
            "disconnect": totals.dropped_disconnect,
            "total": totals.dropped_deadline + totals.dropped_disconnect,
        },
        "rounds_without_update": totals.rounds_without_update,
        "lost_work": asdict(totals.lost_work),
    }


def privacy_section(dp: DpSpec | None, history: list[RoundRecord]) -> dict[str, Any]:
    """The DP mechanism of aggregation and the epsilon spent by the end (nulls when updates were not clipped)."""
    if dp is None:
        keys = (
            "mechanism",
            "noise_multiplier",
            "clip",
            "delta",
            "sample_rate",
            "sampling",
            "target_epsilon",
            "epsilon",
        )
        return dict.fromkeys(keys)
    return {
        "mechanism": dp.mechanism,
        "noise_multiplier": dp.noise_multiplier,
        "clip": dp.clip,
        "delta": dp.delta,
        "sample_rate": dp.sample_rate,
        "sampling": dp.sampling,
        "target_epsilon": dp.target_epsilon,
        "epsilon": history[-1].epsilon if history else None,
    }


def security_section(config: RunConfig, spec: PolicySpec, notes: list[AggregationNote]) -> dict[str, Any]:
    """The aggregation rule, the simulated attack and its clients, and each non-FedAvg aggregation's inputs."""
    security = config.security
    return {
        "aggregator": security.aggregator,
        "byzantine": security.byzantine,
        "trim": security.trim,
        "flame_noise": security.flame_noise,
        "attack": security.attack,
        "attack_scale": security.attack_scale,
        "malicious_clients": list(spec.malicious),
        "aggregations": [
            {"round": n.round, "clients": list(n.clients), "selected": None if n.selected is None else list(n.selected)}
            for n in notes
        ],
    }


def runtime_section() -> dict[str, Any]:
    """What decides a run's floating-point results besides its config: library versions, the number of
    threads torch splits a reduction over, and the CPU kernel family it dispatches to. The same code and
    config repeat a run bit for bit only with these the same."""
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "machine": platform.machine(),
    }


def memory_section(fleet: Fleet, result: SchemeResult) -> dict[str, Any]:
    """Each party's measured peak next to the memory its hardware has, and the parties whose peak exceeds
    it (`over_capacity`: whether the server's does, and the ids of the devices whose do). A run goes on past
    its parties' memory, since comparing what schemes need is the point, so this is where a plan that could
    not run shows."""
    server_capacity = int(fleet.server.memory_gib * GIB)
    capacities = {d.id: memory_budget_bytes(d) for d in fleet.devices}
    clients_capacity = {c: capacities[c] for c in result.client_memory if c in capacities}
    over = {
        "server": result.server_memory.total > server_capacity,
        "clients": [c for c, m in result.client_memory.items() if c in capacities and m.total > capacities[c]],
    }
    return {
        "server_peak": result.server_memory.total,
        "clients_peak": {c: m.total for c, m in result.client_memory.items()},
        "server_breakdown": _breakdown(result.server_memory),
        "clients_breakdown": {c: _breakdown(m) for c, m in result.client_memory.items()},
        "server_capacity": server_capacity,
        "clients_capacity": clients_capacity,
        "over_capacity": over,
    }


def build_report(prepared: PreparedRun, result: SchemeResult, wall_time_s: float) -> dict[str, Any]:
    config = prepared.config
    fleet = prepared.fleet
    client_ids = [d.id for d in fleet.devices]
    final = result.final
    reached = _at_target(result.history, config.target_accuracy)
    return {
        "fleettune_version": __version__,
        "runtime": runtime_section(),
        "scheme": config.scheme,
        "seed": config.seed,
        "config": resolved_dict(config),
        "model": {
            "name": prepared.model_source.name,
            "layers": prepared.num_layers,
            "parameters": result.parameters,
            "trainable_parameters": result.trainable_parameters,
        },
        "dataset": {
            "name": prepared.dataset.name,
            "train_samples": len(prepared.dataset.train),
            "test_samples": len(prepared.dataset.test),
            "labels": list(prepared.dataset.label_names),
        },
        "fleet": {
            "name": fleet.name,
            "devices": [
                {
                    "id": d.id,
                    "kind": d.hardware.kind,
                    "cut_layer": d.cut_layer,
                    "lora_rank": prepared.setup.ranks.get(d.id, config.lora.rank),
                }
                for d in fleet.devices
            ],
            "plan": None if prepared.plan is None else prepared.plan.to_dict(),
        },
        "history": [asdict(r) for r in result.history],
        "rounds_planned": prepared.setup.plan.rounds,
        "stopped": stop_reason(prepared.setup.plan, result.history, prepared.setup.stop.requested),
        "participation": participation_section(result.participation, len(result.history), config.deadline_s),
        "privacy": {
            **privacy_section(prepared.setup.safeguards.dp, result.history),
            "membership": result.assessments.get("membership"),
            "inversion": result.assessments.get("inversion"),
            "activations": activations_section(config.privacy, prepared.setup, result),
            "dpsgd": dpsgd_section(config.privacy, prepared.setup, result),
            "secure_aggregation": secure_aggregation_section(result.secure_aggregation, client_ids),
        },
        "security": {
            **security_section(config, prepared.setup.safeguards, result.aggregations),
            "backdoor": result.assessments.get("backdoor"),
        },
        "final": {
            "accuracy": final.scores.accuracy,
            "macro_f1": final.scores.macro_f1,
            "per_client_accuracy": final.clients.per_client,
            "worst_client_accuracy": final.clients.worst,
            "client_accuracy_std": final.clients.std,
        },
        "target_accuracy": config.target_accuracy,
        "time_to_target_s": None if reached is None else reached.sim_time_s,
        "round_to_target": None if reached is None else reached.round,
        "memory_bytes": memory_section(fleet, result),
        "communication_bytes": {
            "uplink": result.traffic.total_uplink(),
            "downlink": result.traffic.total_downlink(),
            "per_client": result.traffic.per_client(client_ids),
            "by_kind": {kind: dict(totals) for kind, totals in sorted(result.traffic.kinds.items())},
        },
        "energy_j": {"server": result.energy.server_j, "clients": dict(result.energy.clients_j)},
        # Virtual time and energy come from the cost model: FLOPs counted on the real computation
        # over each party's TFLOPS, payload bytes over link rates; energy is power x busy time.
        "time_basis": "cost-model",
        "timeline": [
            {**asdict(e), "activity": e.activity.value} for e in result.events
        ],  # the first rounds' events (split schemes): who computes and transfers when
        "sim_time_s": result.sim_time_s,
        "wall_time_s": wall_time_s,
    }


def finished_report(path: Path) -> dict[str, Any] | None:
    """The report at `path` when it exists and its run was not interrupted (None otherwise): what a script that
    keeps earlier reports may reuse. Reports from before runs could be interrupted have no "stopped" key."""
    if not path.is_file():
        return None
    report = json.loads(path.read_text())
    if not isinstance(report, dict):
        raise ValueError(f"{path} holds a JSON {type(report).__name__}, not a report")
    return None if report.get("stopped") == "interrupted" else report


def write_report(report: dict[str, Any], out_dir: Path, name: str = "report.json") -> Path:
    """Write atomically: a crash never leaves a half-written report behind."""
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / name
    fd, temp = tempfile.mkstemp(dir=out_dir, prefix=f".{name}.", suffix=".tmp")
    with os.fdopen(fd, "w") as handle:
        json.dump(report, handle, indent=2)
        handle.write("\n")
    os.replace(temp, target)
    return target
