"""Codecs inside real runs: unpadding is lossless, lossy codecs cut the bytes the ledgers count."""

from __future__ import annotations

import pytest

from tests.schemes.conftest import RunScheme

COMMON = {"rounds": 2, "padding": "max_length", "max_length": 64, "eval_every": 1}  # cut tensors dominate


def _cut_bytes(result) -> int:  # activations up + gradients down, every step
    return result.traffic.total_uplink() + result.traffic.total_downlink()


@pytest.mark.parametrize("scheme", ["mesfl", "sl"])
def test_unpadding_changes_bytes_and_nothing_else(run_scheme: RunScheme, scheme: str) -> None:
    padded = run_scheme(scheme, **COMMON)
    unpadded = run_scheme(scheme, **COMMON, compression__unpad=True)
    assert unpadded.step_losses == padded.step_losses  # exactly: the padded rows carry nothing
    assert unpadded.final.scores.accuracy == padded.final.scores.accuracy
    assert _cut_bytes(unpadded) < 0.75 * _cut_bytes(padded)
    assert unpadded.sim_time_s < padded.sim_time_s


def test_int8_cut_tensors_shrink_the_traffic_and_still_train(run_scheme: RunScheme) -> None:
    fp32 = run_scheme("mesfl", **COMMON)
    int8 = run_scheme("mesfl", **COMMON, compression__activations="int8", compression__gradients="int8")
    assert _cut_bytes(int8) < 0.5 * _cut_bytes(fp32)
    assert int8.step_losses != fp32.step_losses  # lossy: the server saw quantised activations
    assert int8.step_losses == pytest.approx(fp32.step_losses, rel=0.05)


@pytest.mark.parametrize("scheme", ["fl", "mesfl"])
def test_lossy_update_codec_sends_fewer_aggregation_bytes(run_scheme: RunScheme, scheme: str) -> None:
    extra = {"local_steps": 2} if scheme == "fl" else {}
    fp32 = run_scheme(scheme, **COMMON, **extra)
    int8 = run_scheme(scheme, **COMMON, **extra, compression__updates="int8")
    if scheme == "fl":  # all of fl's traffic is adapters
        assert _cut_bytes(int8) < 0.4 * _cut_bytes(fp32)
    else:
        assert _cut_bytes(int8) < _cut_bytes(fp32)
    assert int8.history[0].train_loss == fp32.history[0].train_loss  # round 1 starts from the same adapter
    assert int8.final.scores.accuracy == pytest.approx(fp32.final.scores.accuracy, abs=0.2)
