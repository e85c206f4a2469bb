"""Inversion of cut activations: the decoder, the release path, the whole attack on MiniLM and inside a run."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from fleettune.compression import parse_cut_codec
from fleettune.config import build_config
from fleettune.data import Batcher, load_dataset
from fleettune.errors import ConfigError
from fleettune.messages import FP32_PADDED, CutWire
from fleettune.models.adapters import read_adapter, split_adapter, write_adapter
from fleettune.models.catalog import load_tokenizer, resolve_model
from fleettune.models.layout import find_layout
from fleettune.models.loading import load_task_model
from fleettune.models.lora import LoraSpec
from fleettune.models.stages import Task, full_model, split_model
from fleettune.privacy.activations import activation_norms
from fleettune.privacy.leakage.inversion import CutModel, Release, fit_decoder, invert, real_tokens
from fleettune.report import build_report
from fleettune.runner import execute, prepare
from tests.schemes.conftest import tiny_flags

SPEC = LoraSpec(rank=4, alpha=8, dropout=0.0)


def _randomise(model: torch.nn.Module, seed: int, scale: float = 0.05) -> None:
    """Give an adapter non-zero values, as training would (the attacker never sees them)."""
    g = torch.Generator().manual_seed(seed)
    write_adapter(model, {k: torch.randn(v.shape, generator=g) * scale for k, v in read_adapter(model).items()})


def test_the_decoder_recovers_tokens_it_never_saw_through_a_linear_map() -> None:
    g = torch.Generator().manual_seed(0)
    table = torch.randn(50, 8, generator=g)
    mixing, shift = torch.randn(8, 12, generator=g), torch.randn(12, generator=g)
    seen = torch.randint(0, 40, (400,), generator=g)  # tokens 40..49 never appear in the public text
    decoder = fit_decoder(
        [(table[seen[:200]] @ mixing + shift, seen[:200]), (table[seen[200:]] @ mixing + shift, seen[200:])],
        table,
        torch.arange(50),
    )
    unseen = torch.arange(40, 50)
    assert decoder.predict(table[unseen] @ mixing + shift).tolist() == unseen.tolist()
    with pytest.raises(ValueError, match="at least one public token"):
        fit_decoder([], table, torch.arange(50))


def test_cut_model_reads_what_the_client_stage_sends(tiny_model_dir: Path) -> None:
    tokenizer = load_tokenizer(resolve_model(str(tiny_model_dir)))
    model = load_task_model(
        tiny_model_dir, Task.CLASSIFICATION, num_labels=3, pad_token_id=tokenizer.pad_token_id, seed=0
    )
    whole = full_model(copy.deepcopy(model), SPEC, Task.CLASSIFICATION)
    _randomise(whole.peft, 1)
    client, _ = split_model(copy.deepcopy(model), 2, SPEC, Task.CLASSIFICATION)
    write_adapter(client.peft, split_adapter(read_adapter(whole.peft), whole.layout, 2)[0])
    batch = next(Batcher(tokenizer, ["the camera is idle", "a fault"], [0, 1], 16).batches(2, False, None))
    expected = client(batch.input_ids, batch.attention_mask)
    got = CutModel(whole.peft.base_model.model, whole.layout).activations(2, batch)
    assert torch.allclose(got, expected, atol=1e-6)
    assert real_tokens(batch, tokenizer.all_special_ids).sum(dim=1).tolist() == [4, 2]  # no [CLS], [SEP], pad


def test_release_applies_protection_then_the_codec() -> None:
    hidden = torch.randn(3, 4, 5, generator=torch.Generator().manual_seed(0)) * 10
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0]])
    g = torch.Generator().manual_seed(1)
    assert torch.equal(Release(FP32_PADDED)(hidden, mask, g), hidden) and not Release(FP32_PADDED).protected
    clipped = Release(FP32_PADDED, clip=2.0)(hidden, mask, g)
    assert torch.all(activation_norms(clipped, mask) <= 2.0 + 1e-5) and torch.all(clipped[1, 2:] == 0)
    int8 = CutWire(parse_cut_codec("int8"), unpad=True)
    sent = Release(int8)(hidden, mask, g)
    assert not torch.equal(sent, hidden) and torch.allclose(
        sent * mask.unsqueeze(-1), hidden * mask.unsqueeze(-1), atol=0.5
    )


@pytest.fixture(scope="module")
def minilm() -> tuple[torch.nn.Module, object]:
    try:
        source = resolve_model("minilm")
    except Exception as exc:  # the package is a declared dependency; say so if it is missing
        pytest.skip(f"minilm unavailable: {exc}")
    tokenizer = load_tokenizer(source)
    model = load_task_model(source.path, Task.CLASSIFICATION, num_labels=5, pad_token_id=tokenizer.pad_token_id, seed=0)
    return model, tokenizer


def test_minilm_cut_1_activations_give_their_tokens_away_unless_noised(minilm: tuple[torch.nn.Module, object]) -> None:
    model, tokenizer = minilm
    texts = load_dataset("bbc-news", None, seed=0).train.texts
    victim_model = full_model(copy.deepcopy(model), LoraSpec(rank=8, alpha=16, dropout=0.0), Task.CLASSIFICATION)
    _randomise(victim_model.peft, 2, 0.02)  # the client's adapter: unknown to the server
    victim = CutModel(victim_model.peft.base_model.model, victim_model.layout)
    public = CutModel(model, find_layout(model))

    def run(release: Release) -> tuple[float, float, int]:
        victim_batches = Batcher(tokenizer, texts[:8], [0] * 8, 64).batches(8, False, None)
        public_batches = Batcher(tokenizer, texts[100:228], [0] * 128, 64).batches(32, False, None)
        table = model.get_input_embeddings().weight
        result = invert(victim, public, table, 1, victim_batches, public_batches, release, tokenizer.all_special_ids)
        return result.token_recovery, result.chance, result.tokens

    recovered, chance, tokens = run(Release(FP32_PADDED))
    noised, _, _ = run(Release(FP32_PADDED, clip=10.0, noise_multiplier=0.5))
    print(f"minilm cut 1: recovery {recovered:.3f}, chance {chance:.3f}, {tokens} tokens; noised {noised:.3f}")
    assert tokens > 300 and recovered > 0.8 > 5 * chance and noised < recovered / 4


def test_a_split_run_reports_inversion_and_fl_refuses_it(tiny_model_dir: Path, tiny_data_dir: Path) -> None:
    flags = tiny_flags(tiny_model_dir, tiny_data_dir, "mesfl", rounds=2, clients=3, cut_layer=1)
    flags["privacy.inversion_samples"] = 6
    prepared = prepare(build_config(flags=flags))
    inversion = build_report(prepared, execute(prepared), 0.0)["privacy"]["inversion"]
    assert inversion["victim"] == prepared.setup.clients[0].id and inversion["cut_layer"] == 1
    assert inversion["protected"] is False and inversion["public_texts"] == 64  # the other two clients' texts
    assert inversion["tokens"] > 0 and 0.0 <= inversion["chance"] <= inversion["token_recovery"] <= 1.0
    flags["scheme"] = "fl"
    with pytest.raises(ConfigError, match=r"^privacy\.inversion_samples: scheme fl sends no cut activations"):
        prepare(build_config(flags=flags))
