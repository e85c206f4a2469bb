"""Which client updates agree: cosine distances between updates and the majority cluster among them.

Used by the `flame` rule (after Nguyen et al., "FLAME: Taming Backdoors in Federated Learning", USENIX Security
2022): updates that carry a backdoor point in a direction of their own, so clustering the updates by angle and
keeping only the cluster that holds a majority leaves the poisoned ones out while they are a minority.
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.cluster import HDBSCAN


def cosine_distances(vectors: torch.Tensor) -> torch.Tensor:
    """The (n, n) matrix 1 - cos(row_i, row_j) in [0, 2], zero on the diagonal.

    A zero row has no direction: it is at distance 1 (orthogonal) from every other row.
    """
    norms = torch.linalg.vector_norm(vectors, dim=1)
    safe = torch.where(norms > 0, norms, torch.ones_like(norms))
    unit = vectors / safe.unsqueeze(1)
    distances = (1 - unit @ unit.T).clamp(0.0, 2.0)
    distances.fill_diagonal_(0.0)
    return distances


def majority_cluster(vectors: torch.Tensor) -> list[int]:
    """The rows in the largest cluster HDBSCAN finds on their cosine distances, ascending.

    The cluster must hold a majority (HDBSCAN's minimum cluster size is floor(n/2) + 1, its minimum samples 1,
    one single cluster allowed); rows outside it are outliers. With fewer than three rows there is no majority
    to speak of and every row is kept; when HDBSCAN finds no cluster at all every row is kept too (nothing is
    known to be an outlier), which callers still clip and noise.
    """
    n = vectors.shape[0]
    if n < 3:
        return list(range(n))
    distances = cosine_distances(vectors).numpy().astype(np.float64)
    labels = (
        HDBSCAN(min_cluster_size=n // 2 + 1, min_samples=1, metric="precomputed", allow_single_cluster=True, copy=True)
        .fit(distances)
        .labels_
    )
    clustered = labels[labels >= 0]
    if clustered.size == 0:
        return list(range(n))
    largest = int(np.bincount(clustered).argmax())
    return [int(i) for i in np.flatnonzero(labels == largest)]
