"""The sweep's launchers: run every pending run of a plan locally or on Slurm, with one progress bar.

* ``local``: ``workers`` processes from a ``spawn`` context (fresh interpreters: no forked torch state) fed
  from a queue; each sets ``torch.set_num_threads(threads)`` (default ``cores // workers``, because more busy
  threads than cores makes tiny-model steps hundreds of times slower) and, on GPUs, gets
  ``CUDA_VISIBLE_DEVICES`` = device ``i % n_gpus``. Workers die with the launcher, so a ``kill -9`` of the
  sweep leaves no orphan writing records.
* ``slurm``: a submitit array job; task ``i`` trains pending runs ``i::tasks`` in order, skipping any that is
  already ``done``. With ``slurm.cluster: local`` submitit runs the same tasks as local processes.

Both run the same :func:`regmix_plugin.sweep.worker.run_one`.
"""

from __future__ import annotations

import os
import queue
import shutil
import time
from pathlib import Path

from regmix_plugin.formats.sweep_records import (
    DONE,
    FAILED,
    log_path,
    read_record,
    read_records,
    write_record,
    write_table,
)
from regmix_plugin.sweep.plan import LocalArgs, SlurmArgs, SweepPlan
from regmix_plugin.sweep.worker import failed_record, local_worker, run_one, setup_worker, tail, work_through


class _Progress:
    """One bar for the whole sweep, and the table rebuilt after every finished run."""

    def __init__(self, sweep_dir: Path, order: list[str], results: str, skipped: int):
        from tqdm import tqdm

        self.sweep_dir, self.order, self.results = sweep_dir, order, sweep_dir / results
        self.records = read_records(sweep_dir)
        self.counts = {DONE: 0, FAILED: 0, "skipped": skipped}
        self.started = time.time()
        self.bar = tqdm(total=len(order), initial=skipped, desc="sweep", unit="run", dynamic_ncols=True)
        self._postfix()

    def _postfix(self, refresh: bool = True) -> None:
        self.bar.set_postfix(done=self.counts[DONE] + self.counts["skipped"], failed=self.counts[FAILED],
                             refresh=refresh)

    def finished(self, run_id: str) -> None:
        rec = read_record(self.sweep_dir, run_id)
        self.records[run_id] = rec
        self.counts[rec.status] += 1
        self._postfix(refresh=False)
        self.bar.update(1)
        write_table(self.results, self.order, self.records)

    def close(self) -> dict[str, int]:
        self.bar.close()
        write_table(self.results, self.order, self.records)
        return self.counts


def _launch_local(sweep_dir: Path, plan: SweepPlan, pending: list, workers: int, threads: int,
                  progress: _Progress) -> None:
    import multiprocessing as mp

    if workers == 0:
        setup_worker(threads)
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
            p = ctx.Process(target=local_worker, args=(str(sweep_dir), tasks, results, threads, wid))
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
                        log = log_path(sweep_dir, run_id)
                        write_record(sweep_dir, failed_record(
                            plan, run_id, dict(pending)[run_id],
                            f"worker process died (exit code {p.exitcode}) during this run; log: {log}", None,
                            tail(log)))
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


def _launch_slurm(sweep_dir: Path, pending: list, slurm: SlurmArgs, progress: _Progress) -> None:
    import submitit

    executor = submitit.AutoExecutor(folder=sweep_dir / "slurm" / "%j", cluster=slurm.cluster)
    params = {"timeout_min": slurm.time_min, "cpus_per_task": slurm.cpus_per_task, "tasks_per_node": 1,
              "nodes": 1, "name": "regmix-sweep"}
    optional = {"gpus_per_node": slurm.gpus_per_task, "mem_gb": slurm.mem_gb, "slurm_partition": slurm.partition,
                "slurm_array_parallelism": slurm.max_parallel, "slurm_additional_parameters": slurm.additional}
    params.update({k: v for k, v in optional.items() if v})
    executor.update_parameters(**params)
    tasks = min(slurm.tasks, len(pending))
    slices = [pending[i::tasks] for i in range(tasks)]
    jobs = executor.map_array(work_through, [str(sweep_dir)] * tasks, slices, [slurm.cpus_per_task] * tasks)
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


def launch(sweep_dir: Path, plan: SweepPlan, launcher: str, local: LocalArgs, slurm: SlurmArgs, retry_failed: bool,
           results: str) -> dict[str, int]:
    """Run every pending run of ``plan`` with the chosen launcher; print and return the summary counts."""
    records = read_records(sweep_dir)
    order = list(plan.mixtures)
    if not plan.keep_checkpoints:  # a kill between a run's record and its clean-up leaves its out_dir
        for run_id in records:
            shutil.rmtree(sweep_dir / "runs" / run_id, ignore_errors=True)
    todo = [(r, w) for r, w in plan.mixtures.items()
            if (r not in records or records[r].status != DONE) and (retry_failed or r not in records)]
    progress = _Progress(sweep_dir, order, results, len(order) - len(todo))
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    try:
        if todo and launcher == "local":
            threads = local.threads or max(1, cores // max(1, local.workers))
            _launch_local(sweep_dir, plan, todo, local.workers, threads, progress)
        elif todo:
            _launch_slurm(sweep_dir, todo, slurm, progress)
    finally:
        counts = progress.close()
    records = read_records(sweep_dir)
    counts["pending"] = sum(1 for r in order if r not in records)
    print(f"sweep {sweep_dir}: {counts[DONE]} done, {counts[FAILED]} failed, {counts['skipped']} skipped, "
          f"{counts['pending']} pending; table: {sweep_dir / results}")
    for r, _ in todo:
        if r in records and records[r].status == FAILED:
            print(f"  failed {r}: {records[r].first_error_line()[:200]}")
    return counts


