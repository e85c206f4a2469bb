"""Rounds of a deployed `fl` run (the simulation's are in `schemes.fl`): the sampled devices present
download the global adapter, train locally, upload theirs; the server combines them (FedAvg, or the
run's aggregation policy)."""

from __future__ import annotations

from collections.abc import Sequence

from fleettune.aggregation.ranks import Aggregate
from fleettune.codec import encode_state
from fleettune.models.adapters import AdapterState
from fleettune.runtime.ledger import ADAPTER
from fleettune.runtime.memory import MemoryBreakdown
from fleettune.runtime.net import checkpoint
from fleettune.runtime.net.board import Member
from fleettune.runtime.net.coordinator import Coordinator
from fleettune.runtime.net.protocol import Do, Instruction
from fleettune.runtime.net.secure_steps import collect_securely
from fleettune.runtime.net.steps import collect, download, drop, present, record
from fleettune.schemes.fl import draw_clients

SAMPLER_STREAM = 2  # the simulation's RNG stream sampling each round's clients: `RunSetup.rng(2)`


def run_fl(c: Coordinator, first_round: int) -> None:
    plan = c.setup.plan
    fleet = sorted(c.board.members.values(), key=lambda m: m.index)
    sampler = c.setup.rng(SAMPLER_STREAM)
    draws = [draw_clients(sampler, len(fleet), plan.client_fraction, plan.client_sampling) for _ in range(plan.rounds)]

    def global_state(m: Member) -> AdapterState:
        return c.current.evaluation

    for round_index in range(first_round, plan.rounds):
        here = {m.id for m in present(c)}
        members = [fleet[i] for i in draws[round_index] if fleet[i].id in here]
        reached = download(c, members, round_index, global_state)
        trained = _train(c, reached, round_index)
        uploaded_before = c.traffic.kinds.get(ADAPTER, {}).get("uplink", 0)
        state: AdapterState | None = None
        if c.policy.secure is not None:
            arrived, state = collect_securely(c, trained, round_index)
        else:
            arrived, views = collect(c, trained, round_index)
            if arrived:
                ids, counts = [m.id for m in arrived], [m.samples for m in arrived]
                state = c.policy.combine(c.current.evaluation, views, ids, counts, round_index)
        received = c.traffic.kinds.get(ADAPTER, {}).get("uplink", 0) - uploaded_before
        dropped = [m for m in members if m not in arrived]
        drop(c, dropped, {})
        if state is not None:
            with c.board.cv:
                c.current = Aggregate(state, {m.id: state for m in fleet})
                c.version += 1
            held = MemoryBreakdown(trainable=len(encode_state(state)), received=received)
            c.server_memory = c.server_memory.peak_with(held)
        c.totals.client_rounds += len(members)
        c.totals.completed += len(arrived)
        c.totals.dropped_disconnect += len(dropped)
        c.totals.rounds_without_update += int(state is None)
        kept = [(m.loss or 0.0, m.samples) for m in arrived]
        ends = record(c, round_index, members, dropped, kept)
        if state is not None and c.options.checkpoint_dir is not None:
            checkpoint.save(c, c.options.checkpoint_dir, round_index + 1)
        if ends:
            break


def _train(c: Coordinator, members: Sequence[Member], round_index: int) -> list[Member]:
    """Each device trains locally; returns those that finished within the step timeout."""
    plan, board = c.setup.plan, c.board
    incarnations = {m.id: m.incarnation for m in members}
    with board.cv:
        for m in members:
            steps = plan.local_steps
            if plan.local_epochs is not None:
                steps = max(1, round(plan.local_epochs * -(-m.samples // plan.batch_size)))
            board.post(m, Instruction(Do.TRAIN, round_index, steps=steps, rounds=plan.rounds))
        deadline = board.clock() + c.options.step_timeout_s
        board.wait_until(lambda: all(m.idle or m.incarnation != incarnations[m.id] for m in members), deadline)
        return [m for m in members if m.idle and m.incarnation == incarnations[m.id]]
