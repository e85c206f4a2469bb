"""One row of a run's history."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RoundRecord:
    round: int
    sim_time_s: float
    wall_time_s: float
    train_loss: float | None  # None when no client completed the round
    accuracy: float | None
    macro_f1: float | None
    participants: tuple[str, ...] = ()  # clients that took part (selected and online), dropped ones included
    offline: tuple[str, ...] = ()  # selected clients that were offline
    dropped_deadline: tuple[str, ...] = ()  # participants whose work would have ended after the deadline
    dropped_disconnect: tuple[str, ...] = ()  # participants that disconnected during their work
    epsilon: float | None = None  # DP: privacy spent after this round's aggregation; None without DP noise
