"""Hypothesis strategies for random job sets."""

from __future__ import annotations

from hypothesis import strategies as st

from fleettune.scheduling import Job

# Whole seconds keep every sum exact, so makespans can be compared with ==.
_whole = st.integers(min_value=0, max_value=20).map(float)
_real = st.floats(min_value=0, max_value=100, allow_nan=False, allow_infinity=False)


@st.composite
def job_sets(draw: st.DrawFn, min_size: int = 0, max_size: int = 7, whole: bool = True) -> list[Job]:
    """Jobs j0, j1, ... with random release, processing and tail times."""
    value = _whole if whole else _real
    n = draw(st.integers(min_value=min_size, max_value=max_size))
    return [Job(f"j{i}", draw(value), draw(value), draw(value)) for i in range(n)]


@st.composite
def together_job_sets(draw: st.DrawFn, max_size: int = 7) -> list[Job]:
    """Jobs that are all released at the same instant."""
    release = draw(_whole)
    jobs = draw(job_sets(max_size=max_size))
    return [Job(job.id, release, job.processing_s, job.tail_s) for job in jobs]


@st.composite
def fleet_job_sets(draw: st.DrawFn, max_size: int = 7) -> list[Job]:
    """Jobs of a fleet with few device kinds: most are copies of one of up to three (r, p, q) triples."""
    kinds = draw(st.lists(st.tuples(_whole, _whole, _whole), min_size=1, max_size=3))
    n = draw(st.integers(min_value=2, max_value=max_size))
    jobs = []
    for i in range(n):
        own = (draw(_whole), draw(_whole), draw(_whole))
        release, processing, tail = draw(st.sampled_from([*kinds, own]))
        jobs.append(Job(f"j{i}", release, processing, tail))
    return jobs
