"""Learning-rate schedule and evaluation metrics, pinned to golden numbers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fleettune.evaluation import macro_f1, per_client_accuracy, score
from fleettune.training import LocalOptimizer, lr_factor, make_optimizer


def test_onecycle_warms_up_linearly_then_decays_by_cosine_to_zero() -> None:
    total = 100  # 30 warm-up steps
    assert lr_factor("onecycle", 0, total) == pytest.approx(1 / 30)
    assert lr_factor("onecycle", 29, total) == pytest.approx(1.0)
    assert lr_factor("onecycle", 30, total) == pytest.approx(1.0)
    assert lr_factor("onecycle", 65, total) == pytest.approx(0.5)
    assert lr_factor("onecycle", 100, total) == pytest.approx(0.0)
    assert lr_factor("constant", 55, total) == 1.0


def test_macro_f1_golden() -> None:
    labels = np.array([0, 0, 1, 1, 2, 2])
    predictions = np.array([0, 1, 1, 1, 0, 2])
    # class 0: tp1 fp1 fn1 -> 0.5; class 1: tp2 fp1 fn0 -> 0.8; class 2: tp1 fp0 fn1 -> 2/3
    assert macro_f1(predictions, labels, 3) == pytest.approx((0.5 + 0.8 + 2 / 3) / 3)
    assert macro_f1(predictions, labels, 4) == pytest.approx((0.5 + 0.8 + 2 / 3) / 4)
    assert score(predictions, labels, 3).accuracy == pytest.approx(4 / 6)


def test_per_client_accuracy_worst_and_spread() -> None:
    predictions = np.array([1, 1, 0, 0])
    labels = np.array([1, 0, 0, 0])
    clients = per_client_accuracy(predictions, labels, {"a": np.array([0, 1]), "b": np.array([2, 3])})
    assert clients.per_client == {"a": 0.5, "b": 1.0}
    assert clients.worst == 0.5
    assert clients.std == pytest.approx(0.25)


def test_sgd_keeps_no_state_and_decays_through_the_gradient() -> None:
    param = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
    sgd = make_optimizer([param], 0.1, LocalOptimizer("sgd", weight_decay=0.5))
    param.grad = torch.tensor([1.0, 1.0])
    sgd.step()
    # p - lr * (g + wd * p): 1 - 0.1 * 1.5 = 0.85, -2 - 0.1 * 0 = -2
    assert param.detach().tolist() == pytest.approx([0.85, -2.0])
    assert isinstance(sgd, torch.optim.SGD) and not sgd.state[param]
    adamw = make_optimizer([param], 0.1, LocalOptimizer())
    assert isinstance(adamw, torch.optim.AdamW) and adamw.defaults["weight_decay"] == 0.01
    with pytest.raises(ValueError, match="unknown optimizer 'adam'; expected one of adamw, sgd"):
        LocalOptimizer("adam")
