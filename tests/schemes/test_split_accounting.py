"""What split runs report: bytes from encoded payloads, memory per party, virtual time and timelines."""

from __future__ import annotations

import itertools

import pytest
import torch

from fleettune.compression import parse_cut_codec
from fleettune.messages import CutActivations, CutGradients, CutWire
from fleettune.runtime.events import Activity
from tests.schemes.conftest import RunScheme


def test_mesfl_bytes_are_the_encoded_messages(run_scheme: RunScheme) -> None:
    result = run_scheme("mesfl", rounds=2, clients=3, aggregate_every=2)
    up = result.traffic.uplink
    down = result.traffic.downlink
    assert set(up) == set(down) == {"jetson-nano-0", "jetson-tx2-1", "snapdragon-8s-gen3-2"}
    # Every client sent 2 activation messages and one adapter part; each is at least its tensor bytes.
    for client, sent in up.items():
        assert sent > 2 * 8 * 2 * 32 * 4  # batch 8 x >= 2 tokens x hidden 32 x fp32, twice
        assert down[client] > 0
    kinds = result.traffic.kinds
    assert set(kinds) == {"cut", "adapter"}
    for direction, per_client in (("uplink", up), ("downlink", down)):
        assert kinds["cut"][direction] + kinds["adapter"][direction] == sum(per_client.values())
    # One aggregation: each client's adapter part once each way; the rest is the 2 steps' cut tensors.
    assert 0 < kinds["adapter"]["uplink"] < kinds["cut"]["uplink"]


def test_timeline_covers_every_phase_of_a_mesfl_round(run_scheme: RunScheme) -> None:
    result = run_scheme("mesfl", rounds=2, clients=3)
    first = [e for e in result.events if e.round == 0]
    kinds = {e.activity for e in first}
    for activity in (
        Activity.CLIENT_FORWARD,
        Activity.UPLINK,
        Activity.SERVER_COMPUTE,
        Activity.ADAPTER_SWITCH,
        Activity.DOWNLINK,
        Activity.CLIENT_BACKWARD,
        Activity.ADAPTER_UPLINK,
        Activity.ADAPTER_DOWNLINK,
    ):
        assert activity in kinds, activity
    server = sorted(
        (e for e in first if e.party == "server" and e.activity is Activity.SERVER_COMPUTE), key=lambda e: e.start_s
    )
    for before, after in itertools.pairwise(server):
        assert before.end_s <= after.start_s + 1e-12  # one client at a time on the shared server
    assert result.history[0].sim_time_s == pytest.approx(max(e.end_s for e in first))


@pytest.mark.parametrize("scheme", ["mesfl", "splitfed", "cpsl"])
def test_each_adapter_upload_starts_when_its_client_is_done(run_scheme: RunScheme, scheme: str) -> None:
    # Clients are not held at a barrier: each sends its adapter part as soon as its own backward ends,
    # so on a heterogeneous fleet some uploads start before the slowest client has finished.
    result = run_scheme(scheme, rounds=1, clients=6)
    backward = {e.party: e.end_s for e in result.events if e.activity is Activity.CLIENT_BACKWARD}
    uploads = {e.party: e for e in result.events if e.activity is Activity.ADAPTER_UPLINK}
    assert set(uploads) == set(backward)
    for client, upload in uploads.items():
        assert upload.start_s == pytest.approx(backward[client], abs=1e-12)
    if scheme != "cpsl":  # one step of all clients, then the aggregate goes down once every upload is in
        assert min(u.start_s for u in uploads.values()) < max(backward.values()) - 1e-6
        downloads = [e for e in result.events if e.activity is Activity.ADAPTER_DOWNLINK]
        assert downloads and min(d.start_s for d in downloads) >= max(u.end_s for u in uploads.values()) - 1e-12


def test_sl_is_sequential_and_slower_than_mesfl(run_scheme: RunScheme) -> None:
    sl = run_scheme("sl", rounds=2, clients=6)
    mesfl = run_scheme("mesfl", rounds=2, clients=6)
    assert sl.sim_time_s > 2 * mesfl.sim_time_s
    compute = [e for e in sl.events if e.activity is Activity.CLIENT_FORWARD and e.round == 0]
    ordered = sorted(compute, key=lambda e: e.start_s)
    for before, after in itertools.pairwise(ordered):
        assert before.end_s <= after.start_s  # clients take turns


def test_stop_at_target_ends_at_the_first_evaluation_reaching_it(run_scheme: RunScheme) -> None:
    result = run_scheme("mesfl", rounds=10, clients=3, target_accuracy=0.01, stop_at_target=True)
    assert len(result.history) == 1 and result.history[0].accuracy is not None


def test_activation_message_round_trip() -> None:
    import torch

    message = CutActivations("dev-1", 7, torch.randn(2, 3, 4), torch.ones(2, 3, dtype=torch.long), torch.tensor([0, 1]))
    back = CutActivations.decode(message.encode())
    assert back.client == "dev-1" and back.step == 7
    assert torch.equal(back.hidden, message.hidden) and torch.equal(back.labels, message.labels)


def test_cut_messages_through_codecs_and_unpadding() -> None:
    hidden = torch.randn(2, 6, 8)
    mask = torch.tensor([[1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 0]])
    hidden = hidden * mask[..., None]  # what a server sees from padded rows does not matter; keep them zero
    labels = torch.tensor([1, 0])
    unpadded = CutWire(unpad=True)
    back = CutActivations.decode(CutActivations("c", 3, hidden, mask, labels).encode(unpadded))
    assert torch.equal(back.hidden, hidden) and torch.equal(back.attention_mask, mask)
    grads = CutGradients("c", 3, hidden)
    assert torch.equal(CutGradients.decode(grads.encode(unpadded, mask)).grad, hidden)
    with pytest.raises(ValueError, match="attention mask"):
        grads.encode(unpadded)
    int8 = CutWire(parse_cut_codec("int8"), parse_cut_codec("int8"))
    lossy = CutActivations.decode(CutActivations("c", 3, hidden, mask, labels).encode(int8)).hidden
    assert (lossy - hidden).abs().max() <= hidden.abs().amax(-1, keepdim=True).max() / 254 + 1e-6
    assert not int8.lossless and unpadded.lossless


@pytest.mark.parametrize("unpad", [False, True])
@pytest.mark.parametrize(
    "mask",
    [
        torch.tensor([[1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 0]]),  # right padding: spans
        torch.tensor([[0, 0, 1, 1, 1, 1], [0, 1, 1, 1, 1, 1]]),  # left padding: spans
        torch.tensor([[1, 0, 1, 0, 1, 1], [1, 1, 1, 1, 1, 1]]),  # scattered: packed bits
    ],
)
def test_the_attention_mask_travels_as_a_positions_record(mask: torch.Tensor, unpad: bool) -> None:
    hidden = torch.randn(2, 6, 8) * mask[..., None]
    message = CutActivations("c", 1, hidden, mask, torch.tensor([0, 1]))
    back = CutActivations.decode(message.encode(CutWire(unpad=unpad)))
    assert torch.equal(back.attention_mask, mask) and back.attention_mask.dtype == torch.int64
    assert torch.equal(back.hidden, hidden)


def test_a_padded_step_pays_a_few_bytes_for_its_mask_not_an_int64_tensor() -> None:
    batch, length, width = 16, 128, 384
    mask = torch.ones(batch, length, dtype=torch.long)
    hidden, labels = torch.zeros(batch, length, width), torch.zeros(batch, dtype=torch.long)
    size = len(CutActivations("c", 1, hidden, mask, labels).encode())
    data = 4 * batch * length * width + 8 * batch + 2 * batch  # fp32 rows, int64 labels, uint8 (start, length) spans
    assert data <= size <= data + 400  # header only; the int64 mask alone would be 8 * 16 * 128 = 16,384 bytes


def test_a_malformed_mask_record_is_an_input_error() -> None:
    from fleettune.codec import decode_tensors, encode_tensors
    from fleettune.errors import InputError

    mask = torch.ones(2, 16, dtype=torch.long)  # spans (4 bytes) are no larger than the packed bits (4 bytes)
    payload = CutActivations("c", 1, torch.zeros(2, 16, 8), mask, torch.tensor([0, 1])).encode()
    tensors, meta = decode_tensors(payload)
    assert set(tensors) == {"cut.values", "mask.spans", "labels"}
    tensors["mask.spans"] = torch.tensor([[0, 17], [0, 16]], dtype=torch.uint8)  # reaches past position 16
    with pytest.raises(InputError, match="spans reach outside"):
        CutActivations.decode(encode_tensors(tensors, meta))
    del tensors["mask.spans"]
    with pytest.raises(InputError, match="mask positions: missing part"):
        CutActivations.decode(encode_tensors(tensors, meta))
