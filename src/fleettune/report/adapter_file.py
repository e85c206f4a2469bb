"""The trained global adapter of a run, saved beside its report (safetensors, full-model keys)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors.torch import save_file

FILE = "adapter.safetensors"


def save_adapter(adapter: Mapping[str, torch.Tensor], out_dir: Path) -> Path:
    """Write atomically (a temporary file renamed over the old one)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / FILE
    partial = out_dir / (FILE + ".partial")
    save_file({k: v.detach().contiguous() for k, v in adapter.items()}, str(partial))
    partial.replace(path)
    return path
