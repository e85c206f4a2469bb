"""A party training its own whole model for some steps, with its footprint measured."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from fleettune.data import Batch
from fleettune.draws import PartyDraws
from fleettune.models.stages import FullModel, Task
from fleettune.privacy.client import ClientPrivacy
from fleettune.privacy.dpsgd import private_backward
from fleettune.runtime.memory import ActivationMeter, MemoryBreakdown, measure
from fleettune.runtime.sim.flop_book import FlopBook
from fleettune.training import (
    LocalOptimizer,
    backward_step,
    lr_factor,
    make_optimizer,
    set_lr,
    trainable_parameters,
)


@dataclass(frozen=True)
class LocalRun:
    mean_loss: float
    losses: list[float]
    steps: int
    samples: int
    busy_s: float  # measured wall time on this machine
    flops: int  # counted on the real computation (per batch shape, once)
    memory: MemoryBreakdown


def train_local(
    model: FullModel,
    batches: Iterator[Batch],
    steps: int,
    *,
    lr: float,
    local_opt: LocalOptimizer,
    schedule: str,
    schedule_offset: int,
    schedule_total: int,
    max_grad_norm: float | None,
    received_bytes: int,
    draws: PartyDraws,
    optimizer: torch.optim.Optimizer | None = None,
    flop_book: FlopBook | None = None,
    privacy: ClientPrivacy | None = None,
    noise: torch.Generator | None = None,
) -> LocalRun:
    """`steps` optimizer steps on `batches`; the learning rate follows the run-wide schedule from
    `schedule_offset`. A fresh `local_opt` optimizer is made unless one is passed in. With DP-SGD in
    `privacy`, every step's gradient is DP-SGD's (per-sample clipping, noise from `noise`) and `max_grad_norm`
    is not applied. Dropout draws from `draws`, the training party's own stream."""
    dpsgd = privacy is not None and privacy.dpsgd_clip is not None
    if dpsgd and (noise is None or model.task is not Task.CLASSIFICATION):
        raise ValueError("DP-SGD needs a noise generator and a classification model")
    model.train()
    optimizer = optimizer or make_optimizer(trainable_parameters(model), lr, local_opt)
    meter = ActivationMeter()
    losses: list[float] = []
    samples = 0
    flops = 0
    book = flop_book or FlopBook()
    started = time.perf_counter()
    for step in range(steps):
        batch = next(batches)
        set_lr(optimizer, lr, lr_factor(schedule, schedule_offset + step, schedule_total))
        key = ("whole-model-step", *batch.input_ids.shape)

        def step_once(batch: Batch = batch) -> torch.Tensor:
            with draws.drawing(), meter.track(weights=model.parameters()):
                out = model(batch.input_ids, batch.attention_mask, batch.labels)
                # The batch loss is the mean of these: each sample's own loss gets DP-SGD's clipping.
                own = F.cross_entropy(out.logits, batch.labels, reduction="none") if dpsgd else None
            if own is not None:
                assert privacy is not None and privacy.dpsgd_clip is not None and noise is not None
                private_backward(model, own, torch.ones_like(own), privacy.dpsgd_clip, privacy.dpsgd_noise, noise)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            else:
                backward_step(out.loss, optimizer, max_grad_norm)
            return out.loss.detach()

        step_flops, loss = book.run(key, step_once)
        flops += step_flops
        losses.append(float(loss))
        samples += len(batch)
    busy = time.perf_counter() - started
    model.eval()
    memory = measure(model, optimizer, meter.peak, received_bytes)
    return LocalRun(sum(losses) / max(1, len(losses)), losses, steps, samples, busy, flops, memory)
