"""Adapter traffic in one direction: lossless sends states, lossy sends updates from a shared reference."""

from __future__ import annotations

import pytest
import torch

from fleettune.compression import UpdateLink, parse_update_codec
from fleettune.errors import InputError


def _state(seed: int, rank: int = 4, width: int = 8) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "m.lora_A.weight": torch.randn(rank, width, generator=g),
        "m.lora_B.weight": torch.randn(width, rank, generator=g),
    }


def test_lossless_link_delivers_the_state_exactly() -> None:
    link = UpdateLink(parse_update_codec("fp32"), _state(0))
    sent = _state(1)
    delivered = link.receive(link.send(sent))
    assert all(torch.equal(delivered[k], sent[k]) for k in sent)
    assert all(torch.equal(link.reference[k], sent[k]) for k in sent)


def test_lossy_link_sends_the_update_and_both_ends_agree_on_the_result() -> None:
    start = _state(0, rank=16, width=384)
    link = UpdateLink(parse_update_codec("int8"), start)
    target = {k: v + 0.01 * torch.randn_like(v) for k, v in start.items()}
    payload = link.send(target)
    delivered = link.receive(payload)
    for key in start:
        step = (target[key] - start[key]).abs().max()
        # int8 of the update (not of the state): error bounded by the update's own scale
        assert (delivered[key] - target[key]).abs().max() <= step / 254 + 1e-6
    assert len(payload) < 0.4 * len(UpdateLink(parse_update_codec("fp32"), start).send(target))


def test_error_feedback_makes_repeated_lossy_sends_converge_to_the_target() -> None:
    start = _state(0)
    link = UpdateLink(parse_update_codec("topk:0.25"), start)
    target = _state(1)
    first_error = None
    for _ in range(6):  # the residual not sent last time goes out next time
        delivered = link.receive(link.send(target))
        error = max((delivered[k] - target[k]).abs().max().item() for k in target)
        first_error = error if first_error is None else first_error
    assert error < 1e-5 < first_error


def test_rebase_moves_the_reference() -> None:
    link = UpdateLink(parse_update_codec("fp16"), _state(0))
    link.rebase(_state(2))
    assert torch.equal(link.reference["m.lora_A.weight"], _state(2)["m.lora_A.weight"])


def test_a_payload_for_another_adapter_is_rejected() -> None:
    link = UpdateLink(parse_update_codec("fp32"), _state(0))
    other = UpdateLink(parse_update_codec("fp32"), {"x.weight": torch.zeros(2)})
    with pytest.raises(InputError, match="keys differ"):
        link.receive(other.send({"x.weight": torch.ones(2)}))


@pytest.mark.parametrize("spec", ["topk:0.1", "int4"])
def test_error_feedback_carries_what_was_left_out_across_rebases(spec: str) -> None:
    # A client sends its training update every round from the global state it was rebased on; the
    # receiver's views add up to the true updates but for the last residual, which is pending.
    start = _state(0)
    link = UpdateLink(parse_update_codec(spec), start)
    g = torch.Generator().manual_seed(3)
    true_total = {k: torch.zeros_like(v, dtype=torch.float64) for k, v in start.items()}
    sent_total = {k: torch.zeros_like(v, dtype=torch.float64) for k, v in start.items()}
    base = start
    for _ in range(30):
        step = {k: 0.01 * torch.randn(v.shape, generator=g) for k, v in start.items()}
        trained = {k: base[k] + step[k] for k in start}
        view = link.receive(link.send(trained))
        for k in start:
            true_total[k] += step[k].double()
            sent_total[k] += view[k].double() - base[k].double()
        link.rebase(base)  # the next round starts from the same global state again
    pending = link.pending
    for k in start:  # exactly the last residual is missing: it rides on the next send
        torch.testing.assert_close(true_total[k] - sent_total[k], pending[k], rtol=0, atol=1e-6)
        assert pending[k].abs().max() > 0


def test_a_lossy_link_refuses_a_state_with_other_tensors() -> None:
    link = UpdateLink(parse_update_codec("int8"), _state(0))
    with pytest.raises(ValueError, match="different tensors"):
        link.send({"x": torch.zeros(1)})
