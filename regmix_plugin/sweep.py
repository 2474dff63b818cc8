"""``regmix sweep``: train one small LitGPT proxy per mixture, resumably, and keep a results table.

    regmix sample --data_path data/tiny --n 64 --out mixtures.csv
    regmix sweep --mixtures mixtures.csv --data_path data/tiny --recipe recipes/tiny_cpu.yaml --out_dir out/sweep
    regmix sweep --status out/sweep                      # counts and failure reasons; runs nothing
    regmix sweep --config sweep.yaml --launcher slurm --slurm.partition gpu --slurm.tasks 32

Every mixture is one run of the stock ``litgpt pretrain`` loop (``recipe`` with ``data.init_args.weights``
replaced), run in a reused worker process (:mod:`regmix_plugin.sweep_worker`). Layout of ``out_dir``::

    sweep.json            # the set-up identity (hashes of recipe, manifest, tokenizer, eval settings) + plan
    runs/<run_id>.json    # one record per finished run, written atomically: status done|failed, mixture,
                          # losses per eval point, tokens, wall_s, seed, hashes, error and log tail
    runs/<run_id>.log     # that run's stdout/stderr
    runs/<run_id>/        # the run's litgpt out_dir while it trains; deleted after (unless --keep_checkpoints)
    results.csv           # the results table (regmix_plugin.results format), rebuilt from the records

Eval points: the loop saves a checkpoint every ``train.save_interval`` steps, set to
``steps // (eval_points + 1)``; checkpoints ``k * interval`` for ``k = 1..eval_points`` and the final one are
scored per domain with :func:`regmix_plugin.evaluate.domain_losses` (a fixed ``val_tokens`` budget per
domain), then deleted. A run whose train or eval loss is NaN/inf is recorded as failed (diverged).

A re-run with the same set-up skips ``done`` records and re-does everything else; a different recipe,
corpus, tokenizer or eval setting under the same ``out_dir`` is refused. Records are the only state, so a
``kill -9`` loses at most the runs in flight, and the table is rebuilt whole from the records each time.
"""

from __future__ import annotations

import copy
import hashlib
import json
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from regmix_plugin.atomic import write_json
from regmix_plugin.manifest import MANIFEST, read_manifest
from regmix_plugin.results import WEIGHT_PREFIX
from regmix_plugin.sample import read_mixtures
from regmix_plugin.tokenizer import tokenizer_hash

SETUP = "sweep.json"
SETUP_VERSION = 1


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


# ------------------------------------------------------------------------------------------------ records
def record_path(sweep_dir: Path, run_id: str) -> Path:
    return Path(sweep_dir) / "runs" / f"{run_id}.json"


def read_records(sweep_dir: Path) -> dict[str, dict]:
    """Every readable record of a sweep, by run id (a record is whole or absent: they are written atomically)."""
    out = {}
    for path in sorted((Path(sweep_dir) / "runs").glob("*.json")):
        try:
            rec = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            warnings.warn(f"{path} is unreadable and is treated as pending; delete it to silence this")
            continue
        out[rec["run_id"]] = rec
    return out


def loss_column(domain: str, tokens: int | None = None) -> str:
    """``val_loss/<domain>`` (end of training) or ``val_loss/<domain>@<tokens>`` (an intermediate eval point)."""
    from regmix_plugin.results import LOSS_PREFIX

    return f"{LOSS_PREFIX}{domain}" + ("" if tokens is None else f"@{tokens}")


def table_rows(order: list[str], records: dict[str, dict]) -> list[dict]:
    """One results-table row per recorded run, in ``order`` (mixtures-file order)."""
    rows = []
    for run_id in order:
        rec = records.get(run_id)
        if rec is None:
            continue
        row: dict[str, Any] = {"run_id": run_id}
        row.update({WEIGHT_PREFIX + d: w for d, w in rec["mixture"].items()})
        for point in rec.get("losses", []):
            for d, loss in sorted(point["losses"].items()):
                row[loss_column(d, None if point["final"] else point["tokens"])] = loss
        row.update(status=rec["status"], tokens=rec.get("tokens"), wall_s=rec.get("wall_s"), seed=rec.get("seed"),
                   error=rec.get("error") or "")
        rows.append(row)
    return rows


def write_table(path: Path, order: list[str], records: dict[str, dict]) -> None:
    """Rebuild the results table from the records, atomically, with the shared writer."""
    from regmix_plugin.results import write_results

    rows = table_rows(order, records)
    if rows:
        write_results(path, rows)


# --------------------------------------------------------------------------------------------- planning
def _sha(obj: Any) -> str:
    data = obj if isinstance(obj, bytes) else json.dumps(obj, sort_keys=True, default=str).encode()
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _litgpt_parse(config: dict) -> Any:
    """Parse and instantiate ``config`` exactly as ``litgpt pretrain --config`` would (raises on a bad recipe)."""
    from jsonargparse import ArgumentParser
    from litgpt.pretrain import setup

    parser = ArgumentParser(exit_on_error=False)
    parser.add_function_arguments(setup)
    return parser.instantiate_classes(parser.parse_object(config))


def plan_sweep(
    mixtures: Path, data_path: Path, recipe: Path, out_dir: Path, tokenizer_dir: Path | None, eval_points: int,
    val_tokens: int, eval_batch_size: int, data_num_workers: int | None, keep_checkpoints: bool,
) -> dict:
    """Validate every input and return the sweep plan (plain data, saved in ``sweep.json``); starts no run.

    All problems are collected and raised as one ``ValueError`` naming the flag and the fix.
    """
    from regmix_plugin.evaluate import eval_domains

    problems: list[str] = []
    manifest = read_manifest(data_path)
    domains = manifest.train_domains()
    try:
        mixes = read_mixtures(mixtures, domains)
    except ValueError as e:
        problems.append(str(e))
        mixes = {}
    for d in sorted(manifest.domains):
        for split in ("train", "val"):
            tokens = getattr(manifest.domains[d], split).tokens
            if tokens and not (Path(data_path) / d / split / "index.json").is_file():
                problems.append(f"prepared domain {d!r} is missing {Path(data_path) / d / split}/index.json; "
                                f"re-run `regmix prepare --out_dir {data_path}`")
    recipe = Path(recipe)
    if not recipe.is_file():
        raise FileNotFoundError(f"--recipe {str(recipe)!r} does not exist; start from recipes/tiny_cpu.yaml")
    base = yaml.safe_load(recipe.read_text())
    if not isinstance(base, dict):
        raise ValueError(f"--recipe {str(recipe)!r} is not a YAML mapping of `litgpt pretrain` arguments")
    tok_dir = Path(tokenizer_dir or base.get("tokenizer_dir") or "")
    if not tokenizer_dir and not base.get("tokenizer_dir"):
        problems.append("no tokenizer: set --tokenizer_dir or tokenizer_dir in the --recipe")
    else:
        try:
            found = tokenizer_hash(tok_dir)
            if found != manifest.tokenizer_hash:
                problems.append(f"tokenizer mismatch: --tokenizer_dir {str(tok_dir)!r} is {found[:19]}..., --data_path "
                                f"was prepared with {manifest.tokenizer_hash[:19]}...; use the tokenizer the corpus "
                                "was prepared with, or re-run `regmix prepare` with this one")
        except FileNotFoundError as e:
            problems.append(str(e))
    data = base.get("data") or {}
    if data and data.get("class_path", "regmix_plugin.MixtureData") not in ("regmix_plugin.MixtureData",
                                                                            "regmix_plugin.data.MixtureData"):
        problems.append(f"--recipe data.class_path is {data.get('class_path')!r}; a sweep needs regmix_plugin.MixtureData")
    cfg = copy.deepcopy(base)
    init = dict((data.get("init_args") or {}))
    init.update(data_path=str(data_path), weights=next(iter(mixes.values()), {domains[0]: 1.0}), schedule=None)
    if data_num_workers is not None:
        init["num_workers"] = data_num_workers
    cfg.update(data={"class_path": "regmix_plugin.MixtureData", "init_args": init}, tokenizer_dir=str(tok_dir),
               resume=False, devices=1, num_nodes=1, out_dir=str(Path(out_dir) / "runs" / "_check"))
    cfg.setdefault("train", {})
    if problems:
        raise ValueError("regmix sweep: nothing was run:\n  " + "\n  ".join(problems))
    try:
        parsed = _litgpt_parse(cfg)
    except Exception as e:  # jsonargparse raises several types; all mean the recipe is not runnable
        msg = "\n    ".join(str(e).strip().splitlines()[:12])
        raise ValueError(f"--recipe {str(recipe)!r}: `litgpt pretrain` would reject it:\n    {msg}\n"
                         "Fix the recipe (run `litgpt pretrain --config RECIPE --print_config` to see the schema)") from None
    from litgpt import Config

    train = parsed.train
    model_cfg = parsed.model_config or Config.from_name(parsed.model_name)
    seq = min(train.max_seq_length or model_cfg.block_size, model_cfg.block_size)
    accum = max(1, train.global_batch_size // train.micro_batch_size)
    iters = train.max_tokens // (train.micro_batch_size * seq)
    steps = iters // accum
    interval = steps // (eval_points + 1) if eval_points > 0 else None
    if eval_points < 0 or (interval is not None and interval < 1):
        problems.append(f"--eval_points {eval_points} needs at least {eval_points + 1} optimizer steps; the recipe "
                        f"trains {steps}: lower --eval_points or raise train.max_tokens")
    if val_tokens < 1 or eval_batch_size < 1:
        problems.append("--val_tokens and --eval_batch_size must be >= 1")
    init["max_tokens"] = train.max_tokens  # lets MixtureData's epoch guard fail at set-up, not mid-run
    cfg["train"]["save_interval"] = interval
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
    tokens_per_step = accum * train.micro_batch_size * seq
    identity = {
        "version": SETUP_VERSION,
        "recipe": _sha(template),
        "manifest": _sha((Path(data_path) / MANIFEST).read_bytes()),
        "tokenizer": manifest.tokenizer_hash,
        "eval": {"eval_points": eval_points, "val_tokens": val_tokens, "eval_batch_size": eval_batch_size,
                 "seq_length": seq, "domains": eval_names},
    }
    return {
        "setup_hash": _sha(identity),
        "identity": identity,
        "recipe_path": str(recipe),
        "config": template,
        "mixtures": mixes,
        "data_path": str(data_path),
        "seed": parsed.seed,
        "eval_steps": [k * interval for k in range(1, eval_points + 1)] if interval else [],
        "tokens_per_step": tokens_per_step,
        "final_tokens": iters * train.micro_batch_size * seq,
        "keep_checkpoints": keep_checkpoints,
    }


def check_setup(out_dir: Path, plan: dict) -> None:
    """Refuse to mix two set-ups in one sweep directory; write the set-up file on first use."""
    path = Path(out_dir) / SETUP
    records = read_records(out_dir)
    if path.is_file():
        old = json.loads(path.read_text())
        if old["setup_hash"] != plan["setup_hash"]:
            changed = [k for k in plan["identity"] if old["identity"].get(k) != plan["identity"][k]]
            raise ValueError(
                f"--out_dir {str(out_dir)!r} holds a sweep with a different set-up (changed: {', '.join(changed)}); "
                "mixing their results would poison the regression. Use a new --out_dir, or restore the old "
                "recipe/corpus/settings to resume it"
            )
    changed = [r for r, rec in records.items() if r in plan["mixtures"]
               and any(abs(rec["mixture"].get(d, 0.0) - w) > 1e-9 for d, w in plan["mixtures"][r].items())]
    if changed:
        raise ValueError(f"--mixtures changes the weights of run(s) already recorded in {out_dir}: "
                         f"{', '.join(changed[:10])}; give changed mixtures new run ids")
    saved = {k: v for k, v in plan.items() if k != "mixtures"}
    saved["run_ids"] = sorted(set(json.loads(path.read_text()).get("run_ids", [])) | set(plan["mixtures"])) \
        if path.is_file() else list(plan["mixtures"])
    write_json(path, saved)


def sweep_status(out_dir: Path) -> dict[str, int]:
    """Print done/failed/pending counts and failure reasons of a sweep directory; runs nothing."""
    path = Path(out_dir) / SETUP
    if not path.is_file():
        raise FileNotFoundError(f"--status {str(out_dir)!r} is not a sweep directory (no {SETUP})")
    run_ids = json.loads(path.read_text())["run_ids"]
    records = read_records(out_dir)
    counts = {s: sum(1 for r in run_ids if records.get(r, {}).get("status") == s) for s in ("done", "failed")}
    counts["pending"] = len(run_ids) - counts["done"] - counts["failed"]
    print(f"{out_dir}: {len(run_ids)} runs: {counts['done']} done, {counts['failed']} failed, {counts['pending']} pending")
    for r in run_ids:
        if records.get(r, {}).get("status") == "failed":
            print(f"  {r}: {records[r].get('error', '').splitlines()[0] if records[r].get('error') else 'failed'}")
    return counts


def sweep(
    mixtures: Path = Path("mixtures.csv"),
    data_path: Path = Path("data/"),
    recipe: Path = Path("recipes/tiny_cpu.yaml"),
    out_dir: Path = Path("out/sweep"),
    tokenizer_dir: Path | None = None,
    eval_points: int = 5,
    val_tokens: int = 262144,
    eval_batch_size: int = 16,
    data_num_workers: int | None = 0,
    keep_checkpoints: bool = False,
    retry_failed: bool = True,
    results: str = "results.csv",
    launcher: Literal["local", "slurm"] = "local",
    workers: int = 1,
    threads: int | None = None,
    slurm: SlurmArgs = SlurmArgs(),
    status: Path | None = None,
) -> dict[str, int] | None:
    """Train one proxy per mixture with the stock ``litgpt pretrain`` loop and tabulate per-domain val losses.

    Arguments:
        mixtures: Mixtures CSV from ``regmix sample``: ``run_id`` then one ``weight/<domain>`` column per domain.
        data_path: Prepared corpus (the ``--out_dir`` of ``regmix prepare``).
        recipe: The proxy: a ``litgpt pretrain`` YAML (model_config, train, eval, optimizer, precision, seed);
            its ``data.init_args.weights``, ``out_dir`` and ``train.save_interval`` are set per run.
        out_dir: Sweep directory: set-up file, one record and log per run, results table.
        tokenizer_dir: Tokenizer the corpus was prepared with; default: the recipe's ``tokenizer_dir``.
        eval_points: Intermediate evaluation points, evenly spaced, scored besides the end of each run.
        val_tokens: Validation tokens scored per domain at every eval point (same tokens for every run).
        eval_batch_size: Blocks per forward pass when scoring.
        data_num_workers: DataLoader workers per run, replacing the recipe's ``data.init_args.num_workers``
            (tiny proxies load faster without worker processes); null keeps the recipe's.
        keep_checkpoints: Keep every run's litgpt out_dir (checkpoints, logs) under ``out_dir/runs/<run_id>/``.
        retry_failed: Re-run runs recorded as failed (``done`` runs are always skipped).
        results: File name of the results table inside ``out_dir`` (``.csv`` or ``.parquet``).
        launcher: ``local`` (worker processes on this machine) or ``slurm`` (a submitit array job).
        workers: Local worker processes, each training runs one after another; 0 trains in this process.
        threads: Torch threads per run; default: CPU cores // workers (local) or ``slurm.cpus_per_task``.
        slurm: Slurm settings for ``--launcher slurm``.
        status: Print the done/failed/pending counts and failure reasons of this sweep directory and exit.
    """
    if status is not None:
        return sweep_status(status)
    from regmix_plugin import sweep_worker

    plan = plan_sweep(mixtures, data_path, recipe, out_dir, tokenizer_dir, eval_points, val_tokens, eval_batch_size,
                      data_num_workers, keep_checkpoints)
    slurm = SlurmArgs(**slurm) if isinstance(slurm, dict) else slurm
    problems = []
    if workers < 0 or (threads is not None and threads < 1) or slurm.tasks < 1:
        problems.append("--workers must be >= 0, --threads >= 1 and --slurm.tasks >= 1")
    if not results.endswith((".csv", ".parquet")) or "/" in results:
        problems.append(f"--results {results!r} must be a file name ending in .csv or .parquet")
    if problems:
        raise ValueError("regmix sweep: " + "; ".join(problems))
    out_dir = Path(out_dir)
    check_setup(out_dir, plan)
    return sweep_worker.launch(out_dir, plan, launcher=launcher, workers=workers, threads=threads,
                               slurm=asdict(slurm), retry_failed=retry_failed, results=results)

