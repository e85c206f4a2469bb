"""One training step of a fleet priced by the cost model: each device's phases, from measured FLOPs and bytes."""

from __future__ import annotations

from collections.abc import Callable

from transformers import PreTrainedModel

from fleettune.fleet import Fleet
from fleettune.messages import FP32_PADDED, CutWire
from fleettune.models.lora import LoraSpec
from fleettune.models.stages import Task
from fleettune.planning.costs import price_step
from fleettune.planning.measured import SWITCH_REPEATS, MeasuredCosts
from fleettune.runtime.sim.clock import StepPhases

__all__ = ["SWITCH_REPEATS", "fleet_step_phases"]


def fleet_step_phases(
    fleet: Fleet,
    new_model: Callable[[], PreTrainedModel],
    lora: LoraSpec,
    task: Task,
    batch_size: int,
    seq_len: int,
    wire: CutWire = FP32_PADDED,
    real_tokens: int | None = None,
) -> list[StepPhases]:
    """Phases of one step of every device at its (integer) cut and the run's rank, on a batch of `seq_len`
    tokens of which the first `real_tokens` (default: all) are real; cut tensors travel as `wire` says.
    The per-cut costs and their pricing are the planner's (`fleettune.planning`)."""
    costs = MeasuredCosts(new_model, lora, task, batch_size, seq_len, wire, real_tokens)
    cuts = [int(d.cut_layer) for d in fleet.devices]
    switch_s = costs.switch_s(cuts)
    return [
        price_step(device, costs.cost(cut, lora.rank), fleet.server, switch_s)
        for device, cut in zip(fleet.devices, cuts, strict=True)
    ]
