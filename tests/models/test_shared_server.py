"""The shared server: one model, a named adapter per client, switched by repointing the active adapter."""

from __future__ import annotations

import pytest
import torch

from fleettune.errors import ModelError
from fleettune.models.lora import LoraSpec
from fleettune.models.shared_server import SharedServer
from fleettune.models.stages import client_stage
from tests.models.tiny import random_batch, tiny_model

CUTS = {"n1": 1, "n2": 2, "n3": 3}


def _server(kind: str = "bert") -> SharedServer:
    model, task = tiny_model(kind)
    server = SharedServer(model, 1, LoraSpec(rank=4, dropout=0.0), task)
    for name, cut in CUTS.items():
        server.add_client(name, cut)
    g = torch.Generator().manual_seed(7)
    for name in CUTS:  # distinct, non-zero adapters so that serving the wrong one would show
        state = server.read(name)
        server.write(name, {k: torch.randn(v.shape, generator=g) * 0.1 for k, v in state.items()})
    return server


def _hidden(kind: str, cut: int) -> tuple[torch.Tensor, torch.Tensor]:
    model, task = tiny_model(kind)
    ids, mask, _ = random_batch(task)
    return client_stage(model, cut, LoraSpec(rank=4, dropout=0.0), task)(ids, mask).detach(), mask


@pytest.mark.parametrize("kind", ["bert", "llama-cls"])
def test_serve_gives_the_same_outputs_as_peft_set_adapter(kind: str) -> None:
    server = _server(kind)
    assert server.stage is not None
    for order in (["n1", "n2", "n3"], ["n3", "n1", "n2", "n1"]):
        for name in order:
            hidden, mask = _hidden(kind, CUTS[name])
            server.serve(name)
            fast = server.logits(hidden, mask)
            server.stage.peft.set_adapter(name)  # PEFT's own switch, as a reference
            reference = server.logits(hidden, mask)
            torch.testing.assert_close(fast, reference, rtol=0, atol=0)
            assert server.stage.peft.active_adapter == name


def test_every_clients_adapter_stays_trainable_and_only_the_served_one_gets_gradients() -> None:
    server = _server()
    for name in CUTS:
        assert all(p.requires_grad for p in server.parameters_of(name))
    hidden, mask = _hidden("bert", CUTS["n2"])
    server.serve("n2")
    server.forward(hidden, mask, torch.tensor([0, 2, 1])).loss.backward()
    assert all(p.grad is not None for p in server.parameters_of("n2"))
    assert all(p.grad is None for name in ("n1", "n3") for p in server.parameters_of(name))


def test_switch_time_is_measured_and_the_served_adapter_is_kept() -> None:
    server = _server()
    server.serve("n2")
    seconds = server.switch_seconds(repeats=3)
    assert 0 < seconds < 0.05
    assert server.active == "n2"


def test_unknown_duplicate_and_too_shallow_clients_are_model_errors() -> None:
    server = _server()
    with pytest.raises(ModelError, match="no server-side adapter for client zz"):
        server.serve("zz")
    with pytest.raises(ModelError, match="already has"):
        server.add_client("n1", 2)
    with pytest.raises(ModelError, match="below the server's first layer"):
        SharedServer(tiny_model("bert")[0], 2, LoraSpec(rank=4, dropout=0.0), tiny_model("bert")[1]).add_client("x", 1)
