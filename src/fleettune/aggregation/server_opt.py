"""Server optimizers: how the server applies an aggregation's mean update to the global adapter.

FedAvg replaces the global adapter x by the clients' weighted mean, that is x <- x + D with D the mean of the
clients' updates (adapter minus x). A server optimizer reads D as a negative pseudo-gradient and takes its own
step with it (FedAvgM, Hsu et al. 2019; FedAdagrad, FedAdam and FedYogi, Reddi et al., "Adaptive Federated
Optimization", ICLR 2021), per coordinate, in float64:

- `fedavgm`: v <- momentum * v + D;  x <- x + lr * v  (lr 1 and momentum 0 is FedAvg);
- the adaptive ones: m <- beta1 * m + (1 - beta1) * D;  x <- x + lr * m / (sqrt(v) + tau), with
  `fedadagrad`: v <- v + D^2;  `fedadam`: v <- beta2 * v + (1 - beta2) * D^2;
  `fedyogi`: v <- v - (1 - beta2) * D^2 * sign(v - D^2).
  m starts at zero and v at tau^2, without bias correction, as in Reddi et al.'s algorithm; with
  `bias_correction`, v starts at zero and the step uses m / (1 - beta1^t) and (for fedadam and fedyogi)
  v / (1 - beta2^t) at the t-th aggregation, as Adam does, so that the first steps are not up to twice the
  rate. (A tau^2 start would be divided by 1 - beta2 as well: with beta2 = 0.999 it would act as a floor of
  about 32 tau under sqrt(v), shrinking the steps of coordinates whose updates are that small.)

The rate is `lr` times the factor of `lr_schedule` (`fleettune.training.lr_factor`) at the aggregation's index
among `total_steps`: constant by default, or warm-up then cosine decay over the run's aggregations.

With SGD clients (`optimizer = "sgd"`) and one local step, D is the clients' mean gradient times their rate, and
`fedadam` is Adam on the fleet's pooled batch (Reddi et al.'s setting).

With one local step per aggregation (`mesfl` and `splitfed` at I = 1), D is the mean of the clients' Adam
steps, which cancel where their gradients disagree; an adaptive server step rescales every coordinate back to
about `lr` (which also enlarges the steps of coordinates whose mean update is mostly noise). The optimizer's
moments are server state: checkpoints keep them (`state`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

import torch

from fleettune.registry import Registry
from fleettune.training import lr_factor

AdapterState = dict[str, torch.Tensor]


@dataclass(frozen=True)
class ServerOptSpec:
    """A server optimizer by name with its parameters (each optimizer reads the ones it uses)."""

    name: str
    lr: float
    momentum: float = 0.9  # fedavgm
    beta1: float = 0.9  # the adaptive ones
    beta2: float = 0.99  # fedadam, fedyogi
    tau: float = 1e-6  # the adaptive ones: tau keeps the step finite where v is 0 (and v starts at tau^2 uncorrected)
    bias_correction: bool = False  # the adaptive ones
    lr_schedule: str = "constant"  # "constant" or "onecycle" over `total_steps` aggregations
    total_steps: int = 1

    def rate(self, index: int) -> float:
        """The rate of the aggregation at 0-based `index`."""
        return self.lr * lr_factor(self.lr_schedule, index, self.total_steps)


class ServerOptimizer(Protocol):
    """Takes the server's step from the previous global adapter and the aggregation's mean update."""

    def step(self, previous: Mapping[str, torch.Tensor], update: Mapping[str, torch.Tensor]) -> AdapterState: ...

    def state(self) -> dict[str, torch.Tensor]: ...

    def restore(self, state: Mapping[str, torch.Tensor]) -> None: ...


SERVER_OPTIMIZERS: Registry[Callable[[ServerOptSpec], ServerOptimizer]] = Registry("server optimizer")


def add_step(previous: Mapping[str, torch.Tensor], steps: Mapping[str, torch.Tensor]) -> AdapterState:
    """`previous` plus `steps` key by key, summed in float64 and stored in each tensor's own dtype."""
    return {key: (value.to(torch.float64) + steps[key]).to(value.dtype) for key, value in previous.items()}


STEPS = "steps"
"""The state entry counting the aggregations taken (the index of the rate and of the bias correction)."""


class _Moments:
    """Per-key float64 moment tensors, created at zero (or at a given value) the first time a key is seen, and
    the number of steps taken."""

    def __init__(self, slots: tuple[str, ...]) -> None:
        self.slots = slots
        self.values: dict[str, dict[str, torch.Tensor]] = {slot: {} for slot in slots}
        self.steps = 0

    def get(self, slot: str, key: str, like: torch.Tensor, start: float = 0.0) -> torch.Tensor:
        table = self.values[slot]
        if key not in table:
            table[key] = torch.full(like.shape, start, dtype=torch.float64)
        return table[key]

    def state(self) -> dict[str, torch.Tensor]:
        moments = {f"{slot}/{key}": value.clone() for slot in self.slots for key, value in self.values[slot].items()}
        return {**moments, STEPS: torch.tensor(self.steps, dtype=torch.int64)}

    def restore(self, state: Mapping[str, torch.Tensor]) -> None:
        values: dict[str, dict[str, torch.Tensor]] = {slot: {} for slot in self.slots}
        steps = 0  # a state written before steps were counted: its optimizer had no use for them
        for name, value in state.items():
            if name == STEPS:
                steps = int(value)
                continue
            slot, _, key = name.partition("/")
            if slot not in values or not key:
                raise ValueError(f"server optimizer state has an entry {name!r}; expected one of {self.slots}/<key>")
            values[slot][key] = value.to(torch.float64).clone()
        self.values = values
        self.steps = steps


class FedAvgM:
    """Server momentum: v <- momentum * v + D; x <- x + lr * v."""

    def __init__(self, spec: ServerOptSpec) -> None:
        self.spec = spec
        self.moments = _Moments(("v",))

    def step(self, previous: Mapping[str, torch.Tensor], update: Mapping[str, torch.Tensor]) -> AdapterState:
        lr = self.spec.rate(self.moments.steps)
        self.moments.steps += 1
        steps = {}
        for key in previous:
            delta = update[key].to(torch.float64)
            velocity = self.moments.get("v", key, delta)
            velocity.mul_(self.spec.momentum).add_(delta)
            steps[key] = lr * velocity
        return add_step(previous, steps)

    def state(self) -> dict[str, torch.Tensor]:
        return self.moments.state()

    def restore(self, state: Mapping[str, torch.Tensor]) -> None:
        self.moments.restore(state)


def _adagrad(v: torch.Tensor, square: torch.Tensor, beta2: float) -> None:
    v.add_(square)


def _adam(v: torch.Tensor, square: torch.Tensor, beta2: float) -> None:
    v.mul_(beta2).add_((1 - beta2) * square)


def _yogi(v: torch.Tensor, square: torch.Tensor, beta2: float) -> None:
    v.sub_((1 - beta2) * square * torch.sign(v - square))


class Adaptive:
    """The adaptive server optimizers: first moment m, second moment v by `second`, step lr * m / (sqrt(v) + tau)."""

    def __init__(
        self, spec: ServerOptSpec, second: Callable[[torch.Tensor, torch.Tensor, float], None], averages_v: bool
    ) -> None:
        self.spec = spec
        self.second = second
        self.averages_v = averages_v  # v is an exponential average (fedadam, fedyogi), not a sum (fedadagrad)
        self.moments = _Moments(("m", "v"))

    def step(self, previous: Mapping[str, torch.Tensor], update: Mapping[str, torch.Tensor]) -> AdapterState:
        s = self.spec
        lr = s.rate(self.moments.steps)
        self.moments.steps += 1
        m_scale = v_scale = 1.0
        if s.bias_correction:
            m_scale = 1 / (1 - s.beta1**self.moments.steps)
            v_scale = 1 / (1 - s.beta2**self.moments.steps) if self.averages_v else 1.0
        steps = {}
        for key in previous:
            delta = update[key].to(torch.float64)
            m = self.moments.get("m", key, delta)
            v = self.moments.get("v", key, delta, start=0.0 if s.bias_correction else s.tau**2)
            m.mul_(s.beta1).add_((1 - s.beta1) * delta)
            self.second(v, delta * delta, s.beta2)
            steps[key] = lr * (m * m_scale) / ((v.clamp(min=0) * v_scale).sqrt() + s.tau)
        return add_step(previous, steps)

    def state(self) -> dict[str, torch.Tensor]:
        return self.moments.state()

    def restore(self, state: Mapping[str, torch.Tensor]) -> None:
        self.moments.restore(state)


SERVER_OPTIMIZERS.add("fedavgm", FedAvgM)
SERVER_OPTIMIZERS.add("fedadagrad", lambda spec: Adaptive(spec, _adagrad, averages_v=False))
SERVER_OPTIMIZERS.add("fedadam", lambda spec: Adaptive(spec, _adam, averages_v=True))
SERVER_OPTIMIZERS.add("fedyogi", lambda spec: Adaptive(spec, _yogi, averages_v=True))


def make_server_optimizer(spec: ServerOptSpec) -> ServerOptimizer:
    return SERVER_OPTIMIZERS.get(spec.name)(spec)
