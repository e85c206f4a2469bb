"""Which waiting job a free server takes next, when jobs arrive at real times (deployment).

Every job offered has arrived, so each policy is applied to them as released now: Schrage's rule takes
the largest tail, `optimal` the head of Carlier's order for these jobs, `greedy` its fixed order's head.
First-come-first-served is the one policy whose choice depends on the arrival times themselves.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from fleettune.scheduling.jobs import Job
from fleettune.scheduling.registry import SCHEDULERS


@dataclass(frozen=True)
class Waiting:
    id: str
    arrived_s: float  # clock reading when its activations arrived
    processing_s: float  # server time it is expected to take (its last measured one)
    tail_s: float  # what it still has to do after the server (its last measured backward)


def next_job(policy: str, waiting: Sequence[Waiting]) -> str:
    """The id of the waiting job `policy` serves first."""
    if not waiting:
        raise ValueError("no waiting job to choose from")
    if policy == "fifo":
        return min(waiting, key=lambda w: (w.arrived_s, w.id)).id
    jobs = [Job(w.id, 0.0, max(0.0, w.processing_s), max(0.0, w.tail_s)) for w in waiting]
    return SCHEDULERS.get(policy)(jobs).order[0]
