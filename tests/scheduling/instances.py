"""Hand-computed instances shared by the scheduling tests, with their timelines worked out below."""

from __future__ import annotations

from fleettune.scheduling import Job

# Three clients where fifo, greedy, schrage and optimal all differ (makespans 14, 15, 13, 12; bound 11).
#   a: r=1 p=5 q=2    b: r=4 p=1 q=3    c: r=0 p=5 q=0
# fifo    c a b: c 0-5 (end 5), a 5-10 (12), b 10-11 (14)                        -> 14
# greedy  b a c: idles 0-4 waiting for b; b 4-5 (8), a 5-10 (12), c 10-15 (15)   -> 15, worse than fifo
# schrage c b a: only c has arrived at 0; c 0-5 (5), then b (tail 3) 5-6 (9), a 6-11 (13) -> 13
# optimal a b c: idles 0-1 waiting for a; a 1-6 (8), b 6-7 (10), c 7-12 (12)    -> 12, the unique optimum
# preemptive: c 0-1, a 1-4, b 4-5 (8), a 5-7 (9), c 7-11 (11)                    -> 11 = 0 + 11 + 0 over all three
FOUR_WAY = (
    Job("a", release_s=1, processing_s=5, tail_s=2),
    Job("b", release_s=4, processing_s=1, tail_s=3),
    Job("c", release_s=0, processing_s=5, tail_s=0),
)

# Schrage's rule never idles, so it starts the long job before the urgent one arrives:
# schrage a b: a 0-10 (10), b 10-11 (111) -> 111;  optimal b a: idle 0-1, b 1-2 (102), a 2-12 (12) -> 102.
NON_DELAY_TRAP = (
    Job("a", release_s=0, processing_s=10, tail_s=0),
    Job("b", release_s=1, processing_s=1, tail_s=100),
)

# All clients arrive together: Jackson's rule (largest tail first) b c a is optimal:
# b 0-3 (8), c 3-4 (7), a 4-6 (7) -> 8;  fifo (ties by id) a b c: a 0-2 (3), b 2-5 (10), c 5-6 (9) -> 10.
TOGETHER = (
    Job("a", release_s=0, processing_s=2, tail_s=1),
    Job("b", release_s=0, processing_s=3, tail_s=5),
    Job("c", release_s=0, processing_s=1, tail_s=3),
)
