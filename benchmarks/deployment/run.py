"""Deployment on one machine: real server and device processes on 127.0.0.1.

    python benchmarks/deployment/run.py --part loopback --out benchmarks/deployment/results
    python benchmarks/deployment/run.py --part churn --out benchmarks/deployment/results

`loopback`: `mesfl` on CARER with all-MiniLM-L6-v2 and the six `paper6` devices, first simulated in this
process, then deployed (one server process, six device processes, gRPC on loopback) with the same
configuration. Reports the wall-clock seconds per round of each (the rounds between the first and the
last, which evaluate), their ratio, and the bytes gRPC put on the wire against the payload bytes the
report counts, and each round's training loss in both runs.
`churn`: 20 devices on a tiny random-init BERT (CARER texts), 10 rounds, 30% of the devices killed at
random moments; reports each round's participants and drops, and whether every round completed once.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from transformers import BertConfig, BertModel

from fleettune.config import build_config
from fleettune.models.catalog import load_tokenizer, resolve_model
from fleettune.runner import execute, prepare
from fleettune.runtime.net.trial import free_port, write_config, write_device_folders

ROUND_GUESS_S = 1.5  # about one round of the churn part on two cores
CARER = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "carer"


def _launch(args: list[str], log: Path, threads: int = 1) -> subprocess.Popen[bytes]:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "fleettune.cli.main", *args], stdout=log.open("wb"), stderr=subprocess.STDOUT, env=env
    )


def _serve(config: Path, port: int, out: Path, log: Path, *extra: str) -> subprocess.Popen[bytes]:
    args = ["serve", "--config", str(config), "--listen", f"127.0.0.1:{port}", "--out", str(out), "--poll", "0.5"]
    # The server may use both cores for its own compute, as the simulation does; devices get one thread each.
    return _launch([*args, *extra], log, threads=2)


def _join(port: int, device: str, folder: Path, log: Path) -> subprocess.Popen[bytes]:
    return _launch(["join", "--server", f"127.0.0.1:{port}", "--device-id", device, "--data-dir", str(folder)], log)


def _per_round(history: list[dict[str, Any]]) -> float:
    """Mean wall seconds of the rounds between the first and the last (which evaluate)."""
    times = [r["wall_time_s"] for r in history]
    middle = [b - a for a, b in itertools.pairwise(times[:-1])]  # rounds 2 .. R-1
    return sum(middle) / len(middle)


def loopback(out: Path, rounds: int) -> dict[str, Any]:
    flags = {
        "scheme": "mesfl",
        "model": "minilm",
        "dataset": "carer",
        "data_dir": str(CARER),
        "fleet": "paper6",
        "rounds": rounds,
        "eval_every": rounds,
        "max_train_samples": 1200,
        "max_eval_samples": 200,
        "batch_size": 16,
        "max_length": 128,
        "padding": "max_length",
        "lr": 1e-3,
        "lora.dropout": 0.0,
    }
    torch.manual_seed(0)
    simulated = execute(prepare(build_config(flags=flags)))
    sim_round = _per_round([{"wall_time_s": r.wall_time_s} for r in simulated.history])
    work = Path(tempfile.mkdtemp(prefix="loopback-"))
    folders = write_device_folders(prepare(build_config(flags=flags)), work / "devices")
    config = write_config(flags, work / "run.toml")
    port = free_port()
    server = _serve(config, port, work / "out", work / "server.log")
    devices = [_join(port, d, f, work / f"{d}.log") for d, f in folders.items()]
    for p in [*devices, server]:
        p.wait(timeout=3600)
    report = json.loads((work / "out" / "report.json").read_text())
    deployed_round = _per_round(report["history"])
    payload = report["communication_bytes"]["uplink"] + report["communication_bytes"]["downlink"]
    wire = report["deployment"]["wire_bytes"]["received"] + report["deployment"]["wire_bytes"]["sent"]
    return {
        "rounds": rounds,
        "simulated_wall_s_per_round": sim_round,
        "deployed_wall_s_per_round": deployed_round,
        "deployed_over_simulated": deployed_round / sim_round,
        "payload_bytes": payload,
        "wire_bytes": wire,
        "wire_over_payload": wire / payload,
        "by_kind": report["communication_bytes"]["by_kind"],
        "simulated_by_kind": simulated.traffic.kinds,
        "final_accuracy": {"simulated": simulated.final.scores.accuracy, "deployed": report["final"]["accuracy"]},
        "train_loss": _losses([r.train_loss for r in simulated.history], [r["train_loss"] for r in report["history"]]),
    }


def _losses(simulated: list[float], deployed: list[float]) -> dict[str, Any]:
    """Each round's training loss in both runs, and how far apart they are (every party draws its own dropout
    masks from the same stream in either runtime, so only the order of floating-point sums may differ)."""
    gap = max((abs(a - b) for a, b in zip(simulated, deployed, strict=True)), default=0.0)
    return {"simulated": simulated, "deployed": deployed, "max_abs_difference": gap}


def _tiny_model(folder: Path) -> Path:
    tokenizer = load_tokenizer(resolve_model("minilm"))
    sizes = {"hidden_size": 32, "num_hidden_layers": 4, "num_attention_heads": 2, "intermediate_size": 64}
    config = BertConfig(vocab_size=tokenizer.vocab_size, **sizes)
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def _rounds_logged(log: Path) -> int:
    found = re.findall(r"^round (\d+):", log.read_text(errors="replace"), flags=re.MULTILINE)
    return max((int(n) for n in found), default=0)


def churn(out: Path, devices: int, rounds: int, killed: float, seed: int) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="churn-"))
    flags = {
        "scheme": "mesfl",
        "model": str(_tiny_model(work / "tiny-bert")),
        "dataset": "carer",
        "data_dir": str(CARER),
        "fleet": "gen:20:1",
        "clients": devices,
        "rounds": rounds,
        "max_train_samples": devices * 40,
        "max_eval_samples": 200,
        "batch_size": 8,
        "max_length": 32,
        "cut_layer": 2,
    }
    folders = write_device_folders(prepare(build_config(flags=flags)), work / "devices")
    config = write_config(flags, work / "run.toml")
    port = free_port()
    server = _serve(config, port, work / "out", work / "server.log", "--step-timeout", "10", "--join-timeout", "900")
    processes = {d: _join(port, d, f, work / f"{d}.log") for d, f in folders.items()}
    rng = random.Random(seed)
    victims = rng.sample(sorted(processes), round(killed * devices))
    log = work / "server.log"
    # Each victim dies in a round drawn at random (not the last), a random share of a round into it.
    plan = sorted((rng.randrange(rounds - 1), rng.random(), v) for v in victims)
    while "training starts" not in log.read_text(errors="replace") and server.poll() is None:
        time.sleep(0.2)
    kills = []
    for round_index, share, victim in plan:
        while _rounds_logged(log) < round_index and server.poll() is None:
            time.sleep(0.05)
        mark = time.monotonic()
        while _rounds_logged(log) < round_index + 1 and time.monotonic() - mark < share * ROUND_GUESS_S:
            time.sleep(0.01)
        if server.poll() is not None:
            break
        processes[victim].send_signal(signal.SIGKILL)
        kills.append({"device": victim, "round": _rounds_logged(log) + 1})
    code = server.wait(timeout=1800)
    for p in processes.values():
        if p.poll() is None:
            p.wait(timeout=60)
    report = json.loads((work / "out" / "report.json").read_text())
    history = report["history"]
    return {
        "devices": devices,
        "rounds": rounds,
        "killed": kills,
        "server_exit_code": code,
        "rounds_completed": [r["round"] for r in history],
        "every_round_once": [r["round"] for r in history] == list(range(1, rounds + 1)),
        "participants_per_round": [len(r["participants"]) for r in history],
        "dropped_per_round": [r["dropped_disconnect"] for r in history],
        "final_accuracy": report["final"]["accuracy"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--part", choices=["loopback", "churn"], required=True)
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.part == "loopback":
        result = loopback(args.out, args.rounds or 8)
    else:
        result = churn(args.out, 20, args.rounds or 10, 0.3, args.seed)
    (args.out / f"{args.part}.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
