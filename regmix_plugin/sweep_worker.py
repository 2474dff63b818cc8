"""The sweep's workers and launchers: train one proxy, score its checkpoints, write its record.

A worker is one Python process that trains many runs with :func:`regmix_plugin.runner.run_pretrain` (the
stock loop, in-process), so imports and ``torch.compile`` are paid once per worker, not per run. Launchers:

* ``local``: ``workers`` processes from a ``spawn`` context (fresh interpreters: no forked torch state) fed
  from a queue; each sets ``torch.set_num_threads(threads)`` (default ``cores // workers``, because more busy
  threads than cores makes tiny-model steps hundreds of times slower) and, on GPUs, gets
  ``CUDA_VISIBLE_DEVICES`` = device ``i % n_gpus``. Workers die with the launcher (``PR_SET_PDEATHSIG``), so a
  ``kill -9`` of the sweep leaves no orphan writing records.
* ``slurm``: a submitit array job; task ``i`` trains pending runs ``i::tasks`` in order, skipping any that is
  already ``done``. With ``slurm.cluster: local`` submitit runs the same tasks as local processes.

Both launchers run the same :func:`run_one`; a run's numbers depend on its mixture, the recipe (seed
included) and the torch threads per run, not on which worker trains it or after how many other runs
(``tests/test_sweep.py`` checks that the submitit and local tables are identical). ``torch._dynamo`` is
reset every ``_RESET_EVERY`` runs so that a long-lived worker keeps compiling instead of piling up
recompilations of the model.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import shutil
import sys
import time
import traceback
from pathlib import Path

from regmix_plugin.atomic import write_json
from regmix_plugin.sweep import SETUP, read_records, record_path, write_table

_RESET_EVERY = 6  # dynamo recompiles per new model; past its cache limit runs slow down (measured 0.4 -> 0.8 s)
_state: dict = {"runs": 0, "blocks": {}}


# ------------------------------------------------------------------------------------------ worker set-up
def _cache_docstrings() -> None:
    """Memoise docstring parsing: jsonargparse re-reads and re-parses the source of every class on each
    ``litgpt pretrain`` parse (and again in ``save_checkpoint``), ~2.5 s of a ~3 s per-run overhead here.
    Docstrings only feed ``--help`` text, and an object's docstring cannot change within a process."""
    import docstring_parser

    if getattr(docstring_parser.parse_from_object, "_regmix_cached", False):
        return
    original, cache = docstring_parser.parse_from_object, {}

    def parse_from_object(obj, style=docstring_parser.DocstringStyle.AUTO):
        try:
            key = (obj, style)
            if key not in cache:
                cache[key] = original(obj, style=style)
            return cache[key]
        except TypeError:  # unhashable object
            return original(obj, style=style)

    parse_from_object._regmix_cached = True
    docstring_parser.parse_from_object = parse_from_object


def _reuse_hyperparameters() -> None:
    """Write ``hyperparameters.yaml`` once per run: litgpt's ``save_checkpoint`` re-parses the whole
    ``litgpt pretrain`` argv for every checkpoint (~0.3 s each, 6 per run at the default eval points), and the
    result depends only on the argv and the config file, which do not change within a run; later checkpoints
    of the run get a byte-identical copy."""
    import litgpt.pretrain as pretrain

    if getattr(pretrain.save_hyperparameters, "_regmix_cached", False):
        return
    original, last = pretrain.save_hyperparameters, {}

    def save_hyperparameters(function, checkpoint_dir, known_commands=None):
        argv = [a for a in sys.argv if a != "pretrain"]  # litgpt strips the subcommand from sys.argv in place
        config = argv[argv.index("--config") + 1] if "--config" in argv else None
        key = (function, tuple(argv), Path(config).read_bytes() if config else b"")
        previous = last.get("path")
        if last.get("key") == key and previous is not None and previous.is_file():
            shutil.copyfile(previous, Path(checkpoint_dir) / "hyperparameters.yaml")
            return
        original(function, checkpoint_dir, known_commands)
        last.update(key=key, path=Path(checkpoint_dir) / "hyperparameters.yaml")

    save_hyperparameters._regmix_cached = True
    pretrain.save_hyperparameters = save_hyperparameters


def setup_worker(threads: int) -> None:
    import torch

    os.environ["OMP_NUM_THREADS"] = str(threads)
    torch.set_num_threads(threads)
    _cache_docstrings()
    _reuse_hyperparameters()


def _die_with_parent() -> None:
    try:
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass  # not Linux: the worker notices the closed queue instead


@contextlib.contextmanager
def _redirect_output(log: Path):
    """Send this process's stdout/stderr (Python objects and file descriptors 1/2) to ``log``."""
    sys.stdout.flush(), sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(log, "a", buffering=1) as f:
        os.dup2(f.fileno(), 1), os.dup2(f.fileno(), 2)
        try:
            with contextlib.redirect_stdout(f), contextlib.redirect_stderr(f):
                yield
        finally:
            sys.stdout.flush(), sys.stderr.flush()
            os.dup2(saved[0], 1), os.dup2(saved[1], 2)
            os.close(saved[0]), os.close(saved[1])


# ---------------------------------------------------------------------------------------------- one run
def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _train_divergence(work: Path) -> str | None:
    """First non-finite train loss in the csv logger's metrics, if any."""
    import csv
    import math

    for metrics in sorted(work.glob("logs/**/metrics.csv")):
        with open(metrics, newline="") as f:
            for row in csv.DictReader(f):
                loss = row.get("loss") or ""
                if loss and not math.isfinite(float(loss)):
                    return f"diverged: train loss {loss} at step {row.get('step')}"
    return None


def _score(plan: dict, work: Path) -> list[dict]:
    from regmix_plugin.evaluate import check_tokenizer, domain_losses, load_model, val_blocks
    from regmix_plugin.manifest import read_manifest

    ev = plan["identity"]["eval"]
    key = (plan["data_path"], tuple(ev["domains"]), ev["seq_length"], ev["val_tokens"])
    if key not in _state["blocks"]:
        _state["blocks"] = {key: val_blocks(Path(plan["data_path"]), ev["domains"], ev["seq_length"], ev["val_tokens"])[0]}
    blocks = _state["blocks"][key]
    manifest = read_manifest(plan["data_path"])
    points = [(work / f"step-{s:08d}", s * plan["tokens_per_step"], False) for s in plan["eval_steps"]]
    points.append((work / "final", plan["final_tokens"], True))
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"  # the worker's own GPU (CUDA_VISIBLE_DEVICES)
    out = []
    for ckpt, tokens, final in points:
        check_tokenizer(ckpt, manifest, Path(plan["data_path"]))
        model = load_model(ckpt, device)
        model.max_seq_length = ev["seq_length"]
        out.append({"tokens": tokens, "final": final, "losses": domain_losses(model, blocks, ev["eval_batch_size"])})
    return out


def run_one(sweep_dir: Path, plan: dict, run_id: str, weights: dict[str, float]) -> dict:
    """Train, score and record one proxy; never raises for a failure of the run itself."""
    import copy
    import math

    import torch

    from regmix_plugin.runner import run_pretrain

    sweep_dir = Path(sweep_dir)
    work, log = sweep_dir / "runs" / run_id, sweep_dir / "runs" / f"{run_id}.log"
    shutil.rmtree(work, ignore_errors=True)  # left over by a run that was killed
    work.mkdir(parents=True)
    log.write_text("")
    config = copy.deepcopy(plan["config"])
    config["out_dir"] = str(work)
    config["data"]["init_args"]["weights"] = weights
    if _state["runs"] % _RESET_EVERY == 0:
        torch._dynamo.reset()
    _state["runs"] += 1
    t0 = time.perf_counter()
    error, losses = None, []
    with _redirect_output(log):
        try:
            run_pretrain(config)
            error = _train_divergence(work)
            if error is None:
                losses = _score(plan, work)
                bad = [(p["tokens"], d) for p in losses for d, v in p["losses"].items() if not math.isfinite(v)]
                if bad:
                    error = f"diverged: non-finite val loss on {bad[0][1]} at {bad[0][0]} tokens"
                    losses = []
        except (Exception, SystemExit) as e:
            traceback.print_exc()
            error = f"{type(e).__name__}: {e}".strip()[:2000]
            if "non-finite" in error:  # Fabric's gradient clipping refuses NaN/inf gradients: the run diverged
                error = "diverged: " + error
    record = {
        "run_id": run_id,
        "status": "failed" if error else "done",
        "mixture": weights,
        "losses": losses,
        "tokens": plan["final_tokens"] if not error else None,
        "wall_s": round(time.perf_counter() - t0, 3),
        "seed": plan["seed"],
        "setup_hash": plan["setup_hash"],
        "recipe_hash": plan["identity"]["recipe"],
        "manifest_hash": plan["identity"]["manifest"],
        "error": error,
        "log_tail": _tail(log) if error else None,
    }
    write_json(record_path(sweep_dir, run_id), record)
    if not plan["keep_checkpoints"]:
        shutil.rmtree(work, ignore_errors=True)
    return record


def work_through(sweep_dir: Path, items: list[tuple[str, dict]], threads: int) -> list[str]:
    """Train ``items`` in this process, skipping runs already done (the Slurm task body); returns statuses."""
    setup_worker(threads)
    plan = json.loads((Path(sweep_dir) / SETUP).read_text())
    out = []
    for run_id, weights in items:
        path = record_path(sweep_dir, run_id)
        if path.is_file() and json.loads(path.read_text())["status"] == "done":
            out.append("skipped")
            continue
        out.append(run_one(sweep_dir, plan, run_id, weights)["status"])
    return out


def _local_worker(sweep_dir: str, tasks, results, threads: int, wid: int) -> None:
    _die_with_parent()
    setup_worker(threads)
    plan = json.loads((Path(sweep_dir) / SETUP).read_text())
    while True:
        item = tasks.get()
        if item is None:
            return
        run_id, weights = item
        results.put(("start", wid, run_id))
        rec = run_one(Path(sweep_dir), plan, run_id, weights)
        results.put(("end", wid, run_id, rec["status"]))


# -------------------------------------------------------------------------------------------- launchers
class _Progress:
    """One bar for the whole sweep, and the table rebuilt after every finished run."""

    def __init__(self, sweep_dir: Path, order: list[str], results: str, skipped: int):
        from tqdm import tqdm

        self.sweep_dir, self.order, self.results = sweep_dir, order, sweep_dir / results
        self.records = read_records(sweep_dir)
        self.counts = {"done": 0, "failed": 0, "skipped": skipped}
        self.bar = tqdm(total=len(order), initial=skipped, desc="sweep", unit="run", dynamic_ncols=True)
        self._postfix()

    def _postfix(self) -> None:
        self.bar.set_postfix(done=self.counts["done"] + self.counts["skipped"], failed=self.counts["failed"])

    def finished(self, run_id: str) -> None:
        rec = json.loads(record_path(self.sweep_dir, run_id).read_text())
        self.records[run_id] = rec
        self.counts[rec["status"]] += 1
        self.bar.set_postfix(done=self.counts["done"] + self.counts["skipped"], failed=self.counts["failed"],
                             refresh=False)
        self.bar.update(1)
        write_table(self.results, self.order, self.records)

    def close(self) -> dict[str, int]:
        self.bar.close()
        write_table(self.results, self.order, self.records)
        return self.counts


def _launch_local(sweep_dir: Path, pending: list, workers: int, threads: int, progress: _Progress) -> None:
    import multiprocessing as mp

    if workers == 0:
        setup_worker(threads)
        plan = json.loads((sweep_dir / SETUP).read_text())
        for run_id, weights in pending:
            run_one(sweep_dir, plan, run_id, weights)
            progress.finished(run_id)
        return
    import torch

    gpus = torch.cuda.device_count()
    ctx = mp.get_context("spawn")
    tasks, results = ctx.Queue(), ctx.Queue()
    for item in pending:
        tasks.put(item)
    workers = min(workers, len(pending))
    for _ in range(workers):
        tasks.put(None)
    saved_env = dict(os.environ)
    procs = []
    try:
        os.environ["OMP_NUM_THREADS"] = str(threads)
        for wid in range(workers):
            if gpus:
                os.environ["CUDA_VISIBLE_DEVICES"] = str(wid % gpus)
            p = ctx.Process(target=_local_worker, args=(str(sweep_dir), tasks, results, threads, wid))
            p.start()
            procs.append(p)
    finally:
        os.environ.clear()
        os.environ.update(saved_env)
    in_flight: dict[int, str] = {}
    left = len(pending)
    try:
        while left:
            try:
                msg = results.get(timeout=2)
            except queue.Empty:
                for wid, p in enumerate(procs):
                    if p.exitcode is not None and wid in in_flight:  # died mid-run (OOM kill, segfault)
                        run_id = in_flight.pop(wid)
                        write_json(record_path(sweep_dir, run_id), {
                            "run_id": run_id, "status": "failed", "mixture": dict(pending)[run_id], "losses": [],
                            "error": f"worker process died (exit code {p.exitcode}) during this run",
                            "log_tail": _tail(sweep_dir / "runs" / f"{run_id}.log"),
                        })
                        progress.finished(run_id)
                        left -= 1
                if all(p.exitcode is not None for p in procs) and results.empty():
                    break
                continue
            if msg[0] == "start":
                in_flight[msg[1]] = msg[2]
            else:
                in_flight.pop(msg[1], None)
                progress.finished(msg[2])
                left -= 1
        for p in procs:
            p.join()
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()


def _launch_slurm(sweep_dir: Path, pending: list, slurm: dict, progress: _Progress) -> None:
    import submitit

    executor = submitit.AutoExecutor(folder=sweep_dir / "slurm" / "%j", cluster=slurm["cluster"])
    params = {"timeout_min": slurm["time_min"], "cpus_per_task": slurm["cpus_per_task"], "tasks_per_node": 1,
              "nodes": 1, "name": "regmix-sweep"}
    if slurm["gpus_per_task"]:
        params["gpus_per_node"] = slurm["gpus_per_task"]
    if slurm["mem_gb"]:
        params["mem_gb"] = slurm["mem_gb"]
    if slurm["partition"]:
        params["slurm_partition"] = slurm["partition"]
    if slurm["max_parallel"]:
        params["slurm_array_parallelism"] = slurm["max_parallel"]
    if slurm["additional"]:
        params["slurm_additional_parameters"] = slurm["additional"]
    executor.update_parameters(**params)
    tasks = min(slurm["tasks"], len(pending))
    slices = [pending[i::tasks] for i in range(tasks)]
    jobs = executor.map_array(work_through, [str(sweep_dir)] * tasks, slices, [slurm["cpus_per_task"]] * tasks)
    print(f"submitted {len(jobs)} task(s): {', '.join(j.job_id for j in jobs[:4])}{' ...' if len(jobs) > 4 else ''}")
    seen: set[str] = set()
    ids = {r for r, _ in pending}
    while True:
        finished = all(j.done() for j in jobs)
        for path in sorted((sweep_dir / "runs").glob("*.json")):
            if path.stem in ids and path.stem not in seen and path.stat().st_mtime >= progress.started:
                seen.add(path.stem)
                progress.finished(path.stem)
        if finished:
            break
        time.sleep(2)
    for job in jobs:
        try:
            job.result()
        except Exception as e:  # a task killed (time limit, node failure): its unfinished runs stay pending
            print(f"slurm task {job.job_id} ended early: {str(e).strip().splitlines()[-1][:300]}")


def launch(sweep_dir: Path, plan: dict, launcher: str, workers: int, threads: int | None, slurm: dict,
           retry_failed: bool, results: str) -> dict[str, int]:
    """Run every pending run of ``plan`` with the chosen launcher; print and return the summary counts."""
    records = read_records(sweep_dir)
    order = list(plan["mixtures"])
    if not plan["keep_checkpoints"]:  # a kill between a run's record and its clean-up leaves its out_dir
        for run_id in records:
            shutil.rmtree(sweep_dir / "runs" / run_id, ignore_errors=True)
    todo = [(r, w) for r, w in plan["mixtures"].items()
            if records.get(r, {}).get("status") != "done" and (retry_failed or r not in records)]
    skipped = len(order) - len(todo)
    progress = _Progress(sweep_dir, order, results, skipped)
    progress.started = time.time()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    try:
        if todo and launcher == "local":
            _launch_local(sweep_dir, todo, workers, threads or max(1, cores // max(1, workers)), progress)
        elif todo:
            _launch_slurm(sweep_dir, todo, slurm, progress)
    finally:
        counts = progress.close()
    records = read_records(sweep_dir)
    counts["pending"] = sum(1 for r in order if records.get(r, {}).get("status") not in ("done", "failed"))
    print(f"sweep {sweep_dir}: {counts['done']} done, {counts['failed']} failed, {counts['skipped']} skipped, "
          f"{counts['pending']} pending; table: {sweep_dir / results}")
    for r in order:
        if r in records and records[r]["status"] == "failed" and any(r == t for t, _ in todo):
            print(f"  failed {r}: {(records[r].get('error') or '').splitlines()[0][:200]}")
    return counts
