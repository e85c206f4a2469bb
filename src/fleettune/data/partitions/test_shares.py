"""Per-client test shares: each client is evaluated on test rows that look like its own training rows."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from fleettune.data.sampling import apportion


def _keys(values: Sequence[int] | Sequence[str]) -> np.ndarray:
    return np.asarray([str(value) for value in values])


def client_test_shares(
    train_labels: Sequence[int],
    parts: Sequence[np.ndarray],
    test_labels: Sequence[int],
    seed: int,
    test_groups: Sequence[str] | None = None,
    natural: bool = False,
    *,
    train_groups: Sequence[str] | None = None,
) -> list[np.ndarray]:
    """Sorted, disjoint test-row indices per client, covering the test split.

    The test rows of each label (of each group when ``natural``) are dealt to clients in proportion
    to how many training rows of that label (group) each client holds, so per-client accuracy
    measures each client on its own distribution. Rows of a key no client trained on are dealt evenly.
    While there are at least as many test rows as clients, every client gets at least one.
    """
    if natural:
        if train_groups is None or test_groups is None:
            raise ValueError("natural test shares need both train_groups and test_groups")
        train_keys, test_keys = _keys(train_groups), _keys(test_groups)
    else:
        train_keys, test_keys = _keys(train_labels), _keys(test_labels)
    rng = np.random.default_rng(seed)
    num_clients = len(parts)
    held = {key: np.zeros(num_clients) for key in np.unique(test_keys)}
    for client, part in enumerate(parts):
        for key, count in zip(
            *np.unique(train_keys[np.asarray(part, dtype=np.int64)], return_counts=True), strict=True
        ):
            if key in held:
                held[key][client] = count
    shares: list[list[np.ndarray]] = [[] for _ in range(num_clients)]
    for key, weights in held.items():
        rows = rng.permutation(np.flatnonzero(test_keys == key))
        quota = apportion(
            weights if weights.sum() > 0 else np.ones(num_clients), len(rows), np.full(num_clients, len(rows))
        )
        for client, chunk in enumerate(np.split(rows, np.cumsum(quota)[:-1])):
            shares[client].append(chunk)
    result = [
        np.sort(np.concatenate(chunks)).astype(np.int64) if chunks else np.zeros(0, np.int64) for chunks in shares
    ]
    return _fill_empty(result, held, test_keys, rng)


def _fill_empty(
    shares: list[np.ndarray], held: dict[str, np.ndarray], test_keys: np.ndarray, rng: np.random.Generator
) -> list[np.ndarray]:
    """Give each client without test rows one row taken from a client that can spare one.

    The row is of the client's most frequent training key when some client can spare such a row.
    """
    for client in range(len(shares)):
        if len(shares[client]) > 0:
            continue
        donors = [d for d in range(len(shares)) if len(shares[d]) >= 2]
        if not donors:
            break
        own = sorted((key for key in held if held[key][client] > 0), key=lambda key: -held[key][client])
        candidates = np.zeros(0, dtype=np.int64)
        donor = max(donors, key=lambda d: len(shares[d]))
        for key in own:
            matching = [d for d in donors if np.any(test_keys[shares[d]] == key)]
            if matching:
                donor = max(matching, key=lambda d: len(shares[d]))
                candidates = shares[donor][test_keys[shares[donor]] == key]
                break
        if len(candidates) == 0:
            candidates = shares[donor]
        row = candidates[int(rng.integers(len(candidates)))]
        shares[client] = np.array([row], dtype=np.int64)
        shares[donor] = shares[donor][shares[donor] != row]
    return shares
