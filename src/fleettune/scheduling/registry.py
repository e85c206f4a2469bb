"""The scheduling-policy extension point: the Policy protocol and its registry."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from fleettune.registry import Registry
from fleettune.scheduling.jobs import Job, Schedule


class Policy(Protocol):
    """Decides the order in which one edge server serves the clients' jobs of a training step."""

    def __call__(self, jobs: Sequence[Job]) -> Schedule: ...


SCHEDULERS: Registry[Policy] = Registry("scheduler")
