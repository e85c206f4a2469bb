"""Byzantine-robust aggregation of client updates: Krum, Multi-Krum, median, trimmed mean, Bulyan, norm bounding,
and FLAME against backdoors (FoolsGold, in `fleettune.aggregation.foolsgold`, registers here too).

A rule sees each client's update (adapter state, ideally the difference to the global adapter) as one flat
float64 vector: the tensors concatenated in the key order of the first update. It combines the matrix of
those vectors (one row per client) and the result is cut back into tensors of the original shapes and dtypes.
Inputs are never modified.

Every rule can first clip each update to L2 norm `clip` (norm bounding). Client weights only matter to the
rules that average: `fedavg`, `normbound` and `multikrum` (a weighted mean of the selected updates). Krum,
median, trimmed mean and Bulyan ignore them on purpose: a Byzantine client could claim a huge sample count.

Pick a rule by name with `make_aggregator`; `Aggregator.aggregate` also says which updates were used
(`AggregationResult.selected`) and which were clipped, for reports. A rule that wants Gaussian noise on its
result (FLAME) says how much in `AggregationResult.noise_std`; the caller draws it from the run's generator, so
the rules themselves stay deterministic.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import torch

from fleettune.aggregation.clustering import majority_cluster
from fleettune.errors import ConfigError
from fleettune.registry import Registry

AdapterState = dict[str, torch.Tensor]
Layout = list[tuple[str, torch.Size, torch.dtype]]


# ---------------------------------------------------------------------------------------------------------------
# Flat vectors
# ---------------------------------------------------------------------------------------------------------------


def flatten_updates(updates: Sequence[AdapterState]) -> tuple[torch.Tensor, Layout]:
    """The (n, d) float64 matrix of the updates (tensors concatenated in key order) and the layout to undo it."""
    if not updates:
        raise ValueError("need at least one update to aggregate")
    first = updates[0]
    layout: Layout = [(key, tensor.shape, tensor.dtype) for key, tensor in first.items()]
    rows = []
    for i, update in enumerate(updates):
        if set(update) != set(first):
            raise ValueError(f"update {i} holds different keys from update 0: {sorted(set(first) ^ set(update))[:3]}")
        parts = []
        for key, shape, _ in layout:
            if update[key].shape != shape:
                got = tuple(update[key].shape)
                raise ValueError(f"update {i} has shape {got} for {key!r}, expected {tuple(shape)}")
            parts.append(update[key].detach().reshape(-1).to(torch.float64))
        rows.append(torch.cat(parts) if parts else torch.zeros(0, dtype=torch.float64))
    return torch.stack(rows), layout


def unflatten_update(vector: torch.Tensor, layout: Layout) -> AdapterState:
    """The adapter state whose flattening (in the same layout) is `vector`, in the original dtypes."""
    expected = sum(shape.numel() for _, shape, _ in layout)
    if vector.dim() != 1 or vector.numel() != expected:
        raise ValueError(f"vector of shape {tuple(vector.shape)} does not fit a layout of {expected} values")
    out: AdapterState = {}
    offset = 0
    for key, shape, dtype in layout:
        size = shape.numel()
        out[key] = vector[offset : offset + size].reshape(shape).to(dtype)
        offset += size
    return out


def normalized_weights(weights: Sequence[float], n: int) -> torch.Tensor:
    """The weights as a float64 vector summing to one; ValueError unless n non-negative weights with a positive sum."""
    if len(weights) != n:
        raise ValueError(f"need one weight per update, got {n} updates and {len(weights)} weights")
    w = torch.tensor([float(x) for x in weights], dtype=torch.float64)
    if bool((w < 0).any()) or not bool(torch.isfinite(w).all()) or float(w.sum()) <= 0:
        raise ValueError(f"weights must be finite and non-negative with a positive sum, got {list(weights)}")
    return w / w.sum()


# ---------------------------------------------------------------------------------------------------------------
# Rules on an (n, d) float64 matrix
# ---------------------------------------------------------------------------------------------------------------


def clip_rows(vectors: torch.Tensor, clip: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row scaled down to L2 norm at most `clip` (rows already within it are unchanged), and the row norms."""
    norms = torch.linalg.vector_norm(vectors, dim=1)
    # clip / max(norm, clip) is min(1, clip / norm) without dividing by a zero norm.
    factors = clip / torch.clamp(norms, min=clip)
    return vectors * factors.unsqueeze(1), norms


def weighted_mean(vectors: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """sum_i w_i * row_i with the weights rescaled to sum to one."""
    return (weights / weights.sum()) @ vectors


def krum_scores(vectors: torch.Tensor, byzantine: int) -> torch.Tensor:
    """Krum's score per row: the sum of squared distances to its n - f - 2 nearest other rows (at least none)."""
    n = vectors.shape[0]
    neighbours = max(n - byzantine - 2, 0)
    # The direct formula, not the faster matrix-product one, so equal rows are exactly at distance zero.
    distances = torch.cdist(vectors, vectors, compute_mode="donot_use_mm_for_euclid_dist").pow(2)
    # A row is not its own neighbour: push the diagonal past every real distance.
    distances.fill_diagonal_(float("inf"))
    nearest = torch.sort(distances, dim=1).values[:, :neighbours]
    return nearest.sum(dim=1)


def krum_select(vectors: torch.Tensor, byzantine: int, multi: int = 1) -> list[int]:
    """Indices of the `multi` rows with the lowest Krum scores, best first (ties go to the lower index)."""
    n = vectors.shape[0]
    _check_krum_count(n, byzantine)
    if not 1 <= multi <= n - byzantine:
        raise ConfigError(f"multikrum selects between 1 and n - f = {n - byzantine} updates, got multi={multi}")
    order = torch.sort(krum_scores(vectors, byzantine), stable=True).indices
    return [int(i) for i in order[:multi]]


def coordinate_median(vectors: torch.Tensor) -> torch.Tensor:
    """Per coordinate, the median of the rows (the mean of the two middle values when n is even)."""
    n = vectors.shape[0]
    ordered = torch.sort(vectors, dim=0).values
    if n % 2:
        return ordered[n // 2].clone()
    return (ordered[n // 2 - 1] + ordered[n // 2]) / 2


def trimmed_mean(vectors: torch.Tensor, trim: float) -> torch.Tensor:
    """Per coordinate, the mean after dropping the floor(trim * n) smallest and as many largest values."""
    _check_trim(trim)
    n = vectors.shape[0]
    k = trimmed_count(trim, n)
    ordered = torch.sort(vectors, dim=0).values
    return ordered[k : n - k].mean(dim=0)


def trimmed_count(trim: float, n: int) -> int:
    """floor(trim * n), immune to products such as 0.29 * 100 landing just below an integer."""
    return math.floor(trim * n + 1e-9)


def bulyan_select(vectors: torch.Tensor, byzantine: int) -> list[int]:
    """Bulyan's first stage: n - 2f rows picked one at a time, each by Krum over the rows not yet picked."""
    n = vectors.shape[0]
    _check_bulyan_count(n, byzantine)
    remaining = list(range(n))
    chosen: list[int] = []
    for _ in range(n - 2 * byzantine):
        scores = krum_scores(vectors[remaining], byzantine)
        best = int(torch.argmin(scores))  # first minimum: ties go to the lower index
        chosen.append(remaining.pop(best))
    return chosen


def bulyan(vectors: torch.Tensor, byzantine: int) -> tuple[torch.Tensor, list[int]]:
    """Bulyan: the rows of `bulyan_select`, then per coordinate the mean of the n - 4f values nearest their median.

    Needs n >= 4f + 3. Returns the aggregate and the selected row indices.
    """
    chosen = bulyan_select(vectors, byzantine)
    picked = vectors[chosen]
    keep = len(chosen) - 2 * byzantine
    centre = coordinate_median(picked)
    # Per coordinate, the `keep` values closest to the median (ties broken by row order).
    nearest = torch.sort((picked - centre).abs(), dim=0, stable=True).indices[:keep]
    return torch.gather(picked, 0, nearest).mean(dim=0), chosen


def _check_byzantine(byzantine: int) -> None:
    if isinstance(byzantine, bool) or not isinstance(byzantine, int) or byzantine < 0:
        raise ConfigError(f"byzantine (the number of attackers tolerated) must be an integer >= 0, got {byzantine!r}")


def _check_krum_count(n: int, byzantine: int) -> None:
    if n < 2 * byzantine + 3:
        raise ConfigError(f"krum with byzantine={byzantine} needs at least 2f+3 = {2 * byzantine + 3} updates, got {n}")


def _check_bulyan_count(n: int, byzantine: int) -> None:
    if n < 4 * byzantine + 3:
        raise ConfigError(
            f"bulyan with byzantine={byzantine} needs at least 4f+3 = {4 * byzantine + 3} updates, got {n}"
        )


def _check_trim(trim: float) -> None:
    if not 0 <= trim < 0.5:
        raise ConfigError(f"trim (the fraction dropped on each side) must be in [0, 0.5), got {trim}")


def _check_noise_factor(noise: float) -> None:
    if not (math.isfinite(noise) and noise >= 0):
        raise ConfigError(f"flame_noise (the noise factor lambda) must be finite and >= 0, got {noise}")


def _check_clip(clip: float | None) -> None:
    if clip is not None and not clip > 0:
        raise ConfigError(f"clip (the update norm bound) must be > 0, got {clip}")


# ---------------------------------------------------------------------------------------------------------------
# Aggregators on adapter states
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AggregationResult:
    """The aggregate, the indices of the updates it was built from, those whose norm was clipped, and the
    standard deviation of the Gaussian noise the rule asks the caller to add to every coordinate (0: none)."""

    state: AdapterState
    selected: tuple[int, ...]
    clipped: tuple[int, ...] = ()
    noise_std: float = 0.0


class Aggregator(Protocol):
    """Combines client updates into one; `aggregate` also reports which updates were used.

    `clients` names the senders, for rules that remember clients across aggregations (FoolsGold); such a rule
    keeps what it remembers in `state()` (tensors by name) and takes it back with `restore`, for checkpoints.
    """

    def __call__(self, updates: Sequence[AdapterState], weights: Sequence[float]) -> AdapterState: ...

    def aggregate(
        self, updates: Sequence[AdapterState], weights: Sequence[float], clients: Sequence[str] | None = None
    ) -> AggregationResult: ...

    def state(self) -> dict[str, torch.Tensor]: ...

    def restore(self, state: dict[str, torch.Tensor]) -> None: ...


@dataclass(frozen=True)
class RuleParams:
    """The parameters rules share; each rule reads the ones it needs and ignores the rest."""

    byzantine: int = 0  # attackers tolerated (krum, multikrum, bulyan)
    trim: float = 0.1  # fraction dropped per side (trimmed_mean)
    clip: float | None = None  # L2 bound applied to every update first (required by normbound)
    multi: int | None = None  # updates kept by multikrum (None: n - byzantine)
    noise: float = 0.001  # flame's lambda: noise std = lambda x the median update norm


class AggregatorFactory(Protocol):
    """Builds an aggregator from the shared parameters."""

    def __call__(self, params: RuleParams) -> Aggregator: ...


@dataclass(frozen=True)
class Matrix:
    """A rule's input: the (n, d) rows, their weights, the layout to undo the flattening, the clipped rows."""

    vectors: torch.Tensor
    weights: torch.Tensor
    layout: Layout
    clipped: tuple[int, ...]

    def result(self, vector: torch.Tensor, used: Sequence[int], noise_std: float = 0.0) -> AggregationResult:
        return AggregationResult(unflatten_update(vector, self.layout), tuple(used), self.clipped, noise_std)


class VectorRule:
    """Shared plumbing: flatten, optional clipping, the rule on the matrix, unflatten."""

    def __init__(self, *, clip: float | None = None) -> None:
        _check_clip(clip)
        self.clip = clip

    def combine(self, vectors: torch.Tensor, weights: torch.Tensor) -> tuple[torch.Tensor, list[int]]:
        """The aggregate vector and the rows it used, from the (n, d) matrix and weights summing to one."""
        raise NotImplementedError

    def aggregate(
        self, updates: Sequence[AdapterState], weights: Sequence[float], clients: Sequence[str] | None = None
    ) -> AggregationResult:
        matrix = self.matrix(updates, weights)
        vector, used = self.combine(matrix.vectors, matrix.weights)
        return matrix.result(vector, used, self.noise_std(matrix.vectors))

    def matrix(self, updates: Sequence[AdapterState], weights: Sequence[float]) -> Matrix:
        """The updates flattened (and clipped when `clip` is set), with their weights summing to one."""
        vectors, layout = flatten_updates(updates)
        w = normalized_weights(weights, vectors.shape[0])
        clipped: tuple[int, ...] = ()
        if self.clip is not None:
            vectors, norms = clip_rows(vectors, self.clip)
            clipped = tuple(int(i) for i in torch.nonzero(norms > self.clip).flatten())
        return Matrix(vectors, w, layout, clipped)

    def noise_std(self, vectors: torch.Tensor) -> float:
        """The noise the caller should add per coordinate of the aggregate of these (clipped) rows."""
        return 0.0

    def state(self) -> dict[str, torch.Tensor]:
        """What the rule remembers between aggregations (nothing, unless it says otherwise)."""
        return {}

    def restore(self, state: dict[str, torch.Tensor]) -> None:
        if state:
            raise ValueError(f"{type(self).__name__} keeps no state, got {sorted(state)[:3]}")

    def __call__(self, updates: Sequence[AdapterState], weights: Sequence[float]) -> AdapterState:
        return self.aggregate(updates, weights).state


class WeightedMean(VectorRule):
    """FedAvg: the weighted mean of the updates (of the clipped updates when `clip` is set)."""

    def combine(self, vectors: torch.Tensor, weights: torch.Tensor) -> tuple[torch.Tensor, list[int]]:
        return weighted_mean(vectors, weights), list(range(vectors.shape[0]))


class NormBound(WeightedMean):
    """Norm bounding: every update clipped to L2 norm `clip`, then their weighted mean (norm <= clip too)."""

    def __init__(self, *, clip: float | None) -> None:
        if clip is None:
            raise ConfigError("the normbound aggregator needs clip (the update norm bound)")
        super().__init__(clip=clip)


class Krum(VectorRule):
    """Krum (multi=1) or Multi-Krum: the weighted mean of the `multi` updates with the lowest Krum scores.

    `multi=None` selects n - f updates. Needs n >= 2f + 3 updates.
    """

    def __init__(self, *, byzantine: int, multi: int | None = 1, clip: float | None = None) -> None:
        super().__init__(clip=clip)
        _check_byzantine(byzantine)
        if multi is not None and (isinstance(multi, bool) or not isinstance(multi, int) or multi < 1):
            raise ConfigError(f"multi (the updates multikrum keeps) must be an integer >= 1, got {multi!r}")
        self.byzantine = byzantine
        self.multi = multi

    def select(self, vectors: torch.Tensor) -> list[int]:
        """The chosen rows of an (n, d) matrix, best score first."""
        n = vectors.shape[0]
        return krum_select(vectors, self.byzantine, n - self.byzantine if self.multi is None else self.multi)

    def combine(self, vectors: torch.Tensor, weights: torch.Tensor) -> tuple[torch.Tensor, list[int]]:
        chosen = self.select(vectors)
        if len(chosen) == 1:
            return vectors[chosen[0]].clone(), chosen
        w = weights[chosen]
        # Selected clients that all carry zero weight still count: fall back to a plain mean.
        return weighted_mean(vectors[chosen], w if float(w.sum()) > 0 else torch.ones_like(w)), chosen


class Median(VectorRule):
    """The coordinate-wise median; robust while fewer than half of the updates are Byzantine."""

    def combine(self, vectors: torch.Tensor, weights: torch.Tensor) -> tuple[torch.Tensor, list[int]]:
        return coordinate_median(vectors), list(range(vectors.shape[0]))


class TrimmedMean(VectorRule):
    """The coordinate-wise trimmed mean dropping floor(trim * n) values per side; robust while f <= trim * n."""

    def __init__(self, *, trim: float, clip: float | None = None) -> None:
        super().__init__(clip=clip)
        _check_trim(trim)
        self.trim = trim

    def combine(self, vectors: torch.Tensor, weights: torch.Tensor) -> tuple[torch.Tensor, list[int]]:
        return trimmed_mean(vectors, self.trim), list(range(vectors.shape[0]))


class Bulyan(VectorRule):
    """Bulyan (see `bulyan`); needs n >= 4f + 3 updates."""

    def __init__(self, *, byzantine: int, clip: float | None = None) -> None:
        super().__init__(clip=clip)
        _check_byzantine(byzantine)
        self.byzantine = byzantine

    def select(self, vectors: torch.Tensor) -> list[int]:
        """The n - 2f rows of an (n, d) matrix kept by the Krum stage, in the order they were picked."""
        return bulyan_select(vectors, self.byzantine)

    def combine(self, vectors: torch.Tensor, weights: torch.Tensor) -> tuple[torch.Tensor, list[int]]:
        return bulyan(vectors, self.byzantine)


class Flame(VectorRule):
    """FLAME (Nguyen et al., USENIX Security 2022): keep the updates in the majority cluster of their cosine
    distances (`majority_cluster`), clip each kept update to S, the median L2 norm of all the updates, average the
    kept ones, and ask for Gaussian noise of standard deviation `noise` x S per coordinate.

    Clustering drops updates that point elsewhere (a backdoor's), clipping to the median bounds what any update
    that slips through can add, and the noise washes out what is left of it. The mean is unweighted, as in the
    paper: a client's claimed sample count would otherwise buy influence. `noise` is FLAME's lambda (the paper
    uses 0.001 for language models and 0.01 for images).
    """

    def __init__(self, *, noise: float = 0.001, clip: float | None = None) -> None:
        super().__init__(clip=clip)
        _check_noise_factor(noise)
        self.noise = noise

    def select(self, vectors: torch.Tensor) -> list[int]:
        return majority_cluster(vectors)

    def combine(self, vectors: torch.Tensor, weights: torch.Tensor) -> tuple[torch.Tensor, list[int]]:
        kept = self.select(vectors)
        bound = median_norm(vectors)
        if bound > 0:
            clipped, _ = clip_rows(vectors[kept], bound)
        else:
            clipped = torch.zeros_like(vectors[kept])
        return clipped.mean(dim=0), kept

    def noise_std(self, vectors: torch.Tensor) -> float:
        return self.noise * median_norm(vectors)


def median_norm(vectors: torch.Tensor) -> float:
    """The median of the rows' L2 norms (the mean of the two middle ones when n is even)."""
    return float(coordinate_median(torch.linalg.vector_norm(vectors, dim=1).unsqueeze(1))[0])


# ---------------------------------------------------------------------------------------------------------------
# Registry
# ---------------------------------------------------------------------------------------------------------------

AGGREGATORS: Registry[AggregatorFactory] = Registry("aggregator")


@AGGREGATORS.register("fedavg")
def _fedavg(params: RuleParams) -> Aggregator:
    return WeightedMean(clip=params.clip)


@AGGREGATORS.register("normbound")
def _normbound(params: RuleParams) -> Aggregator:
    return NormBound(clip=params.clip)


@AGGREGATORS.register("krum")
def _krum(params: RuleParams) -> Aggregator:
    if params.multi is not None and params.multi != 1:
        raise ConfigError(f"krum keeps one update; for multi={params.multi} use the multikrum aggregator")
    return Krum(byzantine=params.byzantine, multi=1, clip=params.clip)


@AGGREGATORS.register("multikrum")
def _multikrum(params: RuleParams) -> Aggregator:
    return Krum(byzantine=params.byzantine, multi=params.multi, clip=params.clip)


@AGGREGATORS.register("median")
def _median(params: RuleParams) -> Aggregator:
    return Median(clip=params.clip)


@AGGREGATORS.register("trimmed_mean")
def _trimmed_mean(params: RuleParams) -> Aggregator:
    return TrimmedMean(trim=params.trim, clip=params.clip)


@AGGREGATORS.register("bulyan")
def _bulyan(params: RuleParams) -> Aggregator:
    return Bulyan(byzantine=params.byzantine, clip=params.clip)


@AGGREGATORS.register("flame")
def _flame(params: RuleParams) -> Aggregator:
    return Flame(noise=params.noise, clip=params.clip)


def make_aggregator(
    name: str,
    *,
    byzantine: int = 0,
    trim: float = 0.1,
    clip: float | None = None,
    multi: int | None = None,
    noise: float = 0.001,
) -> Aggregator:
    """The aggregator registered as `name`, built with the parameters it uses (see `RuleParams`)."""
    return AGGREGATORS.get(name)(RuleParams(byzantine, trim, clip, multi, noise))
