"""Accuracy of the split schemes against centralised training after the same number of samples.

    python benchmarks/accuracy/run.py --schemes central,mesfl --out benchmarks/accuracy/results

Every scheme sees the same number of training samples: `--rounds` rounds of one batch per device
(by default enough rounds for one pass over CARER's training set); `central` trains on the pooled
data for that many samples in batches of the same size. Same model, LoRA, learning-rate recipe and
seed for all. Batches are padded to their longest sequence to keep the run short: the attention mask
hides padding, so that changes no computation on the real tokens, only which dropout masks are drawn.
`--server-opt` sets the aggregating schemes' server optimizer (`server_optimizer.name`, rate `--server-lr`);
`--set KEY=VALUE` sets any config key of every scheme but `central`.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from fleettune.cli.run import train_one
from fleettune.config import build_config
from fleettune.data import load_dataset
from fleettune.fleet import load_fleet
from fleettune.report import finished_report

DEFAULT_DATA = "../shared/data/carer"  # run from the repository root, with ../shared beside it


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--schemes", default="central,mesfl")
    parser.add_argument("--model", default="minilm")
    parser.add_argument("--fleet", default="paper6")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--lr-schedule", default="onecycle")
    parser.add_argument("--rounds", type=int, default=None, help="default: --epochs passes over the training set")
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--aggregate-every", type=int, default=1, help="I of the split schemes")
    parser.add_argument("--server-opt", default="none", help="server_optimizer.name of the aggregating schemes")
    parser.add_argument("--server-lr", type=float, default=None, help="server_optimizer.lr (default: its own)")
    parser.add_argument(
        "--set",
        dest="sets",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a config key for every scheme but central (repeatable), e.g. optimizer=sgd",
    )
    parser.add_argument("--reuse", action="store_true", help="keep reports already written in --out")
    parser.add_argument("--data-dir", default=DEFAULT_DATA)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    batch = 16
    devices = len(load_fleet(args.fleet).devices)
    num_train = len(load_dataset("carer", args.data_dir).train)
    rounds = args.rounds or -(-int(args.epochs * num_train) // (batch * devices))
    samples = rounds * batch * devices
    common: dict[str, Any] = {
        "model": args.model,
        "dataset": "carer",
        "data_dir": args.data_dir,
        "fleet": args.fleet,
        "batch_size": batch,
        "max_length": 128,
        "lr": args.lr,
        "lr_schedule": args.lr_schedule,
        "eval_every": max(1, rounds // 10),
    }
    started = time.perf_counter()
    finals: dict[str, dict[str, Any]] = {}
    for scheme in args.schemes.split(","):
        flags = {**common, "scheme": scheme}
        if scheme == "central":
            flags["epochs"] = samples / num_train
            flags["eval_every"] = 1
        else:
            flags["rounds"] = rounds
        if scheme == "fl":
            flags["local_steps"] = 1
        if scheme in ("mesfl", "splitfed"):
            flags["aggregate_every"] = args.aggregate_every
        if scheme in ("fl", "mesfl", "splitfed") and args.server_opt != "none":
            flags["server_optimizer.name"] = args.server_opt
            if args.server_lr is not None:
                flags["server_optimizer.lr"] = args.server_lr
        existing = finished_report(args.out / scheme / "report.json") if args.reuse else None
        if existing is not None:
            report = existing
        else:
            overrides = args.sets if scheme != "central" else None
            report = train_one(build_config(flags=flags, overrides=overrides), args.out / scheme)
        finals[scheme] = {
            "accuracy": report["final"]["accuracy"],
            "macro_f1": report["final"]["macro_f1"],
            "wall_time_s": report["wall_time_s"],
        }
    reference = finals.get("central", {}).get("accuracy")
    for numbers in finals.values():
        numbers["over_central"] = None if reference is None else numbers["accuracy"] / reference
    results = {
        "settings": {
            **{k: v for k, v in common.items() if k != "data_dir"},
            "rounds": rounds,
            "samples": samples,
            "aggregate_every": args.aggregate_every,
            "server_optimizer": args.server_opt,
            "server_lr": args.server_lr,
            "set": args.sets,
        },
        "schemes": finals,
        "benchmark_wall_time_s": time.perf_counter() - started,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(finals, indent=2))


if __name__ == "__main__":
    main()
