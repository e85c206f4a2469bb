"""Mixed LoRA ranks deployed. With flora (stacking) the devices fold the stacked factors into their base weights
and draw their fresh adapters themselves, as the simulation's clients do; hetlora needs nothing of the kind."""

from __future__ import annotations

import contextlib
import threading
import time
from pathlib import Path
from typing import Any, ClassVar

import pytest
import torch

from fleettune.config import build_config
from fleettune.models.adapters import task_model, write_adapter
from fleettune.runner import execute, prepare
from fleettune.runtime.ledger import ADAPTER, CUT
from fleettune.runtime.net import checkpoint
from fleettune.runtime.net.coordinator import Coordinator, ServeOptions
from fleettune.runtime.net.device import DeviceAgent
from fleettune.runtime.net.driver import drive
from fleettune.runtime.net.local import LocalCaller
from fleettune.runtime.net.protocol import Instruction
from fleettune.runtime.progress import RoundRecord
from fleettune.schemes.split.client import SplitClient
from tests.runtime.net.conftest import device_folders, tiny_flags
from tests.runtime.net.inprocess import Vanish, deploy

RANKS = (2, 4, 8)


def _ranked_fleet(folder: Path) -> str:
    lines = ['name = "ranked"', "[server]", 'kind = "rtx-4080-super"']
    for index, (rank, cut) in enumerate(zip(RANKS, (1, 2, 1), strict=True)):
        lines += ["[[device]]", f'id = "d{index}"', 'kind = "raspberry-pi-5"', f"cut_layer = {cut}"]
        lines.append(f"lora_rank = {rank}")
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "ranked.toml"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def _flags(
    model_dir: Path, data_dir: Path, tmp_path: Path, scheme: str, method: str = "flora", **overrides: Any
) -> dict[str, Any]:
    fleet = _ranked_fleet(tmp_path)
    return tiny_flags(model_dir, data_dir, scheme, fleet=fleet, lora__mixed_ranks=method, lr=1e-2, **overrides)


@pytest.mark.parametrize(
    ("scheme", "every", "method"),
    [("mesfl", 1, "flora"), ("mesfl", 2, "flora"), ("splitfed", 1, "flora"), ("mesfl", 1, "hetlora")],
)
def test_mixed_ranks_deployed_equal_simulated(
    scheme: str, every: int, method: str, tiny_model_dir: Path, tiny_data_dir: Path, tmp_path: Path
) -> None:
    """Same step losses and final adapter (1e-6) and the same cut and adapter bytes. With flora the stacked
    factors are what travels, and each device's fresh adapter is drawn on the device, not sent."""
    flags = _flags(tiny_model_dir, tiny_data_dir, tmp_path, scheme, method, rounds=4, aggregate_every=every)
    simulated = execute(prepare(build_config(flags=flags)))
    deployed = deploy(flags, tmp_path / "run")
    assert len(deployed.step_losses) == 4
    assert deployed.step_losses == pytest.approx(simulated.step_losses, abs=1e-6)
    assert simulated.adapter is not None and deployed.adapter is not None
    for key, value in simulated.adapter.items():
        torch.testing.assert_close(deployed.adapter[key], value, atol=1e-6, rtol=0)
    for kind in (CUT, ADAPTER):
        assert deployed.traffic.kinds[kind] == simulated.traffic.kinds[kind]
    assert deployed.final.scores.accuracy == pytest.approx(simulated.final.scores.accuracy)


class _Recorded(DeviceAgent):
    """Keeps every agent made, so the test can look at the device's stage after the run."""

    made: ClassVar[list[_Recorded]] = []

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.rebases = 0
        _Recorded.made.append(self)

    def rebase(self, payload: bytes) -> None:
        super().rebase(payload)
        self.rebases += 1


class _PollsLate(_Recorded):
    """Joins, then waits for the test's go before it polls: the rounds meanwhile run without it."""

    go = threading.Event()

    def join(self) -> None:
        super().join()
        assert _PollsLate.go.wait(timeout=60)


class _DiesInRound3(_Recorded):
    def step(self, instruction: Instruction) -> None:
        if instruction.round == 2:
            raise Vanish
        super().step(instruction)


def _base_weights(model: torch.nn.Module, layers: int) -> dict[str, torch.Tensor]:
    """The (merged) base weights of the adapted modules below `layers`."""
    out = {}
    for name, module in model.named_modules():
        base = getattr(module, "base_layer", None)
        if base is not None and any(f"layer.{i}." in name + "." for i in range(layers)):
            out[name] = base.weight.detach().clone()
    return out


def test_a_device_rejoining_a_flora_run_gets_the_folded_base_weights(
    tiny_model_dir: Path, tiny_data_dir: Path, tmp_path: Path
) -> None:
    """A device that dies in round 3 and joins again builds its stage from the pre-trained weights: the join hands
    it the sum of the stacked updates so far. It polls only after round 4, whose stacked update it missed while
    joined: before it trains in round 5 it gets that update and the fresh adapter. Its base weights end equal to
    the server's."""
    flags = _flags(tiny_model_dir, tiny_data_dir, tmp_path, "mesfl", rounds=5)
    prepared = prepare(build_config(flags=flags))
    folders = device_folders(prepared, tmp_path / "devices")
    coordinator = Coordinator(prepared, ServeOptions(poll_s=0.2, join_timeout_s=60.0, step_timeout_s=2.0))
    victim = next(iter(folders))
    _Recorded.made.clear()

    def agent(device: str, kind: type[DeviceAgent]) -> None:
        a = kind(device, LocalCaller(coordinator.handle, device), folders[device])
        threading.Thread(target=lambda: _quietly(a), daemon=True).start()

    agent(victim, _DiesInRound3)
    for device in folders:
        if device != victim:
            agent(device, _Recorded)

    def rejoin(record: RoundRecord) -> None:
        if record.round == 3:
            _PollsLate.go.clear()
            agent(victim, _PollsLate)
        if record.round == 4:
            assert victim not in record.participants
            _PollsLate.go.set()
            member, deadline = coordinator.board.members[victim], time.monotonic() + 30
            while not member.ready and time.monotonic() < deadline:  # round 5 starts with it
                time.sleep(0.01)

    coordinator.setup.on_round = rejoin
    result = drive(coordinator)
    assert result.history[2].dropped_disconnect == (victim,)
    assert victim in result.history[-1].participants
    assert coordinator.base_update, "the run folded stacked updates"
    server_side = _base_weights(task_model(coordinator.evaluation.peft), 1)
    rejoined = _Recorded.made[-1]
    assert rejoined.id == victim and isinstance(rejoined.client, SplitClient)
    assert rejoined.rebases == 1  # it joined after round 3's aggregation and missed round 4's
    device_side = _base_weights(task_model(rejoined.client.stage.peft), 1)
    assert device_side.keys() == server_side.keys() and device_side
    pretrained = _base_weights(task_model(Coordinator(prepared).evaluation.peft), 1)
    for name, weight in server_side.items():
        assert not torch.equal(weight, pretrained[name])
        torch.testing.assert_close(device_side[name], weight, atol=1e-6, rtol=0)


def _quietly(agent: DeviceAgent) -> None:
    with contextlib.suppress(Vanish):
        agent.run()


def test_a_resumed_flora_server_folds_the_checkpointed_base_updates(
    tiny_model_dir: Path, tiny_data_dir: Path, tmp_path: Path
) -> None:
    """The checkpoint keeps the sum of the folded updates; a server rebuilt from the pre-trained weights folds
    it back, so its evaluation model and its accuracy are the finished run's."""
    flags = _flags(tiny_model_dir, tiny_data_dir, tmp_path, "mesfl", rounds=3)
    options = ServeOptions(poll_s=0.2, join_timeout_s=60.0, step_timeout_s=60.0, checkpoint_dir=tmp_path / "ckpt")
    first = Coordinator(prepare(build_config(flags=flags)), options)
    folders = device_folders(first.prepared, tmp_path / "devices")
    for d, f in folders.items():
        threading.Thread(target=DeviceAgent(d, LocalCaller(first.handle, d), f).run, daemon=True).start()
    done = drive(first)
    resumed = Coordinator(prepare(build_config(flags=flags)), options)
    checkpoint.load(resumed, tmp_path / "ckpt")
    write_adapter(resumed.evaluation.peft, resumed.current.evaluation)  # as evaluating does
    finished = task_model(first.evaluation.peft).state_dict()
    for name, value in task_model(resumed.evaluation.peft).state_dict().items():
        torch.testing.assert_close(value, finished[name], atol=1e-6, rtol=0)
    again = drive(Coordinator(prepare(build_config(flags=flags)), options), resume=True)
    assert [r.round for r in again.history] == [1, 2, 3]
    assert again.final.scores.accuracy == pytest.approx(done.final.scores.accuracy)
