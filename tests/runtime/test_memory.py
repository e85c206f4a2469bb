"""The memory meter: parameter, gradient, optimizer and saved-activation bytes on live objects."""

from __future__ import annotations

import torch
from torch import nn

from fleettune.runtime.memory import ActivationMeter, MemoryBreakdown, measure, module_bytes


def test_module_bytes_split_frozen_and_trainable_and_count_shared_weights_once() -> None:
    frozen = nn.Linear(10, 10)  # 110 params
    for p in frozen.parameters():
        p.requires_grad_(False)
    trainable = nn.Linear(10, 2)  # 22 params
    model = nn.Sequential(frozen, trainable, frozen)  # frozen appears twice
    assert module_bytes(model) == (110 * 4, 22 * 4, 0)


def test_activation_meter_counts_what_a_trainable_linear_saves() -> None:
    layer = nn.Linear(64, 64, bias=False)
    x = torch.randn(8, 64)
    meter = ActivationMeter()
    with meter.track():
        y = layer(x)
    # A trainable linear keeps its input (8 x 64 fp32 = 2048 bytes) for the weight gradient.
    assert meter.peak == 8 * 64 * 4
    y.sum().backward()
    assert meter.current == 0


def test_frozen_linear_saves_no_input() -> None:
    layer = nn.Linear(64, 64, bias=False).requires_grad_(False)
    x = torch.randn(8, 64, requires_grad=True)
    meter = ActivationMeter()
    with meter.track(weights=layer.parameters()):
        layer(x).sum()
    # Only the (transposed) weight is kept, and weights are not activations.
    assert meter.peak == 0


def test_measure_adds_optimizer_state_after_a_step() -> None:
    model = nn.Linear(4, 4)
    optimizer = torch.optim.AdamW(model.parameters())
    model(torch.randn(2, 4)).sum().backward()
    optimizer.step()
    memory = measure(model, optimizer, activations_peak=100, received=7)
    assert memory.trainable == 20 * 4 and memory.gradients == 20 * 4
    assert memory.optimizer >= 2 * 20 * 4  # AdamW: two moments per parameter (+ step counters)
    assert memory.total == sum(memory.as_tuple())


def test_peak_with_takes_each_category_maximum() -> None:
    a = MemoryBreakdown(1, 5, 0, 0, 9, 0)
    b = MemoryBreakdown(3, 2, 1, 0, 4, 8)
    assert a.peak_with(b).as_tuple() == (3, 5, 1, 0, 9, 8)
