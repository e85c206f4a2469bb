"""Exhaustive reference answers for tiny instances: every order, every subset."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

from fleettune.scheduling import Job, evaluate_order


def best_makespan(jobs: Sequence[Job]) -> float:
    """Minimum makespan over all n! orders; a waiting fixed order reaches every useful non-preemptive schedule."""
    return min(evaluate_order(jobs, [job.id for job in order]).makespan_s for order in itertools.permutations(jobs))


def best_subset_bound(jobs: Sequence[Job]) -> float:
    """max over non-empty job sets of min r + sum p + min q (0 for no jobs)."""
    best = 0.0
    for size in range(1, len(jobs) + 1):
        for subset in itertools.combinations(jobs, size):
            bound = (
                min(job.release_s for job in subset)
                + sum(job.processing_s for job in subset)
                + min(job.tail_s for job in subset)
            )
            best = max(best, bound)
    return best
