"""Turns a validated config into a finished run: fleet, data, model, scheme, report."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from functools import partial

import numpy as np
from transformers import PreTrainedModel

from fleettune.aggregation.policy import DpSpec, PolicySpec
from fleettune.aggregation.secure import SecAggSpec
from fleettune.aggregation.server_opt import ServerOptSpec
from fleettune.compression import parse_cut_codec, parse_update_codec
from fleettune.config import RunConfig
from fleettune.data import TextDataset, client_test_shares, limit, load_dataset, partition, subset
from fleettune.errors import ConfigError
from fleettune.fleet import Fleet, load_fleet
from fleettune.fleet.feasibility import ClientMemoryModel, check_batch_fits, resolve_fleet_cuts
from fleettune.messages import CutWire
from fleettune.models.catalog import ModelSource, load_tokenizer, resolve_model
from fleettune.models.loading import check_max_length, load_task_model
from fleettune.models.lora import LoraSpec
from fleettune.models.stages import Task
from fleettune.planning import RANK_CANDIDATES, Cadence, Plan, Rounds, Turns, plan_for_run
from fleettune.privacy.accounting import calibrate_noise
from fleettune.privacy.client import ClientPrivacy
from fleettune.privacy.leakage.report import run_assessed
from fleettune.privacy.secagg import FixedPoint, min_threshold
from fleettune.runtime.progress import RoundRecord
from fleettune.scheduling import SCHEDULERS, SHARING
from fleettune.schemes import SCHEMES, ClientData, RunSetup, SchemeResult, TrainingPlan
from fleettune.schemes.batching import BatchSource
from fleettune.schemes.evaluator import Evaluator
from fleettune.schemes.fl import clients_per_round
from fleettune.schemes.split.sequential import TURN_POLICY
from fleettune.security.attacks import DATA_ATTACKS, UPDATE_ATTACKS, DataAttack, UpdateAttack, choose_malicious
from fleettune.training import LocalOptimizer

DEFAULT_FL_ROUNDS = 20
FL_LOCAL_STEPS = 10
SPLIT_SCHEMES = ("sl", "cpsl", "splitfed", "mesfl")
AGGREGATING_SPLIT_SCHEMES = ("splitfed", "mesfl")  # split schemes that average every client's adapter every I rounds
MIXED_RANK_SCHEMES = AGGREGATING_SPLIT_SCHEMES  # schemes whose clients may train adapters of different ranks
SAFEGUARD_SCHEMES = ("fl", "splitfed", "mesfl")  # schemes that aggregate through the aggregation policy
ATTACK_STREAM = 5  # the run's RNG stream choosing malicious clients
POISON_STREAM = 6  # the run's RNG stream choosing the texts a data attack poisons


@dataclass
class PreparedRun:
    config: RunConfig
    fleet: Fleet
    dataset: TextDataset
    setup: RunSetup
    model_source: ModelSource
    num_layers: int
    plan: Plan | None = None  # the planner's choice when the run asked for one (`plan_cuts`)


def fleet_for(config: RunConfig) -> Fleet:
    """The run's fleet with the config's overrides applied: clients, one cut for all, availability, drops."""
    fleet = load_fleet(config.fleet)
    if config.clients is not None:
        fleet = fleet.resized(config.clients)
    if config.cut_layer is not None:
        fleet = fleet.with_cut(config.cut_layer)
    if config.availability is not None:
        chance = config.availability
        fleet = replace(
            fleet, devices=tuple(replace(d, availability=chance, offline_rounds=frozenset()) for d in fleet.devices)
        )
    if config.drop_probability is not None:
        drop = config.drop_probability
        fleet = replace(fleet, devices=tuple(replace(d, drop_probability=drop) for d in fleet.devices))
    return fleet


def local_optimizer(config: RunConfig) -> LocalOptimizer:
    """The optimizer every party trains its own parameters with, as configured."""
    return LocalOptimizer(config.optimizer, config.weight_decay)


def _plan(config: RunConfig, num_train: int, num_clients: int) -> TrainingPlan:
    local_steps = config.local_steps or (FL_LOCAL_STEPS if config.scheme == "fl" else 1)
    if config.scheme == "central":
        rounds = math.ceil(config.epochs) if config.epochs else (config.rounds or 1)
        epochs = config.epochs if config.epochs else float(rounds)
    else:
        epochs = None
        if config.rounds is not None:
            rounds = config.rounds
        elif config.epochs is not None:
            # Rounds that show each training sample about `epochs` times across the fleet.
            per_round = clients_per_round(num_clients, config.client_fraction) * config.batch_size
            rounds = max(1, math.ceil(config.epochs * num_train / (per_round * local_steps)))
        elif config.scheme == "fl":
            rounds = DEFAULT_FL_ROUNDS
        else:
            # One epoch: every client trains on one batch per round.
            rounds = max(1, math.ceil(num_train / (num_clients * config.batch_size * local_steps)))
    return TrainingPlan(
        rounds=rounds,
        epochs=epochs,
        local_steps=local_steps,
        local_epochs=config.local_epochs,
        batch_size=config.batch_size,
        lr=config.lr,
        local_opt=local_optimizer(config),
        lr_schedule=config.lr_schedule,
        client_fraction=config.client_fraction,
        aggregate_every=config.aggregate_every,
        eval_every=config.eval_every,
        target_accuracy=config.target_accuracy,
        stop_at_target=config.stop_at_target,
        seed=config.seed,
        client_sampling=_client_sampling(config),
    )


def _client_sampling(config: RunConfig) -> str:
    """`auto` is Poisson sampling when client-level DP's accountant needs it (some clients left out of a
    round), fixed-size sampling otherwise."""
    if config.client_sampling != "auto":
        return config.client_sampling
    dp_on_a_sample = config.scheme == "fl" and config.privacy.dp_clip is not None and config.client_fraction < 1
    return "poisson" if dp_on_a_sample else "fixed"


def check_config(config: RunConfig) -> None:
    """The refusals the config alone decides, before any data, model or fleet is loaded. `compare` checks every
    scheme's config with it before it trains the first."""
    if config.scheme not in SCHEMES:
        raise ConfigError(f"scheme: unknown scheme {config.scheme!r}; expected one of: {', '.join(SCHEMES)}")
    if config.scheduler not in SCHEDULERS:
        raise ConfigError(f"scheduler: unknown policy {config.scheduler!r}; expected one of: {', '.join(SCHEDULERS)}")
    _client_privacy(config)
    _check_secure(config)
    if config.privacy.inversion_samples and config.scheme not in SPLIT_SCHEMES:
        raise ConfigError(
            f"privacy.inversion_samples: scheme {config.scheme} sends no cut activations; expected a split scheme"
        )
    if config.plan_cuts and config.scheme not in SPLIT_SCHEMES:
        raise ConfigError(f"plan_cuts: scheme {config.scheme} has no cut layers; expected a split scheme")
    server_opt = config.server_optimizer.name != "none"
    if (config.privacy.enabled or not config.security.default or server_opt) and config.scheme not in SAFEGUARD_SCHEMES:
        what = "server_optimizer applies" if server_opt else "privacy and security options apply"
        raise ConfigError(
            f"{what} to aggregation, which scheme {config.scheme} does not do over "
            f"whole adapters; expected one of {', '.join(SAFEGUARD_SCHEMES)}"
        )
    if config.security.aggregator == "normbound" and config.privacy.dp_clip is None:
        raise ConfigError("security.aggregator normbound needs privacy.dp_clip (the update norm bound)")


def prepare(config: RunConfig, on_round: Callable[[RoundRecord], None] | None = None) -> PreparedRun:
    """Everything a scheme needs, with every input checked before any training starts."""
    check_config(config)
    client_privacy = _client_privacy(config)
    fleet = fleet_for(config)
    dataset = load_dataset(
        config.dataset,
        config.data_dir,
        text_column=config.text_column,
        label_column=config.label_column,
        seed=config.seed,
    )
    train = limit(dataset.train, config.max_train_samples, config.seed)
    test = limit(dataset.test, config.max_eval_samples, config.seed)
    source = resolve_model(config.model)
    check_max_length(source, config.max_length)
    tokenizer = load_tokenizer(source)
    new_model: Callable[[], PreTrainedModel] = partial(
        load_task_model,
        source.path,
        Task.CLASSIFICATION,
        num_labels=dataset.num_labels,
        pad_token_id=tokenizer.pad_token_id,
        seed=config.seed,
    )
    probe = new_model()
    num_layers = int(probe.config.num_hidden_layers)
    if config.scheme in SPLIT_SCHEMES or config.plan_cuts or any(d.cut_layer == "auto" for d in fleet.devices):
        check_batch_fits(fleet, int(probe.config.hidden_size), config.batch_size, config.max_length)
    del probe
    lora = lora_spec(config)
    local_opt = local_optimizer(config)
    planned = None
    if config.plan_cuts:
        policy, switch_s = planned_server(config)
        wire = cut_wire(config)
        planned = plan_for_run(
            fleet,
            new_model,
            lora,
            Task.CLASSIFICATION,
            config.batch_size,
            config.max_length,
            wire,
            policy,
            switch_s,
            rank_candidates=planned_rank_candidates(config, lora.rank),
            local=local_opt,
            cadence=planned_cadence(config),
            updates=parse_update_codec(config.compression.updates),
        ).plan
        fleet = planned.apply(fleet)
    ranks = _client_ranks(config, fleet)
    if ranks:
        lora = replace(lora, rank=max(ranks.values()))  # the global adapter's rank
    needs_memory = config.scheme in SPLIT_SCHEMES or any(d.cut_layer == "auto" for d in fleet.devices)
    memory = ClientMemoryModel(new_model, lora, Task.CLASSIFICATION, local_opt) if needs_memory else None
    fleet = resolve_fleet_cuts(
        fleet, num_layers, memory.of_cut(config.batch_size, config.max_length) if memory else None
    )
    devices = fleet.devices
    parts = partition(config.partition, train.labels, train.groups, len(devices), config.seed)
    shares = client_test_shares(
        train.labels,
        parts,
        test.labels,
        config.seed,
        test_groups=test.groups,
        natural=config.partition == "natural",
        train_groups=train.groups,
    )
    batches = BatchSource(tokenizer, config.max_length, config.batch_size, config.padding == "max_length")
    evaluator = Evaluator(
        batches.batcher(test, training=False),
        {d.id: share for d, share in zip(devices, shares, strict=True)},
        dataset.num_labels,
        config.eval_batch_size,
    )
    plan = _plan(config, len(train), len(devices))
    safeguards = _safeguards(config, [d.id for d in devices], plan, ranks)
    safeguards = replace(safeguards, secure=_secure_aggregation(config, len(devices), plan, ranks))
    attack = _data_attack(config, safeguards.malicious, dataset.num_labels)
    clients = []
    for device, part in zip(devices, parts, strict=True):
        data = subset(train, part)
        clients.append(ClientData(device.id, device, data if attack is None else attack.apply(device.id, data)))
    setup = RunSetup(
        plan=plan,
        task=Task.CLASSIFICATION,
        lora=lora,
        num_labels=dataset.num_labels,
        new_model=new_model,
        train=train,
        clients=clients,
        server=fleet.server,
        batches=batches,
        evaluator=evaluator,
        on_round=on_round or (lambda record: None),
        scheduler=config.scheduler,
        cluster_size=config.cluster_size,
        cluster_by=config.cluster_by,
        switch_s=None if config.switch_ms is None else config.switch_ms / 1000,
        wire=cut_wire(config),
        updates=parse_update_codec(config.compression.updates),
        deadline_s=config.deadline_s,
        ranks=ranks,
        mixed_ranks=config.lora.mixed_ranks,
        safeguards=safeguards,
        client_privacy=client_privacy,
    )
    trimmed = TextDataset(dataset.name, dataset.label_names, train, test, dataset.val)
    return PreparedRun(config, fleet, trimmed, setup, source, num_layers, planned)


def _client_ranks(config: RunConfig, fleet: Fleet) -> dict[str, int]:
    """Each device's LoRA rank when the fleet gives devices ranks of their own (empty: all train at
    `lora.rank`). A device without one (or with "auto", which `fleettune plan` resolves) uses `lora.rank`."""
    own = {d.id: d.lora_rank for d in fleet.devices if isinstance(d.lora_rank, int)}
    if config.scheme == "central" or not own:
        return {}
    ranks = {d.id: int(own.get(d.id, config.lora.rank)) for d in fleet.devices}
    if len(set(ranks.values())) > 1 and config.scheme not in MIXED_RANK_SCHEMES:
        raise ConfigError(
            f"fleet {fleet.name} gives its devices different LoRA ranks, which scheme {config.scheme} cannot "
            f"combine; expected one of {', '.join(MIXED_RANK_SCHEMES)}, or one lora_rank for every device"
        )
    return ranks


def _safeguards(config: RunConfig, client_ids: list[str], plan: TrainingPlan, ranks: dict[str, int]) -> PolicySpec:
    """The run's aggregation policy: robust rule, DP (sigma calibrated here for a target epsilon) and attack.

    DP's sample rate is the share of clients sampled per aggregation (`client_fraction` in `fl`, all
    clients in the split schemes); the accountant takes one step per aggregation."""
    privacy, security = config.privacy, config.security
    server_opt = _server_opt(config, plan)
    if not privacy.enabled and security.default and server_opt is None:
        return PolicySpec()
    if len(set(ranks.values())) > 1 and (privacy.enabled or security.aggregator != "fedavg" or server_opt):
        raise ConfigError(
            "privacy, robust aggregation and server optimizers need one LoRA rank for every device, not mixed ranks"
        )
    per_round = clients_per_round(len(client_ids), plan.client_fraction) if config.scheme == "fl" else len(client_ids)
    dp = None
    if privacy.dp_clip is not None:
        # Poisson sampling takes each client with probability client_fraction; fixed-size sampling takes
        # per_round of them, which the accountant (built for Poisson sampling) only approximates.
        sample_rate = per_round / len(client_ids)
        if config.scheme == "fl" and plan.client_sampling == "poisson":
            sample_rate = plan.client_fraction
        sigma = privacy.dp_noise
        if privacy.dp_target_epsilon is not None:
            steps = plan.rounds if config.scheme == "fl" else math.ceil(plan.rounds / plan.aggregate_every)
            sigma = calibrate_noise(
                privacy.dp_target_epsilon, sample_rate, steps, privacy.dp_delta, privacy.dp_accountant
            )
        sampling = plan.client_sampling if config.scheme == "fl" and sample_rate < 1 else "all"
        dp = DpSpec(
            privacy.dp_clip,
            sigma,
            privacy.dp_delta,
            privacy.dp_accountant,
            sample_rate,
            privacy.dp_target_epsilon,
            sampling,
        )
    malicious: tuple[str, ...] = ()
    if security.attack != "none":
        malicious = choose_malicious(
            client_ids, security.malicious_fraction, np.random.default_rng([config.seed, ATTACK_STREAM])
        )
    attack = None
    if security.attack in UPDATE_ATTACKS:
        attack = UpdateAttack(security.attack, frozenset(malicious), security.attack_scale)
    spec = PolicySpec(
        security.aggregator,
        security.byzantine,
        security.trim,
        dp,
        attack,
        malicious,
        flame_noise=security.flame_noise,
        server_opt=server_opt,
    )
    spec.check_count(per_round)
    return spec


def _server_opt(config: RunConfig, plan: TrainingPlan) -> ServerOptSpec | None:
    """The run's server optimizer (None: FedAvg); its rate defaults to 1 for fedavgm, to the clients' rate for the
    adaptive ones (whose steps are about `lr` per coordinate). Its schedule runs over the planned aggregations."""
    settings = config.server_optimizer
    if settings.name == "none":
        return None
    lr = settings.lr if settings.lr is not None else (1.0 if settings.name == "fedavgm" else config.lr)
    aggregations = plan.rounds if config.scheme == "fl" else math.ceil(plan.rounds / plan.aggregate_every)
    return ServerOptSpec(
        settings.name,
        lr,
        settings.momentum,
        settings.beta1,
        settings.beta2,
        settings.tau,
        settings.bias_correction,
        settings.lr_schedule,
        aggregations,
    )


def _client_privacy(config: RunConfig) -> ClientPrivacy | None:
    """What every device applies before anything leaves it (None: nothing): activation protection in the split
    schemes, DP-SGD of a device's own parameters in `fl` and the split schemes."""
    privacy = config.privacy
    if privacy.activation_clip is not None and config.scheme not in SPLIT_SCHEMES:
        raise ConfigError(
            f"privacy.activation_clip: scheme {config.scheme} sends no cut activations; expected a split scheme"
        )
    if privacy.dpsgd_clip is not None and config.scheme == "central":
        raise ConfigError("privacy.dpsgd_clip: scheme central trains no device's parameters; expected fl or split")
    if privacy.activation_clip is None and privacy.dpsgd_clip is None:
        return None
    return ClientPrivacy(privacy.activation_clip, privacy.activation_noise, privacy.dpsgd_clip, privacy.dpsgd_noise)


def _check_secure(config: RunConfig) -> None:
    """Secure aggregation's refusals that the config alone decides."""
    privacy = config.privacy
    if not privacy.secure_aggregation:
        return
    key = "privacy.secure_aggregation"
    if config.scheme not in SAFEGUARD_SCHEMES:
        raise ConfigError(
            f"{key}: scheme {config.scheme} averages no adapters across the fleet; expected one of "
            f"{', '.join(SAFEGUARD_SCHEMES)}"
        )
    if config.security.aggregator != "fedavg":
        raise ConfigError(
            f"{key}: the server sees only the sum, and security.aggregator {config.security.aggregator} needs "
            "every update; expected fedavg"
        )
    if config.compression.updates != "fp32":
        raise ConfigError(f"{key}: masked inputs are fixed-point, not compressed updates; expected fp32 updates")
    if privacy.dp_clip is not None and config.scheme != "fl":
        raise ConfigError(
            f"{key}: privacy.dp_clip bounds the whole update, which device and server each hold part of in "
            f"{config.scheme}; expected scheme fl"
        )


def _secure_aggregation(
    config: RunConfig, clients: int, plan: TrainingPlan, ranks: dict[str, int]
) -> SecAggSpec | None:
    """The run's secure aggregation (None: off), its threshold a strict majority of an aggregation's clients
    unless given, checked against the fleet (`_check_secure` checked the rest before anything loaded)."""
    privacy = config.privacy
    if not privacy.secure_aggregation:
        return None
    key = "privacy.secure_aggregation"
    if len(set(ranks.values())) > 1:
        raise ConfigError(f"{key}: needs one LoRA rank for every device, not mixed ranks")
    per_round = clients_per_round(clients, plan.client_fraction) if config.scheme == "fl" else clients
    if per_round < 2:
        raise ConfigError(f"{key}: needs at least 2 clients per aggregation, got {per_round}")
    threshold = privacy.secagg_threshold or min_threshold(per_round)
    if threshold > per_round:
        raise ConfigError(f"privacy.secagg_threshold: {threshold} exceeds the {per_round} clients of an aggregation")
    if threshold < min_threshold(per_round):
        raise ConfigError(
            f"privacy.secagg_threshold: {threshold} is no strict majority of {per_round} clients; "
            f"expected at least {min_threshold(per_round)}"
        )
    spec = SecAggSpec(threshold, privacy.secagg_range)
    try:
        FixedPoint.for_clients(per_round, spec.value_range, spec.ring_bits)
    except ValueError as error:
        raise ConfigError(f"privacy.secagg_range: {error}") from None
    return spec


def _data_attack(config: RunConfig, malicious: tuple[str, ...], num_labels: int) -> DataAttack | None:
    """What malicious clients do to their data (None: the run has no data attack)."""
    security = config.security
    if security.attack not in DATA_ATTACKS:
        return None
    if security.attack == "backdoor" and security.backdoor_target >= num_labels:
        raise ConfigError(
            f"security.backdoor_target: label {security.backdoor_target} does not exist; expected 0..{num_labels - 1}"
        )
    return DataAttack(
        security.attack,
        frozenset(malicious),
        num_labels,
        security.backdoor_trigger,
        security.backdoor_fraction,
        security.backdoor_target,
        (config.seed, POISON_STREAM),
    )


def lora_spec(config: RunConfig) -> LoraSpec:
    """The run's LoRA setting."""
    settings = config.lora
    targets = tuple(settings.targets) if settings.targets else None
    return LoraSpec(rank=settings.rank, alpha=settings.alpha, dropout=settings.dropout, targets=targets)


def cut_wire(config: RunConfig) -> CutWire:
    settings = config.compression
    return CutWire(
        parse_cut_codec(settings.activations, "compression.activations"),
        parse_cut_codec(settings.gradients, "compression.gradients"),
        settings.unpad,
    )


def planned_server(config: RunConfig) -> tuple[str, float | None]:
    """How the planner should model the server: `splitfed`'s per-client copies share it (processor sharing, no
    adapter switch); `sl` and `cpsl` have one adapter, which serves a turn's members first come, first served;
    `mesfl`'s one model serves a device at a time in the run's scheduler's order, switching adapters
    (`switch_ms`, or None: measured)."""
    if config.scheme == "splitfed":
        return SHARING, 0.0
    if config.scheme in ("sl", "cpsl"):
        return TURN_POLICY, 0.0
    return config.scheduler, None if config.switch_ms is None else config.switch_ms / 1000


def planned_rank_candidates(
    config: RunConfig, run_rank: int, candidates: Sequence[int] = RANK_CANDIDATES
) -> tuple[int, ...]:
    """The ranks a `lora_rank = "auto"` device may be planned at: `candidates` where the scheme combines adapters
    of different ranks, else the run's rank alone (any other would make the run refuse the plan)."""
    return tuple(candidates) if config.scheme in MIXED_RANK_SCHEMES else (run_rank,)


def planned_cadence(config: RunConfig) -> Rounds:
    """How the planner should count the run's rounds: `mesfl` and `splitfed` send every device's adapter
    part up and back every `aggregate_every` rounds; in `sl` and `cpsl` clusters take turns."""
    steps = config.local_steps or 1
    if config.scheme == "sl":
        return Turns(1, "speed", steps)
    if config.scheme == "cpsl":
        return Turns(config.cluster_size, config.cluster_by, steps)
    if config.scheme not in AGGREGATING_SPLIT_SCHEMES:
        return None
    return Cadence(config.aggregate_every, steps)


def execute(prepared: PreparedRun) -> SchemeResult:
    # No global seeding: every party's forward draws from its own stream (`fleettune.draws`).
    scheme = SCHEMES.get(prepared.config.scheme)
    return run_assessed(scheme, prepared.setup, prepared.config, prepared.dataset.test)
