"""The split invariant: client stage -> server stage computes exactly what the unsplit model does."""

from __future__ import annotations

import copy
import gc
import weakref

import pytest
import torch

from fleettune.draws import PartyDraws
from fleettune.errors import ModelError
from fleettune.models.adapters import join_adapter, read_adapter, split_adapter, write_adapter
from fleettune.models.lora import LoraSpec
from fleettune.models.stages import ClientStage, FullModel, ServerStage, Task, client_stage, full_model, split_model
from tests.models.tiny import LAYERS, random_batch, tiny_model

SPEC = LoraSpec(rank=4, alpha=8, dropout=0.0)
KINDS = ["bert", "mpnet", "llama-cls", "llama-lm"]
CUTS = [1, LAYERS // 2, LAYERS - 1]  # first, middle and last cut


def _randomized(state: dict[str, torch.Tensor], seed: int) -> dict[str, torch.Tensor]:
    # PEFT starts lora_B at zero, which would hide gradient mismatches in lora_A.
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randn(v.shape, generator=g) * 0.1 for k, v in state.items()}


def _grads(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    out = {}
    for name, p in module.named_parameters():
        if p.requires_grad:
            key = name.removeprefix("base_model.model.").replace("modules_to_save.", "").replace(".default", "")
            out[key] = p.grad.clone()
    return out


def _split_pair(kind: str, cut: int, spec: LoraSpec) -> tuple[FullModel, ClientStage, ServerStage, Task]:
    """A tiny model whole and split at `cut`, all three holding the same randomized adapter."""
    base, task = tiny_model(kind)
    reference = full_model(copy.deepcopy(base), spec, task)
    state = _randomized(read_adapter(reference.peft), seed=cut)
    write_adapter(reference.peft, state)
    client, server = split_model(copy.deepcopy(base), cut, spec, task)
    client_state, server_state = split_adapter(state, reference.layout, cut)
    write_adapter(client.peft, client_state)
    write_adapter(server.peft, server_state)
    return reference, client, server, task


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("cut", CUTS)
def test_split_loss_and_every_lora_gradient_match_the_unsplit_model(kind: str, cut: int) -> None:
    reference, client, server, task = _split_pair(kind, cut, SPEC)
    ids, mask, labels = random_batch(task, seed=cut)

    expected = reference.peft(input_ids=ids, attention_mask=mask, labels=labels).loss  # HF's own loss
    expected.backward()
    hidden = client(ids, mask)
    received = hidden.detach().requires_grad_()
    out = server(received, mask, labels)
    out.loss.backward()
    hidden.backward(received.grad)

    assert float(out.loss.detach()) == pytest.approx(float(expected.detach()), abs=1e-6)
    want = _grads(reference.peft)
    got = join_adapter(_grads(client.peft), _grads(server.peft), reference.layout, cut)
    assert set(got) == set(want) and len(want) > 0
    for key in want:
        torch.testing.assert_close(got[key], want[key], atol=1e-6, rtol=0, msg=key)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("cut", CUTS)
def test_split_stages_draw_the_unsplit_models_dropout_masks(kind: str, cut: int) -> None:
    """Dropout on (LoRA's, and BERT's and MPNet's hidden and attention dropout): a client stage and then a server
    stage drawing from one stream draw the masks the unsplit model draws from that stream, in the same order."""
    reference, client, server, task = _split_pair(kind, cut, LoraSpec(rank=4, alpha=8, dropout=0.3))
    ids, mask, labels = random_batch(task, seed=cut)
    for module in (reference, client, server):
        module.train()

    with PartyDraws(5).drawing():
        expected = reference.peft(input_ids=ids, attention_mask=mask, labels=labels).loss
    expected.backward()
    draws = PartyDraws(5)
    with draws.drawing():
        hidden = client(ids, mask)
    received = hidden.detach().requires_grad_()
    with draws.drawing():
        out = server(received, mask, labels)
    out.loss.backward()
    hidden.backward(received.grad)
    reference.eval()
    with torch.no_grad():
        without = reference.peft(input_ids=ids, attention_mask=mask, labels=labels).loss

    assert float(out.loss.detach()) == pytest.approx(float(expected.detach()), abs=1e-6)
    assert abs(float(expected.detach()) - float(without)) > 1e-4  # dropout did change the loss
    want = _grads(reference.peft)
    got = join_adapter(_grads(client.peft), _grads(server.peft), reference.layout, cut)
    assert set(got) == set(want) and len(want) > 0
    for key in want:
        torch.testing.assert_close(got[key], want[key], atol=1e-6, rtol=0, msg=key)


@pytest.mark.parametrize("kind", KINDS)
def test_client_stage_holds_only_embeddings_and_its_layers(kind: str) -> None:
    base, task = tiny_model(kind)
    layers_total = sum(p.numel() for p in base.base_model.parameters())
    ref = weakref.ref(base)
    client = client_stage(base, 1, SPEC, task)
    del base
    gc.collect()
    assert ref() is None, "the client stage must not keep the full model alive"
    held = sum(p.numel() for p in client.parameters() if not p.requires_grad)
    embed = client.inner.get_input_embeddings().weight.numel()
    one_layer = sum(p.numel() for n, p in client.named_parameters() if ".0." in n and "lora_" not in n and "layer" in n)
    assert one_layer > 0
    # Embeddings plus one of the four layers (and small norms), never the other three layers.
    assert embed + one_layer <= held < layers_total - 2 * one_layer


def test_cut_outside_the_stack_is_a_model_error() -> None:
    base, task = tiny_model("bert")
    for cut in (0, LAYERS):
        with pytest.raises(ModelError, match=r"cut_layer must be in 1\.\.3"):
            split_model(base, cut, SPEC, task)


def test_adapter_split_and_join_are_exact_inverses_at_every_cut() -> None:
    base, task = tiny_model("bert")
    model = full_model(base, SPEC, task)
    full = _randomized(read_adapter(model.peft), seed=3)
    for cut in range(1, LAYERS):
        client, server = split_adapter(full, model.layout, cut)
        assert len(client) + len(server) == len(full)
        assert all(f".layer.{cut}." not in k for k in client)
        joined = join_adapter(client, server, model.layout, cut)
        assert joined.keys() == full.keys()
        assert all(torch.equal(joined[k], full[k]) for k in full)
        again = split_adapter(joined, model.layout, cut)
        assert again[0].keys() == client.keys() and again[1].keys() == server.keys()


def test_split_parts_load_into_the_stages_built_at_that_cut() -> None:
    base, task = tiny_model("mpnet")
    layout_model = full_model(copy.deepcopy(base), SPEC, task)
    full = _randomized(read_adapter(layout_model.peft), seed=4)
    for cut in range(1, LAYERS):
        client, server = split_model(copy.deepcopy(base), cut, SPEC, task)
        client_part, server_part = split_adapter(full, layout_model.layout, cut)
        write_adapter(client.peft, client_part)  # raises if the keys did not match the stage
        write_adapter(server.peft, server_part)
        assert torch.equal(read_adapter(server.peft)[next(iter(server_part))], next(iter(server_part.values())))


def test_writing_a_mismatched_adapter_state_is_rejected() -> None:
    base, task = tiny_model("bert")
    model = full_model(base, SPEC, task)
    state = read_adapter(model.peft)
    state.pop(next(iter(state)))
    with pytest.raises(ModelError, match="missing"):
        write_adapter(model.peft, state)


def test_lora_targets_default_per_family_and_reject_unknown_names() -> None:
    for kind, expected in [("bert", "query"), ("mpnet", "attn.q"), ("llama-cls", "q_proj")]:
        base, task = tiny_model(kind)
        model = full_model(base, SPEC, task)
        names = [n for n, _ in model.named_modules() if n.endswith("lora_A")]
        assert any(expected in n for n in names), kind
        assert not any("classifier" in n or "score" in n or "pooler" in n for n in names)
    base, task = tiny_model("bert")
    with pytest.raises(ModelError, match="not in the model's layers"):
        full_model(base, LoraSpec(targets=("nonexistent",)), task)


def test_causal_lm_head_stays_tied_and_frozen_on_the_server() -> None:
    base, task = tiny_model("llama-lm")
    _, server = split_model(base, 2, SPEC, Task.CAUSAL_LM)
    head = server.inner.lm_head
    assert not head.weight.requires_grad
    assert not any("lm_head" in k for k in read_adapter(server.peft))
    del task
