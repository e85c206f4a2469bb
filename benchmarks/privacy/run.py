"""Privacy and robustness on CARER: what client-level DP, robust rules, leakage defences and secure aggregation cost.

    OMP_NUM_THREADS=2 python benchmarks/privacy/run.py --out benchmarks/privacy/results

Four parts, each a handful of short runs (all-MiniLM-L6-v2, six `paper6` clients, Dirichlet(0.5) partition,
seed 0), one report per run in --out/PART/NAME plus PART.json and results.json:

- `dp`: `fl` accuracy without DP and at a few `--dp-target-epsilon` values (same rounds for all);
- `robust`: `fl` with ceil(0.2 x 6) = 2 malicious clients, `label_flip` and `scale`, per aggregator (rules that
  refuse six clients with two Byzantine are recorded as refused), plus `backdoor` with FedAvg and the defences;
- `leakage`: membership-inference AUC of one `fl` run; token recovery of the cut-activation inversion in `mesfl`
  without and with activation protection, and the accuracy of each;
- `secagg`: `fl` and `mesfl` with and without `--secure-aggregation`: bytes per client and virtual time per round.

--parts picks parts; --reuse keeps reports already written in --out.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

import torch

from fleettune.aggregation.robust import bulyan_select, krum_select
from fleettune.cli.run import train_one
from fleettune.config import build_config
from fleettune.errors import ConfigError
from fleettune.report import finished_report

CARER = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "carer"
CLIENTS = 6
SCHEME_FLAGS: dict[str, dict[str, Any]] = {}  # rounds (and fl's local steps) per scheme, set from the arguments


def _run(out: Path, flags: dict[str, Any], reuse: bool) -> dict[str, Any]:
    """One run; a configuration the code refuses comes back as {"refused": message}."""
    flags = {**flags, **SCHEME_FLAGS.get(flags["scheme"], {})}
    existing = finished_report(out / "report.json") if reuse else None
    if existing is not None:
        return existing
    try:
        return train_one(build_config(flags=flags), out)
    except (ConfigError, ValueError) as error:
        return {"refused": str(error).splitlines()[0]}


def _summary(report: dict[str, Any]) -> dict[str, Any]:
    if "refused" in report:
        return report
    history = report["history"]
    return {
        "accuracy": report["final"]["accuracy"],
        "macro_f1": report["final"]["macro_f1"],
        "rounds": len(history),
        "sim_time_per_round_s": report["sim_time_s"] / len(history),
        "wall_time_s": report["wall_time_s"],
    }


def _clean_fl(common: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """The attack-free, DP-free FedAvg `fl` run with membership inference: part `dp` writes it, the others read it."""
    flags = {**common, "scheme": "fl", "privacy.membership_samples": args.membership_samples}
    return _run(args.out / "dp" / "no-dp", flags, reuse=True)


def part_dp(common: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    rows: dict[str, Any] = {}
    for eps in [None, *args.epsilons]:
        name = "no-dp" if eps is None else f"eps{eps:g}"
        flags = {**common, "scheme": "fl"}
        if eps is not None:
            flags.update({"privacy.dp_clip": args.dp_clip, "privacy.dp_target_epsilon": eps})
        report = _clean_fl(common, args) if eps is None else _run(args.out / "dp" / name, flags, args.reuse)
        row = _summary(report)
        if "refused" not in report:
            privacy = report["privacy"]
            row.update(
                target_epsilon=eps,
                epsilon=privacy["epsilon"],
                noise_multiplier=privacy["noise_multiplier"],
                clip=privacy["clip"],
                delta=privacy["delta"],
                sample_rate=privacy["sample_rate"],
            )
        rows[name] = row
    return {"dp_clip": args.dp_clip, "runs": rows}


def _refusal(rule: str, clients: int, byzantine: int) -> str | None:
    """What the rule says when it aggregates `clients` updates assuming `byzantine` attackers (None: it accepts).

    The rules check their count at the first aggregation, not when the run is prepared, so this asks them
    directly on random updates instead of training a round first.
    """
    vectors = torch.randn(clients, 8, generator=torch.Generator().manual_seed(0))
    try:
        if rule == "bulyan":
            bulyan_select(vectors, byzantine)
        else:
            krum_select(vectors, byzantine, multi=1 if rule == "krum" else clients - byzantine)
    except ConfigError as error:
        return str(error)
    return None


def _rule_flags(rule: str, args: argparse.Namespace) -> dict[str, Any]:
    """The aggregator and what it needs: trimmed_mean its trim, normbound its clipping bound. `RULE+clip` is the
    rule on updates first clipped to --robust-clip (clipping only, no noise)."""
    name, _, extra = rule.partition("+")
    flags: dict[str, Any] = {"security.aggregator": name}
    if name == "trimmed_mean":
        flags["security.trim"] = args.trim
    if name == "normbound":
        flags["privacy.dp_clip"] = args.dp_clip
    if extra == "clip":
        flags["privacy.dp_clip"] = args.robust_clip
    elif extra:
        raise SystemExit(f"unknown aggregator option {extra!r} in {rule!r}; expected RULE or RULE+clip")
    return flags


def part_robust(common: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    base = {**common, "scheme": "fl", "security.byzantine": 2}
    attack = {"security.malicious_fraction": args.malicious_fraction}
    rows: dict[str, Any] = {}
    refusals = {rule: _refusal(rule, CLIENTS, 2) for rule in args.refusal_checks}
    clean = _clean_fl(common, args)
    rows["none/fedavg"] = _summary(clean)
    for name in args.attacks:
        for rule in args.aggregators:
            flags = {**base, **attack, **_rule_flags(rule, args), "security.attack": name}
            report = _run(args.out / "robust" / f"{name}-{rule}", flags, args.reuse)
            row = _summary(report)
            if "refused" not in report:
                row["malicious_clients"] = report["security"]["malicious_clients"]
                row["accuracy_drop_vs_clean"] = rows["none/fedavg"]["accuracy"] - row["accuracy"]
            rows[f"{name}/{rule}"] = row
    backdoor: dict[str, Any] = {}
    for rule in ["fedavg", *args.backdoor_rules] if args.backdoor_rules else []:
        flags = {**base, **attack, **_rule_flags(rule, args), "security.attack": "backdoor"}
        report = _run(args.out / "robust" / f"backdoor-{rule}", flags, args.reuse)
        row = _summary(report)
        if "refused" not in report:
            row["malicious_clients"] = report["security"]["malicious_clients"]
            row["backdoor"] = report["security"]["backdoor"]
        backdoor[rule] = row
    return {"malicious_fraction": args.malicious_fraction, "byzantine": 2, "trim": args.trim, "runs": rows,
            "refusals": refusals, "backdoor": backdoor}  # fmt: skip


def part_leakage(common: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    membership = _clean_fl(common, args)
    mem = {**_summary(membership), "membership": membership.get("privacy", {}).get("membership")}
    rows: dict[str, Any] = {}
    settings = [(None, None), *[(args.activation_clip, noise) for noise in args.activation_noises]]
    for clip, noise in settings:
        name = "unprotected" if clip is None else f"clip{clip:g}-noise{noise:g}"
        flags = {**common, "scheme": "mesfl", "privacy.inversion_samples": args.inversion_samples}
        if clip is not None:
            flags.update({"privacy.activation_clip": clip, "privacy.activation_noise": noise})
        report = _run(args.out / "leakage" / f"mesfl-{name}", flags, args.reuse)
        row = _summary(report)
        if "refused" not in report:
            row["inversion"] = report["privacy"]["inversion"]
            activations = report["privacy"]["activations"]
            row["activation_epsilon"] = None if activations is None else activations["epsilon"]
        rows[name] = row
    return {"membership_fl": mem, "inversion_mesfl": rows}


def part_secagg(common: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """`fl` and `mesfl`, each with and without secure aggregation: the devices' bytes and the virtual time."""
    plain_runs = {  # the unprotected runs of parts dp and leakage (inversion runs after training: same bytes)
        "fl": lambda: _clean_fl(common, args),
        "mesfl": lambda: _run(
            args.out / "leakage" / "mesfl-unprotected",
            {**common, "scheme": "mesfl", "privacy.inversion_samples": args.inversion_samples},
            reuse=True,
        ),
    }
    out: dict[str, Any] = {}
    for scheme, plain_run in plain_runs.items():
        flags = {**common, "scheme": scheme, "privacy.secure_aggregation": True}
        reports = {"plain": plain_run(), "secagg": _run(args.out / "secagg" / f"{scheme}-secagg", flags, args.reuse)}
        rows = {name: _secagg_row(report) for name, report in reports.items()}
        out[scheme] = {"runs": rows, "ratios": _secagg_ratios(rows)}
    return out


def _secagg_row(report: dict[str, Any]) -> dict[str, Any]:
    row = _summary(report)
    if "refused" not in report:
        rounds = len(report["history"])
        by_kind = report["communication_bytes"]["by_kind"]
        row["by_kind"] = by_kind
        row["by_kind_per_round_per_client"] = {
            kind: {way: n / rounds / CLIENTS for way, n in ways.items()} for kind, ways in by_kind.items()
        }
        row["secure_aggregation"] = report["privacy"]["secure_aggregation"]
    return row


def _secagg_ratios(rows: dict[str, Any]) -> dict[str, float] | None:
    if "refused" in rows["plain"] or "refused" in rows["secagg"]:
        return None
    plain_up = rows["plain"]["by_kind"]["adapter"]["uplink"]
    secure = rows["secagg"]["by_kind"]
    with_up = secure["adapter"]["uplink"] + secure["secagg"]["uplink"]
    return {
        "client_adapter_upload_with_over_plain": secure["adapter"]["uplink"] / plain_up,
        "client_upload_adapter_plus_secagg_over_plain": with_up / plain_up,
        "client_bytes_both_ways_adapter_plus_secagg_over_plain_upload": (with_up + secure["secagg"]["downlink"])
        / plain_up,
        "sim_time_per_round_with_over_plain": rows["secagg"]["sim_time_per_round_s"]
        / rows["plain"]["sim_time_per_round_s"],
    }


def _tidy(out: Path, data_dir: Path) -> None:
    """Keep the reports, not the adapters; name the data folder relative to the repository's parent."""
    for adapter in out.rglob("adapter.safetensors"):
        adapter.unlink()
    for path in [*out.rglob("report.json"), *out.rglob("config.json")]:
        text = path.read_text()
        for form in {str(data_dir), str(data_dir.resolve())}:  # as given (maybe through a link) and resolved
            text = text.replace(form, "../shared/data/carer")
        path.write_text(text)


PARTS = {"dp": part_dp, "robust": part_robust, "leakage": part_leakage, "secagg": part_secagg}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="minilm")
    parser.add_argument("--data-dir", type=Path, default=CARER)
    parser.add_argument("--parts", default="dp,robust,leakage,secagg")
    parser.add_argument("--max-train-samples", type=int, default=600)
    parser.add_argument("--max-eval-samples", type=int, default=100)
    parser.add_argument("--max-length", type=int, default=32)
    parser.add_argument("--fl-rounds", type=int, default=3)
    parser.add_argument("--local-steps", type=int, default=1, help="fl local steps per round")
    parser.add_argument("--mesfl-rounds", type=int, default=4)
    parser.add_argument("--epsilons", type=lambda s: [float(x) for x in s.split(",")], default=[1.0, 8.0])
    parser.add_argument("--dp-clip", type=float, default=0.5)
    parser.add_argument("--malicious-fraction", type=float, default=0.2)
    parser.add_argument("--attacks", type=lambda s: [a for a in s.split(",") if a], default=["label_flip", "scale"])
    parser.add_argument(
        "--aggregators",
        type=lambda s: s.split(","),
        default=["fedavg", "median", "trimmed_mean"],
    )
    parser.add_argument("--refusal-checks", type=lambda s: s.split(","), default=["krum", "multikrum", "bulyan"])
    parser.add_argument("--trim", type=float, default=1 / 3, help="trimmed_mean: floor(trim x 6) = 2 per side")
    parser.add_argument("--robust-clip", type=float, default=3.0, help="the update norm bound of RULE+clip")
    parser.add_argument(
        "--backdoor-rules",
        type=lambda s: [r for r in s.split(",") if r and r != "none"],
        default=["median"],
        help="the defences run against the backdoor beside fedavg; none: no backdoor runs",
    )
    parser.add_argument("--membership-samples", type=int, default=200)
    parser.add_argument("--inversion-samples", type=int, default=16)
    parser.add_argument("--activation-clip", type=float, default=40.0)
    parser.add_argument("--activation-noises", type=lambda s: [float(x) for x in s.split(",")], default=[0.01, 0.1])
    parser.add_argument("--reuse", action="store_true", help="keep reports already written in --out")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    common: dict[str, Any] = {
        "model": args.model,
        "dataset": "carer",
        "data_dir": str(args.data_dir),
        "fleet": "paper6",
        "clients": CLIENTS,
        "partition": "dirichlet:0.5",
        "seed": 0,
        "max_train_samples": args.max_train_samples,
        "max_eval_samples": args.max_eval_samples,
        "max_length": args.max_length,
        "lr": 1e-3,
        "lr_schedule": "constant",
    }
    SCHEME_FLAGS.update(
        fl={"rounds": args.fl_rounds, "local_steps": args.local_steps, "eval_every": args.fl_rounds},
        mesfl={"rounds": args.mesfl_rounds, "eval_every": args.mesfl_rounds},
    )
    results_path = args.out / "results.json"
    results: dict[str, Any] = json.loads(results_path.read_text()) if results_path.exists() else {}
    settings = {k: v for k, v in common.items() if k != "data_dir"}
    results["settings"] = {**settings, **SCHEME_FLAGS}
    for part in args.parts.split(","):
        started = time.perf_counter()
        numbers = PARTS[part](common, args)
        numbers["wall_time_s"] = time.perf_counter() - started
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / f"{part}.json").write_text(json.dumps(numbers, indent=2) + "\n")
        results[part] = numbers
        results_path.write_text(json.dumps(results, indent=2) + "\n")
        print(f"{part}: {numbers['wall_time_s']:.0f} s", flush=True)
    _tidy(args.out, Path(os.path.abspath(args.data_dir)))
    results["benchmark_wall_time_s"] = sum(results[p]["wall_time_s"] for p in PARTS if p in results)
    results_path.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
