"""The server side of each split scheme: what it holds, and how it turns activations into gradients."""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import torch
from transformers import PreTrainedModel

from fleettune.aggregation.hetero import merge_into
from fleettune.draws import PartyDraws
from fleettune.messages import CutActivations, CutGradients
from fleettune.models.adapters import AdapterState, join_adapter, read_adapter, split_adapter, task_model, write_adapter
from fleettune.models.layout import StackLayout
from fleettune.models.lora import LoraSpec
from fleettune.models.shared_server import SharedServer
from fleettune.models.stages import ServerStage, Task, server_stage
from fleettune.runtime.memory import ActivationMeter, MemoryBreakdown, module_bytes, optimizer_bytes
from fleettune.training import LocalOptimizer, make_optimizer, set_lr

SWITCH_REPEATS = 10

Snapshot = tuple[AdapterState, dict[str, Any]]  # an adapter's weights and its optimizer's state
Gradients = list[torch.Tensor | None]  # one per trainable parameter, in parameter order


class ServerRole(Protocol):
    """What every scheme's server does; implementations differ in what they hold."""

    layout: StackLayout

    def process(self, message: CutActivations, loss_weight: float = 1.0) -> tuple[CutGradients, float, float]:
        """Forward + backward for one client's activations: (cut gradient, loss, switch seconds)."""
        ...

    def step(self, clients: Sequence[str], lr_factor: float) -> None: ...

    def server_part(self, client: str) -> AdapterState:
        """The server-held part of `client`'s view of the adapter, in full-model numbering (layers >= cut)."""
        ...

    def load(self, client: str, full: AdapterState) -> None: ...

    def memory(self, concurrent: Sequence[str], received_bytes: int) -> MemoryBreakdown: ...

    def activation_peak(self, client: str) -> int: ...

    def snapshot(self, client: str) -> Snapshot:
        """What the server holds for `client` (weights and optimizer state), to go back to."""
        ...

    def restore(self, client: str, snapshot: Snapshot) -> None: ...

    def merge(self, deltas: dict[str, torch.Tensor]) -> None:
        """Fold the server's part of dense base-weight updates (keyed by module path in the full model) into
        the base weights it holds."""
        ...

    def restart(self, client: str) -> None:
        """Forget the optimizer moments of `client`'s server-side adapter (the adapter was replaced)."""
        ...


def _snapshot(state: AdapterState, optimizer: torch.optim.Optimizer) -> Snapshot:
    return state, copy.deepcopy(optimizer.state_dict())


def _restore(snapshot: Snapshot, optimizer: torch.optim.Optimizer) -> AdapterState:
    """Reload the optimizer's state; returns the weights for the caller to write back."""
    optimizer.load_state_dict(copy.deepcopy(snapshot[1]))
    return snapshot[0]


def _only_from(state: AdapterState, layout: StackLayout, first: int, cut: int) -> AdapterState:
    """Drop server-held layers below `cut` (numbered from `first`): another party runs them."""
    prefix = layout.layers + "."
    out = {}
    for key, value in state.items():
        if key.startswith(prefix):
            local = int(key[len(prefix) :].split(".", 1)[0])
            if local + first < cut:
                continue
        out[key] = value
    return out


def _step_each(optimizers: dict[str, torch.optim.Optimizer], clients: Sequence[str], lr: float, factor: float) -> None:
    """One optimizer step for each listed client's own server-side adapter."""
    for client in clients:
        optimizer = optimizers[client]
        set_lr(optimizer, lr, factor)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)


class _Metered:
    """The server's forward for each client: its saved activations metered, its dropout drawn from the
    server's stream for that client (`draws`, keyed by client id)."""

    def __init__(self, draws: Mapping[str, PartyDraws]) -> None:
        self._peaks: dict[str, int] = {}
        self._draws = dict(draws)

    def _run(self, client: str, weights: Callable[[], object], fn: Callable[[], torch.Tensor]) -> torch.Tensor:
        meter = ActivationMeter()
        with self._draws[client].drawing(), meter.track(weights=weights()):  # type: ignore[arg-type]
            loss = fn()
        self._peaks[client] = max(self._peaks.get(client, 0), meter.peak)
        return loss

    def activation_peak(self, client: str) -> int:
        return self._peaks.get(client, 0)


class PerClientAdapters(_Metered):
    """`mesfl`: one shared server model, a named adapter (and optimizer) per client, switched per client."""

    def __init__(
        self,
        model: PreTrainedModel,
        cuts: dict[str, int],
        spec: LoraSpec,
        task: Task,
        lr: float,
        local_opt: LocalOptimizer,
        draws: Mapping[str, PartyDraws],
        switch_s: float | None = None,
        specs: Mapping[str, LoraSpec] | None = None,
    ) -> None:
        super().__init__(draws)
        self.first = min(cuts.values())
        self.server = SharedServer(model, self.first, spec, task)
        self.layout = self.server.layout
        self.names = {client: f"client{i}" for i, client in enumerate(cuts)}  # PEFT-safe adapter names
        self.cuts = dict(cuts)
        for client, cut in cuts.items():
            self.server.add_client(self.names[client], cut, (specs or {}).get(client, spec))
        if switch_s is None:
            # Measured once, so that the virtual clock is the same on every run of this set-up.
            switch_s = self.server.switch_seconds(SWITCH_REPEATS)
        self.switch_s = switch_s
        self.lr = lr
        self.optimizers = {
            c: make_optimizer(self.server.parameters_of(n), lr, local_opt) for c, n in self.names.items()
        }

    def process(self, message: CutActivations, loss_weight: float = 1.0) -> tuple[CutGradients, float, float]:
        self.server.serve(self.names[message.client])
        self.server.module().train()  # dropout as in every other trainer (a loaded model starts in eval mode)
        hidden = message.hidden.requires_grad_()
        loss = self._run(
            message.client,
            self.server.module().parameters,
            lambda: self.server.forward(hidden, message.attention_mask, message.labels).loss,
        )
        (loss * loss_weight).backward()
        assert hidden.grad is not None
        grads = CutGradients(message.client, message.step, hidden.grad / loss_weight)
        return grads, float(loss.detach()), self.switch_s

    def step(self, clients: Sequence[str], lr_factor: float) -> None:
        _step_each(self.optimizers, clients, self.lr, lr_factor)

    def server_part(self, client: str) -> AdapterState:
        state = self.server.read(self.names[client])
        cut = self.cuts[client]
        return join_adapter({}, state, self.layout, cut, server_first=self.first)

    def load(self, client: str, full: AdapterState) -> None:
        _, part = split_adapter(full, self.layout, self.cuts[client], server_first=self.first)
        self.server.write(self.names[client], part)

    def snapshot(self, client: str) -> Snapshot:
        return _snapshot(self.server.read(self.names[client]), self.optimizers[client])

    def restore(self, client: str, snapshot: Snapshot) -> None:
        self.server.write(self.names[client], _restore(snapshot, self.optimizers[client]))

    def merge(self, deltas: dict[str, torch.Tensor]) -> None:
        self.server.merge_base(split_adapter(deltas, self.layout, self.first)[1])

    def restart(self, client: str) -> None:
        self.optimizers[client].state.clear()

    def memory(self, concurrent: Sequence[str], received_bytes: int) -> MemoryBreakdown:
        frozen, trainable, _ = module_bytes(self.server.module())
        # Inactive adapters are frozen while another client is served: count every adapter as trainable.
        sizes = [sum(p.numel() * p.element_size() for p in self.server.parameters_of(n)) for n in self.names.values()]
        adapters = sum(sizes)
        return MemoryBreakdown(
            weights=frozen + trainable - adapters,
            trainable=adapters,
            gradients=max(sizes),  # one client is served at a time: one adapter's gradients at once
            optimizer=sum(optimizer_bytes(o) for o in self.optimizers.values()),
            activations=max((self.activation_peak(c) for c in concurrent), default=0),
            received=received_bytes,
        )


class ServerCopies(_Metered):
    """`splitfed`: one complete server-side model copy (and adapter and optimizer) per client."""

    def __init__(
        self,
        new_model: Callable[[], PreTrainedModel],
        cuts: dict[str, int],
        spec: LoraSpec,
        task: Task,
        lr: float,
        local_opt: LocalOptimizer,
        draws: Mapping[str, PartyDraws],
        specs: Mapping[str, LoraSpec] | None = None,
    ) -> None:
        super().__init__(draws)
        self.stages: dict[str, ServerStage] = {
            c: server_stage(new_model(), cut, (specs or {}).get(c, spec), task) for c, cut in cuts.items()
        }
        self.layout = next(iter(self.stages.values())).layout
        self.cuts = dict(cuts)
        self.lr = lr
        self.optimizers = {
            c: make_optimizer([p for p in s.parameters() if p.requires_grad], lr, local_opt)
            for c, s in self.stages.items()
        }

    def process(self, message: CutActivations, loss_weight: float = 1.0) -> tuple[CutGradients, float, float]:
        stage = self.stages[message.client]
        stage.train()
        hidden = message.hidden.requires_grad_()
        loss = self._run(
            message.client, stage.parameters, lambda: stage(hidden, message.attention_mask, message.labels).loss
        )
        (loss * loss_weight).backward()
        assert hidden.grad is not None
        return CutGradients(message.client, message.step, hidden.grad / loss_weight), float(loss.detach()), 0.0

    def step(self, clients: Sequence[str], lr_factor: float) -> None:
        _step_each(self.optimizers, clients, self.lr, lr_factor)

    def server_part(self, client: str) -> AdapterState:
        cut = self.cuts[client]
        return join_adapter({}, read_adapter(self.stages[client].peft), self.layout, cut)

    def load(self, client: str, full: AdapterState) -> None:
        _, part = split_adapter(full, self.layout, self.cuts[client])
        write_adapter(self.stages[client].peft, part)

    def snapshot(self, client: str) -> Snapshot:
        return _snapshot(read_adapter(self.stages[client].peft), self.optimizers[client])

    def restore(self, client: str, snapshot: Snapshot) -> None:
        write_adapter(self.stages[client].peft, _restore(snapshot, self.optimizers[client]))

    def merge(self, deltas: dict[str, torch.Tensor]) -> None:
        for client, stage in self.stages.items():  # every copy holds its own base weights
            merge_into(task_model(stage.peft), split_adapter(deltas, self.layout, self.cuts[client])[1])

    def restart(self, client: str) -> None:
        self.optimizers[client].state.clear()

    def memory(self, concurrent: Sequence[str], received_bytes: int) -> MemoryBreakdown:
        total = MemoryBreakdown(received=received_bytes)
        for client, stage in self.stages.items():
            frozen, trainable, _ = module_bytes(stage)
            total.weights += frozen
            total.trainable += trainable
            total.gradients += trainable  # all copies train at once
            total.optimizer += optimizer_bytes(self.optimizers[client])
        total.activations = sum(self.activation_peak(c) for c in concurrent)
        return total


class SharedAdapter(_Metered):
    """`sl` and `cpsl`: one server model with one adapter that every client's activations train."""

    def __init__(
        self,
        model: PreTrainedModel,
        cuts: dict[str, int],
        spec: LoraSpec,
        task: Task,
        lr: float,
        local_opt: LocalOptimizer,
        draws: Mapping[str, PartyDraws],
    ) -> None:
        super().__init__(draws)
        self.first = min(cuts.values())
        self.server = SharedServer(model, self.first, spec, task)
        self.server.add_client("shared", self.first)
        self.layout = self.server.layout
        self.cuts = dict(cuts)
        self.lr = lr
        self.optimizer = make_optimizer(self.server.parameters_of("shared"), lr, local_opt)

    def process(self, message: CutActivations, loss_weight: float = 1.0) -> tuple[CutGradients, float, float]:
        self.server.module().train()  # dropout as in every other trainer (a loaded model starts in eval mode)
        hidden = message.hidden.requires_grad_()
        start = self.cuts[message.client]
        loss = self._run(
            message.client,
            self.server.module().parameters,
            lambda: self.server.forward(hidden, message.attention_mask, message.labels, start=start).loss,
        )
        (loss * loss_weight).backward()
        assert hidden.grad is not None
        return CutGradients(message.client, message.step, hidden.grad / loss_weight), float(loss.detach()), 0.0

    def step(self, clients: Sequence[str], lr_factor: float) -> None:
        set_lr(self.optimizer, self.lr, lr_factor)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def take_gradients(self) -> Gradients:
        """The adapter's gradients accumulated since the last take, cleared: one client's contribution."""
        params = self.server.parameters_of("shared")
        taken = [p.grad for p in params]
        for p in params:
            p.grad = None
        return taken

    def step_on(self, contributions: Sequence[Gradients], scale: float, lr_factor: float) -> None:
        """One step on the sum of `contributions` (added in order, as backward would accumulate them)
        times `scale`."""
        for index, param in enumerate(self.server.parameters_of("shared")):
            total = None
            for contribution in contributions:
                grad = contribution[index]
                if grad is not None:
                    total = grad if total is None else total + grad
            param.grad = total if total is None or scale == 1.0 else total * scale
        self.step([], lr_factor)

    def server_part(self, client: str) -> AdapterState:
        cut = self.cuts[client]
        state = _only_from(self.server.read("shared"), self.layout, self.first, cut)
        return join_adapter({}, state, self.layout, cut, server_first=self.first)

    def load(self, client: str, full: AdapterState) -> None:
        _, part = split_adapter(full, self.layout, self.first)
        self.server.write("shared", part)

    def snapshot(self, client: str) -> Snapshot:
        return _snapshot(self.server.read("shared"), self.optimizer)

    def restore(self, client: str, snapshot: Snapshot) -> None:
        self.server.write("shared", _restore(snapshot, self.optimizer))

    def merge(self, deltas: dict[str, torch.Tensor]) -> None:
        self.server.merge_base(split_adapter(deltas, self.layout, self.first)[1])

    def restart(self, client: str) -> None:
        self.optimizer.state.clear()

    def memory(self, concurrent: Sequence[str], received_bytes: int) -> MemoryBreakdown:
        frozen, trainable, _ = module_bytes(self.server.module())
        return MemoryBreakdown(
            weights=frozen,
            trainable=trainable,
            gradients=trainable,
            optimizer=optimizer_bytes(self.optimizer),
            activations=sum(self.activation_peak(c) for c in concurrent),
            received=received_bytes,
        )
