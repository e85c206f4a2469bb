"""Fixtures for deployment tests: the tiny model and data of the scheme tests, and per-device data folders."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from fleettune.runtime.net.trial import write_device_folders as device_folders
from tests.schemes.conftest import save_tiny_bert, tiny_data_dir, tiny_flags, tiny_model_dir

__all__ = ["device_folders", "save_tiny_bert", "tiny_data_dir", "tiny_flags", "tiny_model_dir"]


@pytest.fixture(autouse=True)
def one_torch_thread() -> Iterator[None]:
    """One intra-op thread, as the device and server processes of these tests run (OMP_NUM_THREADS=1): the
    threads of an in-process deployment compute side by side, and a multi-threaded BLAS may then sum in
    another order than the simulation did, a last-bit difference that Adam can blow up where a gradient is
    about its epsilon. Deployed-equals-simulated compares the schemes, not the BLAS."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
