"""Split training with devices that can leave: one stretch of work (a round of `mesfl` and `splitfed`, a
cluster's turn in `sl` and `cpsl`), its steps timed with disconnects and the deadline, and going back
for the devices whose work was lost.

A device's interruptible work in a stretch is its share of each step (forward, uplink, downlink,
backward) and, when the stretch ends with one, the upload of its client-side adapter; downloads are
never interrupted by a disconnect (the deadline still applies to them). The work is taken as `steps`
parts of equal weight, the upload counting with the last step: a disconnect falls in a uniformly drawn
part at a uniformly drawn share of that part's busy time (with one local step, the default, uniformly
over the whole work).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from fleettune.fleet.cost import uplink_s
from fleettune.runtime.sim.clock import StepPhases
from fleettune.runtime.sim.cutoffs import Cut, StepClock, cut_step
from fleettune.runtime.sim.participation import Turnout
from fleettune.schemes.split.client import SplitClient
from fleettune.schemes.split.engine import (
    Forwarded,
    Served,
    SplitContext,
    Upload,
    backward,
    forward,
    note_server_memory,
    prepare_upload,
    settle_step,
)
from fleettune.schemes.split.servers import ServerRole, Snapshot

ClientLoss = tuple[str, float, int]  # client, loss, samples


@dataclass
class Attendance:
    """The devices of one stretch of split work and where each may be cut short."""

    ctx: SplitContext
    turnout: Turnout
    members: list[SplitClient]
    steps: int
    uploads: bool  # the stretch ends with each device uploading its client-side adapter
    deadline_at: float | None
    masked: Mapping[str, int] | None = None  # with secure aggregation: each device's masked upload size
    carried: dict[str, float] = field(default_factory=dict)  # disconnects falling in the upload: seconds into it
    prepared: dict[str, Upload] = field(default_factory=dict)
    saved: dict[str, tuple[Snapshot, Snapshot | None]] = field(default_factory=dict)

    def active(self) -> list[SplitClient]:
        """Members that have not left."""
        return [c for c in self.members if not self.ctx.log.gone(c.id)]

    def completed(self) -> set[str]:
        return {c.id for c in self.active()}

    def save(self, server: ServerRole | None) -> None:
        """Remember the state of every member that may leave (with `server`'s side for it, if given)."""
        may_leave = self.deadline_at is not None
        for client in self.members:
            if may_leave or client.id in self.turnout.drops:
                self.saved[client.id] = (client.snapshot(), server.snapshot(client.id) if server else None)

    def restore_leavers(self, server: ServerRole | None) -> None:
        """Members that left go back to the saved state: their work in this stretch is lost."""
        for client in self.members:
            if self.ctx.log.gone(client.id) and client.id in self.saved:
                mine, theirs = self.saved[client.id]
                client.restore(mine)
                if server is not None and theirs is not None:
                    server.restore(client.id, theirs)

    def drop_positions(
        self, step_index: int, phases: Sequence[StepPhases], upload_s: dict[str, float]
    ) -> dict[str, float]:
        """Busy seconds into this step at which members disconnect; later ones carry into the upload."""
        out = {}
        for p in phases:
            point = self.turnout.drop_point(p.client, self.steps)
            if point is None or point[0] != step_index:
                continue
            busy = p.forward_s + p.uplink_s + p.downlink_s + p.backward_s
            position = point[1] * (busy + upload_s.get(p.client, 0.0))
            if position < busy:
                out[p.client] = position
            else:
                self.carried[p.client] = position - busy
        return out


def split_step(
    att: Attendance,
    step_index: int,
    round_index: int,
    clock: StepClock,
    serve_all: Callable[[list[Forwarded]], list[Served]],
    after_cut: Callable[[Cut], None] | None = None,
) -> list[ClientLoss]:
    """One step of the members still in: forward, `serve_all`, backward, then the timeline with the
    step's disconnects and the deadline; `after_cut` runs once it is known who left (before the step
    is counted). Returns every served client's loss; the caller keeps those of the clients that complete."""
    ctx = att.ctx
    members = att.active()
    if not members:
        ctx.note_step([])
        return []
    sent = [forward(ctx, c) for c in members]
    served = serve_all(sent)
    phases = [backward(ctx, s, o) for s, o in zip(sent, served, strict=True)]
    upload_s = {}
    if att.uploads and step_index == att.steps - 1:
        # The stretch ends with every client's adapter upload: the server's order should hide it too.
        for client in members:
            att.prepared[client.id] = prepare_upload(ctx, client)
            size = len(att.prepared[client.id][1]) if att.masked is None else att.masked[client.id]
            upload_s[client.id] = uplink_s(client.device, size)
        phases = [replace(p, after_s=upload_s[p.client]) for p in phases]
    drops = att.drop_positions(step_index, phases, upload_s)
    sizes = {s.client.id: (len(s.payload), len(o.payload)) for s, o in zip(sent, served, strict=True)}
    cut = cut_step(phases, clock, round_index, ctx.now_s, drops, att.deadline_at, sizes)
    settle_step(ctx, sent, served, phases, cut)
    if after_cut is not None:
        after_cut(cut)
    ctx.advance(cut.timeline, round_index)
    ctx.note_ready(cut.timeline, [c.id for c in members])
    note_server_memory(ctx, [c.id for c in members], sum(len(s.payload) for s in sent))
    ctx.note_step([(o.loss, o.samples) for s, o in zip(sent, served, strict=True) if s.client.id not in cut.left])
    return [(s.client.id, o.loss, o.samples) for s, o in zip(sent, served, strict=True)]


def kept_losses(losses: Sequence[ClientLoss], completed: set[str]) -> list[tuple[float, int]]:
    return [(loss, n) for client, loss, n in losses if client in completed]
