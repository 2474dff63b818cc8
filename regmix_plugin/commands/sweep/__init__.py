"""``regmix sweep``: train one small LitGPT proxy per mixture, resumably, and keep a results table.

    regmix sample --data_path data/tiny --n 64 --out mixtures.csv
    regmix sweep --mixtures mixtures.csv --data_path data/tiny --recipe recipes/tiny_cpu.yaml --out_dir out/sweep
    regmix status out/sweep                              # counts and failure reasons; runs nothing
    regmix sweep --config sweep.yaml --launcher slurm --slurm.partition gpu --slurm.tasks 32
    regmix sweep ... --local.workers 4 --eval.points 5

Every mixture is one run of the stock ``litgpt pretrain`` loop (``recipe`` with ``data.init_args.weights``
replaced), run in a reused worker process (:mod:`regmix_plugin.commands.sweep.worker`). Layout of ``out_dir``::

    sweep.json            # the set-up identity (hashes of recipe, manifest, tokenizer, eval settings) + plan
    runs/<run_id>.json    # one record per finished run, written atomically: status done|failed, mixture,
                          # losses per eval point, tokens, wall_s, seed, hashes, error and log tail
    runs/<run_id>.log     # that run's stdout/stderr
    runs/<run_id>/        # the run's litgpt out_dir while it trains; deleted after (unless --keep_checkpoints)
    results.csv           # the results table (regmix_plugin.formats.results), rebuilt from the records

Eval points: the loop saves a checkpoint every ``train.save_interval`` steps, set to
``steps // (eval.points + 1)``; checkpoints ``k * interval`` for ``k = 1..eval.points`` and the final one are
scored per domain with :func:`regmix_plugin.pretrain.scoring.domain_losses` (a fixed ``eval.val_tokens`` budget per
domain), then deleted. A run whose train or eval loss is NaN/inf is recorded as failed (diverged).

A re-run with the same set-up skips ``done`` records and re-does everything else; a different recipe,
corpus, tokenizer or eval setting under the same ``out_dir`` is refused. Records are the only state, so a
``kill -9`` loses at most the runs in flight, and the table is rebuilt whole from the records each time.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Literal

from regmix_plugin.commands.sweep.active import ActiveArgs, active_loop
from regmix_plugin.commands.sweep.plan import EvalArgs, LocalArgs, SlurmArgs, SweepPlan, check_setup, plan_sweep
from regmix_plugin.errors import deprecated
from regmix_plugin.formats import claims
from regmix_plugin.formats.sweep_records import DONE, FAILED, read_records
from regmix_plugin.pretrain.fused_loss import check_mode


def sweep_status(sweep: Path, claim_timeout: float = claims.DEFAULT_TIMEOUT) -> dict[str, int]:
    """Print a sweep's done/failed/pending counts, failure reasons and who is training what; runs nothing.

        regmix status out/sweep

    Arguments:
        sweep: A `regmix sweep` output directory (its ``--out_dir``).
        claim_timeout: Seconds without a heartbeat after which a launcher's claim on a run is shown as stale.
    """
    out_dir = sweep
    plan = SweepPlan.load(out_dir, flag="--sweep")
    records = read_records(out_dir)
    counts = {s: sum(1 for r in plan.run_ids if r in records and records[r].status == s) for s in (DONE, FAILED)}
    counts["pending"] = len(plan.run_ids) - counts[DONE] - counts[FAILED]
    print(
        f"{out_dir}: {len(plan.run_ids)} runs: {counts[DONE]} done, {counts[FAILED]} failed, "
        f"{counts['pending']} pending"
    )
    for r in plan.run_ids:
        if r in records and records[r].status == FAILED:
            print(f"  {r}: {records[r].first_error_line()}")
    done = [records[r] for r in plan.run_ids if r in records and records[r].status == DONE]
    rates = sorted(rec.tokens_per_s for rec in done if rec.tokens_per_s)
    if rates:
        peaks = [rec.peak_memory_bytes for rec in done if rec.peak_memory_bytes is not None]
        devices = sorted({rec.device for rec in done if rec.device})
        print(
            f"  usage over {len(rates)} done runs: {', '.join(devices)}; tokens/s median "
            f"{rates[len(rates) // 2]:,.0f} (min {rates[0]:,.0f}, max {rates[-1]:,.0f})"
            + (f"; peak GPU memory max {max(peaks) / 2**30:.1f} GiB" if peaks else "")
        )
        for rec in done[-3:]:
            print(f"  {rec.run_id}: {rec.usage_line()}")
    now = time.time()
    for r, (claim, beat) in claims.read_claims(out_dir).items():
        state = "stale, will be taken over" if claims.is_stale(claim, beat, claim_timeout, now) else "training"
        print(f"  claimed {r}: {claim.describe(now, beat)} ({state})")
    return counts


def sweep(
    mixtures: Path = Path("mixtures.csv"),
    data_path: Path = Path("data/"),
    recipe: Path = Path("recipes/tiny_cpu.yaml"),
    out_dir: Path = Path("out/sweep"),
    tokenizer_dir: Path | None = None,
    eval: EvalArgs = EvalArgs(),
    data_num_workers: int | None = 0,
    keep_checkpoints: bool = False,
    retry_failed: bool = True,
    results: str = "results.csv",
    launcher: Literal["local", "slurm"] = "local",
    local: LocalArgs = LocalArgs(),
    slurm: SlurmArgs = SlurmArgs(),
    claim_timeout: float = claims.DEFAULT_TIMEOUT,
    status: Path | None = None,
    fused_loss: Literal["auto", "on", "off"] = "auto",
    compile: Literal["auto", "on", "off"] = "auto",
    active: bool = False,
    loop: ActiveArgs = ActiveArgs(),
) -> dict[str, int] | None:
    """Train one proxy per mixture with the stock ``litgpt pretrain`` loop and tabulate per-domain val losses.

    Arguments:
        mixtures: Mixtures CSV from ``regmix sample``: ``run_id`` then one ``weight/<domain>`` column per domain.
        data_path: Prepared corpus (the ``--out_dir`` of ``regmix prepare``).
        recipe: The proxy: a ``litgpt pretrain`` YAML (model_config, train, eval, optimizer, precision, seed);
            its ``data.init_args.weights``, ``out_dir`` and ``train.save_interval`` are set per run.
        out_dir: Sweep directory: set-up file, one record and log per run, results table.
        tokenizer_dir: Tokenizer the corpus was prepared with; default: the recipe's ``tokenizer_dir``.
        eval: How each proxy is scored: eval points, validation tokens per domain, batch size.
        data_num_workers: DataLoader workers per run, replacing the recipe's ``data.init_args.num_workers``
            (tiny proxies load faster without worker processes); null keeps the recipe's.
        keep_checkpoints: Keep every run's litgpt out_dir (checkpoints, logs) under ``out_dir/runs/<run_id>/``.
        retry_failed: Re-run runs recorded as failed (``done`` runs are always skipped).
        results: File name of the results table inside ``out_dir`` (``.csv`` or ``.parquet``).
        launcher: ``local`` (worker processes on this machine) or ``slurm`` (a submitit array job).
        local: Worker processes and threads for ``--launcher local``.
        slurm: Slurm settings for ``--launcher slurm``.
        claim_timeout: Seconds without a heartbeat after which another launcher's claim on a run is stale and
            the run is trained here instead. Several launchers (on one machine or on several sharing the
            directory) may work on one sweep at once: each run is trained by whoever claims it first.
        status: Deprecated (goes in the next release): use ``regmix status DIR``, which prints the same.
        fused_loss: Compute each proxy's loss from its hidden states with a fused linear cross-entropy kernel
            (``pip install 'regmix-plugin[gpu]'``) instead of materialising the logits: ``auto`` = on where a
            run has CUDA and the kernel, ``on`` = required, ``off`` = LitGPT's plain loss. Checkpoints and the
            target run are unaffected.
        compile: ``torch.compile`` each proxy, as ``litgpt pretrain`` always does (``on``), or train it eagerly
            (``off``); ``auto`` = on where a run has CUDA, off on CPU, where compiling costs ~15 s per worker
            that short proxies rarely earn back (`bench/sweep_overhead.py`; long CPU proxies with small batches
            run faster with ``on``). The target run is unaffected.
        active: Run the active loop (:mod:`regmix_plugin.commands.sweep.active`): draw ``--loop.initial`` random
            mixtures into ``--mixtures`` (unless it exists), train them, then each round fit, propose
            ``--loop.batch`` more, append them to ``--mixtures`` and train them, until ``--loop.budget`` runs or
            the optimum stops moving.
        loop: The active loop's settings (with ``--active``).
    """
    if status is not None:
        deprecated("regmix sweep --status DIR", "regmix status DIR")
        return sweep_status(status, claim_timeout)
    from regmix_plugin.commands.sweep.launch import launch

    eval, local, slurm = (
        cls(**v) if isinstance(v, dict) else v for cls, v in ((EvalArgs, eval), (LocalArgs, local), (SlurmArgs, slurm))
    )
    problems = []
    fused_problem = check_mode(fused_loss, need_cuda=launcher == "local")  # a Slurm job's GPUs are not here
    if fused_problem:
        problems.append(fused_problem)
    if compile not in ("auto", "on", "off"):
        problems.append(f"--compile must be one of auto, on, off, got {compile!r}")
    if (
        (local.workers != "auto" and int(local.workers) < 0)
        or (local.threads is not None and local.threads < 1)
        or slurm.tasks < 1
    ):
        problems.append("--local.workers must be >= 0 or auto, --local.threads >= 1 and --slurm.tasks >= 1")
    if claim_timeout <= 0:
        problems.append(f"--claim_timeout must be > 0 seconds, got {claim_timeout}")
    if not results.endswith((".csv", ".parquet")) or "/" in results:
        problems.append(f"--results {results!r} must be a file name ending in .csv or .parquet")
    if active:
        loop = ActiveArgs(**loop) if isinstance(loop, dict) else loop
        problems += loop.problems()
        if results != "results.csv":
            problems.append("--active fits on the sweep's results.csv: leave --results at its default")
    if problems:
        raise ValueError("regmix sweep: " + "; ".join(problems))
    out_dir = Path(out_dir)

    def train() -> dict[str, int]:
        plan = plan_sweep(
            mixtures,
            data_path,
            recipe,
            out_dir,
            tokenizer_dir,
            eval,
            data_num_workers,
            keep_checkpoints,
            fused_loss,
            compile,
        )
        return launch(
            out_dir,
            check_setup(out_dir, plan),
            launcher=launcher,
            local=local,
            slurm=slurm,
            retry_failed=retry_failed,
            results=results,
            claim_timeout=claim_timeout,
        )

    if active:
        return active_loop(Path(mixtures), Path(data_path), out_dir, loop, train)
    return train()
