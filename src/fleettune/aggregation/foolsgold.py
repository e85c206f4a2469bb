"""FoolsGold (Fung, Yoon and Beschastnikh, RAID 2020): clients that keep pushing the same way are one voice.

Colluding attackers who plant the same backdoor send updates that, summed over rounds, point the same way far
more than honest clients with their different data do. FoolsGold keeps each client's running sum of updates
(its history), and per aggregation gives every client a weight from how similar its history is to the most
similar other one; near-duplicates get weights near zero. The steps, on the participants' histories:

1. cs_ij = cos(H_i, H_j), v_i = max over j != i of cs_ij (0 with one client);
2. pardoning: cs_ij is scaled by v_i / v_j where v_j > v_i (and v_i > 0), so an honest client is not
   punished for resembling an attacker more than the attacker resembles others;
3. a_i = 1 - max over j != i of cs_ij, clipped to [0, 1] (below 1e-9, rounding of a cosine of 1, it is 0),
   divided by the largest (all zero: every weight is 0), values of 1 set to 0.99;
4. a_i = ln(a_i / (1 - a_i)) + 1/2 (the paper's logit with kappa = 1), clipped to [0, 1].

The aggregate is sum_i a_i x update_i / sum_i a_i (no step when every weight is 0). The paper's feature
importance weighting (for the output layer of a softmax classifier) is left out. The rule's state is the
histories, keyed by client; it is part of a deployment's checkpoint.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from fleettune.aggregation.clustering import cosine_distances
from fleettune.aggregation.robust import (
    AGGREGATORS,
    AdapterState,
    AggregationResult,
    Aggregator,
    RuleParams,
    VectorRule,
    weighted_mean,
)

SAME_DIRECTION = 1e-9  # a_i below this is rounding of a cosine of exactly 1: taken as 0
LOGIT_CEILING = 0.99  # the paper's stand-in for a weight of 1 before the logit, which would be infinite


def foolsgold_weights(histories: torch.Tensor) -> torch.Tensor:
    """Each row's FoolsGold weight in [0, 1] from the (n, d) matrix of the clients' histories (steps 1-4)."""
    n = histories.shape[0]
    if n == 1:
        return torch.ones(1, dtype=torch.float64)
    similarity = 1 - cosine_distances(histories.to(torch.float64))
    others = ~torch.eye(n, dtype=torch.bool)
    most = similarity.masked_fill(~others, -math.inf).max(dim=1).values
    # Pardoning: row i's similarity to j shrinks by v_i / v_j when j is the more sybil-looking of the two (and
    # i resembles anyone at all: a negative v_i would flip the sign).
    mine, theirs = most.unsqueeze(1), most.unsqueeze(0)
    pardon = others & (theirs > mine) & (mine > 0)
    similarity = torch.where(pardon, similarity * mine / theirs.clamp(min=1e-300), similarity)
    alpha = (1 - similarity.masked_fill(~others, -math.inf).max(dim=1).values).clamp(0.0, 1.0)
    alpha = torch.where(alpha < SAME_DIRECTION, torch.zeros_like(alpha), alpha)
    top = float(alpha.max())
    if top == 0:
        return torch.zeros(n, dtype=torch.float64)
    alpha = (alpha / top).clamp(max=LOGIT_CEILING)
    logit = torch.log(alpha / (1 - alpha)) + 0.5  # alpha = 0 gives -inf: weight 0 after clipping
    return logit.clamp(0.0, 1.0)


class FoolsGold(VectorRule):
    """The FoolsGold rule (see the module docstring); `histories` holds each client's running sum of updates.

    Without client names (`clients=None`) the updates themselves stand in for histories and nothing is kept.
    `selected` lists the updates with a weight above zero.
    """

    def __init__(self, *, clip: float | None = None) -> None:
        super().__init__(clip=clip)
        self.histories: dict[str, torch.Tensor] = {}

    def aggregate(
        self, updates: Sequence[AdapterState], weights: Sequence[float], clients: Sequence[str] | None = None
    ) -> AggregationResult:
        if clients is not None and len(clients) != len(updates):
            raise ValueError(f"need one client name per update, got {len(updates)} updates and {len(clients)} names")
        matrix = self.matrix(updates, weights)
        trust = foolsgold_weights(matrix.vectors if clients is None else self.remember(matrix.vectors, clients))
        kept = [int(i) for i in torch.nonzero(trust > 0).flatten()]
        if not kept:
            return matrix.result(torch.zeros(matrix.vectors.shape[1], dtype=matrix.vectors.dtype), [])
        return matrix.result(weighted_mean(matrix.vectors, trust), kept)

    def remember(self, vectors: torch.Tensor, clients: Sequence[str]) -> torch.Tensor:
        """Add each row to its client's history; the histories of these clients, in their order."""
        for client, row in zip(clients, vectors, strict=True):
            past = self.histories.get(client)
            self.histories[client] = row.clone() if past is None or past.shape != row.shape else past + row
        return torch.stack([self.histories[c] for c in clients])

    def state(self) -> dict[str, torch.Tensor]:
        return dict(self.histories)

    def restore(self, state: dict[str, torch.Tensor]) -> None:
        self.histories = {client: tensor.to(torch.float64) for client, tensor in state.items()}


@AGGREGATORS.register("foolsgold")
def _foolsgold(params: RuleParams) -> Aggregator:
    return FoolsGold(clip=params.clip)
