"""Side-by-side makespans of every registered scheduling policy and the lower bound."""

from __future__ import annotations

from collections.abc import Sequence

# Importing a policy module registers it in SCHEDULERS.
from fleettune.scheduling import carlier, fifo, greedy, schrage  # noqa: F401
from fleettune.scheduling.bounds import preemptive_bound
from fleettune.scheduling.jobs import Job
from fleettune.scheduling.registry import SCHEDULERS

BOUND_KEY = "bound"


def compare_policies(jobs: Sequence[Job]) -> dict[str, float]:
    """Makespan in seconds per registered policy name, plus the preemptive lower bound under ``"bound"``."""
    makespans = {name: SCHEDULERS.get(name)(jobs).makespan_s for name in SCHEDULERS.names()}
    makespans[BOUND_KEY] = preemptive_bound(jobs)
    return makespans
