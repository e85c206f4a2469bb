"""The scheduling-policy extension point: the Policy protocol and its registry."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from fleettune.registry import Registry
from fleettune.scheduling.jobs import Job, Schedule
from fleettune.scheduling.sharing import SHARING, sharing_schedule


class Policy(Protocol):
    """Decides the order in which one edge server serves the clients' jobs of a training step."""

    def __call__(self, jobs: Sequence[Job]) -> Schedule: ...


SCHEDULERS: Registry[Policy] = Registry("scheduler")


def server_policy(name: str) -> Policy:
    """A registered policy, or for `SHARING` the processor sharing of SplitFed's per-client server copies: what
    the planner scores a server with (the policies are what a shared server can be asked to run)."""
    return sharing_schedule if name == SHARING else SCHEDULERS.get(name)
