"""A lower bound on the makespan of every plan: how much shorter than the chosen plan a step could be at best.

For one assignment of options and any schedule of the server, even one that may interrupt jobs:

* every device needs its own release, processing and tail, one after the other: T >= r + p + q;
* for any window (rho, theta) that holds at least one job, the jobs released at rho or later whose tail is
  theta or longer are all processed after rho and finished by T - theta, so T >= rho + theta + the sum of
  their processing.

Over plans, a device may take any option whose own path fits in T. A window binds every plan when some device
has no fitting option outside it; it then asks for rho + theta + the least each device can add to it (none,
when one of its fitting options leaves the window). Taking that minimum window by window can only lower the
sums, so the least T that satisfies every inequality is at most the makespan of any plan under any policy. It
is not always reached: the options a device takes for different windows may differ.

The inequalities' left-hand sides only fall as T grows (more options fit), so the least T is found by walking
up the sorted option path lengths, which are the only points where they change.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from fleettune.planning.costs import Option, plain_job
from fleettune.scheduling import Job


def makespan_lower_bound(options: Sequence[Sequence[Option]], job_of: Callable[[Option], Job] = plain_job) -> float:
    """No assignment of `options` (per device, its possible options) has a step shorter than this, whatever the
    server's policy; each option's server job is `job_of(option)`. 0 for an empty fleet."""
    if not options:
        return 0.0
    if any(not device for device in options):
        raise ValueError("every device needs at least one option")
    width = max(len(device) for device in options)
    jobs = [[job_of(o) for o in device] for device in options]
    release = _table(jobs, width, lambda j: j.release_s)
    processing = _table(jobs, width, lambda j: j.processing_s)
    tail = _table(jobs, width, lambda j: j.tail_s)
    path = release + processing + tail  # inf where a device has fewer options
    rhos, thetas = np.unique(release[np.isfinite(release)]), np.unique(tail[np.isfinite(tail)])
    # inside[a, b, i, k]: option k of device i lies in window (rhos[a], thetas[b])
    inside = (release[None, None] >= rhos[:, None, None, None]) & (tail[None, None] >= thetas[None, :, None, None])
    window = rhos[:, None] + thetas[None, :]
    lengths = np.unique(path[np.isfinite(path)])
    start = float(np.max(np.min(path, axis=1)))  # from here every device has an option
    points = [start, *(float(x) for x in lengths if x > start)]
    for here, following in zip(points, [*points[1:], np.inf], strict=True):
        fits = path <= here
        work = np.where(inside & fits, processing, np.where(fits, 0.0, np.inf)).min(axis=3).sum(axis=2)
        # a window binds every plan only when some device cannot leave it (all its fitting options are inside)
        binding = (~(~inside & fits).any(axis=3)).any(axis=2)
        needed = float(np.max(np.where(binding, window + work, 0.0)))
        if needed < following:  # the same options fit up to the next length: the least T is here or at needed
            return max(here, needed)
    raise AssertionError("unreachable: with every option fitting, the bound is below infinity")


def _table(jobs: Sequence[Sequence[Job]], width: int, value: Callable[[Job], float]) -> np.ndarray:
    """value(job) per device and option; inf where a device has fewer options than `width`."""
    out = np.full((len(jobs), width), np.inf)
    for i, device in enumerate(jobs):
        for k, job in enumerate(device):
            out[i, k] = value(job)
    return out
