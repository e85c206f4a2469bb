"""The step clock: the server's order hides each client's adapter upload when the step ends with one."""

from __future__ import annotations

from dataclasses import replace

import pytest

from fleettune.runtime.events import Activity, Event
from fleettune.runtime.sim.clock import StepPhases, one_server_step, shared_processor_step, transfers

# Both arrive at 1 s and need 1 s of server. "deep" has the short backward but the large adapter part
# (three layers' LoRA to send), "shallow" the long backward and a small part.
DEEP = StepPhases("deep", 0.5, 0.5, 1.0, 0.0, 0.5, 0.5)
SHALLOW = StepPhases("shallow", 0.5, 0.5, 1.0, 0.0, 0.5, 1.5)
UPLOAD_S = {"deep": 3.0, "shallow": 0.5}


def _order(timeline_events: list[Event]) -> list[str | None]:
    served = [e for e in timeline_events if e.activity is Activity.SERVER_COMPUTE]
    return [e.client for e in sorted(served, key=lambda e: e.start_s)]


def _uploads_end(phases: list[StepPhases], policy: str) -> tuple[list[str], float, float]:
    """Order, step end and the moment the last upload arrives, each upload leaving at its client's backward end."""
    step = one_server_step(phases, policy, 0, 10.0)
    ready = {p.client: max(e.end_s for e in step.events if e.party == p.client) for p in phases}
    up = transfers(UPLOAD_S, Activity.ADAPTER_UPLINK, 0, step.end_s, starts=ready)
    return _order(step.events), step.end_s, up.end_s


@pytest.mark.parametrize("policy", ["schrage", "greedy", "optimal"])
def test_without_an_upload_the_longest_tail_goes_first(policy: str) -> None:
    order, end, _ = _uploads_end([DEEP, SHALLOW], policy)
    # shallow first: served 11-12, back at 12.5, backward to 14; deep served 12-13, done 14.
    assert order == ["shallow", "deep"]
    assert end == pytest.approx(14.0)


@pytest.mark.parametrize("policy", ["schrage", "greedy", "optimal"])
def test_an_aggregating_step_serves_the_longest_backward_plus_upload_first(policy: str) -> None:
    phases = [replace(p, after_s=UPLOAD_S[p.client]) for p in (DEEP, SHALLOW)]
    order, end, last_upload = _uploads_end(phases, policy)
    # deep first: served 11-12, backward done 13, upload 13-16; shallow served 12-13, done 15, upload to 15.5.
    assert order == ["deep", "shallow"]
    assert end == pytest.approx(15.0)  # the step itself still ends with the last backward
    assert last_upload == pytest.approx(16.0)
    # The other order: shallow done at 14 and up by 14.5, deep done at 14 and up only at 17.
    _, _, old = _uploads_end([DEEP, SHALLOW], policy)
    assert old == pytest.approx(17.0)


def test_processor_sharing_ends_with_the_last_backward() -> None:
    phases = [replace(DEEP, after_s=3.0)]
    step = shared_processor_step(phases, 0, 0.0)
    assert step.end_s == pytest.approx(3.0)  # forward, uplink, server, downlink, backward: no upload
    assert phases[0].job_tail_s == pytest.approx(4.0)
