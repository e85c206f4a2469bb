"""The split invariant on the real pretrained all-MiniLM-L6-v2 (offline, from its registry package)."""

from __future__ import annotations

import copy

import pytest
import torch

from fleettune.models.adapters import join_adapter, read_adapter, split_adapter, write_adapter
from fleettune.models.catalog import load_tokenizer, resolve_model
from fleettune.models.loading import load_task_model
from fleettune.models.lora import LoraSpec
from fleettune.models.stages import Task, full_model, split_model


@pytest.fixture(scope="module")
def minilm():
    try:
        source = resolve_model("minilm")
    except Exception as exc:  # the package is a declared dependency; say so if it is missing
        pytest.skip(f"minilm unavailable: {exc}")
    tokenizer = load_tokenizer(source)
    model = load_task_model(source.path, Task.CLASSIFICATION, num_labels=6, pad_token_id=tokenizer.pad_token_id, seed=0)
    return model, tokenizer


def test_minilm_split_at_layer_3_matches_the_unsplit_model(minilm) -> None:
    model, tokenizer = minilm
    assert model.config.num_hidden_layers == 6
    spec = LoraSpec(rank=8, alpha=16, dropout=0.0)
    reference = full_model(copy.deepcopy(model), spec, Task.CLASSIFICATION)
    g = torch.Generator().manual_seed(0)
    state = {k: torch.randn(v.shape, generator=g) * 0.02 for k, v in read_adapter(reference.peft).items()}
    write_adapter(reference.peft, state)
    client, server = split_model(copy.deepcopy(model), 3, spec, Task.CLASSIFICATION)
    client_part, server_part = split_adapter(state, reference.layout, 3)
    write_adapter(client.peft, client_part)
    write_adapter(server.peft, server_part)
    batch = tokenizer(
        ["the sensor reports a sudden rise in temperature", "all quiet on the line today"],
        padding="longest",
        return_tensors="pt",
    )
    labels = torch.tensor([3, 1])
    expected = reference(batch.input_ids, batch.attention_mask, labels).loss
    expected.backward()
    hidden = client(batch.input_ids, batch.attention_mask)
    assert hidden.shape == (2, batch.input_ids.shape[1], 384)
    received = hidden.detach().requires_grad_()
    loss = server(received, batch.attention_mask, labels).loss
    loss.backward()
    hidden.backward(received.grad)
    assert float(loss.detach()) == pytest.approx(float(expected.detach()), abs=1e-6)

    def grads(peft: torch.nn.Module) -> dict[str, torch.Tensor]:
        return {
            n.removeprefix("base_model.model.").replace("modules_to_save.", "").replace(".default", ""): p.grad
            for n, p in peft.named_parameters()
            if p.requires_grad
        }

    want = grads(reference.peft)
    got = join_adapter(grads(client.peft), grads(server.peft), reference.layout, 3)
    assert set(got) == set(want)
    for key in want:
        torch.testing.assert_close(got[key], want[key], atol=1e-6, rtol=0, msg=key)
