"""A device in split training: its client stage, optimizer and data, turning batches into messages."""

from __future__ import annotations

import copy
from collections.abc import Iterator, Sequence
from typing import Any

import torch

from fleettune.aggregation.hetero import merge_into
from fleettune.data import Batch
from fleettune.draws import PartyDraws
from fleettune.fleet import Device
from fleettune.messages import CutActivations, CutGradients
from fleettune.models.adapters import AdapterState, read_adapter, task_model, write_adapter
from fleettune.models.stages import ClientStage
from fleettune.privacy.activations import protect_activations
from fleettune.privacy.client import ClientPrivacy
from fleettune.privacy.dpsgd import private_backward
from fleettune.runtime.memory import ActivationMeter, MemoryBreakdown, measure
from fleettune.training import LocalOptimizer, make_optimizer, set_lr, trainable_parameters


class SplitClient:
    """Runs embeddings + layers [0, cut) and keeps the autograd graph until the cut gradient returns.

    With `privacy`, what leaves the device is protected first: the cut activations are clipped per sample and
    noised (`fleettune.privacy.activations`), and the client stage's gradient is DP-SGD's (per-sample clipping of
    the gradients the returned cut gradient induces, noise on their sum). The client back-propagates through the
    clipping: the server's gradient is with respect to the protected tensor it received.
    """

    def __init__(
        self,
        id: str,
        device: Device,
        cut: int,
        stage: ClientStage,
        batches: Iterator[Batch],
        num_samples: int,
        lr: float,
        local_opt: LocalOptimizer,
        privacy: ClientPrivacy | None = None,
        *,
        draws: PartyDraws,
    ) -> None:
        self.id = id
        self.device = device
        self.cut = cut
        self.stage = stage
        self.batches = batches
        self.num_samples = num_samples
        self.lr = lr
        self.optimizer = make_optimizer(trainable_parameters(stage), lr, local_opt)
        self.draws = draws  # this device's dropout masks
        self._pending: torch.Tensor | None = None
        self._meter = ActivationMeter()
        self.activation_peak = 0
        self.received_peak = 0
        self.privacy = privacy if privacy is not None and privacy.active else None
        self._noise = self.privacy.generator() if self.privacy is not None else None
        self.batches_sent = 0  # forwards whose activations left the device (privacy accounting)
        self.steps_taken = 0  # optimizer steps of the client stage

    def next_batch(self) -> Batch:
        return next(self.batches)

    def forward(self, batch: Batch, step: int) -> CutActivations:
        self.stage.train()
        privacy = self.privacy
        with self.draws.drawing(), self._meter.track(weights=self.stage.parameters()):
            hidden = self.stage(batch.input_ids, batch.attention_mask)
            if privacy is not None and privacy.activation_clip is not None:
                assert self._noise is not None
                hidden = protect_activations(
                    hidden, batch.attention_mask, privacy.activation_clip, privacy.activation_noise, self._noise
                )
        self.activation_peak = max(self.activation_peak, self._meter.peak)
        self._pending = hidden
        self.batches_sent += 1
        return CutActivations(self.id, step, hidden.detach(), batch.attention_mask, batch.labels)

    def backward(self, gradients: CutGradients, lr_factor: float, received_bytes: int) -> None:
        if self._pending is None or gradients.client != self.id:
            raise RuntimeError(f"client {self.id}: gradient for {gradients.client} without a pending forward")
        self.received_peak = max(self.received_peak, received_bytes)
        set_lr(self.optimizer, self.lr, lr_factor)
        privacy = self.privacy
        if privacy is not None and privacy.dpsgd_clip is not None:
            assert self._noise is not None
            # The server's loss is the batch mean: sample i's own loss gradient is n times its slice.
            cotangents = gradients.grad.to(self._pending.dtype) * self._pending.shape[0]
            private_backward(
                self.stage, self._pending, cotangents, privacy.dpsgd_clip, privacy.dpsgd_noise, self._noise
            )
        else:
            self._pending.backward(gradients.grad)
        self._pending = None
        self.optimizer.step()
        self.steps_taken += 1
        self.optimizer.zero_grad(set_to_none=True)

    def read(self) -> AdapterState:
        return read_adapter(self.stage.peft)

    def write(self, state: AdapterState) -> None:
        write_adapter(self.stage.peft, state)

    def merge_base(self, deltas: dict[str, torch.Tensor]) -> None:
        """Fold dense updates (keyed by module path in the task model) into the stage's base weights."""
        merge_into(task_model(self.stage.peft), deltas)

    def reset_optimizer(self) -> None:
        """Forget the optimizer's moments: the adapter they belonged to was replaced."""
        self.optimizer.state.clear()

    def fold(self, deltas: Sequence[dict[str, torch.Tensor]], fresh: AdapterState) -> None:
        """Fold stacked adapters' dense updates into the base weights, in order, and go on from the fresh
        adapter `fresh` with new optimizer moments (flora's aggregation, on the client's side)."""
        for update in deltas:
            self.merge_base(update)
        self.write(fresh)
        self.reset_optimizer()

    def snapshot(self) -> tuple[AdapterState, dict[str, Any]]:
        """The client-side adapter and its optimizer's state, to go back to if this round's work is lost."""
        return self.read(), copy.deepcopy(self.optimizer.state_dict())

    def restore(self, snapshot: tuple[AdapterState, dict[str, Any]]) -> None:
        self.write(snapshot[0])
        self.optimizer.load_state_dict(copy.deepcopy(snapshot[1]))

    def memory(self) -> MemoryBreakdown:
        return measure(self.stage, self.optimizer, self.activation_peak, self.received_peak)
