"""FLOPs of each phase of training, counted on the real computation once per shape."""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import TypeVar

from fleettune.fleet.flops import counted

T = TypeVar("T")


class FlopBook:
    """FLOPs of each phase, counted on the real computation the first time a shape is seen."""

    def __init__(self) -> None:
        self._flops: dict[Hashable, int] = {}

    def run(self, key: Hashable, fn: Callable[[], T]) -> tuple[int, T]:
        if key in self._flops:
            return self._flops[key], fn()
        flops, result = counted(fn)
        self._flops[key] = flops
        return flops, result
