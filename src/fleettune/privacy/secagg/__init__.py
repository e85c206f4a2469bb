"""Secure aggregation (Bonawitz et al., CCS 2017): a server learns the sum of client vectors and nothing else.

Four rounds between n clients and one server, surviving up to n - threshold dropouts:

0. advertise keys: each client sends two X25519 public keys (share encryption, pairwise masks);
1. share keys: each client Shamir-shares its self-mask seed and its mask private key, sealing each
   peer's shares with AES-GCM under a key agreed with that peer, relayed by the server;
2. masked input: each client sends its fixed-point vector plus a self mask plus pairwise masks that
   cancel in the sum;
3. unmasking: survivors reveal shares of the survivors' self-mask seeds and of the dropped clients' mask
   keys (never both for one client), and the server strips every mask from the sum.

`SecAggClient` and `SecAggServer` are message-driven state machines for a deployment; `secure_sum`
runs a whole aggregation in one process.

Threat model and limits: the server is honest but curious, and the transport must authenticate who
sends each round-0 key (there are no signatures, hence no consistency-check round of the paper's
actively secure variant). The threshold must be a strict majority (see `config`). Every pair of
clients masks (the complete graph), so a client does n - 1 key agreements and mask expansions; the
sparse neighbourhoods of SecAgg+ are not implemented. Clients and servers serve one aggregation each.
"""

from __future__ import annotations

from fleettune.privacy.secagg.client import SecAggClient
from fleettune.privacy.secagg.config import SecAggConfig, check_threshold, min_threshold
from fleettune.privacy.secagg.errors import SecAggError
from fleettune.privacy.secagg.fixedpoint import FixedPoint
from fleettune.privacy.secagg.messages import (
    AdvertiseKeys,
    ClientMessage,
    MaskedInput,
    Message,
    Roster,
    RosterEntry,
    SealedShare,
    ServerMessage,
    ShareBundle,
    ShareKeys,
    UnmaskRequest,
    UnmaskResponse,
    decode_message,
)
from fleettune.privacy.secagg.randomness import RandomSource, SeededRandom, SystemRandom
from fleettune.privacy.secagg.ring import Ring
from fleettune.privacy.secagg.server import Aggregate, SecAggServer
from fleettune.privacy.secagg.simulate import ROUNDS, SecureSumResult, secure_sum
from fleettune.privacy.secagg.vectors import StateLayout, as_vector, flatten_state, unflatten_state

__all__ = [
    "ROUNDS",
    "AdvertiseKeys",
    "Aggregate",
    "ClientMessage",
    "FixedPoint",
    "MaskedInput",
    "Message",
    "RandomSource",
    "Ring",
    "Roster",
    "RosterEntry",
    "SealedShare",
    "SecAggClient",
    "SecAggConfig",
    "SecAggError",
    "SecAggServer",
    "SecureSumResult",
    "SeededRandom",
    "ServerMessage",
    "ShareBundle",
    "ShareKeys",
    "StateLayout",
    "SystemRandom",
    "UnmaskRequest",
    "UnmaskResponse",
    "as_vector",
    "check_threshold",
    "decode_message",
    "flatten_state",
    "min_threshold",
    "secure_sum",
    "unflatten_state",
]
