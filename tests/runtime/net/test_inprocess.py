"""A deployed run with in-process devices equals the simulated run of the same configuration."""

from __future__ import annotations

import contextlib
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from fleettune.config import build_config
from fleettune.runner import execute, prepare
from fleettune.runtime.ledger import ADAPTER, CUT, SETUP
from fleettune.runtime.net import checkpoint, steps
from fleettune.runtime.net.coordinator import Coordinator, ServeOptions
from fleettune.runtime.net.device import DeviceAgent
from fleettune.runtime.net.driver import drive
from fleettune.runtime.net.local import LocalCaller
from fleettune.runtime.net.protocol import ADAPTER as ADAPTER_CALL
from fleettune.runtime.net.protocol import Instruction
from fleettune.runtime.net.transport.message import Message
from fleettune.runtime.progress import RoundRecord
from fleettune.scheduling.online import Waiting
from tests.runtime.net.conftest import device_folders, save_tiny_bert, tiny_flags
from tests.runtime.net.inprocess import deploy


@pytest.mark.parametrize(
    ("scheme", "every", "cluster_by"),
    [
        ("mesfl", 1, "speed"),
        ("mesfl", 2, "speed"),
        ("splitfed", 1, "speed"),
        ("sl", 1, "speed"),
        ("cpsl", 1, "speed"),
        ("cpsl", 1, "cut"),
    ],
)
def test_deployment_equals_simulation(
    scheme: str, every: int, cluster_by: str, tiny_model_dir: Path, tiny_data_dir: Path, tmp_path: Path
) -> None:
    """Same losses per step, same final adapter (1e-6) and the same cut and adapter bytes per device, exactly."""
    flags = tiny_flags(
        tiny_model_dir,
        tiny_data_dir,
        scheme,
        clients=3,
        rounds=4,
        aggregate_every=every,
        cluster_size=2,
        cluster_by=cluster_by,
    )
    if scheme == "fl":
        flags.update(client_fraction=0.67, local_steps=2)  # two of three sampled per round, two local steps
    torch.manual_seed(0)
    simulated = execute(prepare(build_config(flags=flags)))
    deployed = deploy(flags, tmp_path)
    assert deployed.step_losses == pytest.approx(simulated.step_losses, abs=1e-6)
    assert simulated.adapter is not None and deployed.adapter is not None
    assert simulated.adapter.keys() == deployed.adapter.keys()
    for key, value in simulated.adapter.items():
        torch.testing.assert_close(deployed.adapter[key], value, atol=1e-6, rtol=0)
    for kind in (CUT, ADAPTER) if scheme != "fl" else (ADAPTER,):
        assert deployed.traffic.kinds[kind] == simulated.traffic.kinds[kind]
    assert deployed.final.scores.accuracy == pytest.approx(simulated.final.scores.accuracy)
    assert deployed.traffic.kinds[SETUP]["downlink"] > 0 and deployed.traffic.kinds[SETUP]["uplink"] == 0


@pytest.fixture(scope="module")
def dropout_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_bert(tmp_path_factory.mktemp("tiny-bert-dropout"), dropout=0.1)


@pytest.mark.parametrize("scheme", ["mesfl", "cpsl", "fl"])
def test_deployment_draws_the_simulations_dropout_masks(
    scheme: str, dropout_model_dir: Path, tiny_model_dir: Path, tiny_data_dir: Path, tmp_path: Path
) -> None:
    """Dropout on everywhere (hidden, attention, LoRA): each device process and the server's work for each device
    draw from the streams their simulated twins draw from, whatever order the server serves them in."""
    flags = tiny_flags(dropout_model_dir, tiny_data_dir, scheme, clients=3, rounds=3, lora__dropout=0.1)
    flags["cluster_size"] = 2  # cpsl: a pair and a single device
    simulated = execute(prepare(build_config(flags=flags)))
    deployed = deploy(flags, tmp_path)
    losses = [h.train_loss for h in simulated.history]
    assert [h.train_loss for h in deployed.history] == pytest.approx(losses, abs=1e-6)
    assert deployed.step_losses == pytest.approx(simulated.step_losses, abs=1e-6)
    assert simulated.adapter is not None and deployed.adapter is not None
    for key, value in simulated.adapter.items():
        torch.testing.assert_close(deployed.adapter[key], value, atol=1e-6, rtol=0)
    # The same weights with every dropout off train otherwise: the masks were drawn and did act.
    without = execute(prepare(build_config(flags={**flags, "lora.dropout": 0.0, "model": str(tiny_model_dir)})))
    assert losses != pytest.approx([h.train_loss for h in without.history], abs=1e-4)


def test_poisson_sampled_fl_deployed_equals_simulated(
    tiny_model_dir: Path, tiny_data_dir: Path, tmp_path: Path
) -> None:
    """The deployment draws each round's devices as the simulation does, empty rounds included."""
    flags = tiny_flags(tiny_model_dir, tiny_data_dir, "fl", clients=3, rounds=4, local_steps=1)
    flags.update(client_fraction=0.5, client_sampling="poisson")
    torch.manual_seed(0)
    simulated = execute(prepare(build_config(flags=flags)))
    deployed = deploy(flags, tmp_path)
    assert [h.participants for h in deployed.history] == [h.participants for h in simulated.history]
    assert len({len(h.participants) for h in simulated.history}) > 1  # the rounds' sizes vary
    assert deployed.step_losses == pytest.approx(simulated.step_losses, abs=1e-6)
    assert simulated.adapter is not None and deployed.adapter is not None
    for key, value in simulated.adapter.items():
        torch.testing.assert_close(deployed.adapter[key], value, atol=1e-6, rtol=0)
    assert deployed.traffic.kinds[ADAPTER] == simulated.traffic.kinds[ADAPTER]


class _Crash(Exception):
    pass


class _DiesMidStep(DeviceAgent):
    """Computes its forward in round 2, then dies before sending the activations."""

    def step(self, instruction: Instruction) -> None:
        if instruction.round == 2:
            raise _Crash
        super().step(instruction)


def test_a_device_dying_mid_round_is_dropped_and_can_rejoin(
    tiny_model_dir: Path, tiny_data_dir: Path, tmp_path: Path
) -> None:
    """The round it died in completes without it (its server side goes back); it joins again and trains on."""
    flags = tiny_flags(tiny_model_dir, tiny_data_dir, "mesfl", clients=3, rounds=6)
    prepared = prepare(build_config(flags=flags))
    folders = device_folders(prepared, tmp_path)
    coordinator = Coordinator(prepared, ServeOptions(poll_s=0.2, join_timeout_s=60.0, step_timeout_s=1.0))
    victim = next(iter(folders))

    def agent(device: str, kind: type[DeviceAgent] = DeviceAgent) -> threading.Thread:
        a = kind(device, LocalCaller(coordinator.handle, device), folders[device])
        thread = threading.Thread(target=lambda: _quietly(a), daemon=True)
        thread.start()
        return thread

    dying = agent(victim, _DiesMidStep)
    others = [agent(d) for d in folders if d != victim]

    def rejoin(record: RoundRecord) -> None:
        if record.round == 3:
            agent(victim)

    coordinator.setup.on_round = rejoin
    result = drive(coordinator)
    dying.join(timeout=5)
    for t in others:
        t.join(timeout=30)
    assert [r.round for r in result.history] == [1, 2, 3, 4, 5, 6]
    assert result.history[2].dropped_disconnect == (victim,)
    assert victim in result.history[-1].participants and not result.history[-1].dropped_disconnect
    assert result.participation.dropped_disconnect == 1


def _quietly(agent: DeviceAgent) -> None:
    with contextlib.suppress(_Crash):
        agent.run()


def test_devices_apply_the_runs_activation_clipping(tiny_model_dir: Path, tiny_data_dir: Path, tmp_path: Path) -> None:
    """The run's protection of cut activations reaches the devices: with clipping alone (no noise, so
    nothing random) the deployed run still equals the simulated one, and differs from an unclipped run."""
    flags = tiny_flags(tiny_model_dir, tiny_data_dir, "mesfl", clients=3, rounds=2, **{"privacy.activation_clip": 0.01})
    torch.manual_seed(0)
    simulated = execute(prepare(build_config(flags=flags)))
    deployed = deploy(flags, tmp_path)
    assert deployed.step_losses == pytest.approx(simulated.step_losses, abs=1e-6)
    unclipped = execute(prepare(build_config(flags={**flags, "privacy.activation_clip": None})))
    assert deployed.adapter is not None and unclipped.adapter is not None
    assert max(float((deployed.adapter[k] - v).abs().max()) for k, v in unclipped.adapter.items()) > 1e-4


def test_resuming_a_finished_run_trains_nothing_and_reports_it(
    tiny_model_dir: Path, tiny_data_dir: Path, tmp_path: Path
) -> None:
    """A server restarted on the checkpoint of its last round waits for nobody and reports every round once."""
    flags = tiny_flags(tiny_model_dir, tiny_data_dir, "mesfl", clients=3, rounds=2)
    options = ServeOptions(poll_s=0.2, join_timeout_s=60.0, step_timeout_s=60.0, checkpoint_dir=tmp_path / "ckpt")
    prepared = prepare(build_config(flags=flags))
    folders = device_folders(prepared, tmp_path / "devices")
    first = Coordinator(prepared, options)
    threads = [
        threading.Thread(target=DeviceAgent(d, LocalCaller(first.handle, d), f).run, daemon=True)
        for d, f in folders.items()
    ]
    for t in threads:
        t.start()
    done = drive(first)
    again = drive(Coordinator(prepare(build_config(flags=flags)), options), resume=True)
    assert [r.round for r in again.history] == [1, 2]
    assert again.final.scores.accuracy == pytest.approx(done.final.scores.accuracy)


def test_foolsgold_deployed_equals_simulated_and_its_histories_survive_a_checkpoint(
    tiny_model_dir: Path, tiny_data_dir: Path, tmp_path: Path
) -> None:
    """A rule that remembers clients (FoolsGold) gives the deployed run the simulation's numbers, and a
    resumed server gets the histories back from the checkpoint."""
    flags = tiny_flags(tiny_model_dir, tiny_data_dir, "fl", clients=4, rounds=2, **{"security.aggregator": "foolsgold"})
    simulated = execute(prepare(build_config(flags=flags)))
    options = ServeOptions(poll_s=0.2, join_timeout_s=60.0, step_timeout_s=60.0, checkpoint_dir=tmp_path / "ckpt")
    deployed = deploy(flags, tmp_path / "run", options=options)
    assert deployed.step_losses == pytest.approx(simulated.step_losses, abs=1e-6)
    assert [a.selected for a in deployed.aggregations] == [a.selected for a in simulated.aggregations]
    assert deployed.adapter is not None and simulated.adapter is not None
    assert max(float((deployed.adapter[k] - v).abs().max()) for k, v in simulated.adapter.items()) < 1e-6
    resumed = Coordinator(prepare(build_config(flags=flags)), options)
    checkpoint.load(resumed, tmp_path / "ckpt")
    histories = resumed.policy.rule_state()
    assert sorted(histories) == sorted(c.id for c in resumed.setup.clients)
    assert all(float(h.abs().max()) > 0 for h in histories.values())


SGD_UNDER_FEDADAM = {
    "optimizer": "sgd",
    "lr": 0.5,
    "server_optimizer__lr": 1e-2,
    "server_optimizer__bias_correction": True,
    "server_optimizer__lr_schedule": "onecycle",
}


@pytest.mark.parametrize(("scheme", "extra"), [("fl", {}), ("mesfl", {}), ("mesfl", SGD_UNDER_FEDADAM)])
def test_a_server_optimizer_deployed_equals_simulated_and_its_moments_survive_a_checkpoint(
    scheme: str, extra: dict[str, object], tiny_model_dir: Path, tiny_data_dir: Path, tmp_path: Path
) -> None:
    flags = tiny_flags(
        tiny_model_dir,
        tiny_data_dir,
        scheme,
        clients=3,
        rounds=3,
        local_steps=1,
        server_optimizer__name="fedadam",
        **extra,
    )
    simulated = execute(prepare(build_config(flags=flags)))
    options = ServeOptions(poll_s=0.2, join_timeout_s=60.0, step_timeout_s=60.0, checkpoint_dir=tmp_path / "ckpt")
    deployed = deploy(flags, tmp_path / "run", options=options)
    assert deployed.step_losses == pytest.approx(simulated.step_losses, abs=1e-6)
    assert deployed.adapter is not None and simulated.adapter is not None
    assert max(float((deployed.adapter[k] - v).abs().max()) for k, v in simulated.adapter.items()) < 1e-6
    resumed = Coordinator(prepare(build_config(flags=flags)), options)
    checkpoint.load(resumed, tmp_path / "ckpt")
    moments = resumed.policy.optimizer_state()
    assert int(moments.pop("steps")) == 3  # one aggregation per round
    assert {name.split("/", 1)[1] for name in moments} == set(simulated.adapter)
    assert any(float(m.abs().max()) > 0 for m in moments.values())


@pytest.mark.parametrize("scheme", ["mesfl", "cpsl"])
def test_a_device_sends_its_adapter_once_its_own_step_is_done(
    scheme: str, tiny_model_dir: Path, tiny_data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """At an aggregation (or the end of a cluster's turn) the server asks each device for its adapter as soon as
    that device has finished its step, not once the slowest has, as the simulation's clock assumes."""
    marks: list[tuple[str, str, float]] = []
    upload = DeviceAgent.upload

    def timed_upload(self: DeviceAgent, instruction: Instruction) -> None:
        marks.append(("upload", self.id, time.monotonic()))
        upload(self, instruction)

    class SlowStep(DeviceAgent):
        def step(self, instruction: Instruction) -> None:
            super().step(instruction)
            time.sleep(1.5)
            marks.append(("step done", self.id, time.monotonic()))

    monkeypatch.setattr(DeviceAgent, "upload", timed_upload)
    flags = tiny_flags(tiny_model_dir, tiny_data_dir, scheme, clients=3, rounds=1, cluster_size=3)
    deploy(flags, tmp_path, odd=SlowStep)
    slow = next(device for kind, device, _ in marks if kind == "step done")
    slow_done = max(at for kind, _, at in marks if kind == "step done")
    fast_uploads = [at for kind, device, at in marks if kind == "upload" and device != slow]
    assert len(fast_uploads) == 2 and max(fast_uploads) < slow_done
    assert [device for kind, device, _ in marks if kind == "upload"][-1] == slow


def test_before_an_aggregation_the_server_orders_on_tails_with_the_upload(
    tiny_model_dir: Path, tiny_data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The step that ends with the adapter upload is ordered on each device's backward plus its last measured
    upload, as the simulation's clock orders it; other steps on the backward alone."""
    offered: list[list[Waiting]] = []
    slow: list[str] = []
    choose = steps.next_job

    def recording(policy: str, waiting: list[Waiting]) -> str:
        offered.append(list(waiting))
        return choose(policy, waiting)

    class SlowUpload(DeviceAgent):
        """Its adapter takes a second to go up."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            slow.append(self.id)
            call = self.caller.call

            def delayed(kind: str, *rest: Any, **named: Any) -> Message:
                if kind == ADAPTER_CALL:
                    time.sleep(1.0)
                return call(kind, *rest, **named)

            self.caller.call = delayed  # type: ignore[method-assign]

    monkeypatch.setattr(steps, "next_job", recording)
    flags = tiny_flags(tiny_model_dir, tiny_data_dir, "mesfl", clients=3, rounds=4, aggregate_every=2)
    deploy(flags, tmp_path, odd=SlowUpload)
    assert len(offered) >= 4 * 3  # one choice per device served, three devices a step, four steps
    by_step = [offered[i : i + 3] for i in range(0, 12, 3)]  # round r's step is r's three choices

    def tails(step: list[list[Waiting]]) -> dict[str, float]:
        return {w.id: w.tail_s for choice in step for w in choice}

    assert tails(by_step[2])[slow[0]] < 1.0  # round 3 does not aggregate: its backward alone
    assert tails(by_step[3])[slow[0]] >= 1.0  # round 4 ends with the upload, measured at round 2
    assert all(t < 1.0 for d, t in tails(by_step[3]).items() if d != slow[0])
