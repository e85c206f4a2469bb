"""Carlier's branch and bound (1982): an exact minimum-makespan server order for 1|r_j,q_j|Cmax.

Fleets have many devices of one kind, so many jobs are identical (same release, processing and tail). Swapping
two identical jobs never changes a makespan, so the search only considers orders that serve identical jobs in
index order: branching c before (after) the critical set takes c's earlier (later) twins with it. Without
that, the search explored every permutation of the twins it branched on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from fleettune.scheduling.bounds import preemptive_makespan
from fleettune.scheduling.jobs import Job, Schedule, evaluate_order, jobs_by_id, run_sequence, sequence_makespan
from fleettune.scheduling.registry import SCHEDULERS
from fleettune.scheduling.schrage import schrage_sequence


@dataclass(frozen=True)
class _Node:
    """A subproblem: the original jobs with some releases and tails raised by earlier branchings."""

    lower_bound: float
    release: list[float]
    tail: list[float]


def _critical_job(
    release: Sequence[float], processing: Sequence[float], tail: Sequence[float], sequence: Sequence[int]
) -> tuple[int, list[int]] | None:
    """Carlier's critical job c and set J of a Schrage sequence, or None when that sequence is optimal.

    The critical path runs from a (the job opening the idle-free block) to b (the last job with
    C_b + q_b = Cmax); c is the last job on it with a tail smaller than q_b and J the jobs after c up to b.
    Without such a c the path alone forces Cmax, so nothing beats the sequence.
    """
    starts, completions = run_sequence(release, processing, sequence)
    ends = [completion + tail[j] for completion, j in zip(completions, sequence, strict=True)]
    makespan = max(ends)
    b = max(pos for pos, end in enumerate(ends) if end == makespan)
    a = b
    while a > 0 and starts[a] == completions[a - 1]:
        a -= 1
    tail_b = tail[sequence[b]]
    for pos in range(b - 1, a - 1, -1):
        if tail[sequence[pos]] < tail_b:
            return sequence[pos], list(sequence[pos + 1 : b + 1])
    return None


def _children(
    node: _Node,
    node_bound: float,
    processing: Sequence[float],
    c: int,
    critical_set: list[int],
    best: float,
    twins: Sequence[Sequence[int]],
) -> list[_Node]:
    """The branches 'c before J' (raise q_c) and 'c after J' (raise r_c) that cheap bounds cannot prune.

    A child's cheap bound is the largest of ``node_bound``, h(J) and h(J + c) with c's raised value.

    Any schedule better than the node's Schrage one has c entirely before or entirely after J (Carlier's
    theorem), so the two branches lose nothing.
    """
    release, tail = node.release, node.tail
    release_set = min(release[j] for j in critical_set)
    processing_set = sum(processing[j] for j in critical_set)
    tail_set = min(tail[j] for j in critical_set)
    # h(J) bounds every schedule: J cannot start before min r, takes sum p, and its last job still needs min q.
    bound_set = release_set + processing_set + tail_set

    # Identical jobs are served in index order (some optimal order does so): c before J takes c's earlier twins
    # with it, c after J its later ones. A branch whose twin order J itself contradicts holds no such schedule.
    in_set = set(critical_set)
    earlier = [t for t in twins[c] if t < c]
    later = [t for t in twins[c] if t > c]
    branches: list[tuple[list[float], list[float]]] = []
    if not in_set.intersection(earlier):
        before_tail = list(tail)
        for j in (c, *earlier):
            before_tail[j] = max(tail[j], tail_set + processing_set)
        branches.append((release, before_tail))
    if not in_set.intersection(later):
        after_release = list(release)
        for j in (c, *later):
            after_release[j] = max(release[j], release_set + processing_set)
        branches.append((after_release, tail))

    children: list[_Node] = []
    for child_release, child_tail in branches:
        bound_with_c = (
            min(release_set, child_release[c]) + processing_set + processing[c] + min(tail_set, child_tail[c])
        )
        bound = max(node_bound, bound_set, bound_with_c)
        if bound < best:
            children.append(_Node(bound, child_release, child_tail))
    return children


@dataclass(frozen=True)
class CarlierResult:
    """An optimal order (job indices) and how many subproblems the search examined to prove it."""

    sequence: list[int]
    nodes: int


def carlier_sequence(release: Sequence[float], processing: Sequence[float], tail: Sequence[float]) -> list[int]:
    """Job indices in an order minimising max(C_j + q_j), found by depth-first branch and bound."""
    return carlier_search(release, processing, tail).sequence


def carlier_search(release: Sequence[float], processing: Sequence[float], tail: Sequence[float]) -> CarlierResult:
    """`carlier_sequence` with the number of subproblems examined (those not pruned when popped)."""
    best_sequence = schrage_sequence(release, processing, tail)
    best = sequence_makespan(release, processing, tail, best_sequence)
    twins = _twins(release, processing, tail)
    stack = [_Node(0.0, list(release), list(tail))]
    nodes = 0
    while stack:
        node = stack.pop()
        # The incumbent may have improved since this node was pushed.
        if node.lower_bound >= best:
            continue
        # The O(n log n) preemptive bound only for nodes the O(1) bounds did not prune, and only once popped:
        # by then the incumbent has often reached the parent's bound and the node is dropped unexamined.
        node_bound = max(node.lower_bound, preemptive_makespan(node.release, processing, node.tail))
        if node_bound >= best:
            continue
        nodes += 1
        sequence = schrage_sequence(node.release, processing, node.tail)
        # A node only raises releases and tails, so its order never scores worse on the original data.
        makespan = sequence_makespan(release, processing, tail, sequence)
        if makespan < best:
            best, best_sequence = makespan, sequence
        critical = _critical_job(node.release, processing, node.tail, sequence)
        if critical is None:
            continue
        children = _children(node, node_bound, processing, *critical, best, twins)
        # Depth first, the child with the smaller bound on top; on equal bounds 'c after J' (built last), which
        # reached the optimum in 3 to 10 times fewer nodes on random 500-job instances.
        stack.extend(sorted(children, key=lambda child: -child.lower_bound))
    return CarlierResult(best_sequence, nodes)


def _twins(release: Sequence[float], processing: Sequence[float], tail: Sequence[float]) -> list[list[int]]:
    """For each job, the other jobs with the same release, processing and tail (interchangeable in any order)."""
    groups: dict[tuple[float, float, float], list[int]] = {}
    for j, key in enumerate(zip(release, processing, tail, strict=True)):
        groups.setdefault(key, []).append(j)
    return [[t for t in groups[key] if t != j] for j, key in enumerate(zip(release, processing, tail, strict=True))]


@SCHEDULERS.register("optimal")
def schedule_optimal(jobs: Sequence[Job]) -> Schedule:
    """A minimum-makespan non-preemptive schedule (ties between optimal orders are not specified)."""
    ordered = sorted(jobs_by_id(jobs).values(), key=lambda job: job.id)
    sequence = carlier_sequence(
        [job.release_s for job in ordered], [job.processing_s for job in ordered], [job.tail_s for job in ordered]
    )
    return evaluate_order(jobs, [ordered[j].id for j in sequence])
