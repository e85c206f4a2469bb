"""One training step of a fleet priced by the cost model: each device's phases, from measured FLOPs and bytes."""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from transformers import PreTrainedModel

from fleettune.fleet import Fleet
from fleettune.fleet.cost import compute_s, downlink_s, uplink_s
from fleettune.fleet.flops import FlopCache
from fleettune.messages import FP32_PADDED, CutActivations, CutGradients, CutWire
from fleettune.models.lora import LoraSpec
from fleettune.models.shared_server import SharedServer
from fleettune.models.stages import Task, split_model
from fleettune.runtime.sim.clock import StepPhases

SWITCH_REPEATS = 20


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
    """Phases of one step of every device at its (integer) cut, on a batch of `seq_len` tokens of
    which the first `real_tokens` (default: all) are real; cut tensors travel as `wire` says."""
    cuts = sorted({int(d.cut_layer) for d in fleet.devices})
    base = new_model()
    vocab = int(base.config.vocab_size)
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(1, vocab, (batch_size, seq_len), generator=generator)
    mask = torch.ones_like(ids)
    if real_tokens is not None:
        mask[:, max(1, real_tokens) :] = 0
    labels = torch.zeros(batch_size, dtype=torch.long)
    flops = FlopCache()
    per_cut = {}
    for cut in cuts:
        client, server = split_model(copy.deepcopy(base), cut, lora, task)
        client_flops, server_flops = flops.split(client, server, ids, mask, labels)
        hidden = client(ids, mask).detach()  # (B, T, H)
        up = len(CutActivations("x", 0, hidden, mask, labels).encode(wire))
        down = len(CutGradients("x", 0, torch.randn_like(hidden)).encode(wire, mask))
        per_cut[cut] = (client_flops, server_flops, up, down)
    switch_s = 0.0
    if len(fleet.devices) > 1:
        shared = SharedServer(copy.deepcopy(base), cuts[0], lora, task)
        names = [f"client{i}" for i in range(len(fleet.devices))]
        for name, device in zip(names, fleet.devices, strict=True):
            shared.add_client(name, int(device.cut_layer))
        switch_s = shared.switch_seconds(SWITCH_REPEATS)
    phases = []
    for device in fleet.devices:
        client_flops, server_flops, up, down = per_cut[int(device.cut_layer)]
        phases.append(
            StepPhases(
                device.id,
                compute_s(client_flops.forward, device.hardware),
                uplink_s(device, up),
                compute_s(server_flops.total, fleet.server),
                switch_s,
                downlink_s(device, down),
                compute_s(client_flops.backward, device.hardware),
            )
        )
    return phases
