"""Choosing one option per device to minimise a step's makespan: multi-start local search.

Each device has a list of options (a cut, a rank and the step phases they give). An assignment picks
one option index per device; its score is the makespan the server's policy reaches on the devices'
jobs, then the sum of every job's end (completion plus tail) to break ties. The search starts from
each given assignment and changes one device at a time while that lowers the score, until no
single-device change does; in fleets small enough it then also tries changes of two devices at once.
The best of these local optima wins.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

from fleettune.planning.costs import CutCost, server_job
from fleettune.runtime.sim.clock import StepPhases
from fleettune.scheduling import SCHEDULERS, Policy

Assignment = tuple[int, ...]  # per device, an index into its options
Score = tuple[float, float]  # (makespan, sum over jobs of completion + tail), in seconds

# A change must lower the makespan by more than this fraction of it to count as a gain; equal
# makespans fall through to the tie-break. Keeps rounding noise from driving the search.
RELATIVE_GAIN = 1e-9

# Two-device changes are tried only while there are at most this many (100 devices with 2 cuts each,
# 25 with 5 cuts as MiniLM has); each sweep over them scores every one.
PAIR_LIMIT = 5000


@dataclass(frozen=True)
class Option:
    """One way to run a device: its cut, LoRA rank, client memory, step costs and priced phases."""

    cut: int
    rank: int
    memory_bytes: int
    cost: CutCost
    phases: StepPhases


class StepScorer:
    """Scores of assignments under one scheduling policy, each assignment evaluated once."""

    def __init__(self, options: Sequence[Sequence[Option]], policy: str) -> None:
        self.options = options
        self.policy: Policy = SCHEDULERS.get(policy)
        self._scores: dict[Assignment, Score] = {}

    def __call__(self, assignment: Assignment) -> Score:
        if assignment not in self._scores:
            jobs = [server_job(self.options[i][k].phases) for i, k in enumerate(assignment)]
            schedule = self.policy(jobs)
            ends = sum(schedule.completion_s[job.id] + job.tail_s for job in jobs)
            self._scores[assignment] = (schedule.makespan_s, ends)
        return self._scores[assignment]


def _better(new: Score, old: Score) -> bool:
    """A strictly lower makespan, or the same makespan at most and a strictly lower sum of ends.

    Never accepting a higher makespan makes every accepted change lower (makespan, ends) in order,
    so the search cannot cycle and stops after finitely many changes.
    """
    if new[0] < old[0] - RELATIVE_GAIN * old[0]:
        return True
    return new[0] <= old[0] and new[1] < old[1] - RELATIVE_GAIN * old[1]


def _single_moves(current: Assignment, scorer: StepScorer) -> Assignment:
    """Coordinate descent: device by device, move to its best option given the others when that lowers
    the score; sweep the devices again until a whole sweep changes nothing.

    The last sweep tried every single-device change of the final assignment, so none of them improves
    it. Ties between a device's options go to the first one, so the result depends only on the scores.
    """
    current_score = scorer(current)
    changed = True
    while changed:
        changed = False
        for device, options in enumerate(scorer.options):
            for index in range(len(options)):
                if index == current[device]:
                    continue
                candidate = (*current[:device], index, *current[device + 1 :])
                score = scorer(candidate)
                if _better(score, current_score):
                    current, current_score, changed = candidate, score, True
    return current


def pair_changes(options: Sequence[Sequence[Option]]) -> int:
    """How many assignments differ from a given one in exactly two devices."""
    alternatives = [len(device) - 1 for device in options]
    return (sum(alternatives) ** 2 - sum(a * a for a in alternatives)) // 2


def _first_better_pair(current: Assignment, scorer: StepScorer) -> Assignment | None:
    """The first two-device change (devices, then options, in order) that lowers the score, if any."""
    current_score = scorer(current)
    options = scorer.options
    for first, second in itertools.combinations(range(len(options)), 2):
        for a in range(len(options[first])):
            for b in range(len(options[second])):
                if a == current[first] or b == current[second]:
                    continue
                candidate = list(current)
                candidate[first], candidate[second] = a, b
                if _better(scorer(tuple(candidate)), current_score):
                    return tuple(candidate)
    return None


def descend(start: Assignment, scorer: StepScorer) -> Assignment:
    """Single-device descent from `start`; then, when the fleet has at most `PAIR_LIMIT` two-device
    changes, the first of those that improves and single-device descent again, until none improves.

    Two-device changes let one device move deeper while another moves shallower, which no single
    change can do without first making the step longer.
    """
    current = _single_moves(start, scorer)
    if pair_changes(scorer.options) > PAIR_LIMIT:
        return current
    while (better := _first_better_pair(current, scorer)) is not None:
        current = _single_moves(better, scorer)
    return current


def local_search(starts: Sequence[Assignment], scorer: StepScorer) -> Assignment:
    """The best of the local optima reached from each start (ties: the earliest start)."""
    if not starts:
        raise ValueError("local search needs at least one start")
    optima = [descend(start, scorer) for start in dict.fromkeys(starts)]
    return min(optima, key=lambda assignment: (scorer(assignment), optima.index(assignment)))


def alone_best(options: Sequence[Sequence[Option]]) -> Assignment:
    """Each device's best option if it had the server to itself: least release + service + tail
    (ties: the first option)."""
    return tuple(min(range(len(device)), key=lambda k: (_alone_s(device[k].phases), k)) for device in options)


def _alone_s(phases: StepPhases) -> float:
    return phases.release_s + phases.switch_s + phases.server_s + phases.tail_s
