"""Choosing one option per device to minimise the seconds a round takes: multi-start local search.

Each device has a list of options (a cut, a rank and the step phases they give). An assignment picks
one option index per device; its score is the seconds per round the server's policy gives the devices'
jobs (`planning.rounds`: the plain steps and, with a cadence, the step that ends with the adapters' round
trip), then the sum of every job's end (completion plus tail) in the same proportions to break ties. The
search starts from each given assignment and changes one device at a time while that lowers the score,
until no single-device change does; in fleets small enough it then also tries changes of two devices at
once. The best of these local optima wins.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

from fleettune.fleet.profiles import Device
from fleettune.planning.costs import Option
from fleettune.planning.rounds import Rounds, RoundTime, Turns, alone_round_s, round_time, turn_members
from fleettune.scheduling import Policy, server_policy

__all__ = ["Assignment", "Option", "PlanScorer", "Score", "alone_best", "descend", "local_search", "pair_changes"]

Assignment = tuple[int, ...]  # per device, an index into its options
Score = tuple[float, float]  # (seconds per round, sum over jobs of completion + tail), in seconds

# A change must lower the score by more than this fraction of it to count as a gain; equal
# scores fall through to the tie-break. Keeps rounding noise from driving the search.
RELATIVE_GAIN = 1e-9

# Two-device changes are tried only while there are at most this many (100 devices with 2 cuts each,
# 25 with 5 cuts as MiniLM has); each sweep over them scores every one.
PAIR_LIMIT = 5000


class PlanScorer:
    """Scores of assignments under one scheduling policy (or `SHARING`) and way of making rounds (None: one plain
    step is the round; `Turns` need the `devices`, in the options' order), each assignment evaluated once."""

    def __init__(
        self,
        options: Sequence[Sequence[Option]],
        policy: str,
        cadence: Rounds = None,
        devices: Sequence[Device] | None = None,
    ) -> None:
        self.options = options
        self.policy: Policy = server_policy(policy)
        self.cadence = cadence
        self.devices = devices
        self._times: dict[Assignment, RoundTime] = {}

    def time(self, assignment: Assignment) -> RoundTime:
        if assignment not in self._times:
            chosen = [self.options[i][k] for i, k in enumerate(assignment)]
            self._times[assignment] = round_time(chosen, self.policy, self.cadence, self.devices)
        return self._times[assignment]

    def __call__(self, assignment: Assignment) -> Score:
        time = self.time(assignment)
        return time.round_s, time.ends_s


def _better(new: Score, old: Score) -> bool:
    """A strictly lower round, or the same round at most and a strictly lower sum of ends.

    Never accepting a longer round makes every accepted change lower (round, ends) in order,
    so the search cannot cycle and stops after finitely many changes.
    """
    if new[0] < old[0] - RELATIVE_GAIN * old[0]:
        return True
    return new[0] <= old[0] and new[1] < old[1] - RELATIVE_GAIN * old[1]


def _single_moves(current: Assignment, scorer: PlanScorer) -> Assignment:
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


def _first_better_pair(current: Assignment, scorer: PlanScorer) -> Assignment | None:
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


def _groups(current: Assignment, scorer: PlanScorer) -> list[list[int]]:
    """Devices that may move together: those that share a cut and, in turns by cut, each cluster (whose members
    share a cut too)."""
    options = scorer.options
    by_cut: dict[int, list[int]] = {}
    for i, k in enumerate(current):
        by_cut.setdefault(options[i][k].cut, []).append(i)
    groups = list(by_cut.values())
    turns = scorer.cadence
    if isinstance(turns, Turns) and turns.cluster_by == "cut" and scorer.devices is not None:
        chosen = [options[i][k] for i, k in enumerate(current)]
        groups += [g for g in turn_members(chosen, turns, scorer.devices) if g not in groups]
    return groups


def _first_better_group(current: Assignment, scorer: PlanScorer) -> Assignment | None:
    """The first change that lowers the score among moves of a group (`_groups`) to another cut, and swaps of
    the cuts of two groups that each share one (each device to its first option at its new cut; a change some
    device has no option for is skipped)."""
    options = scorer.options
    current_score = scorer(current)
    at = [{o.cut: k for k, o in reversed(list(enumerate(device)))} for device in options]  # first option per cut
    every = sorted({cut for device in at for cut in device})
    groups = _groups(current, scorer)
    cut_of = [options[g[0]][current[g[0]]].cut for g in groups]  # every member of a group shares this cut
    changes: list[dict[int, int]] = [
        {i: b for i in g} for g, a in zip(groups, cut_of, strict=True) for b in every if b != a
    ]
    for (g, a), (h, b) in itertools.combinations(zip(groups, cut_of, strict=True), 2):
        if a != b:
            changes.append({**{i: b for i in g}, **{i: a for i in h}})
    for change in changes:
        candidate = tuple(at[i].get(change[i], -1) if i in change else k for i, k in enumerate(current))
        if -1 not in candidate and _better(scorer(candidate), current_score):
            return candidate
    return None


def descend(start: Assignment, scorer: PlanScorer) -> Assignment:
    """Single-device descent from `start`; then, while one improves, the first improving two-device change
    (when the fleet has at most `PAIR_LIMIT` of them) or group change (`_first_better_group`), each followed
    by single-device descent again.

    Two-device changes let one device move deeper while another moves shallower, which no single
    change can do without first making the step longer. Group changes move a whole cluster when clusters are
    made of the devices that share a cut, which a change of one device (splitting the cluster) would not.
    """
    current = _single_moves(start, scorer)
    pairs = pair_changes(scorer.options) <= PAIR_LIMIT
    while True:
        better = (_first_better_pair(current, scorer) if pairs else None) or _first_better_group(current, scorer)
        if better is None:
            return current
        current = _single_moves(better, scorer)


def local_search(starts: Sequence[Assignment], scorer: PlanScorer) -> Assignment:
    """The best of the local optima reached from each start (ties: the earliest start)."""
    if not starts:
        raise ValueError("local search needs at least one start")
    optima = [descend(start, scorer) for start in dict.fromkeys(starts)]
    return min(optima, key=lambda assignment: (scorer(assignment), optima.index(assignment)))


def alone_best(options: Sequence[Sequence[Option]], cadence: Rounds = None) -> Assignment:
    """Each device's best option if it had the server to itself: least seconds per round (ties: the first)."""
    return tuple(min(range(len(device)), key=lambda k: (alone_round_s(device[k], cadence), k)) for device in options)
