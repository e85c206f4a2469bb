"""A split client on a tiny BERT, a padded batch, and the gradients its optimizer would apply, for privacy tests."""

from __future__ import annotations

import torch

from fleettune.data import Batch
from fleettune.draws import PartyDraws
from fleettune.fleet import load_fleet
from fleettune.messages import CutGradients
from fleettune.models.lora import LoraSpec
from fleettune.models.stages import client_stage
from fleettune.privacy.client import ClientPrivacy
from fleettune.schemes.split.client import SplitClient
from fleettune.training import LocalOptimizer
from tests.models.tiny import VOCAB, tiny_model

CUT = 2
SPEC = LoraSpec(rank=4, alpha=8, dropout=0.0)


def tiny_client(privacy: ClientPrivacy | None = None) -> SplitClient:
    """The same client stage every call (seeded init; the LoRA B factors get values so every factor learns)."""
    model, task = tiny_model("bert", seed=0)
    stage = client_stage(model, CUT, SPEC, task)
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for name, param in stage.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.1)
    device = load_fleet("paper6").devices[0]
    optimizer = LocalOptimizer(weight_decay=0.0)
    return SplitClient("dev", device, CUT, stage, iter(()), 4, 1e-2, optimizer, privacy, draws=PartyDraws(0))


def padded_batch() -> Batch:
    """Four texts of 6, 4, 2 and 5 real tokens, padded to 6."""
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(1, VOCAB, (4, 6), generator=generator)
    mask = (torch.arange(6) < torch.tensor([6, 4, 2, 5]).unsqueeze(1)).long()
    return Batch(ids * mask, mask, torch.tensor([0, 1, 2, 0]))


def cut_gradient(shape: torch.Size) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(2)) / shape[0]


def applied_gradients(client: SplitClient, batch: Batch, grad: torch.Tensor) -> dict[str, torch.Tensor]:
    """One forward and backward of `client` (dropout drawn after a fixed seed); the gradients its optimizer saw,
    which is then left without stepping."""
    captured: dict[str, torch.Tensor] = {}
    names = {id(p): n for n, p in client.stage.named_parameters()}

    def capture() -> None:
        for group in client.optimizer.param_groups:
            for param in group["params"]:
                if param.grad is not None:
                    captured[names[id(param)]] = param.grad.detach().clone()

    client.optimizer.step = capture
    torch.manual_seed(0)
    client.forward(batch, 0)
    client.backward(CutGradients(client.id, 0, grad), 1.0, 0)
    return captured
