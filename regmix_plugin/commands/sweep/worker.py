"""One sweep run: train a proxy with the stock loop in this process, score its checkpoints, write its record.

A worker is one Python process that trains many runs with :func:`regmix_plugin.litgpt_compat.run_pretrain`
(the stock loop, in-process), so imports and ``torch.compile`` are paid once per worker, not per run. A run's
numbers depend on its mixture, the recipe (seed included) and the torch threads per run, not on which worker
trains it or after how many other runs (``tests/test_sweep.py`` checks that the submitit and local tables are
identical). ``torch._dynamo`` is reset every ``_RESET_EVERY`` runs so that a long-lived worker keeps
compiling instead of piling up recompilations of the model.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
import os
import shutil
import sys
import time
import traceback
from pathlib import Path

from regmix_plugin.commands.sweep.plan import SweepPlan
from regmix_plugin.formats import claims
from regmix_plugin.formats.mixture_table import RunSpec, split_run
from regmix_plugin.formats.sweep_records import DONE, FAILED, RunRecord, log_path, read_record, write_record

#: What a worker reports for a run besides its record's status: trained elsewhere, or out of GPU memory.
SKIPPED, BUSY, OOM = "skipped", "busy", "oom"
#: Test-only hook: a file ``<sweep>/<this name>.<run_id>`` makes the next attempt of that run raise the error
#: torch raises for CUDA out-of-memory (then the file is removed), so the re-queue path runs for real on CPU.
TEST_OOM_FILE = ".test-oom"

_RESET_EVERY = 6  # dynamo recompiles per new model; past its cache limit runs slow down (measured 0.4 -> 0.8 s)
_state: dict = {"runs": 0, "blocks": {}}


def setup_worker(threads: int) -> None:
    """Pin this process's threads and install the in-process caches (once per worker process)."""
    import torch

    from regmix_plugin.litgpt_compat import install_worker_caches

    os.environ["OMP_NUM_THREADS"] = str(threads)
    torch.set_num_threads(threads)
    install_worker_caches()


def die_with_parent() -> None:
    """Have the kernel kill this process when its parent dies, so a ``kill -9`` of the sweep leaves no orphan."""
    try:
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass  # not Linux: the worker notices the closed queue instead


def _flush() -> None:
    sys.stdout.flush()
    sys.stderr.flush()


@contextlib.contextmanager
def _redirect_output(log: Path):
    """Send this process's stdout/stderr (Python objects and file descriptors 1/2) to ``log``."""
    _flush()
    saved = [os.dup(1), os.dup(2)]
    with open(log, "a", buffering=1) as f:
        for fd in (1, 2):
            os.dup2(f.fileno(), fd)
        try:
            with contextlib.redirect_stdout(f), contextlib.redirect_stderr(f):
                yield
        finally:
            _flush()
            for fd, copy_of in zip((1, 2), saved, strict=True):
                os.dup2(copy_of, fd)
                os.close(copy_of)


def tail(path: Path, lines: int = 40) -> str:
    """The last ``lines`` lines of a run's log (for failure records)."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _train_divergence(work: Path) -> str | None:
    """First non-finite train loss in the csv logger's metrics, if any."""
    import csv

    for metrics in sorted(work.glob("logs/**/metrics.csv")):
        with open(metrics, newline="") as f:
            for row in csv.DictReader(f):
                loss = row.get("loss") or ""
                if loss and not math.isfinite(float(loss)):
                    return f"diverged: train loss {loss} at step {row.get('step')}"
    return None


def _score(plan: SweepPlan, work: Path) -> list[dict]:
    import torch

    from regmix_plugin.formats.manifest import read_manifest
    from regmix_plugin.pretrain.scoring import domain_losses, load_checkpoint, val_blocks
    from regmix_plugin.tokenizer import check_tokenizer

    ev = plan.eval
    key = (plan.data_path, tuple(ev.domains), ev.seq_length, ev.val_tokens)
    if key not in _state["blocks"]:
        _state["blocks"] = {key: val_blocks(Path(plan.data_path), ev.domains, ev.seq_length, ev.val_tokens)[0]}
    blocks = _state["blocks"][key]
    manifest = read_manifest(plan.data_path)
    points = [(work / f"step-{s:08d}", s * plan.tokens_per_step, False) for s in plan.eval_steps]
    points.append((work / "final", plan.final_tokens, True))
    device = "cuda" if torch.cuda.is_available() else "cpu"  # the worker's own GPU (CUDA_VISIBLE_DEVICES)
    out = []
    for ckpt, tokens, final in points:
        check_tokenizer(ckpt, manifest.tokenizer_hash, "checkpoint", f"--data_path {plan.data_path!r}")
        model = load_checkpoint(ckpt, device)
        model.max_seq_length = ev.seq_length
        out.append(
            {
                "tokens": tokens,
                "final": final,
                "losses": domain_losses(model, blocks, ev.eval_batch_size, plan.fused_loss),
            }
        )
    return out


def run_record(plan: SweepPlan, run_id: str, spec: RunSpec, status: str, wall_s: float | None, **fields) -> RunRecord:
    """A run's record: its mixture or schedule and the sweep's identity (seed, setup, recipe and corpus hashes)."""
    weights, schedule = split_run(spec)
    return RunRecord(
        run_id=run_id,
        status=status,
        mixture=weights,
        schedule=schedule,
        wall_s=wall_s,
        seed=plan.seed,
        setup_hash=plan.setup_hash,
        recipe_hash=plan.identity["recipe"],
        manifest_hash=plan.identity["manifest"],
        **fields,
    )


def failed_record(plan: SweepPlan, run_id: str, spec: RunSpec, error: str, wall_s: float | None, log: str) -> RunRecord:
    """The record of a run that did not finish (the one place a failure is recorded)."""
    return run_record(plan, run_id, spec, FAILED, wall_s, error=error, log_tail=log)


def _is_out_of_memory(error: BaseException) -> bool:
    import torch

    return isinstance(error, torch.cuda.OutOfMemoryError) or "CUDA out of memory" in str(error)


def run_one(sweep_dir: Path, plan: SweepPlan, run_id: str, spec: RunSpec) -> RunRecord | None:
    """Train, score and record one proxy (static weights, or stages through MixtureData's ``schedule:``); never
    raises for a failure of the run itself.

    Returns the record written, or None when the run ran out of GPU memory: that is the launcher's
    concurrency, not the mixture's fault, so nothing is recorded and the launcher re-queues the run.
    """
    import torch

    from regmix_plugin.commands.sweep import measure
    from regmix_plugin.litgpt_compat import eager_pretrain, run_pretrain
    from regmix_plugin.pretrain import fused_loss

    sweep_dir = Path(sweep_dir)
    work, log = sweep_dir / "runs" / run_id, log_path(sweep_dir, run_id)
    shutil.rmtree(work, ignore_errors=True)  # left over by a run that was killed
    work.mkdir(parents=True)
    log.write_text("")
    config = copy.deepcopy(plan.config)
    config["out_dir"] = str(work)
    weights, schedule = split_run(spec)
    config["data"]["init_args"].update(weights=None if schedule else weights, schedule=schedule)
    if _state["runs"] % _RESET_EVERY == 0:
        torch._dynamo.reset()
    _state["runs"] += 1
    t0 = time.perf_counter()
    error, losses, loss_kernel = None, [], None
    compiled = plan.compile == "on" or (plan.compile == "auto" and torch.cuda.is_available())
    measure.start()
    with _redirect_output(log):
        try:
            oom_hook = sweep_dir / f"{TEST_OOM_FILE}.{run_id}"
            if oom_hook.exists():
                oom_hook.unlink()
                raise torch.cuda.OutOfMemoryError("CUDA out of memory (raised by the test hook)")
            path = fused_loss.resolve(plan.fused_loss, "cuda" if torch.cuda.is_available() else "cpu")
            with fused_loss.pretrain_context(path, config.get("precision")) as fused, eager_pretrain(not compiled):
                run_pretrain(config)
            loss_kernel = path if fused is None or fused.used else fused_loss.PLAIN
            error = _train_divergence(work)
            if error is None:
                losses = _score(plan, work)
                bad = [(p["tokens"], d) for p in losses for d, v in p["losses"].items() if not math.isfinite(v)]
                if bad:
                    error = f"diverged: non-finite val loss on {bad[0][1]} at {bad[0][0]} tokens"
                    losses = []
        except (Exception, SystemExit) as e:
            traceback.print_exc()
            if _is_out_of_memory(e):
                shutil.rmtree(work, ignore_errors=True)
                return None
            error = f"{type(e).__name__}: {e}".strip()[:2000]
            if "non-finite" in error:  # Fabric's gradient clipping refuses NaN/inf gradients: the run diverged
                error = "diverged: " + error
    wall_s = round(time.perf_counter() - t0, 3)
    if error:
        record = failed_record(plan, run_id, spec, error, wall_s, tail(log))
    else:
        record = run_record(plan, run_id, spec, DONE, wall_s, losses=losses, tokens=plan.final_tokens)
    record = dataclasses.replace(record, loss_kernel=loss_kernel, compiled=compiled, **vars(measure.finish(work)))
    write_record(sweep_dir, record)
    if not plan.keep_checkpoints:
        shutil.rmtree(work, ignore_errors=True)
    return record


def run_claimed(sweep_dir: Path, plan: SweepPlan, run_id: str, weights: RunSpec, launcher: str, timeout: float) -> str:
    """Claim, train and record one run unless another launcher has it or it is done; returns what happened.

    ``done``/``failed`` (the record's status), ``skipped`` (already done), ``busy`` (a live claim elsewhere)
    or ``oom`` (out of GPU memory; nothing recorded, the claim released for a retry).
    """
    if not claims.try_claim(sweep_dir, run_id, launcher, timeout):
        return BUSY
    try:
        done = read_record(sweep_dir, run_id)  # finished by another launcher between our plan and our claim
        if done is not None and done.status == DONE:
            return SKIPPED
        with claims.heartbeat(sweep_dir, run_id, timeout):
            record = run_one(sweep_dir, plan, run_id, weights)
        return OOM if record is None else record.status
    finally:
        claims.release(sweep_dir, run_id)


def work_through(
    sweep_dir: Path,
    items: list[tuple[str, dict]],
    threads: int,
    launcher: str = "slurm",
    timeout: float = claims.DEFAULT_TIMEOUT,
) -> list[str]:
    """Train ``items`` in this process, skipping runs done or claimed elsewhere (the Slurm task body)."""
    setup_worker(threads)
    plan = SweepPlan.load(sweep_dir)
    return [run_claimed(sweep_dir, plan, run_id, weights, launcher, timeout) for run_id, weights in items]


def local_worker(sweep_dir: str, tasks, results, threads: int, wid: int, launcher: str, timeout: float) -> None:
    """Body of one ``--launcher local`` worker process: ask for a run, train it, report, until told to stop."""
    die_with_parent()
    setup_worker(threads)
    plan = SweepPlan.load(Path(sweep_dir))
    while True:
        results.put(("ready", wid))
        item = tasks.get()
        if item is None:
            return
        run_id, weights = item
        results.put(("took", wid, run_id))
        outcome = run_claimed(Path(sweep_dir), plan, run_id, weights, launcher, timeout)
        results.put(("end", wid, run_id, outcome))
        if outcome == OOM:
            return  # one run fewer on this GPU: the launcher re-queues the run
