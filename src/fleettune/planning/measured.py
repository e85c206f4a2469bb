"""Per-cut costs of a real model: FLOPs counted on its split stages, encoded payloads and measured memory."""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import replace

import torch
from transformers import PreTrainedModel

from fleettune.compression.base import Codec
from fleettune.compression.link import UpdateLink
from fleettune.compression.specs import parse_update_codec
from fleettune.draws import global_rng_kept
from fleettune.errors import ModelError
from fleettune.fleet.feasibility import ClientMemoryModel
from fleettune.fleet.flops import measure_split_flops
from fleettune.messages import FP32_PADDED, CutActivations, CutGradients, CutWire
from fleettune.models.adapters import read_adapter
from fleettune.models.lora import LoraSpec
from fleettune.models.shared_server import SharedServer
from fleettune.models.stages import Task, check_cut, split_model
from fleettune.planning.costs import CutCost
from fleettune.training import DEFAULT_LOCAL, LocalOptimizer

SWITCH_REPEATS = 20


def probe_batch(
    vocab_size: int, batch_size: int, seq_len: int, real_tokens: int | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Fixed random ids (B, T), a mask whose first `real_tokens` positions (default: all) are real, and labels."""
    ids = torch.randint(1, vocab_size, (batch_size, seq_len), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    if real_tokens is not None:
        mask[:, max(1, real_tokens) :] = 0
    return ids, mask, torch.zeros(batch_size, dtype=torch.long)


class MeasuredCosts:
    """The `CutCosts` of one model, LoRA setting and batch shape, each measured on first use and kept.

    FLOPs come from one counted split step at (cut, rank), payload bytes from encoding that step's cut
    tensor and a gradient of its shape with `wire` (they depend on the cut's shape only, so once per
    cut), the adapter bytes from sending the client stage's adapter part over an update link with the
    `updates` codec, as an aggregation does, and memory from `ClientMemoryModel` on a full batch of
    `seq_len` tokens, as feasibility checks do.
    """

    def __init__(
        self,
        new_model: Callable[[], PreTrainedModel],
        lora: LoraSpec,
        task: Task,
        batch_size: int,
        seq_len: int,
        wire: CutWire = FP32_PADDED,
        real_tokens: int | None = None,
        local: LocalOptimizer = DEFAULT_LOCAL,
        updates: Codec | None = None,
    ) -> None:
        self._new_model = new_model
        self._updates = updates if updates is not None else parse_update_codec("fp32")
        self._local = local
        self._lora = lora
        self._task = task
        self._wire = wire
        self.batch_size = batch_size
        self.seq_len = seq_len
        self._base = new_model()
        self.num_layers = int(self._base.config.num_hidden_layers)
        if self.num_layers < 2:
            raise ModelError(f"a {self.num_layers}-layer model cannot be split; expected at least 2 layers")
        self._batch = probe_batch(int(self._base.config.vocab_size), batch_size, seq_len, real_tokens)
        self._costs: dict[tuple[int, int], CutCost] = {}
        self._bytes: dict[int, tuple[int, int]] = {}
        self._memory: dict[int, ClientMemoryModel] = {}

    @property
    def cuts(self) -> Sequence[int]:
        return range(1, self.num_layers)

    def spec(self, rank: int) -> LoraSpec:
        """The run's LoRA setting at another rank."""
        return self._lora if rank == self._lora.rank else replace(self._lora, rank=rank)

    def cost(self, cut: int, rank: int) -> CutCost:
        key = (cut, rank)
        if key not in self._costs:
            check_cut(cut, self.num_layers)
            # LoRA init draws from the global RNG: counting must not move the caller's.
            with global_rng_kept():
                client, server = split_model(copy.deepcopy(self._base), cut, self.spec(rank), self._task)
                ids, mask, labels = self._batch
                client_flops, server_flops = measure_split_flops(client, server, ids, mask, labels)
                if cut not in self._bytes:
                    self._bytes[cut] = self._payload_bytes(client(ids, mask).detach())
                part = read_adapter(client.peft)
                adapter_bytes = len(UpdateLink(self._updates, part).send(part))
            self._costs[key] = CutCost(client_flops, server_flops, *self._bytes[cut], adapter_bytes)
        return self._costs[key]

    def _payload_bytes(self, hidden: torch.Tensor) -> tuple[int, int]:
        """Encoded sizes of the cut activations `hidden` (B, T, H) and of a gradient of the same shape."""
        _, mask, labels = self._batch
        up = len(CutActivations("x", 0, hidden, mask, labels).encode(self._wire))
        grad = torch.randn(hidden.shape, generator=torch.Generator().manual_seed(0))
        down = len(CutGradients("x", 0, grad).encode(self._wire, mask))
        return up, down

    def memory_bytes(self, cut: int, rank: int) -> int:
        check_cut(cut, self.num_layers)
        if rank not in self._memory:
            self._memory[rank] = ClientMemoryModel(self._new_model, self.spec(rank), self._task, self._local)
        return self._memory[rank].bytes_at(cut, self.batch_size, self.seq_len)

    def switch_s(self, cuts: Sequence[int], repeats: int = SWITCH_REPEATS) -> float:
        """Measured seconds of the shared server's adapter switch with one client at each of `cuts`
        (0 for fewer than two clients). Wall time: it varies a little from one call to the next."""
        if len(cuts) < 2:
            return 0.0
        with global_rng_kept():
            shared = SharedServer(copy.deepcopy(self._base), min(cuts), self._lora, self._task)
            for i, cut in enumerate(cuts):
                shared.add_client(f"client{i}", cut)
        return shared.switch_seconds(repeats)
