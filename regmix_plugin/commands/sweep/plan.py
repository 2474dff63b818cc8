"""The sweep's plan: every input validated before run 1, and the set-up identity that guards a sweep directory.

``plan_sweep`` turns the user's flags into a :class:`SweepPlan` (the recipe with per-run fields blanked, the
eval schedule, hashes of recipe, manifest, tokenizer and eval settings) and raises one ``ValueError`` naming
every problem. ``check_setup`` refuses to mix two set-ups in one directory. The plan is saved as
``<sweep>/sweep.json`` and loaded back in one place, :meth:`SweepPlan.load`.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import warnings
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

import yaml

from regmix_plugin.atomic import write_json
from regmix_plugin.counts import TokenCount
from regmix_plugin.formats.manifest import MANIFEST, damage_message, damaged_domains, read_manifest
from regmix_plugin.formats.mixture_table import RunSpec, read_mixtures, split_run
from regmix_plugin.formats.sweep_records import SETUP_FILE, read_records
from regmix_plugin.resources import resolve_recipe
from regmix_plugin.tokenizer import check_tokenizer

SETUP_VERSION = 1
_DATA_CLASSES = ("regmix_plugin.MixtureData", "regmix_plugin.pretrain.mixture_data.MixtureData")


@dataclass
class EvalArgs:
    """How every proxy is scored: per-domain validation loss at evenly spaced points of its run."""

    points: int = 5
    """Intermediate evaluation points, evenly spaced, scored besides the end of each run."""
    val_tokens: TokenCount = 262144
    """Validation tokens scored per domain at every eval point (the same tokens for every run)."""
    batch_size: int = 16
    """Blocks per forward pass when scoring (speed only)."""


@dataclass
class LocalArgs:
    """Worker processes of ``--launcher local``."""

    workers: int | Literal["auto"] = "auto"
    """Worker processes, each training runs one after another; 0 trains in this process. ``auto``: one per GPU
    (packing several proxies on one GPU adds no steady-state throughput), or 1 without GPUs."""
    threads: int | None = None
    """Torch threads per run; default: CPU cores // workers."""

    def resolved_workers(self) -> int:
        if self.workers != "auto":
            return int(self.workers)
        import torch

        return max(1, torch.cuda.device_count())


@dataclass
class SlurmArgs:
    """Where and how ``--launcher slurm`` submits its array job (through submitit)."""

    partition: str | None = None
    """Slurm partition; null = the cluster's default."""
    tasks: int = 1
    """Array tasks; each trains an equal slice of the pending runs one after another."""
    max_parallel: int | None = None
    """Most array tasks running at once (``--array=...%N``); null = no limit."""
    gpus_per_task: int = 0
    """GPUs per array task (one proxy at a time uses one)."""
    cpus_per_task: int = 2
    """CPU cores per array task; also the torch threads of its runs."""
    time_min: int = 240
    """Time limit per task in minutes; a task stopped by it leaves its remaining runs pending for a re-run."""
    mem_gb: float | None = None
    """Memory per task in GB; null = the cluster's default."""
    additional: dict[str, Any] | None = None
    """Extra ``#SBATCH`` options, e.g. ``{account: myproj, qos: high}``."""
    cluster: str | None = None
    """submitit cluster: null picks Slurm when available; ``local`` runs the tasks as local processes (tests)."""


@dataclass(frozen=True)
class EvalSetup:
    """The eval settings a sweep was planned with (part of its identity)."""

    eval_points: int
    val_tokens: int
    eval_batch_size: int
    seq_length: int
    domains: list[str]
    stages: int = 1


@dataclass(frozen=True)
class SweepPlan:
    """Everything a worker needs to train and score any run of the sweep (saved as ``sweep.json``)."""

    setup_hash: str
    identity: dict
    """What must not change under one sweep directory: hashes of recipe, manifest, tokenizer, and the eval setup."""
    recipe_path: str
    config: dict
    """The ``litgpt pretrain`` config of every run, with ``data.init_args.weights`` blank."""
    data_path: str
    seed: int
    eval_steps: list[int]
    tokens_per_step: int
    final_tokens: int
    keep_checkpoints: bool
    run_ids: list[str] = field(default_factory=list)
    mixtures: dict[str, RunSpec] = field(default_factory=dict)
    """The runs of this invocation (not saved: the mixtures file is the source)."""
    fused_loss: str = "auto"
    """``--fused_loss``: resolved per run by the worker that trains it (it knows its device); not part of the
    identity, since both loss paths train the same model (each record says which one it used)."""
    compile: str = "auto"
    """``--compile``: resolved per run by its worker, like ``fused_loss``, and for the same reason not identity."""
    fingerprints: dict[str, str | None] | None = None
    """One content fingerprint per domain of the corpus (``Manifest.fingerprints``), so a later corpus can tell
    which of these runs trained on unchanged domains only (``regmix fit --also``). Implied by the manifest hash of
    the identity, so not part of it; None in sweeps planned before it was recorded."""
    reuse: dict | None = None
    """The mixtures file's reuse structure (``regmix sample --reuse``), carried into the results table; not identity
    (the rows themselves are checked against it)."""

    @property
    def eval(self) -> EvalSetup:
        return EvalSetup(**self.identity["eval"])

    def to_json(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k != "mixtures"}

    @classmethod
    def from_json(cls, raw: dict) -> SweepPlan:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in raw.items() if k in known})

    @classmethod
    def load(cls, sweep_dir: Path, flag: str = "--out_dir") -> SweepPlan:
        path = Path(sweep_dir) / SETUP_FILE
        if not path.is_file():
            raise FileNotFoundError(f"{flag} {str(sweep_dir)!r} is not a sweep directory (no {SETUP_FILE})")
        return cls.from_json(json.loads(path.read_text()))


def _sha(obj: Any) -> str:
    data = obj if isinstance(obj, bytes) else json.dumps(obj, sort_keys=True, default=str).encode()
    return "sha256:" + hashlib.sha256(data).hexdigest()


def plan_sweep(
    mixtures: Path,
    data_path: Path,
    recipe: Path,
    out_dir: Path,
    tokenizer_dir: Path | None,
    eval: EvalArgs,
    data_num_workers: int | None,
    keep_checkpoints: bool,
    fused_loss: str = "auto",
    compile: str = "auto",
) -> SweepPlan:
    """Validate every input and return the sweep plan; starts no run.

    All problems are collected and raised as one ``ValueError`` naming the flag and the fix.
    """
    from regmix_plugin.litgpt_compat import parse_or_explain
    from regmix_plugin.pretrain.scoring import eval_domains

    problems: list[str] = []
    manifest = read_manifest(data_path)
    domains = manifest.train_domains()
    try:
        table = read_mixtures(mixtures, "--mixtures", known=domains, known_from="the prepared corpus")
        mixes, stages = table.as_runs(), 1 if table.stages is None else table.stages.shape[1]
        reuse = table.reuse.to_dict() if table.reuse is not None else None
    except ValueError as e:
        problems.append(str(e))
        mixes, stages, reuse = {}, 1, None
    bad_ids = [i for i in mixes if "/" in i or i.startswith(".")]
    if bad_ids:
        problems.append(f"--mixtures {str(mixtures)!r}: run id(s) {bad_ids[:10]} cannot be file names; rename them")
    recipe = resolve_recipe(recipe, "--recipe")
    base = yaml.safe_load(recipe.read_text())
    if not isinstance(base, dict):
        raise ValueError(f"--recipe {str(recipe)!r} is not a YAML mapping of `litgpt pretrain` arguments")
    tok_dir = Path(tokenizer_dir or base.get("tokenizer_dir") or "")
    # every domain: each run trains on some and is scored on every val split
    damaged = damaged_domains(data_path, manifest)
    if damaged:
        problems.append(damage_message(data_path, manifest, damaged))
    if eval.points < 0:
        problems.append(
            f"--eval.points must be >= 0, got {eval.points}: it counts the evaluation points "
            "besides the end of each run (0 scores the end only)"
        )
    if not tokenizer_dir and not base.get("tokenizer_dir"):
        problems.append("no tokenizer: set --tokenizer_dir or tokenizer_dir in the --recipe")
    else:
        try:
            check_tokenizer(tok_dir, manifest.tokenizer_hash, "--tokenizer_dir", f"--data_path {str(data_path)!r}")
        except (FileNotFoundError, ValueError) as e:
            problems.append(str(e))
    data = base.get("data") or {}
    if data and data.get("class_path", _DATA_CLASSES[0]) not in _DATA_CLASSES:
        problems.append(
            f"--recipe data.class_path is {data.get('class_path')!r}; a sweep needs regmix_plugin.MixtureData"
        )
    cfg = copy.deepcopy(base)
    init = dict(data.get("init_args") or {})
    first, first_stages = split_run(next(iter(mixes.values()), {domains[0]: 1.0}))
    init.update(data_path=str(data_path), weights=None if first_stages else first, schedule=first_stages)
    if first_stages:  # until_fraction needs the budget to be checked at all; set for every run below
        init["max_tokens"] = (base.get("train") or {}).get("max_tokens")
    if data_num_workers is not None:
        init["num_workers"] = data_num_workers
    cfg.update(
        data={"class_path": _DATA_CLASSES[0], "init_args": init},
        tokenizer_dir=str(tok_dir),
        resume=False,
        devices=1,
        num_nodes=1,
        out_dir=str(Path(out_dir) / "runs" / "_check"),
    )
    cfg.setdefault("train", {})
    if problems:
        raise ValueError("regmix sweep: nothing was run:\n  " + "\n  ".join(problems))
    parsed = parse_or_explain(
        cfg,
        f"--recipe {str(recipe)!r}",
        "Fix the recipe (run `litgpt pretrain --config RECIPE --print_config` to see the schema)",
    )
    from litgpt import Config

    train = parsed.train
    model_cfg = parsed.model_config or Config.from_name(parsed.model_name)
    problems += manifest.vocab_problems(model_cfg.padded_vocab_size, where=f" (--recipe {str(recipe)!r} model_config)")
    seq = min(train.max_seq_length or model_cfg.block_size, model_cfg.block_size)
    accum = max(1, train.global_batch_size // train.micro_batch_size)
    iters = train.max_tokens // (train.micro_batch_size * seq)
    steps = iters // accum
    interval = steps // (eval.points + 1) if eval.points > 0 else None
    if interval is not None and interval < 1:
        problems.append(
            f"--eval.points {eval.points} needs at least {eval.points + 1} optimizer steps; the recipe "
            f"trains {steps}: lower --eval.points or raise train.max_tokens"
        )
    eval_steps = [k * interval for k in range(1, eval.points + 1)] if interval else []
    # A staged proxy is also scored where each stage ends (what a transition model starts the next stage from):
    # the step whose samples reach the stage's until_fraction of the data's max_tokens.
    boundaries = [
        round(k / stages * train.max_tokens / (accum * train.micro_batch_size * seq)) for k in range(1, stages)
    ]
    if any(not 0 < b < steps for b in boundaries):
        problems.append(
            f"--mixtures has {stages} stages, but the recipe trains only {steps} optimizer steps; "
            "raise train.max_tokens"
        )
    eval_steps = sorted(set(eval_steps) | {b for b in boundaries if 0 < b < steps})
    save_every = math.gcd(*eval_steps) if eval_steps else None
    if eval.val_tokens < 1 or eval.batch_size < 1:
        problems.append("--eval.val_tokens and --eval.batch_size must be >= 1")
    init["max_tokens"] = train.max_tokens  # lets MixtureData's epoch guard fail at set-up, not mid-run
    cfg["train"]["save_interval"] = save_every
    if problems:
        raise ValueError("regmix sweep: nothing was run:\n  " + "\n  ".join(problems))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        eval_names = eval_domains(manifest, None)
    for w in caught:
        print(f"warning: {w.message}")
    cfg.pop("out_dir")
    template = copy.deepcopy(cfg)
    template["data"]["init_args"]["weights"] = None
    identity = {
        "version": SETUP_VERSION,
        "recipe": _sha(template),
        "manifest": _sha((Path(data_path) / MANIFEST).read_bytes()),
        "tokenizer": manifest.tokenizer_hash,
        # the keys of wave 1's sweep.json, so its sweeps resume under this version
        "eval": {
            "eval_points": eval.points,
            "val_tokens": eval.val_tokens,
            "eval_batch_size": eval.batch_size,
            "seq_length": seq,
            "domains": eval_names,
        },
    }
    if stages > 1:  # kept out of static sweeps' identity, so theirs are unchanged
        identity["eval"]["stages"] = stages
    return SweepPlan(
        setup_hash=_sha(identity),
        identity=identity,
        recipe_path=str(recipe),
        config=template,
        data_path=str(data_path),
        seed=parsed.seed,
        eval_steps=eval_steps,
        tokens_per_step=accum * train.micro_batch_size * seq,
        final_tokens=iters * train.micro_batch_size * seq,
        keep_checkpoints=keep_checkpoints,
        run_ids=list(mixes),
        mixtures=mixes,
        fused_loss=fused_loss,
        compile=compile,
        fingerprints=manifest.fingerprints(),
        reuse=reuse,
    )


def _differs(record, spec: RunSpec) -> bool:
    """Whether a recorded run's mixture (and stages) differ from what the mixtures file now asks for."""
    weights, stages = split_run(spec)
    if any(abs(record.mixture.get(d, 0.0) - w) > 1e-9 for d, w in weights.items()):
        return True
    flat = [(st.get("until_fraction"), sorted(st["weights"].items())) for st in stages or []]
    return flat != [(st.get("until_fraction"), sorted(st["weights"].items())) for st in record.schedule or []]


def check_setup(out_dir: Path, plan: SweepPlan) -> SweepPlan:
    """Refuse to mix two set-ups in one sweep directory; save the plan (all run ids seen so far) and return it."""
    path = Path(out_dir) / SETUP_FILE
    records = read_records(out_dir)
    old = SweepPlan.load(out_dir) if path.is_file() else None
    if old is not None and old.setup_hash != plan.setup_hash:
        changed = [k for k in plan.identity if old.identity.get(k) != plan.identity[k]]
        raise ValueError(
            f"--out_dir {str(out_dir)!r} holds a sweep with a different set-up (changed: {', '.join(changed)}); "
            "mixing their results would poison the regression. Use a new --out_dir, or restore the old "
            "recipe/corpus/settings to resume it"
        )
    changed = [r for r, rec in records.items() if r in plan.mixtures and _differs(rec, plan.mixtures[r])]
    if changed:
        raise ValueError(
            f"--mixtures changes the weights of run(s) already recorded in {out_dir}: "
            f"{', '.join(changed[:10])}; give changed mixtures new run ids"
        )
    run_ids = list(old.run_ids) if old is not None else []
    run_ids += [r for r in plan.mixtures if r not in run_ids]
    saved = SweepPlan(**{**{f.name: getattr(plan, f.name) for f in fields(plan)}, "run_ids": run_ids})
    write_json(path, saved.to_json())
    return saved
