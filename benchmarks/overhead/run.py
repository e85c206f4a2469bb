"""The simulator's own cost per round, next to the bare forward/backward it simulates.

    python benchmarks/overhead/run.py --scheme mesfl --rounds 8 --out benchmarks/overhead/results

One process, one model, the same padded CARER batches. "Bare" runs, for every device of the fleet,
exactly the model work of a split step (client forward, server forward and backward, client
backward) on stages built at the device's cut, with nothing else. "Simulated" is a round of the
scheme through the engine: the same model work plus everything the simulator adds (activation
metering, encoding and decoding every message, the FLOP book, the virtual clock, optimizer steps,
aggregation and its encoded payloads). Bare and simulated rounds alternate (a bare round runs in
the per-round callback, its time taken out of the simulated round), so both see the same machine;
the first simulated round (one-off FLOP counting per shape) and the last (evaluation) are reported
apart and left out of the per-round figure.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from fleettune.config import build_config
from fleettune.models.stages import split_model
from fleettune.runner import execute, prepare
from fleettune.runtime.progress import RoundRecord

DEFAULT_DATA = "../shared/data/carer"  # run from the repository root, with ../shared beside it


class BareRound:
    """One round of pure split forward/backward, one batch per device, on stages at each device's cut."""

    def __init__(self, prepared: Any) -> None:
        setup = prepared.setup
        base = setup.new_model()
        self.stages = []
        for index, client in enumerate(setup.clients):
            client_part, server_part = split_model(
                copy.deepcopy(base), int(client.device.cut_layer), setup.lora, setup.task
            )
            client_part.train()
            server_part.train()
            batches = setup.batches.stream(client.train, setup.rng(1, index))
            self.stages.append((client_part, server_part, batches))

    def __call__(self) -> float:
        started = time.perf_counter()
        for client_part, server_part, batches in self.stages:
            batch = next(batches)
            hidden = client_part(batch.input_ids, batch.attention_mask)
            received = hidden.detach().requires_grad_()
            server_part(received, batch.attention_mask, batch.labels).loss.backward()
            hidden.backward(received.grad)
            for module in (client_part, server_part):
                module.zero_grad(set_to_none=True)
        return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scheme", default="mesfl")
    parser.add_argument("--model", default="minilm")
    parser.add_argument("--fleet", default="paper6")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--data-dir", default=DEFAULT_DATA)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    torch.set_num_threads(torch.get_num_threads())  # fixed for the whole run
    rounds = args.rounds + 2  # + the first (FLOP counting) and the last (evaluation)
    config = build_config(
        flags={
            "scheme": args.scheme,
            "model": args.model,
            "dataset": "carer",
            "data_dir": args.data_dir,
            "fleet": args.fleet,
            "batch_size": 16,
            "max_length": 128,
            "padding": "max_length",
            "rounds": rounds,
            "eval_every": rounds,
            "max_eval_samples": 200,
        }
    )
    records: list[RoundRecord] = []
    bare: list[float] = []
    pauses: list[float] = []  # wall time spent in the callback, taken out of the next simulated round

    def after_round(record: RoundRecord) -> None:
        started = time.perf_counter()
        records.append(record)
        if len(records) < rounds:  # a bare round between every two simulated ones
            bare.append(bare_round())
        pauses.append(time.perf_counter() - started)

    prepared = prepare(config, after_round)
    bare_round = BareRound(prepared)
    bare_round()  # warm-up: first allocation of every shape
    started = time.perf_counter()
    execute(prepared)
    simulated_total = time.perf_counter() - started - sum(pauses)
    walls = [records[0].wall_time_s]
    for index in range(1, len(records)):
        walls.append(records[index].wall_time_s - records[index - 1].wall_time_s - pauses[index - 1])
    steady = walls[1:-1]
    bare_s = statistics.median(bare)
    simulated_s = statistics.median(steady)
    results = {
        "settings": {k: v for k, v in vars(args).items() if k not in ("out", "data_dir")},
        "bare_round_s": bare,
        "simulated_round_s": steady,
        "first_round_s": walls[0],
        "last_round_with_evaluation_s": walls[-1],
        "simulated_run_s": simulated_total,
        "median_bare_round_s": bare_s,
        "median_simulated_round_s": simulated_s,
        "overhead_fraction": simulated_s / bare_s - 1,
        "threads": torch.get_num_threads(),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print(
        f"{args.scheme} on {args.fleet}/{args.model}: bare round {bare_s:.3f} s, simulated round {simulated_s:.3f} s, "
        f"overhead {results['overhead_fraction']:+.1%} (first round {walls[0]:.2f} s)"
    )


if __name__ == "__main__":
    main()
