"""The steps every deployed split scheme is made of, on the coordinator's state: waiting for devices, a
training step, collecting adapters, sending them, dropping devices, recording a round, finishing."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

from fleettune.aggregation.ranks import Aggregate
from fleettune.compression import parse_update_codec, send_state
from fleettune.errors import InputError
from fleettune.messages import CutActivations, CutGradients
from fleettune.models.adapters import AdapterState, write_adapter
from fleettune.runtime.ledger import ADAPTER, CUT
from fleettune.runtime.net.base_fold import with_base
from fleettune.runtime.net.board import Expected, Member
from fleettune.runtime.net.coordinator import SETUP_CODEC, Coordinator
from fleettune.runtime.net.protocol import Do, Instruction
from fleettune.runtime.progress import RoundRecord
from fleettune.scheduling.online import Waiting, next_job
from fleettune.schemes.base import SchemeResult
from fleettune.schemes.split.servers import Snapshot
from fleettune.training import lr_factor

log = logging.getLogger("fleettune.net")

Loss = tuple[str, float, int]  # device, loss, samples
SILENCE_GRACE_S = 2.0  # beyond the poll period: how long an idle device may go unheard before it counts as away
# The server's work on one device's activations: (cut gradients, loss); may keep what it needs for later.
Serve = Callable[[Member, CutActivations, float], tuple[CutGradients, float]]
# What a device is asked next, and the payload the driver then expects from it.
Ask = Callable[[Member], tuple[Instruction, Expected]]


def upload_request(round_index: int) -> Ask:
    """Ask a device for its client-side adapter."""
    return lambda m: (Instruction(Do.UPLOAD, round_index), Expected("adapter", round_index))


def await_fleet(c: Coordinator) -> None:
    """Wait until enough devices joined and built their stages (they poll once they have)."""
    wanted = c.options.min_devices or len(c.board.members)
    deadline = c.board.clock() + c.options.join_timeout_s
    with c.board.cv:
        ok = c.board.wait_until(lambda: _count_ready(c) >= wanted, deadline)
        ready = _count_ready(c)
    if not ok:
        raise InputError(
            f"only {ready} of the {wanted} devices needed were ready within {c.options.join_timeout_s:g} s"
        )
    log.info("%d devices ready; training starts", ready)


def _count_ready(c: Coordinator) -> int:
    return sum(m.joined and m.ready for m in c.board.members.values())


def present(c: Coordinator) -> list[Member]:
    """Ready devices waiting for work (alive and idle). Those busy elsewhere get two poll periods to come
    back; with nobody present, the round waits (up to the join timeout) for somebody to (re)join."""
    board = c.board
    with board.cv:
        board.wait_until(lambda: _count_ready(c) > 0, board.clock() + c.options.join_timeout_s)
        ready = [m for m in board.members.values() if m.joined and m.ready]
        silent_s = c.options.poll_s + SILENCE_GRACE_S  # a live idle device is back in a poll well within this

        def settled() -> bool:
            return all(m.waiting or not m.joined or board.clock() - m.last_seen > silent_s for m in ready)

        board.wait_until(settled, board.clock() + silent_s * 2)
        return [m for m in ready if m.joined and m.waiting]


def train_step(
    c: Coordinator,
    active: list[Member],
    round_index: int,
    losses: list[Loss],
    serve: Serve,
    total_steps: int,
    then: Ask | None = None,
) -> list[Member]:
    """One training step of `active`, the server taking waiting devices in its policy's order and `serve`
    doing its work on each; returns the devices that completed the step (their backward included). With
    `then`, each device that completes is at once given its next instruction (the adapter upload that ends
    an aggregating round) rather than held until the slowest device is done."""
    board, step = c.board, c.steps_done
    factor = lr_factor(c.setup.plan.lr_schedule, step, total_steps)
    incarnations = {m.id: m.incarnation for m in active}
    with board.cv:
        for m in active:
            expected = Expected("activations", round_index, step)
            board.post(m, Instruction(Do.FORWARD, round_index, step, factor), expected)
    deadline = board.clock() + c.options.step_timeout_s
    pending = {m.id: m for m in active}
    served: list[Member] = []
    received = 0
    while pending:
        with board.cv:
            ready = board.wait_until(lambda: any(_ready(m, incarnations) for m in pending.values()), deadline)
            for gone in [m for m in pending.values() if m.incarnation != incarnations[m.id]]:
                del pending[gone.id]
            if not ready:
                break
            waiting = [m for m in pending.values() if m.arrived is not None]
            if not waiting:
                continue
            # A step that ends with the adapter upload (`then`) must hide it too, as in simulation.
            tails = {m.id: m.tail_s + (m.upload_s if then is not None else 0.0) for m in waiting}
            chosen = pending.pop(
                next_job(c.scheduler, [Waiting(m.id, m.arrived_at, c.server_s[m.id], tails[m.id]) for m in waiting])
            )
            payload, chosen.arrived = chosen.arrived, None
        assert payload is not None
        reply = _serve(c, chosen, payload, step, factor, losses, serve)
        with board.cv:
            chosen.reply = reply
            board.cv.notify_all()
        if reply:
            served.append(chosen)
            received += len(payload)
            concurrent = [m.id for m in served]  # the server's holdings for the step's devices so far
            c.server_memory = c.server_memory.peak_with(c.server.memory(concurrent, received))
    with board.cv:
        for m in pending.values():
            board.release(m)
        done_by = board.clock() + c.options.step_timeout_s
        completed = _await_done(c, served, incarnations, then, done_by)
    c.steps_done += 1
    finished = {m.id for m in completed}
    kept = [(loss, n) for d, loss, n in losses[len(losses) - len(served) :] if d in finished]
    if kept:  # as in simulation, a step nobody completed leaves no loss
        c.step_losses.append(mean_loss(kept))
    return completed


def _await_done(
    c: Coordinator, members: list[Member], incarnations: dict[str, int], then: Ask | None, deadline: float
) -> list[Member]:
    """Wait (lock held) until each of `members` finished its step or left; hand each one `then` as soon as it
    has finished. Returns those that finished, in order."""
    finished: set[str] = set()

    def settled() -> bool:
        for m in members:
            if m.id not in finished and m.idle and m.incarnation == incarnations[m.id]:
                finished.add(m.id)
                if then is not None:
                    c.board.post(m, *then(m))
        return all(m.id in finished or m.incarnation != incarnations[m.id] for m in members)

    c.board.wait_until(settled, deadline)
    return [m for m in members if m.id in finished and m.incarnation == incarnations[m.id]]


def _ready(m: Member, incarnations: dict[str, int]) -> bool:
    return m.arrived is not None or m.incarnation != incarnations[m.id]


def _serve(
    c: Coordinator, m: Member, payload: bytes, step: int, factor: float, losses: list[Loss], serve: Serve
) -> bytes:
    """Decode one device's activations and let `serve` work on them; the encoded gradients, or b"" when the
    activations are unusable."""
    started = time.perf_counter()
    try:
        message = CutActivations.decode(payload)
        if message.client != m.id or message.step != step:
            raise InputError(f"activations labelled {message.client} step {message.step}; expected {m.id} step {step}")
    except InputError as exc:
        log.warning("device %s: rejected activations: %s", m.id, exc)
        return b""
    grads, loss = serve(m, message, factor)
    reply = grads.encode(c.setup.wire, message.attention_mask)
    seconds = time.perf_counter() - started
    c.server_s[m.id] = seconds
    c.energy.server_busy(c.setup.server.power_w, seconds)
    c.traffic.up(m.id, payload, CUT)
    c.traffic.down(m.id, reply, CUT)
    losses.append((m.id, loss, len(message.labels)))
    return reply


def exchange(c: Coordinator, members: Sequence[Member], ask: Ask | None) -> dict[str, bytes]:
    """Give each member the instruction `ask` makes for it (None: it has it already) and wait (up to the step
    timeout) for the payload it must send back; the payloads that arrived, by device (from the same
    incarnation: a rejoin voids them)."""
    board = c.board
    incarnations = {m.id: m.incarnation for m in members}
    with board.cv:
        if ask is not None:
            for m in members:
                board.post(m, *ask(m))
        deadline = board.clock() + c.options.step_timeout_s
        board.wait_until(lambda: all(_ready(m, incarnations) for m in members), deadline)
        arrived = {m.id: m.arrived for m in members if m.arrived is not None and m.incarnation == incarnations[m.id]}
        for m in members:
            board.release(m)
    return arrived


def collect(
    c: Coordinator, active: list[Member], round_index: int, asked: bool = False
) -> tuple[list[Member], list[AdapterState]]:
    """Every active device uploads its client-side adapter (`asked`: the request went out with its last step);
    the server joins each with its own side."""
    uploads = exchange(c, active, None if asked else upload_request(round_index))
    arrived, views = [], []
    for m in active:
        payload = uploads.get(m.id)
        if payload is None:
            continue
        try:
            view = c.uplinks[m.id].receive(payload)
        except InputError as exc:
            log.warning("device %s: rejected adapter upload: %s", m.id, exc)
            continue
        c.traffic.up(m.id, payload, ADAPTER)
        if c.role is not None:  # split schemes: joined with the server's side
            view.update(c.role.server_part(m.id))
        arrived.append(m)
        views.append(view)
    return arrived, views


def download(
    c: Coordinator,
    members: Sequence[Member],
    round_index: int,
    state_of: Callable[[Member], AdapterState],
    stacked: Aggregate | None = None,
) -> list[Member]:
    """Send each device its part (at its cut) of `state_of(device)`; returns those that took it. With `stacked`
    (flora), what travels is the device's part of the stacked adapter: the device folds it into its base
    weights and draws its fresh part itself, as the server drew `state_of(device)`."""
    board = c.board
    incarnations = {m.id: m.incarnation for m in members}
    with board.cv:
        for m in members:
            instruction = _load(c, m, c.client_part(m, state_of(m)), round_index, stacked)
            c.traffic.down(m.id, instruction.payload, ADAPTER)
            board.post(m, instruction)
        deadline = board.clock() + c.options.step_timeout_s
        board.wait_until(lambda: all(m.idle or m.incarnation != incarnations[m.id] for m in members), deadline)
        reached = [m for m in members if m.idle and m.incarnation == incarnations[m.id]]
        for m in reached:
            m.synced, m.missed_base = c.version, {}
    return reached


def _load(c: Coordinator, m: Member, part: AdapterState, round_index: int, stacked: Aggregate | None) -> Instruction:
    """The instruction that brings `m` to `part`: through its update link; with flora, the stacked adapter to fold
    (`stacked`), or, when it missed aggregations, their summed base updates with `part` afresh (exact)."""
    if not c.mix.merges:
        link = c.downlinks[m.id]
        payload = link.send(part)
        c.uplinks[m.id].rebase(link.receive(payload))  # the device's next update is measured from here
        return Instruction(Do.LOAD, round_index, payload=payload)
    c.downlinks[m.id].reset(part)
    c.uplinks[m.id].reset(part)
    if stacked is not None and stacked.stacked is not None:
        payload = send_state(c.codec, c.client_part(m, stacked.stacked))
        return Instruction(Do.FOLD, round_index, payload=payload, stacked_rank=stacked.stacked_rank, version=c.version)
    payload = send_state(parse_update_codec(SETUP_CODEC), with_base(part, m.missed_base))
    return Instruction(Do.REBASE, round_index, payload=payload)


def drop(c: Coordinator, dropped: Sequence[Member], saved: dict[str, Snapshot]) -> None:
    """Devices whose work in this round is lost: the server's side goes back to the round's start and
    the device must join again (which hands it the global adapter), so both ends agree again."""
    with c.board.cv:
        for m in dropped:
            if m.id in saved:
                c.server.restore(m.id, saved[m.id])
            m.joined = False
            m.incarnation += 1
            c.board.release(m)
            log.warning("device %s dropped from the round; it must join again", m.id)
        c.board.cv.notify_all()


def record(
    c: Coordinator,
    round_index: int,
    members: Sequence[Member],
    dropped: Sequence[Member],
    kept: list[tuple[float, int]],
) -> bool:
    """Append the round's record, evaluating the global adapter every `eval_every` rounds and at the end. Between
    aggregations that is the last aggregate: the devices' current parts stay on the devices (the simulation
    evaluates the average they would give, which a deployment would have to upload for). True when the run ends
    with this round: its last, a stop was requested (Ctrl-C on the server), or it reached its target and was asked
    to stop there."""
    plan = c.setup.plan
    last = c.setup.last_round(round_index)
    result = None
    if last or (round_index + 1) % plan.eval_every == 0:
        write_adapter(c.evaluation.peft, c.current.evaluation)
        result = c.setup.evaluator(c.evaluation.logits)
        c.final = result
    elapsed = time.perf_counter() - c.started
    record = RoundRecord(
        round=round_index + 1,
        sim_time_s=elapsed,
        wall_time_s=elapsed,
        train_loss=mean_loss(kept) if kept else None,
        accuracy=result.scores.accuracy if result else None,
        macro_f1=result.scores.macro_f1 if result else None,
        participants=tuple(m.id for m in members),
        offline=tuple(m.id for m in c.board.members.values() if m not in members),
        dropped_disconnect=tuple(m.id for m in dropped),
        epsilon=c.policy.epsilon(),
    )
    c.history.append(record)
    c.setup.on_round(record)
    return last or plan.reached(record.accuracy)


def mean_loss(losses: Sequence[tuple[float, int]]) -> float:
    total = sum(n for _, n in losses)
    return sum(loss * n for loss, n in losses) / max(1, total)


def finish_devices(c: Coordinator) -> None:
    """Tell every device training is over (those not polling now learn it when they next poll)."""
    board = c.board
    with board.cv:
        for m in board.members.values():
            if m.joined:
                board.post(m, Instruction(Do.DONE))
        board.wait_until(lambda: all(m.instruction is None for m in board.members.values()), board.clock() + 5.0)
    board.close()


def result(c: Coordinator) -> SchemeResult:
    if c.final is None:  # resumed from the checkpoint of a finished run: its last evaluation was not kept
        write_adapter(c.evaluation.peft, c.current.evaluation)
        c.final = c.setup.evaluator(c.evaluation.logits)
    parameters = sum(p.numel() for p in c.evaluation.parameters())
    trainable = sum(p.numel() for p in c.evaluation.parameters() if p.requires_grad)
    for m in c.board.members.values():
        c.energy.client_busy(m.id, m.device.hardware.power_w, m.busy_s)
    return SchemeResult(
        history=c.history,
        final=c.final,
        server_memory=c.server_memory,
        client_memory={m.id: m.memory for m in c.board.members.values()},
        traffic=c.traffic,
        energy=c.energy,
        sim_time_s=time.perf_counter() - c.started,
        parameters=parameters,
        trainable_parameters=trainable,
        step_losses=c.step_losses,
        participation=c.totals,
        aggregations=c.policy.notes,
        adapter=dict(c.current.evaluation),
        secure_aggregation=None if c.policy.secure is None else c.policy.secure.totals,
    )
