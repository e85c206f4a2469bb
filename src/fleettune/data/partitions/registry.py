"""The partitioner extension point: the Partitioner protocol, its registry and shared argument rules."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from fleettune.errors import ConfigError
from fleettune.registry import Registry

# A client should hold enough rows for a few batches; on tiny data sets the bar drops to keep it possible.
MIN_CLIENT_ROWS = 10


class Partitioner(Protocol):
    """Assigns every training row to one of ``num_clients`` clients, deterministically for ``seed``."""

    def split(self, labels: np.ndarray, groups: np.ndarray | None, num_clients: int, seed: int) -> list[np.ndarray]:
        """Row indices per client."""
        ...


@dataclass(frozen=True)
class PartitionKind:
    """A registered partition: ``form`` as a user writes it, ``make`` builds it from the text after ':'."""

    form: str
    make: Callable[[str | None], Partitioner]


PARTITIONERS: Registry[PartitionKind] = Registry("partition")


def expected_forms() -> str:
    return ", ".join(PARTITIONERS.get(name).form for name in PARTITIONERS.names())


def parse_alpha(name: str, arg: str | None) -> float:
    """The concentration ALPHA of ``name:ALPHA``: a finite positive number."""
    try:
        alpha = float(arg) if arg is not None else math.nan
    except ValueError:
        alpha = math.nan
    if not (math.isfinite(alpha) and alpha > 0):
        raise ConfigError(
            f"partition '{name}:{arg or ''}' is invalid; expected {name}:ALPHA with ALPHA a positive number"
        )
    return alpha


def no_argument(name: str, arg: str | None) -> None:
    if arg is not None:
        raise ConfigError(f"partition '{name}:{arg}' is invalid; '{name}' takes no argument")


def min_client_rows(num_rows: int, num_clients: int) -> int:
    """MIN_CLIENT_ROWS, lowered to half a fair share (at least 1) when rows are scarce."""
    return max(1, min(MIN_CLIENT_ROWS, num_rows // (2 * num_clients)))
