"""Refused messages and steps: unknown senders, wrong rounds, forged or tampered shares, and the core rule
that no client ever reveals both kinds of share for one peer."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from fleettune.privacy.secagg import (
    AdvertiseKeys,
    MaskedInput,
    RosterEntry,
    SealedShare,
    SecAggError,
    ShareBundle,
    ShareKeys,
    UnmaskRequest,
    UnmaskResponse,
)
from fleettune.privacy.secagg.shamir import PRIME, SHARE_BYTES
from tests.privacy.secagg_support import Run, make_config, random_inputs


@pytest.fixture
def run() -> Run:
    return Run(make_config(4, 3, 32))


def flip(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 0x01]) + data[at + 1 :]


# Server side -----------------------------------------------------------------------------------------------
def test_unknown_client_is_refused(run: Run) -> None:
    forged = AdvertiseKeys(run.config.aggregation_tag, "mallory", b"\x01" * 32, b"\x02" * 32)
    with pytest.raises(SecAggError, match=r"AdvertiseKeys .* from unknown client 'mallory'; expected one of the 4"):
        run.server.receive(forged)


def test_out_of_phase_messages_are_refused(run: Run) -> None:
    early = MaskedInput(run.config.aggregation_tag, "dev0", 32, np.zeros(32, dtype=np.uint32))
    with pytest.raises(SecAggError, match=r"MaskedInput \(round 2\) arrived while the server collects AdvertiseKeys"):
        run.server.receive(early)
    run.advertise()
    with pytest.raises(SecAggError, match=r"MaskedInput \(round 2\) arrived while the server collects ShareKeys"):
        run.server.receive(early)
    with pytest.raises(
        SecAggError, match="cannot close round 'masked_input' while the server is in phase 'share_keys'"
    ):
        run.server.end_masked_input()
    with pytest.raises(
        SecAggError, match="client 'dev0' cannot mask its input in phase 'advertised'; expected phase 'shared'"
    ):
        run.clients["dev0"].mask_input(ShareBundle(run.config.aggregation_tag, "dev0", ()), np.zeros(32))
    assert run.roster is not None
    with pytest.raises(SecAggError, match=r"Roster \(round 0 reply\) arrived while the server collects ShareKeys"):
        run.server.receive(run.roster)


def test_messages_from_outside_the_previous_round_set_are_refused(run: Run) -> None:
    run.advertise(skip={"dev3"})
    with pytest.raises(SecAggError, match=r"ShareKeys .* from 'dev3', which is not in the round-0 set"):
        run.server.receive(ShareKeys(run.config.aggregation_tag, "dev3", ()))
    run = Run(make_config(5, 3, 32))
    run.advertise()
    run.share(skip={"dev2"})
    stray = MaskedInput(run.config.aggregation_tag, "dev2", 32, np.zeros(32, dtype=np.uint32))
    with pytest.raises(SecAggError, match=r"MaskedInput .* from 'dev2', which is not in the round-1 set"):
        run.server.receive(stray)


def test_messages_of_another_aggregation_are_refused(run: Run) -> None:
    other = Run(make_config(4, 3, 32, aggregation_id=b"round-2"))
    with pytest.raises(SecAggError, match="belongs to another aggregation"):
        run.server.receive(other.clients["dev0"].advertise())


def test_identical_resends_pass_and_different_ones_are_refused(run: Run) -> None:
    message = run.clients["dev0"].advertise()
    run.server.receive(message)
    run.server.receive(AdvertiseKeys.from_bytes(message.to_bytes()))
    with pytest.raises(SecAggError, match="client 'dev0' sent a second, different AdvertiseKeys"):
        run.server.receive(dataclasses.replace(message, enc_public=b"\x09" * 32))
    with pytest.raises(SecAggError, match="repeats a public key of 'dev0'"):
        run.server.receive(dataclasses.replace(message, sender="dev1"))


def test_incomplete_share_keys_and_bad_masked_inputs_are_refused(run: Run) -> None:
    roster = run.advertise()
    shares = run.clients["dev0"].share_keys(roster)
    with pytest.raises(SecAggError, match=r"must carry one share for each other roster client: missing \['dev3'\]"):
        run.server.receive(dataclasses.replace(shares, shares=shares.shares[:-1]))
    run.server.receive(shares)
    run.share(skip={"dev0"})
    wrong = MaskedInput(run.config.aggregation_tag, "dev0", 32, np.zeros(31, dtype=np.uint32))
    with pytest.raises(SecAggError, match=r"holds shape \(31,\); expected \(32,\)"):
        run.server.receive(wrong)
    with pytest.raises(SecAggError, match=r"malformed MaskedInput .* from 'dev0': masked vector must be 1-D uint32"):
        run.server.receive(dataclasses.replace(wrong, masked=np.zeros(32, dtype=np.int64)))
    with pytest.raises(SecAggError, match="64-bit ring; expected 32"):
        run.server.receive(dataclasses.replace(wrong, ring_bits=64, masked=np.zeros(32, dtype=np.uint64)))


def test_unmask_responses_must_match_the_request(run: Run) -> None:
    run.advertise()
    run.share()
    request = run.mask(random_inputs(run.config), skip={"dev3"})
    response = run.clients["dev0"].unmask(request)
    with pytest.raises(SecAggError, match=r"carries mask key shares of \[\]; expected \['dev3'\]"):
        run.server.receive(dataclasses.replace(response, mask_key_shares=()))
    outside = (("dev3", PRIME.to_bytes(SHARE_BYTES, "big")),)
    with pytest.raises(SecAggError, match="outside the field"):
        run.server.receive(dataclasses.replace(response, mask_key_shares=outside))


def test_a_corrupted_share_is_caught_when_rebuilding(run: Run) -> None:
    run.advertise()
    run.share()
    request = run.mask(random_inputs(run.config))
    for c in ("dev0", "dev1", "dev2"):
        run.server.receive(run.clients[c].unmask(request))
    honest = run.clients["dev3"].unmask(request)
    owner, share = honest.self_mask_shares[0]
    bad = dataclasses.replace(honest, self_mask_shares=((owner, flip(share, 65)), *honest.self_mask_shares[1:]))
    run.server.receive(bad)
    with pytest.raises(SecAggError, match="cannot rebuild the self-mask seed of 'dev0': share at x=4 is inconsistent"):
        run.server.end_unmasking()


def test_a_corrupted_mask_key_share_is_caught(run: Run) -> None:
    run.advertise()
    run.share()
    request = run.mask(random_inputs(run.config), skip={"dev3"})
    for c in ("dev1", "dev2"):
        run.server.receive(run.clients[c].unmask(request))
    honest = run.clients["dev0"].unmask(request)
    (owner, share), *_ = honest.mask_key_shares
    run.server.receive(dataclasses.replace(honest, mask_key_shares=((owner, flip(share, 40)),)))
    with pytest.raises(SecAggError, match=r"cannot rebuild the mask key of 'dev3'|rebuilt mask key of 'dev3'"):
        run.server.end_unmasking()


# Client side: shares in transit ---------------------------------------------------------------------------
def test_a_tampered_share_fails_authentication(run: Run) -> None:
    run.advertise()
    bundles = run.share()
    bundle = bundles["dev1"]
    first = bundle.shares[0]
    tampered = dataclasses.replace(first, sealed=flip(first.sealed, 30))
    with pytest.raises(SecAggError, match="share from 'dev0' to 'dev1': authentication failed"):
        run.clients["dev1"].mask_input(dataclasses.replace(bundle, shares=(tampered, *bundle.shares[1:])), np.zeros(32))


def test_a_redirected_or_relabelled_share_fails_authentication(run: Run) -> None:
    run.advertise()
    bundles = run.share()
    for_dev1 = next(s for s in bundles["dev1"].shares if s.sender == "dev0")
    redirected = SealedShare("dev0", "dev2", for_dev1.sealed)  # the server hands dev1's share to dev2
    others = tuple(s for s in bundles["dev2"].shares if s.sender != "dev0")
    with pytest.raises(SecAggError, match="share from 'dev0' to 'dev2': authentication failed"):
        run.clients["dev2"].mask_input(
            ShareBundle(run.config.aggregation_tag, "dev2", (redirected, *others)), np.zeros(32)
        )
    from_dev3 = next(s for s in bundles["dev1"].shares if s.sender == "dev3")
    relabelled = SealedShare("dev0", "dev1", from_dev3.sealed)  # dev3's share passed off as dev0's
    rest = tuple(s for s in bundles["dev1"].shares if s.sender not in ("dev0", "dev3"))
    with pytest.raises(SecAggError, match="share from 'dev0' to 'dev1': authentication failed"):
        run.clients["dev1"].mask_input(
            ShareBundle(run.config.aggregation_tag, "dev1", (relabelled, *rest)), np.zeros(32)
        )


def test_client_checks_the_roster_and_the_bundle_address(run: Run) -> None:
    for client in run.clients.values():
        run.server.receive(client.advertise())
    roster = run.server.end_advertise()
    swapped = (RosterEntry("dev0", b"\x05" * 32, roster.entries[0].mask_public), *roster.entries[1:])
    with pytest.raises(SecAggError, match="public keys for client 'dev0' that are not its own"):
        run.clients["dev0"].share_keys(dataclasses.replace(roster, entries=swapped))
    with pytest.raises(SecAggError, match="Roster leaves out client 'dev0' itself"):
        run.clients["dev0"].share_keys(dataclasses.replace(roster, entries=roster.entries[1:]))
    run.roster = roster
    bundles = run.share()
    with pytest.raises(SecAggError, match="ShareBundle addressed to 'dev1' reached client 'dev0'"):
        run.clients["dev0"].mask_input(bundles["dev1"], np.zeros(32))


# Client side: the core rule of round 3 ----------------------------------------------------------------------
@pytest.fixture
def masked_run(run: Run) -> Run:
    run.advertise()
    run.share()
    run.mask(random_inputs(run.config), skip={"dev3"})
    return run


def test_a_client_refuses_to_reveal_both_shares_of_one_peer(masked_run: Run) -> None:
    tag = masked_run.config.aggregation_tag
    greedy = UnmaskRequest(tag, ("dev0", "dev1", "dev2", "dev3"), ("dev3",))
    with pytest.raises(SecAggError, match=r"client 'dev0' refuses to reveal both .* of \['dev3'\]"):
        masked_run.clients["dev0"].unmask(greedy)


def test_a_client_refuses_a_request_contradicting_an_earlier_one(masked_run: Run) -> None:
    assert masked_run.request is not None
    client = masked_run.clients["dev0"]
    first = client.unmask(masked_run.request)
    assert first.to_bytes() == client.unmask(masked_run.request).to_bytes()  # a plain repeat is answered again
    flipped = UnmaskRequest(masked_run.config.aggregation_tag, ("dev0", "dev1"), ("dev2", "dev3"))
    with pytest.raises(SecAggError, match="already revealed the self-mask seed share of 'dev2'; refusing its mask key"):
        client.unmask(flipped)


def test_a_client_refuses_requests_that_misstate_the_round(masked_run: Run) -> None:
    tag = masked_run.config.aggregation_tag
    client = masked_run.clients["dev0"]
    with pytest.raises(SecAggError, match="counts client 'dev0' as dropped"):
        client.unmask(UnmaskRequest(tag, ("dev1", "dev2"), ("dev0", "dev3")))
    with pytest.raises(SecAggError, match=r"does not partition the round-1 clients: unknown \[\], missing \['dev3'\]"):
        client.unmask(UnmaskRequest(tag, ("dev0", "dev1", "dev2"), ()))
    with pytest.raises(SecAggError, match="names 2 survivors; the threshold is 3"):
        client.unmask(UnmaskRequest(tag, ("dev0", "dev1"), ("dev2", "dev3")))
    assert client.phase == "masked"  # nothing was revealed by the refused requests


def test_a_client_can_only_take_each_step_in_its_phase(run: Run) -> None:
    client = run.clients["dev0"]
    with pytest.raises(SecAggError, match="cannot unmask in phase 'new'"):
        client.unmask(UnmaskRequest(run.config.aggregation_tag, (), ()))
    client.advertise()
    with pytest.raises(SecAggError, match="cannot advertise keys in phase 'advertised'; expected phase 'new'"):
        client.advertise()
    with pytest.raises(ValueError, match="not among the 4 clients"):
        type(client)("mallory", run.config)


def test_unmask_response_never_holds_both_kinds_for_a_client(masked_run: Run) -> None:
    assert masked_run.request is not None
    for c in masked_run.request.survivors:
        response: UnmaskResponse = masked_run.clients[c].unmask(masked_run.request)
        seeds = {owner for owner, _ in response.self_mask_shares}
        keys = {owner for owner, _ in response.mask_key_shares}
        assert seeds == {"dev0", "dev1", "dev2"} and keys == {"dev3"}
