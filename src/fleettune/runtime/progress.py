"""One row of a run's history."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RoundRecord:
    round: int
    sim_time_s: float
    wall_time_s: float
    train_loss: float
    accuracy: float | None
    macro_f1: float | None
