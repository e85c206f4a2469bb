"""Planning a fleet: each device's cut (and, where asked, LoRA rank) for the fewest seconds per round."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

from fleettune.errors import ConfigError, FleetError
from fleettune.fleet.feasibility import GIB, memory_budget_bytes
from fleettune.fleet.files import Fleet
from fleettune.fleet.profiles import Device, Hardware
from fleettune.planning.costs import CutCosts, Option, price_option
from fleettune.planning.rounds import Cadence, Rounds, Turns, round_lower_bound
from fleettune.planning.search import Assignment, PlanScorer, alone_best, local_search
from fleettune.runtime.sim.clock import StepPhases
from fleettune.scheduling import server_policy

AUTO = "auto"
RANK_CANDIDATES = (4, 8, 16, 32)


@dataclass(frozen=True)
class DevicePlan:
    """One device's planned cut and rank, the client memory they need and the step they give."""

    device: str
    kind: str
    budget_bytes: int
    option: Option

    @property
    def cut(self) -> int:
        return self.option.cut

    @property
    def rank(self) -> int:
        return self.option.rank

    @property
    def memory_bytes(self) -> int:
        return self.option.memory_bytes

    @property
    def phases(self) -> StepPhases:
        return self.option.phases


@dataclass(frozen=True)
class Plan:
    """Every device's plan and its predicted seconds per round under `policy` and `cadence` (None: a round is
    one plain step), beside the best single cut for all (`uniform_cut` None when no cut fits every device),
    the fleet file's own cuts (None when one of them does not fit) and a round no plan can go below under
    any policy (`planning.rounds`). `makespan_s` is the plan's plain step (with `Turns`, the round),
    `aggregating_s` its step that ends with the adapters' round trip (None without a `Cadence`)."""

    policy: str
    devices: tuple[DevicePlan, ...]
    round_s: float
    makespan_s: float
    uniform_cut: int | None
    uniform_round_s: float | None
    written_round_s: float | None = None
    lower_bound_s: float = 0.0
    cadence: Rounds = None
    aggregating_s: float | None = None

    @property
    def ratio_to_uniform(self) -> float | None:
        """Planned over best-uniform seconds per round (at most 1); None without a uniform cut."""
        if self.uniform_round_s is None or self.uniform_round_s == 0:
            return None
        return self.round_s / self.uniform_round_s

    def apply(self, fleet: Fleet) -> Fleet:
        """`fleet` with each device's planned cut and rank written in."""
        chosen = {d.device: d for d in self.devices}
        devices = tuple(replace(d, cut_layer=chosen[d.id].cut, lora_rank=chosen[d.id].rank) for d in fleet.devices)
        return replace(fleet, devices=devices)

    def to_dict(self) -> dict[str, Any]:
        cadence = self.cadence
        turns = cadence if isinstance(cadence, Turns) else None
        return {
            "policy": self.policy,
            "aggregate_every": cadence.aggregate_every if isinstance(cadence, Cadence) else None,
            "local_steps": None if cadence is None else cadence.local_steps,
            "cluster_size": None if turns is None else turns.cluster_size,
            "cluster_by": None if turns is None else turns.cluster_by,
            "round_s": self.round_s,
            "makespan_s": self.makespan_s,
            "aggregating_s": self.aggregating_s,
            "uniform_cut": self.uniform_cut,
            "uniform_round_s": self.uniform_round_s,
            "ratio_to_uniform": self.ratio_to_uniform,
            "written_round_s": self.written_round_s,
            "lower_bound_s": self.lower_bound_s,
            "devices": [
                {
                    "id": d.device,
                    "kind": d.kind,
                    "memory_budget_bytes": d.budget_bytes,
                    "cut_layer": d.cut,
                    "lora_rank": d.rank,
                    "memory_bytes": d.memory_bytes,
                    "up_bytes": d.option.cost.up_bytes,
                    "down_bytes": d.option.cost.down_bytes,
                    "adapter_bytes": d.option.cost.adapter_bytes,
                    "adapter_upload_s": d.option.upload_s,
                    "adapter_download_s": d.option.download_s,
                    "release_s": d.phases.release_s,
                    "processing_s": d.phases.switch_s + d.phases.server_s,
                    "tail_s": d.phases.tail_s,
                    "phases_s": {k: v for k, v in asdict(d.phases).items() if k != "client"},
                }
                for d in self.devices
            ],
        }


def check_rank_candidates(ranks: Sequence[int]) -> tuple[int, ...]:
    """The candidate ranks sorted, each once; ConfigError unless they are integers >= 1."""
    if not ranks or any(isinstance(r, bool) or not isinstance(r, int) or r < 1 for r in ranks):
        raise ConfigError(f"rank candidates must be one or more integers >= 1, got {list(ranks)}")
    return tuple(sorted(set(ranks)))


def _own_rank(device: Device, run_rank: int, candidates: Sequence[int]) -> int:
    """The rank the device trains at; for "auto", the smallest candidate (what decides if a cut is open)."""
    if device.lora_rank == AUTO:
        return candidates[0]
    return run_rank if device.lora_rank is None else int(device.lora_rank)


def _rank_at(device: Device, cut: int, costs: CutCosts, run_rank: int, candidates: Sequence[int]) -> int | None:
    """The device's rank at `cut`, or None when nothing fits: its own or the run's rank if that fits; for
    "auto", the largest candidate that fits."""
    budget = memory_budget_bytes(device)
    if device.lora_rank != AUTO:
        rank = _own_rank(device, run_rank, candidates)
        return rank if costs.memory_bytes(cut, rank) <= budget else None
    # Largest first: when the largest fits, one probe decides.
    return next((r for r in reversed(candidates) if costs.memory_bytes(cut, r) <= budget), None)


def _no_cut_fits(device: Device, costs: CutCosts, run_rank: int, candidates: Sequence[int]) -> FleetError:
    rank = _own_rank(device, run_rank, candidates)
    least = min(costs.cuts, key=lambda cut: (costs.memory_bytes(cut, rank), cut))
    return FleetError(
        f"{device.id}: no cut fits its {device.hardware.memory_gib:.2f} GiB; the least a cut needs is "
        f"{costs.memory_bytes(least, rank) / GIB:.2f} GiB (cut {least}, rank {rank})"
    )


def device_options(
    device: Device, costs: CutCosts, server: Hardware, run_rank: int, candidates: Sequence[int], switch_s: float
) -> list[Option]:
    """Every cut the device's memory allows, shallowest first, with its rank and priced phases."""
    options = []
    for cut in costs.cuts:
        rank = _rank_at(device, cut, costs, run_rank, candidates)
        if rank is None:
            continue
        memory = costs.memory_bytes(cut, rank)
        options.append(price_option(device, cut, rank, memory, costs.cost(cut, rank), server, switch_s))
    if not options:
        raise _no_cut_fits(device, costs, run_rank, candidates)
    return options


def _uniform(options: Sequence[Sequence[Option]], scorer: PlanScorer) -> tuple[int, Assignment] | None:
    """The single cut every device can take with the least score, and its assignment (ties: shallower)."""
    common = set.intersection(*({o.cut for o in device} for device in options))
    best: tuple[int, Assignment] | None = None
    for cut in sorted(common):
        assignment = tuple(next(k for k, o in enumerate(device) if o.cut == cut) for device in options)
        if best is None or scorer(assignment) < scorer(best[1]):
            best = (cut, assignment)
    return best


def _as_written(fleet: Fleet, options: Sequence[Sequence[Option]]) -> Assignment | None:
    """The fleet file's own cuts ("auto": the deepest that fits), or None when one of them does not fit."""
    picks = []
    for device, choices in zip(fleet.devices, options, strict=True):
        if device.cut_layer == AUTO:
            picks.append(len(choices) - 1)
            continue
        pick = next((k for k, option in enumerate(choices) if option.cut == device.cut_layer), None)
        if pick is None:
            return None
        picks.append(pick)
    return tuple(picks)


def plan_fleet(
    fleet: Fleet,
    costs: CutCosts,
    run_rank: int,
    policy: str = "schrage",
    rank_candidates: Sequence[int] = RANK_CANDIDATES,
    switch_s: float = 0.0,
    cadence: Rounds = None,
) -> Plan:
    """Choose every device's cut to minimise the seconds per round under the server's `policy`: with a
    `Cadence`, the mean over its plain steps and the step that ends with the adapters' round trip; with `Turns`,
    the sum of the clusters' turns; with neither, a plain step's makespan.

    A device may take any cut of `costs.cuts` whose client memory fits its budget (all of its memory)
    at its rank: its fleet entry's `lora_rank`, the run's `run_rank` when unset, or for "auto" the
    largest of `rank_candidates` that fits at that cut (so a cut is open to it when the smallest fits).
    Every device is planned, whatever cut its fleet entry names. The search is `local_search` from four
    starts: each device's best cut on its own, the best uniform cut, every device at its deepest cut
    that fits, and the fleet file's own cuts; the plan is never worse than any of them. Deterministic
    given the costs; FleetError naming the device when none of its cuts fits.
    """
    server_policy(policy)  # an unknown policy fails before any cost is measured
    candidates = check_rank_candidates(rank_candidates)
    options = [device_options(d, costs, fleet.server, run_rank, candidates, switch_s) for d in fleet.devices]
    scorer = PlanScorer(options, policy, cadence, fleet.devices)
    uniform = _uniform(options, scorer)
    written = _as_written(fleet, options)
    deepest = tuple(len(choices) - 1 for choices in options)
    alone = alone_best(options, cadence)
    starts = [alone, *([uniform[1]] if uniform else []), deepest, *([written] if written else [])]
    chosen = local_search(starts, scorer)
    devices = tuple(
        DevicePlan(device.id, device.hardware.kind, memory_budget_bytes(device), choices[k])
        for device, choices, k in zip(fleet.devices, options, chosen, strict=True)
    )
    time = scorer.time(chosen)
    return Plan(
        policy=policy,
        devices=devices,
        round_s=time.round_s,
        makespan_s=time.step_s,
        uniform_cut=uniform[0] if uniform else None,
        uniform_round_s=scorer(uniform[1])[0] if uniform else None,
        written_round_s=scorer(written)[0] if written else None,
        lower_bound_s=round_lower_bound(options, cadence, fleet.devices),
        cadence=cadence,
        aggregating_s=time.aggregating_s,
    )
