"""What every scheme receives (the run set-up) and returns (its result), and the scheme registry."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import numpy as np
import torch
from transformers import PreTrainedModel

from fleettune.aggregation.policy import AggregationNote, AggregationPolicy, PolicySpec
from fleettune.aggregation.ranks import RankMix
from fleettune.aggregation.secure import SecAggTotals
from fleettune.compression import Codec, parse_update_codec
from fleettune.data import Split
from fleettune.fleet import Device, Hardware
from fleettune.messages import FP32_PADDED, CutWire
from fleettune.models.lora import LoraSpec
from fleettune.models.stages import Task
from fleettune.privacy.client import ClientPrivacy
from fleettune.registry import Registry
from fleettune.runtime.events import Event
from fleettune.runtime.ledger import EnergyLedger, TrafficLedger
from fleettune.runtime.memory import MemoryBreakdown
from fleettune.runtime.progress import RoundRecord
from fleettune.runtime.sim.participation import STREAM, Participation, ParticipationTotals
from fleettune.runtime.stop import StopRequest
from fleettune.schemes.batching import BatchSource
from fleettune.schemes.evaluator import EvalResult, Evaluator
from fleettune.training import LocalOptimizer

NOISE_STREAM = 4  # the run's RNG stream (`RunSetup.rng(NOISE_STREAM)`) seeding the DP noise of aggregation
DEVICE_NOISE_STREAM = 8  # `RunSetup.rng(DEVICE_NOISE_STREAM, index)`: client `index`'s activation and DP-SGD noise
SECAGG_STREAM = 9  # the simulated secure-aggregation protocol's secrets


@dataclass(frozen=True)
class TrainingPlan:
    """How long and how hard to train: explicit numbers, resolved from the config by the runner."""

    rounds: int
    epochs: float | None
    local_steps: int
    local_epochs: float | None
    batch_size: int
    lr: float
    local_opt: LocalOptimizer
    lr_schedule: str
    client_fraction: float
    aggregate_every: int
    eval_every: int
    target_accuracy: float | None
    seed: int
    max_grad_norm: float | None = None  # split stages cannot clip a global norm without exchanging it
    stop_at_target: bool = False  # end the run at the first evaluation that reaches target_accuracy
    client_sampling: str = "fixed"  # fl: "fixed" or "poisson" (`schemes.fl.draw_clients`)

    def reached(self, accuracy: float | None) -> bool:
        if not self.stop_at_target or self.target_accuracy is None or accuracy is None:
            return False
        return accuracy >= self.target_accuracy


@dataclass
class ClientData:
    id: str
    device: Device
    train: Split


@dataclass
class RunSetup:
    plan: TrainingPlan
    task: Task
    lora: LoraSpec
    num_labels: int
    new_model: Callable[[], PreTrainedModel]  # a fresh pretrained task model (same head init each call)
    train: Split
    clients: list[ClientData]
    server: Hardware
    batches: BatchSource
    evaluator: Evaluator
    on_round: Callable[[RoundRecord], None] = field(default=lambda record: None)
    scheduler: str = "schrage"  # server order policy of `mesfl`
    cluster_size: int = 3  # clients per cluster in `cpsl`
    cluster_by: str = "speed"  # `cpsl`'s clusters: "speed" (similar speed) or "cut" (clients sharing a cut)
    switch_s: float | None = None  # adapter switch cost on the shared server; None: measured once
    wire: CutWire = FP32_PADDED  # how cut tensors travel
    updates: Codec = field(default_factory=lambda: parse_update_codec("fp32"))  # how adapter traffic travels
    deadline_s: float | None = None  # a round's deadline in virtual seconds (sl, cpsl: a turn's); None: none
    ranks: dict[str, int] = field(default_factory=dict)  # a client's LoRA rank when not `lora.rank`
    mixed_ranks: str = "hetlora"  # how adapters of different ranks are combined (see RankMix)
    safeguards: PolicySpec = field(default_factory=PolicySpec)  # robust rule, DP and update attack of aggregation
    client_privacy: ClientPrivacy | None = None  # what every device applies before anything leaves it; None: off
    stop: StopRequest = field(default_factory=StopRequest)  # set: end the run after the round in progress

    def last_round(self, round_index: int) -> bool:
        """Whether the run ends with round `round_index` (0-based): its last planned round, or the round in
        progress when a stop was requested. Read it once per round: a request can arrive at any moment."""
        return round_index == self.plan.rounds - 1 or self.stop.requested

    def rng(self, *stream: int) -> np.random.Generator:
        """An independent random stream per purpose, all derived from the run's seed."""
        return np.random.default_rng([self.plan.seed, *stream])

    def lora_for(self, client: str) -> LoraSpec:
        """The LoRA setting `client` trains with (its own rank, the run's other settings)."""
        rank = self.ranks.get(client, self.lora.rank)
        return self.lora if rank == self.lora.rank else replace(self.lora, rank=rank)

    def rank_mix(self) -> RankMix:
        """How this run's client adapters are aggregated, given their ranks."""
        ranks = {c.id: self.ranks.get(c.id, self.lora.rank) for c in self.clients}
        return RankMix(ranks, self.lora.alpha, self.mixed_ranks, self.plan.seed)

    def aggregation_policy(self) -> AggregationPolicy:
        """A fresh aggregation policy whose DP noise (and simulated secure aggregation) draw from the run's own
        seeded streams."""
        seed = int(self.rng(NOISE_STREAM).integers(2**62))
        secure_seed = int(self.rng(SECAGG_STREAM).integers(2**62))
        return AggregationPolicy(self.safeguards, torch.Generator().manual_seed(seed), secure_seed)

    def privacy_for(self, index: int) -> ClientPrivacy | None:
        """Client `index`'s privacy settings, its noise seeded from the run's seed and the index (None: off)."""
        if self.client_privacy is None or not self.client_privacy.active:
            return None
        return self.client_privacy.seeded(int(self.rng(DEVICE_NOISE_STREAM, index).integers(2**62)))

    def participation(self) -> Participation:
        """The run's availability, disconnect and deadline draws, over its clients in order."""
        return Participation([c.device for c in self.clients], self.deadline_s, self.rng(STREAM))


@dataclass
class SchemeResult:
    history: list[RoundRecord]
    final: EvalResult
    server_memory: MemoryBreakdown
    client_memory: dict[str, MemoryBreakdown]
    traffic: TrafficLedger
    energy: EnergyLedger
    sim_time_s: float
    parameters: int
    trainable_parameters: int
    events: list[Event] = field(default_factory=list)
    step_losses: list[float] = field(default_factory=list)  # mean training loss of every optimizer step
    participation: ParticipationTotals = field(default_factory=ParticipationTotals)
    aggregations: list[AggregationNote] = field(default_factory=list)  # beyond plain FedAvg: who sent, who was kept
    # Report sections computed on the final model after training (`backdoor`, `membership`, `inversion`).
    assessments: dict[str, dict[str, Any]] = field(default_factory=dict)
    adapter: dict[str, torch.Tensor] | None = None  # the final global adapter (full-model keys), where one exists
    # Per client, for privacy accounting: optimizer steps of its own parameters (all its local work, including
    # work a dropout later discarded), and batches whose cut activations it sent (split schemes).
    client_steps: dict[str, int] = field(default_factory=dict)
    cut_batches: dict[str, int] = field(default_factory=dict)
    secure_aggregation: SecAggTotals | None = None  # what the protocol did, in runs that aggregate through it


class Scheme(Protocol):
    """A training scheme: the round structure that turns a set-up into a result."""

    def __call__(self, setup: RunSetup) -> SchemeResult: ...


SCHEMES: Registry[Scheme] = Registry("scheme")
