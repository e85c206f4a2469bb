"""A run's aggregation policy: update attacks, clipping, the (robust) rule and DP noise, applied in one place.

Every aggregating scheme (`fl`, `splitfed`, `mesfl`) hands the policy the global adapter the clients started
from, their new adapters and sample counts, and gets the new global adapter back. With the defaults (FedAvg, no
DP, no update attack) that is exactly `fedavg` of the adapters, the path runs always took. Otherwise:

1. updates: each client's adapter minus the previous global adapter (float64);
2. attack: malicious clients' updates multiplied by the attack scale (`scale`) or negated (`sign_flip`);
3. clip (when `dp_clip` is set): each update scaled to L2 norm at most C over all its tensors;
4. rule: the weighted mean of the updates (FedAvg), or the robust rule (which ignores the weights); a rule that
   asks for noise of its own (`flame`: lambda times the median update norm) gets it here, from the run's generator;
5. noise (when DP is on): Gaussian noise of standard deviation sigma * C / D per coordinate, D the mean's
   denominator (sum of w_i / max w for the mean, the number of updates for robust rules);
6. the new global adapter is the previous one plus the result (or, with a server optimizer, the optimizer's step
   from the previous one with the result as its update, see `fleettune.aggregation.server_opt`), and the privacy
   accountant takes one step.

With secure aggregation (`PolicySpec.secure`), steps 3 to 5 run with the weighted sum computed through the
protocol instead (`fleettune.aggregation.secure`); only FedAvg can be computed from a sum.

The accountant's epsilon is the guarantee of the noisy mean (the sampled Gaussian mechanism with add/remove
adjacency of one whole client, see `fleettune.privacy.dp`). A robust rule's sensitivity to one client is not
analysed here: with a robust rule the same noise is added and the same epsilon reported, as an indication only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from fleettune.aggregation.fedavg import fedavg, sample_weights
from fleettune.aggregation.robust import Aggregator, make_aggregator
from fleettune.aggregation.secure import SecAggSpec, SecureSummer
from fleettune.aggregation.server_opt import ServerOptimizer, ServerOptSpec, add_step, make_server_optimizer
from fleettune.privacy.accounting import PrivacyAccountant
from fleettune.privacy.dp import clip_update, gaussian_like, noisy_aggregate
from fleettune.security.attacks import UpdateAttack

AdapterState = dict[str, torch.Tensor]

# rules that keep some updates and drop the rest (foolsgold: those it gives a weight above zero)
SELECTING_RULES = ("krum", "multikrum", "bulyan", "flame", "foolsgold")


@dataclass(frozen=True)
class DpSpec:
    """Client-level DP of aggregation: clip bound C and noise multiplier sigma (None: clipping only)."""

    clip: float
    noise_multiplier: float | None
    delta: float
    mechanism: str
    sample_rate: float  # the share of clients sampled per aggregation (the accountant's q)
    target_epsilon: float | None = None  # the budget sigma was calibrated for, if any
    # How the clients of an aggregation were chosen: "all", "poisson" (what the accountant assumes) or
    # "fixed" (a fixed-size sample, for which the accountant's epsilon is an approximation).
    sampling: str = "all"


@dataclass(frozen=True)
class PolicySpec:
    """What a run's aggregation does beyond FedAvg; the defaults are plain FedAvg."""

    aggregator: str = "fedavg"
    byzantine: int = 0
    trim: float = 0.1
    dp: DpSpec | None = None
    attack: UpdateAttack | None = None
    malicious: tuple[str, ...] = ()  # every malicious client, whatever its attack (for reports)
    secure: SecAggSpec | None = None  # the weighted sum through secure aggregation
    flame_noise: float = 0.001  # flame's lambda: its noise std is lambda x the median update norm
    server_opt: ServerOptSpec | None = None  # None: the new global adapter is the previous one plus the result

    @property
    def plain(self) -> bool:
        """True when aggregation is FedAvg of the adapters, as without any of these options (secure aggregation
        computes the same numbers, up to its encoding, and does not count)."""
        return self.aggregator == "fedavg" and self.dp is None and self.attack is None and self.server_opt is None

    def make_rule(self) -> Aggregator:
        clip = self.dp.clip if self.dp is not None else None
        # Updates are clipped before the rule; only normbound insists on knowing the bound itself.
        return make_aggregator(
            self.aggregator,
            byzantine=self.byzantine,
            trim=self.trim,
            clip=clip if self.aggregator == "normbound" else None,
            noise=self.flame_noise,
        )

    def check_count(self, updates: int) -> None:
        """ConfigError when the rule cannot combine this many updates (Krum needs 2f+3, Bulyan 4f+3)."""
        if not self.plain:
            self.make_rule().aggregate([{"x": torch.zeros(1)}] * updates, [1.0] * updates)


@dataclass(frozen=True)
class AggregationNote:
    """One aggregation for the report: who sent an update and, for selecting rules, whose were kept."""

    round: int
    clients: tuple[str, ...]
    selected: tuple[str, ...] | None


@dataclass
class AggregationPolicy:
    """The stateful policy of one run: its noise generator, accountant and notes."""

    spec: PolicySpec
    generator: torch.Generator
    secure_seed: int = 0  # seeds the simulated protocol's secrets (secure aggregation only)
    notes: list[AggregationNote] = field(default_factory=list)
    accountant: PrivacyAccountant | None = field(init=False, default=None)
    secure: SecureSummer | None = field(init=False, default=None)
    _rule: Aggregator | None = field(init=False, default=None)
    _server_opt: ServerOptimizer | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        if self.spec.secure is not None:
            self.secure = SecureSummer(self.spec.secure, self.secure_seed)
        dp = self.spec.dp
        if dp is not None and dp.noise_multiplier is not None:
            self.accountant = PrivacyAccountant(
                noise_multiplier=dp.noise_multiplier, sample_rate=dp.sample_rate, delta=dp.delta, mechanism=dp.mechanism
            )
        if not self.spec.plain:
            self._rule = self.spec.make_rule()
        if self.spec.server_opt is not None:
            self._server_opt = make_server_optimizer(self.spec.server_opt)

    @property
    def plain(self) -> bool:
        return self.spec.plain

    def epsilon(self) -> float | None:
        """The privacy spent so far (None without noise)."""
        return None if self.accountant is None else self.accountant.epsilon()

    def combine(
        self,
        previous: AdapterState,
        views: Sequence[AdapterState],
        clients: Sequence[str],
        counts: Sequence[int],
        round_index: int,
    ) -> AdapterState:
        """The new global adapter from the clients' adapters (see the module docstring for the order)."""
        weights = sample_weights(counts)
        if self._rule is None:
            return fedavg(views, weights)
        updates = [self.client_update(previous, view, client) for view, client in zip(views, clients, strict=True)]
        dp = self.spec.dp
        if dp is not None:
            updates = [clip_update(update, dp.clip)[0] for update in updates]
        sigma = 0.0 if dp is None or dp.noise_multiplier is None else dp.noise_multiplier
        selected: tuple[str, ...] | None = None
        if dp is not None and self.spec.aggregator == "fedavg":
            step = noisy_aggregate(updates, dp.clip, sigma, self.generator, weights)
        else:
            result = self._rule.aggregate(updates, weights, clients)
            step = result.state
            if self.spec.aggregator in SELECTING_RULES:
                selected = tuple(clients[i] for i in result.selected)
            if result.noise_std > 0:
                step = self.noised(step, result.noise_std)
            if dp is not None and sigma > 0:
                step = self.noised(step, sigma * dp.clip / len(updates))
        self.close(round_index, clients, selected)
        return self.apply(previous, step)

    def apply(self, previous: AdapterState, step: AdapterState) -> AdapterState:
        """The new global adapter from the previous one and the aggregated update: their sum, or the server
        optimizer's step."""
        if self._server_opt is not None:
            return self._server_opt.step(previous, step)
        return add_step(previous, step)

    def optimizer_state(self) -> dict[str, torch.Tensor]:
        """The server optimizer's moments (none without one), for checkpoints."""
        return {} if self._server_opt is None else self._server_opt.state()

    def restore_optimizer(self, state: dict[str, torch.Tensor]) -> None:
        if self._server_opt is not None:
            self._server_opt.restore(state)
        elif state:
            raise ValueError("a policy without a server optimizer keeps no optimizer state")

    def rule_state(self) -> dict[str, torch.Tensor]:
        """What the rule remembers between aggregations (FoolsGold's histories), for checkpoints."""
        return {} if self._rule is None else self._rule.state()

    def restore_rule(self, state: dict[str, torch.Tensor]) -> None:
        if self._rule is not None:
            self._rule.restore(state)
        elif state:
            raise ValueError("a FedAvg policy keeps no rule state")

    def noised(self, step: AdapterState, std: float) -> AdapterState:
        """The step plus Gaussian noise of standard deviation `std` per coordinate, from the run's generator."""
        return {key: value + std * gaussian_like(value, self.generator) for key, value in step.items()}

    def close(self, round_index: int, clients: Sequence[str], selected: tuple[str, ...] | None = None) -> None:
        """One aggregation beyond FedAvg took place: the accountant steps, the report notes who sent."""
        if self.accountant is not None:
            self.accountant.step()
        self.notes.append(AggregationNote(round_index + 1, tuple(clients), selected))

    def client_update(self, previous: AdapterState, view: AdapterState, client: str) -> AdapterState:
        """The client's adapter minus the previous global one (float64), after its update attack if any."""
        if set(view) != set(previous):
            raise ValueError(f"client {client}'s adapter holds other keys than the global one")
        update = {key: view[key].to(torch.float64) - previous[key].to(torch.float64) for key in previous}
        attack = self.spec.attack
        return update if attack is None else attack.apply(client, update)
