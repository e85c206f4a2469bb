"""What a device trains in `fl`: the whole model with its adapter, on its own batches, a few local steps
per round (the simulation's local trainer, `schemes.local.train_local`)."""

from __future__ import annotations

from collections.abc import Iterator

from fleettune.data import Batch
from fleettune.draws import PartyDraws
from fleettune.models.adapters import AdapterState, read_adapter, write_adapter
from fleettune.models.stages import FullModel
from fleettune.privacy.client import ClientPrivacy
from fleettune.runtime.memory import MemoryBreakdown
from fleettune.schemes.local import train_local
from fleettune.training import LocalOptimizer


class LocalLearner:
    def __init__(
        self,
        model: FullModel,
        batches: Iterator[Batch],
        lr: float,
        local_opt: LocalOptimizer,
        schedule: str,
        privacy: ClientPrivacy | None = None,
        *,
        draws: PartyDraws,
    ) -> None:
        self.model, self.batches, self.privacy, self.draws = model, batches, privacy, draws
        self.lr, self.local_opt, self.schedule = lr, local_opt, schedule
        self.received_peak = 0
        self.last_loss = 0.0
        self._memory = MemoryBreakdown()

    def train(self, steps: int, round_index: int, rounds: int) -> float:
        """`steps` optimizer steps (a fresh optimizer each round, as in simulation); their mean loss."""
        run = train_local(
            self.model,
            self.batches,
            steps,
            lr=self.lr,
            local_opt=self.local_opt,
            schedule=self.schedule,
            schedule_offset=round_index,
            schedule_total=rounds,
            max_grad_norm=None,
            received_bytes=self.received_peak,
            draws=self.draws,
            privacy=self.privacy,
        )
        self._memory = self._memory.peak_with(run.memory)
        self.last_loss = run.mean_loss
        return run.mean_loss

    def read(self) -> AdapterState:
        return read_adapter(self.model.peft)

    def write(self, state: AdapterState) -> None:
        write_adapter(self.model.peft, state)

    def memory(self) -> MemoryBreakdown:
        return self._memory
