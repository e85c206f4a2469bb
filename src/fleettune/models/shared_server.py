"""One server-side model shared by many clients: a named LoRA adapter per client, switched per client."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from peft import LoraConfig, get_peft_model
from peft.tuners.tuners_utils import BaseTunerLayer
from peft.utils.other import AuxiliaryTrainingWrapper
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel

from fleettune.aggregation.hetero import merge_into
from fleettune.errors import ModelError
from fleettune.fleet.cost import measure_switch_s
from fleettune.models.adapters import AdapterState, read_adapter, task_model, write_adapter
from fleettune.models.layout import find_layout
from fleettune.models.lora import LoraSpec, lora_config
from fleettune.models.shells import InputsEmbedsPassthrough, get_layers, with_replaced
from fleettune.models.stages import (
    ServerStage,
    StageOutput,
    Task,
    _targets,
    _trainable_heads,
    _with_layer_count,
    check_cut,
)


class SharedServer:
    """Layers [first, L) and the head, held once. Each client gets a named adapter on the layers it
    does not run itself ([cut, L)) plus its own head copy; `serve(name)` selects it and makes the
    forward start at that client's cut layer."""

    def __init__(self, model: PreTrainedModel, first: int, spec: LoraSpec, task: Task) -> None:
        layout = find_layout(model)
        check_cut(first, layout.num_layers)
        self.layout = layout
        self.first = first
        self.spec = spec
        self.task = task
        self._targets = _targets(model, layout, spec)
        self._heads = _trainable_heads(model, layout, task)
        held = get_layers(model, layout.layers)
        embeddings: nn.Module = InputsEmbedsPassthrough() if layout.embeddings_add_positions else nn.Identity()
        replacements = {layout.layers: nn.ModuleList(list(held)[first:]), layout.embeddings: embeddings}
        self._shell = with_replaced(model, replacements)
        assert isinstance(self._shell, PreTrainedModel)
        _with_layer_count(self._shell, layout, layout.num_layers - first)
        self.cuts: dict[str, int] = {}
        self.stage: ServerStage | None = None
        self.active: str | None = None
        self._switchable: list[nn.Module] = []

    def _config(self, cut: int, spec: LoraSpec) -> LoraConfig:
        local = range(cut - self.first, self.layout.num_layers - self.first)
        return lora_config(spec, self.layout, self._targets, self._heads, layers=list(local))

    def add_client(self, name: str, cut: int, spec: LoraSpec | None = None) -> None:
        """A server-side adapter for client `name` on layers [cut, L); `spec` (default: the server's)
        sets its rank."""
        check_cut(cut, self.layout.num_layers)
        if cut < self.first:
            raise ModelError(f"client {name}: cut {cut} is below the server's first layer {self.first}")
        if name in self.cuts:
            raise ModelError(f"client {name} already has a server-side adapter")
        if self.stage is None:
            peft = get_peft_model(self._shell, self._config(cut, spec or self.spec), adapter_name=name)
            self.stage = ServerStage(peft, self.layout, self.task, self.first, self.layout.num_layers)
        else:
            self.stage.peft.add_adapter(name, self._config(cut, spec or self.spec))
        self.cuts[name] = cut
        model = self.stage.peft
        model.set_adapter(name)
        # Every client's adapter stays trainable (each has its own optimizer and only the active one
        # takes part in a forward pass), so a switch only has to move the active-adapter pointers.
        for adapter in self.cuts:
            for param in self.parameters_of(adapter):
                param.requires_grad_(True)
        self._switchable = [m for m in model.modules() if isinstance(m, (BaseTunerLayer, AuxiliaryTrainingWrapper))]
        self.active = name

    def serve(self, name: str) -> None:
        """Make `name`'s adapter the one that trains and runs.

        Equivalent to PEFT's `set_adapter(name)` for the forward pass, without re-walking the module
        tree and re-flagging every adapter's parameters: it only repoints each LoRA layer and head
        wrapper, which is what the shared server pays per client.
        """
        if name not in self.cuts:
            raise ModelError(f"no server-side adapter for client {name}")
        assert self.stage is not None
        if name == self.active:
            return
        for module in self._switchable:  # LoRA layers keep a list of active names, head wrappers one name
            setattr(module, "_active_adapter", [name] if isinstance(module, BaseTunerLayer) else name)  # noqa: B010
        # The wrapper and its tuner keep the same record PEFT's own switch would leave.
        setattr(self.stage.peft, "active_adapter", name)  # noqa: B010 (typed as a module attribute)
        setattr(self.stage.peft.base_model, "active_adapter", name)  # noqa: B010
        self.active = name

    def switch_seconds(self, repeats: int) -> float:
        """Measured mean seconds of one `serve` between this server's clients (0 with fewer than two)."""
        names = list(self.cuts)
        if len(names) < 2:
            return 0.0
        active = self.active
        seconds = measure_switch_s(self.serve, names, repeats)
        if active is not None:
            self.serve(active)
        return seconds

    def merge_base(self, deltas: dict[str, torch.Tensor]) -> None:
        """Fold dense updates into the shared base weights (keys: module paths, layers numbered from `first`)."""
        assert self.stage is not None
        merge_into(task_model(self.stage.peft), deltas)

    def parameters_of(self, name: str) -> list[nn.Parameter]:
        assert self.stage is not None
        marker = f".{name}."
        return [p for n, p in self.stage.peft.named_parameters() if marker in n]

    def read(self, name: str) -> AdapterState:
        assert self.stage is not None
        return read_adapter(self.stage.peft, adapter_name=name)

    def write(self, name: str, state: AdapterState) -> None:
        assert self.stage is not None
        write_adapter(self.stage.peft, state, adapter_name=name)

    @contextmanager
    def _layers_from(self, cut: int) -> Iterator[None]:
        # Mount only layers [cut, L) for the forward pass; the whole stack stays mounted otherwise
        # so that every adapter's weights remain visible to reads, writes and parameter listings.
        assert self.stage is not None
        parent_path, _, attr = self.layout.layers.rpartition(".")
        parent = self.stage.inner.get_submodule(parent_path)
        full = getattr(parent, attr)
        config: PretrainedConfig = self.stage.inner.config  # type: ignore[assignment]
        count = config.num_hidden_layers
        setattr(parent, attr, nn.ModuleList(list(full)[cut - self.first :]))
        config.num_hidden_layers = self.layout.num_layers - cut
        try:
            yield
        finally:
            setattr(parent, attr, full)
            config.num_hidden_layers = count

    def forward(
        self, hidden: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor, start: int | None = None
    ) -> StageOutput:
        """Run the active adapter from `start` (default: its client's cut) to the loss."""
        assert self.stage is not None and self.active is not None
        with self._layers_from(self.cuts[self.active] if start is None else start):
            return self.stage(hidden, attention_mask, labels)

    def logits(self, hidden: torch.Tensor, attention_mask: torch.Tensor, start: int | None = None) -> torch.Tensor:
        assert self.stage is not None and self.active is not None
        with self._layers_from(self.cuts[self.active] if start is None else start):
            return self.stage.logits(hidden, attention_mask)

    def module(self) -> nn.Module:
        assert self.stage is not None
        return self.stage
