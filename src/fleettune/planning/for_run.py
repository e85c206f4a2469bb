"""A fleet's plan for one run's settings: measure the model's per-cut costs, then search."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from transformers import PreTrainedModel

from fleettune.compression.base import Codec
from fleettune.fleet import Fleet
from fleettune.messages import CutWire
from fleettune.models.lora import LoraSpec
from fleettune.models.stages import Task
from fleettune.planning.measured import MeasuredCosts
from fleettune.planning.plan import RANK_CANDIDATES, Plan, plan_fleet
from fleettune.planning.rounds import Rounds
from fleettune.training import DEFAULT_LOCAL, LocalOptimizer


@dataclass(frozen=True)
class PlannedRun:
    plan: Plan
    costs: MeasuredCosts
    switch_s: float  # the adapter switch every plan was scored with


def plan_for_run(
    fleet: Fleet,
    new_model: Callable[[], PreTrainedModel],
    lora: LoraSpec,
    task: Task,
    batch_size: int,
    seq_len: int,
    wire: CutWire,
    policy: str,
    switch_s: float | None = None,
    rank_candidates: Sequence[int] = RANK_CANDIDATES,
    real_tokens: int | None = None,
    local: LocalOptimizer = DEFAULT_LOCAL,
    cadence: Rounds = None,
    updates: Codec | None = None,
) -> PlannedRun:
    """Plan every device of `fleet` for steps of `batch_size` x `seq_len` tokens sent as `wire`, and with a
    `cadence`, for its aggregations too (adapter parts encoded with `updates`, default fp32).

    Without a given `switch_s`, one switch is measured with every client at the shallowest cut (where
    the server holds the most adapter layers) and stands for every plan, so plans compare fairly."""
    costs = MeasuredCosts(new_model, lora, task, batch_size, seq_len, wire, real_tokens, local, updates)
    if switch_s is None:
        switch_s = costs.switch_s([costs.cuts[0]] * len(fleet.devices))
    plan = plan_fleet(fleet, costs, lora.rank, policy, rank_candidates, switch_s, cadence)
    return PlannedRun(plan, costs, switch_s)
