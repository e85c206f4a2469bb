"""FLOPs counted on the real computation: golden products, CPU attention, split phases in train mode."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from peft import LoraConfig, inject_adapter_in_model
from torch import nn
from transformers import BertConfig
from transformers.models.bert.modeling_bert import BertLayer

from fleettune.errors import ModelError
from fleettune.fleet.flops import count_flops, measure_split_flops
from fleettune.models.lora import LoraSpec
from fleettune.models.stages import Task, full_model, split_model
from tests.models.tiny import VOCAB, tiny_model


def test_linear_forward_is_two_flops_per_multiply_add() -> None:
    linear = nn.Linear(64, 32)
    x = torch.randn(8, 64)
    assert count_flops(lambda: linear(x)) == 2 * 8 * 64 * 32


def test_cpu_attention_is_counted_forward_and_backward() -> None:
    q = torch.randn(2, 4, 16, 8, requires_grad=True)  # (B, heads, T, head dim)
    out = torch.nn.functional.scaled_dot_product_attention(q, q, q)
    product = 2 * (2 * 4) * 16 * 8 * 16  # one (T x d) @ (d x T) product per head
    assert count_flops(lambda: torch.nn.functional.scaled_dot_product_attention(q, q, q)) == 2 * product
    # Backward: recompute scores, then grads of V, scores, Q and K.
    assert count_flops(lambda: torch.autograd.grad(out.sum(), [q])) == 5 * product


def test_bert_base_layer_with_lora_matches_facts() -> None:
    # Meta tensors: shapes only, so a BERT-base layer at batch 16, seq 128 is counted in milliseconds.
    config = BertConfig()
    config._attn_implementation = "eager"  # a bare layer gets none from from_pretrained
    with torch.device("meta"):
        layer = inject_adapter_in_model(LoraConfig(r=16, target_modules=["query", "value"]), BertLayer(config))
        for name, p in layer.named_parameters():
            p.requires_grad_("lora_" in name)
        x = torch.empty(16, 128, 768, requires_grad=True)
        out = layer(x)
        forward = count_flops(lambda: layer(x))
        trainable = [x, *(p for p in layer.parameters() if p.requires_grad)]
        backward = count_flops(lambda: torch.autograd.grad(out, trainable, torch.empty_like(out)))
    tokens = 16 * 128
    linear = 2 * tokens * (4 * 768 * 768 + 2 * 768 * 3072)  # Q, K, V, O and the FFN: 28.99 GFLOP
    attention = 2 * (2 * 16 * 128 * 128 * 768)  # scores and weighted values: 0.81 GFLOP
    lora = 2 * tokens * 2 * (768 * 16 + 16 * 768)  # rank 16 on query and value: 0.20 GFLOP
    assert forward == linear + attention + lora == 29_997_662_208
    # Frozen weights need no weight-gradient products: backward is about 1.03x forward, not 2x.
    assert backward == 31_004_295_168
    assert backward / forward == pytest.approx(1.0336, abs=1e-4)


def _batch(batch_size: int, seq_len: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    ids = torch.randint(1, VOCAB, (batch_size, seq_len), generator=torch.Generator().manual_seed(0))
    return ids, torch.ones_like(ids), torch.zeros(batch_size, dtype=torch.long)


def test_client_and_server_forwards_add_up_to_the_unsplit_model_at_every_cut() -> None:
    ids, mask, labels = _batch(4, 16)
    model, task = tiny_model("bert")
    whole = full_model(model, LoraSpec(), task)
    unsplit = count_flops(lambda: whole(ids, mask, labels))
    client_forwards = []
    for cut in (1, 2, 3):
        client, server = split_model(tiny_model("bert")[0], cut, LoraSpec(), task)
        client_flops, server_flops = measure_split_flops(client, server, ids, mask, labels)
        assert client_flops.forward + server_flops.forward == unsplit
        assert client_flops.backward > 0 and server_flops.backward > server_flops.forward
        client_forwards.append(client_flops.forward)
    assert client_forwards[0] < client_forwards[1] < client_forwards[2]
    assert client_forwards[2] - client_forwards[1] == client_forwards[1] - client_forwards[0]  # one layer each


def test_measuring_leaves_gradients_alone() -> None:
    model, task = tiny_model("bert")
    client, server = split_model(model, 2, LoraSpec(), task)
    measure_split_flops(client, server, *_batch(2, 8))
    assert all(p.grad is None for p in [*client.parameters(), *server.parameters()])


def test_a_step_is_counted_in_train_mode_and_the_modes_are_put_back() -> None:
    """Dropout decides which attention kernel runs (and so the FLOPs): stages loaded in eval mode are counted as
    the training step runs them, which is what the simulator counts, and go back to eval mode."""
    ids, mask, labels = _batch(4, 16)
    model, task = tiny_model("bert")
    client, server = split_model(model, 2, LoraSpec(), task)
    client.eval()
    server.eval()
    state = torch.random.get_rng_state()
    client_flops, server_flops = measure_split_flops(client, server, ids, mask, labels)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert not any(m.training for m in [*client.modules(), *server.modules()])
    client.train()
    server.train()
    hidden = client(ids, mask)
    received = hidden.detach().requires_grad_(True)
    assert count_flops(lambda: client(ids, mask)) == client_flops.forward
    loss = server(received, mask, labels).loss
    assert count_flops(lambda: loss.backward()) == server_flops.backward
    assert received.grad is not None
    assert count_flops(lambda: hidden.backward(received.grad)) == client_flops.backward


@pytest.fixture(scope="module")
def minilm_path() -> Path:
    from fleettune.models.catalog import resolve_model

    try:
        return resolve_model("minilm").path
    except ModelError as exc:
        pytest.skip(f"minilm unavailable: {exc}")


def test_minilm_split_flops_match_its_layer_arithmetic(minilm_path: Path) -> None:
    from fleettune.models.loading import load_task_model

    model = load_task_model(minilm_path, Task.CLASSIFICATION, num_labels=6, pad_token_id=0, seed=0)
    client, server = split_model(model, 1, LoraSpec(), Task.CLASSIFICATION)
    batch, seq_len, hidden, ffn, rank = 4, 32, 384, 1536, 16
    ids = torch.randint(1, 30000, (batch, seq_len), generator=torch.Generator().manual_seed(0))
    client_flops, server_flops = measure_split_flops(
        client, server, ids, torch.ones_like(ids), torch.zeros(batch, dtype=torch.long)
    )
    tokens = batch * seq_len
    linear = 2 * tokens * (4 * hidden * hidden + 2 * hidden * ffn)
    attention = 2 * (2 * batch * seq_len * seq_len * hidden)
    # LoRA on query, key, value and every dense: four hidden->hidden projections and two FFN ones.
    lora = 2 * tokens * rank * (4 * 2 * hidden + 2 * (hidden + ffn))
    layer = linear + attention + lora
    assert client_flops.forward == layer
    pooler_and_classifier = 2 * batch * (hidden * hidden + hidden * 6)
    assert server_flops.forward == 5 * layer + pooler_and_classifier
    # The first layer's frozen products need no input gradient (nothing before it trains): < 1x.
    assert 0.8 < client_flops.backward / client_flops.forward < 1.0
    assert 1.0 < server_flops.backward / server_flops.forward < 1.2
