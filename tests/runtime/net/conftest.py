"""Fixtures for deployment tests: the tiny model and data of the scheme tests, and per-device data folders."""

from __future__ import annotations

from fleettune.runtime.net.trial import write_device_folders as device_folders
from tests.schemes.conftest import save_tiny_bert, tiny_data_dir, tiny_flags, tiny_model_dir

__all__ = ["device_folders", "save_tiny_bert", "tiny_data_dir", "tiny_flags", "tiny_model_dir"]
