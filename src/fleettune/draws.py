"""Each party's own stream of random draws (dropout masks), apart from every other party's.

Dropout draws from torch's global CPU generator. A simulation plays every party in one process: with a single
global stream, the masks one party gets would depend on what the others drew before it (how many layers each
client runs, in which order the server serves them), and a deployment, where each party is its own process,
could not reproduce them. So every party that trains holds a `PartyDraws` and trains inside `drawing()`: its
draws come from its own generator, seeded from the run's seed, its role and its index, the same in either
runtime. The server keeps one stream per client it serves, as it keeps one adapter per client: the order in
which it serves them changes no mask.

torch's global generator is one per process, so every use of it here takes one lock: parties computing in threads
of one process (an in-process deployment) take turns drawing, and one thread's draws never land in another's
stream. Code that must not move the global generator (building a model, measuring one) goes through
`global_rng_kept`, under the same lock.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from enum import IntEnum

import numpy as np
import torch

DROPOUT_STREAM = 10  # the run's RNG stream (`np.random.default_rng([seed, DROPOUT_STREAM, role, index])`)
_GLOBAL = threading.RLock()  # held while torch's global CPU generator is swapped, forked or seeded


@contextmanager
def global_rng_kept(seed: int | None = None) -> Iterator[None]:
    """Whatever is drawn inside leaves torch's global generator as it was (inside, seeded `seed` if given)."""
    with _GLOBAL, torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        yield


class Role(IntEnum):
    CLIENT = 0  # a device: its client stage (split schemes) or its whole model (fl)
    SERVER = 1  # the server's work for one client (index: the client's)
    CENTRAL = 2  # the one party of centralised training


class PartyDraws:
    """A generator state of its own; `drawing()` puts it in place of the global one and keeps what it drew."""

    def __init__(self, seed: int) -> None:
        self._state = torch.Generator().manual_seed(seed).get_state()

    @contextmanager
    def drawing(self) -> Iterator[None]:
        with _GLOBAL:
            outer = torch.get_rng_state()
            torch.set_rng_state(self._state)
            try:
                yield
            finally:
                self._state = torch.get_rng_state()
                torch.set_rng_state(outer)


def party_draws(seed: int, role: Role, index: int = 0) -> PartyDraws:
    """The draws of party (`role`, `index`) of the run seeded `seed`."""
    return PartyDraws(int(np.random.default_rng([seed, DROPOUT_STREAM, int(role), index]).integers(2**62)))


def server_draws(seed: int, clients: Sequence[str]) -> dict[str, PartyDraws]:
    """The server's stream for each client, keyed by client id; `clients` in fleet order."""
    return {client: party_draws(seed, Role.SERVER, index) for index, client in enumerate(clients)}
