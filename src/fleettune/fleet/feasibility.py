"""Memory feasibility: the bytes a client stage needs at a cut, measured on live objects, and each device's cut."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace

import torch
from transformers import PreTrainedModel

from fleettune.draws import global_rng_kept
from fleettune.errors import FleetError, InputError, ModelError
from fleettune.fleet.files import Fleet
from fleettune.fleet.profiles import Device
from fleettune.models.lora import LoraSpec
from fleettune.models.stages import Task, check_cut, client_stage
from fleettune.runtime.memory import ActivationMeter, MemoryBreakdown, measure
from fleettune.training import DEFAULT_LOCAL, LocalOptimizer, make_optimizer, trainable_parameters

GIB = 2**30


def client_stage_memory(
    model_factory: Callable[[], PreTrainedModel],
    cut: int,
    lora: LoraSpec,
    task: Task,
    batch_size: int,
    seq_len: int,
    local: LocalOptimizer = DEFAULT_LOCAL,
) -> MemoryBreakdown:
    """What a client holds at its peak when training layers [0, cut) of a fresh model on
    (batch_size, seq_len) batches with the `local` optimizer: measured after one forward, backward and step."""
    # Model init, LoRA init and dropout draw from the global RNG: a measurement must not move the caller's.
    with global_rng_kept():
        model = model_factory()
        vocab_size = int(model.config.vocab_size)
        stage = client_stage(model, cut, lora, task)
        del model  # the stage keeps only its own layers
        optimizer = make_optimizer(trainable_parameters(stage), 1e-3, local)  # AdamW's moments count; SGD has none
        ids = torch.randint(1, vocab_size, (batch_size, seq_len), generator=torch.Generator().manual_seed(0))
        mask = torch.ones_like(ids)  # no padding: the largest footprint of this shape
        meter = ActivationMeter()
        stage.train()  # dropout masks are saved for backward in training, so they count
        with meter.track(weights=stage.parameters()):
            hidden = stage(ids, mask)  # (B, T, H): the cut tensor
        cut_grad = torch.ones_like(hidden)  # stands for the gradient the server sends back
        hidden.backward(cut_grad)
        optimizer.step()
        stage.eval()
    return measure(stage, optimizer, meter.peak, received=cut_grad.numel() * cut_grad.element_size())


class ClientMemoryModel:
    """Client-stage bytes of one model, LoRA setting and local optimizer, measured once per (cut, batch, seq_len)."""

    def __init__(
        self,
        model_factory: Callable[[], PreTrainedModel],
        lora: LoraSpec,
        task: Task,
        local: LocalOptimizer = DEFAULT_LOCAL,
    ) -> None:
        self._model_factory = model_factory
        self._lora = lora
        self._task = task
        self._local = local
        self._bytes: dict[tuple[int, int, int], int] = {}

    def bytes_at(self, cut: int, batch_size: int, seq_len: int) -> int:
        key = (cut, batch_size, seq_len)
        if key not in self._bytes:
            self._bytes[key] = client_stage_memory(
                self._model_factory, cut, self._lora, self._task, batch_size, seq_len, self._local
            ).total
        return self._bytes[key]

    def of_cut(self, batch_size: int, seq_len: int) -> Callable[[int], int]:
        """Bytes as a function of the cut alone, for `resolve_cuts`."""
        return lambda cut: self.bytes_at(cut, batch_size, seq_len)


def memory_budget_bytes(device: Device) -> int:
    """The bytes a client stage may use on `device`: all of its memory."""
    return int(device.hardware.memory_gib * GIB)


def cut_tensor_floor(hidden_size: int, batch_size: int, seq_len: int) -> int:
    """Bytes any client stage holds at least: its fp32 cut tensor and the gradient it receives for it."""
    return 2 * batch_size * seq_len * hidden_size * 4


def check_batch_fits(fleet: Fleet, hidden_size: int, batch_size: int, seq_len: int) -> None:
    """Refuse a batch shape whose cut tensor alone no device of `fleet` can hold, before anything is
    measured at that shape (measuring it would exhaust this machine's memory first)."""
    floor = cut_tensor_floor(hidden_size, batch_size, seq_len)
    largest = max(fleet.devices, key=memory_budget_bytes)
    if floor > memory_budget_bytes(largest):
        raise FleetError(
            f"batch_size {batch_size} x max_length {seq_len}: a client's cut tensor and its gradient alone "
            f"need {floor / GIB:,.2f} GiB, more than any device of fleet {fleet.name} has (largest: "
            f"{largest.id}, {largest.hardware.memory_gib:.2f} GiB); expected a smaller batch_size or max_length"
        )


def _fits(device: Device, needed_bytes: int) -> bool:
    return needed_bytes <= memory_budget_bytes(device)


def _deepest_fitting_cut(device: Device, num_layers: int, memory_of_cut: Callable[[int], int]) -> int:
    needed = memory_of_cut(1)
    if not _fits(device, needed):
        raise FleetError(
            f"{device.id}: no cut fits: cut_layer 1 alone needs {needed / GIB:.2f} GiB, "
            f"the device has {device.hardware.memory_gib:.2f} GiB"
        )
    # Memory grows with the cut, so bisect: each probe may build and run a model.
    fits, too_deep = 1, num_layers
    while too_deep - fits > 1:
        probe = (fits + too_deep) // 2
        if _fits(device, memory_of_cut(probe)):
            fits = probe
        else:
            too_deep = probe
    return fits


def resolve_cuts(devices: Sequence[Device], num_layers: int, memory_of_cut: Callable[[int], int]) -> list[int]:
    """Each device's cut: its own int if valid and within its memory, or for "auto" the deepest cut
    (1 <= cut < num_layers) that fits. `memory_of_cut(cut)` is the client's bytes at that cut."""
    if num_layers < 2:
        raise ModelError(f"a {num_layers}-layer model cannot be split; expected at least 2 layers")
    cuts: list[int] = []
    for device in devices:
        cut = device.cut_layer
        if cut == "auto":
            cuts.append(_deepest_fitting_cut(device, num_layers, memory_of_cut))
            continue
        if isinstance(cut, bool) or not isinstance(cut, int) or not 1 <= cut < num_layers:
            raise FleetError(
                f'{device.id}: cut_layer must be "auto" or in 1..{num_layers - 1} '
                f"for a {num_layers}-layer model, got {cut!r}"
            )
        needed = memory_of_cut(cut)
        if not _fits(device, needed):
            raise FleetError(
                f"{device.id}: cut_layer {cut} needs {needed / GIB:.2f} GiB, "
                f"the device has {device.hardware.memory_gib:.2f} GiB"
            )
        cuts.append(cut)
    return cuts


def resolve_fleet_cuts(fleet: Fleet, num_layers: int, memory_of_cut: Callable[[int], int] | None) -> Fleet:
    """Integer cuts checked against the model's depth (and, given a memory model, each device's
    memory); "auto" becomes the deepest cut that fits. `lora_rank = "auto"` (which `fleettune plan`
    resolves) stands for the run's rank here."""
    fleet = replace(
        fleet, devices=tuple(replace(d, lora_rank=None) if d.lora_rank == "auto" else d for d in fleet.devices)
    )
    if memory_of_cut is None:
        for device in fleet.devices:
            if isinstance(device.cut_layer, int):
                try:
                    check_cut(device.cut_layer, num_layers)
                except InputError as exc:
                    raise FleetError(f"fleet {fleet.name}: device {device.id}: {exc}") from None
        return fleet
    try:
        cuts = resolve_cuts(fleet.devices, num_layers, memory_of_cut)
    except FleetError as exc:  # its messages start with the device id
        raise FleetError(f"fleet {fleet.name}: device {exc}") from None
    return replace(fleet, devices=tuple(replace(d, cut_layer=c) for d, c in zip(fleet.devices, cuts, strict=True)))
