"""A deployed run from start to end: resume if asked, wait for the fleet, the scheme's rounds, the result."""

from __future__ import annotations

import logging
from collections.abc import Callable

from fleettune.errors import InputError
from fleettune.runtime.net import checkpoint
from fleettune.runtime.net.coordinator import Coordinator
from fleettune.runtime.net.fl_rounds import run_fl
from fleettune.runtime.net.parallel_rounds import run_parallel
from fleettune.runtime.net.steps import await_fleet, finish_devices, result
from fleettune.runtime.net.turn_rounds import run_turns
from fleettune.schemes.base import SchemeResult

log = logging.getLogger("fleettune.net")

# The rounds of each deployable scheme, from a first round on.
ROUNDS: dict[str, Callable[[Coordinator, int], None]] = {
    "fl": run_fl,
    "mesfl": run_parallel,
    "splitfed": run_parallel,
    "sl": run_turns,
    "cpsl": run_turns,
}


def drive(c: Coordinator, resume: bool = False) -> SchemeResult:
    """Wait for the fleet, run every round, tell the devices training is over; the run's result. With
    `resume`, go on from the checkpoint in the options' checkpoint folder."""
    first = 0
    if resume:
        if c.options.checkpoint_dir is None:
            raise InputError("--resume needs --checkpoint-dir: the folder the interrupted server checkpointed to")
        first = checkpoint.load(c, c.options.checkpoint_dir)
        log.info("resumed after round %d", first)
    if first < c.setup.plan.rounds:  # a checkpoint of a finished run has nothing left to train
        await_fleet(c)
        ROUNDS[c.prepared.config.scheme](c, first)
    finish_devices(c)
    return result(c)
