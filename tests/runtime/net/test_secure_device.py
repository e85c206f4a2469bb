"""A device's side of deployed secure aggregation: the setup it is sent, and what it refuses."""

from __future__ import annotations

import pytest
import torch

from fleettune.errors import InputError
from fleettune.privacy.secagg import AdvertiseKeys
from fleettune.runtime.net.secure_device import SecureParty
from fleettune.runtime.net.secure_round import SecureRound

SETUP = SecureRound(
    clients=("a", "b", "c"),
    threshold=2,
    frac_bits=20,
    value_range=8.0,
    ring_bits=32,
    round=0,
    group=1,
    layout=(("l0.A", (2, 3)), ("l0.B", (3,))),
    scale=0.5,
    clip=None,
    updates=False,
)


def test_the_setup_travels_as_json_and_names_its_protocol_instance() -> None:
    assert SecureRound.from_json(SETUP.to_json()) == SETUP
    config = SETUP.config()
    assert (config.clients, config.threshold, config.vector_length, config.aggregation_id) == (
        ("a", "b", "c"),
        2,
        9,
        b"round-1/group-1",
    )
    with pytest.raises(InputError, match="malformed secure-aggregation setup from the server"):
        SecureRound.from_json('{"clients": ["a"]}')


def test_the_vector_holds_the_groups_keys_only_with_zeros_for_the_rest() -> None:
    held = {"l0.A": torch.ones(2, 3), "l1.A": torch.ones(4)}  # l1 belongs to another group
    vector = SETUP.vector(held)
    assert vector.tolist() == [1.0] * 6 + [0.0] * 3
    with pytest.raises(InputError, match=r"adapter key l0\.B is \(4,\); the aggregation expects \(3,\)"):
        SETUP.vector({"l0.B": torch.ones(4)})
    with pytest.raises(InputError, match="holds none of the keys of aggregation group 1"):
        SETUP.vector({"l1.A": torch.ones(4)})


def test_a_device_answers_its_groups_and_refuses_what_it_was_not_set_up_for() -> None:
    party = SecureParty("a")
    state = {"l0.A": torch.ones(2, 3)}
    advert = AdvertiseKeys.from_bytes(party.answer("advertise", 1, b"", SETUP.to_json(), state, state))
    assert advert.sender == "a"
    assert party.answer("share_keys", 0, b"", "", state, state) == b""  # group 0 was never set up
    assert party.answer("advertise", 2, b"", SETUP.to_json(), state, state) == b""  # setup of group 1 as group 2
    assert party.answer("share_keys", 1, b"not a roster", "", state, state) == b""  # malformed: out of the group
    assert party.answer("unmask", 1, b"", "", state, state) == b""  # the refusal ended its session
