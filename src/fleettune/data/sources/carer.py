"""CARER emotion tweets (dair-ai/emotion): ``train.txt``, ``val.txt``, ``test.txt`` of text;label lines."""

from __future__ import annotations

import os
from pathlib import Path

from fleettune.data.sources.assemble import assemble
from fleettune.data.sources.registry import SOURCES, require_dir, require_file
from fleettune.data.sources.text_files import read_semicolon_lines
from fleettune.data.types import Split, TextDataset
from fleettune.errors import DataError

# dair-ai/emotion's label ids, so a model trained here reads the same ids as one trained on the hub copy.
EMOTIONS = ("sadness", "joy", "love", "anger", "fear", "surprise")
HUB_ID = "dair-ai/emotion"
EXPECTED = "train.txt, val.txt and test.txt with a header line then 'text;label' per line"


@SOURCES.register("carer")
def load_carer(
    data_dir: Path | None, *, text_column: str = "text", label_column: str = "label", seed: int = 0
) -> TextDataset:
    if data_dir is None:
        return _load_from_hub()
    folder = require_dir(data_dir, "carer", EXPECTED)
    files = {split: require_file(folder / f"{split}.txt", EXPECTED) for split in ("train", "val", "test")}
    rows = {split: read_semicolon_lines(path) for split, path in files.items()}
    return assemble("carer", rows["train"], rows["test"], rows["val"], seed, EMOTIONS)


def _offline() -> bool:
    flags = (os.environ.get(name, "").strip().lower() for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))
    return any(flag in {"1", "true", "yes", "on"} for flag in flags)


def _load_from_hub() -> TextDataset:
    needed = f"pass --data-dir DIR holding {EXPECTED}"
    if _offline():
        raise DataError(f"dataset carer: the Hugging Face Hub is offline (HF_HUB_OFFLINE); {needed}")
    import datasets

    try:
        hub = datasets.load_dataset(HUB_ID)
    except Exception as err:  # any failure to reach or read the hub means the same to the user
        raise DataError(f"dataset carer: cannot load {HUB_ID} from the hub ({type(err).__name__}); {needed}") from err
    names = list(hub["train"].features["label"].names)
    splits = {
        split: Split([str(text) for text in hub[split]["text"]], [int(label) for label in hub[split]["label"]])
        for split in ("train", "validation", "test")
    }
    return TextDataset("carer", names, splits["train"], splits["test"], splits["validation"])
