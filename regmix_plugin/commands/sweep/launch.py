"""The sweep's launchers: run every pending run of a plan locally or on Slurm, with one progress bar.

* ``local``: worker processes from a ``spawn`` context (fresh interpreters: no forked torch state) that ask
  for one run at a time; each sets ``torch.set_num_threads(threads)`` (default ``cores // workers``, because
  more busy threads than cores makes tiny-model steps hundreds of times slower) and, on GPUs, gets
  ``CUDA_VISIBLE_DEVICES`` = device ``i % n_gpus``. Workers die with the launcher, so a ``kill -9`` of the
  sweep leaves no orphan writing records. A worker that dies is replaced and its run retried once; a run
  that runs out of GPU memory goes back to the queue with one run fewer on that GPU.
* ``slurm``: a submitit array job; task ``i`` trains pending runs ``i::tasks`` in order, skipping any that is
  already ``done``. With ``slurm.cluster: local`` submitit runs the same tasks as local processes.

Launchers on one sweep directory cooperate through run claims (:mod:`regmix_plugin.formats.claims`): each run
is trained by whoever claims it first; a launcher that finds a run claimed elsewhere waits for its record, and
takes the run over if the claim goes stale. Both launchers run
:func:`regmix_plugin.commands.sweep.worker.run_claimed`.
"""

from __future__ import annotations

import math
import os
import queue
import shutil
import socket
import time
from collections import deque
from pathlib import Path

from regmix_plugin.commands.sweep.plan import LocalArgs, SlurmArgs, SweepPlan
from regmix_plugin.commands.sweep.worker import (
    BUSY,
    OOM,
    SKIPPED,
    failed_record,
    local_worker,
    run_claimed,
    setup_worker,
    tail,
    work_through,
)
from regmix_plugin.formats import claims
from regmix_plugin.formats.reuse import ReuseStructure
from regmix_plugin.formats.sweep_records import (
    DONE,
    FAILED,
    RunRecord,
    log_path,
    read_record,
    read_records,
    write_record,
    write_table,
)

_POLL_S = 2.0


class _Progress:
    """One bar for the whole sweep, and the table rebuilt after every finished run."""

    def __init__(
        self, sweep_dir: Path, order: list[str], results: str, skipped: int, reuse: ReuseStructure | None = None
    ):
        from tqdm import tqdm

        self.sweep_dir, self.order, self.results, self.reuse = sweep_dir, order, sweep_dir / results, reuse
        self.records = read_records(sweep_dir)
        self.counts = {DONE: 0, FAILED: 0, "skipped": skipped}
        self.started = time.time()
        self.bar = tqdm(total=len(order), initial=skipped, desc="sweep", unit="run", dynamic_ncols=True)
        self._postfix()

    def _postfix(self, refresh: bool = True) -> None:
        self.bar.set_postfix(
            done=self.counts[DONE] + self.counts["skipped"], failed=self.counts[FAILED], refresh=refresh
        )

    def finished(self, run_id: str, here: bool = True) -> None:
        """A run got its record: trained by this invocation (``here``) or by another launcher."""
        rec = read_record(self.sweep_dir, run_id)
        self.records[run_id] = rec
        self.counts[rec.status if here else "skipped"] += 1
        self._postfix(refresh=False)
        self.bar.update(1)
        write_table(self.results, self.order, self.records, self.reuse)

    def close(self) -> dict[str, int]:
        self.bar.close()
        write_table(self.results, self.order, self.records, self.reuse)
        return self.counts


class _Scheduler:
    """Which runs are left: the queue, runs claimed by another launcher, retries of dead workers and OOMs."""

    def __init__(self, sweep_dir: Path, plan: SweepPlan, pending: list, progress: _Progress, timeout: float):
        self.sweep_dir, self.plan, self.progress, self.timeout = sweep_dir, plan, progress, timeout
        self.queue = deque(pending)
        self.weights = dict(pending)
        self.waiting: set[str] = set()  # claimed by another launcher; we wait for its record
        self.retried: set[str] = set()  # runs whose worker died once already
        self.oom_alone: set[str] = set()  # runs that ran out of memory with one run on their device

    def outcome(self, run_id: str, outcome: str) -> None:
        if outcome == BUSY:
            self.waiting.add(run_id)
        elif outcome == SKIPPED:
            self.progress.finished(run_id, here=False)
        elif outcome != OOM:
            self.progress.finished(run_id)

    def again(self, run_id: str) -> None:
        self.queue.appendleft((run_id, self.weights[run_id]))

    def fail(self, run_id: str, error: str) -> None:
        log = log_path(self.sweep_dir, run_id)
        write_record(
            self.sweep_dir,
            failed_record(self.plan, run_id, self.weights[run_id], f"{error}; log: {log}", None, tail(log)),
        )
        self.progress.finished(run_id)

    def poll_waiting(self) -> None:
        """Runs claimed elsewhere: count them once recorded, take them back when their claim goes stale."""
        for run_id in sorted(self.waiting):
            record = read_record(self.sweep_dir, run_id)
            if record is not None and record.status == DONE:
                self.waiting.discard(run_id)
                self.progress.finished(run_id, here=False)
                continue
            held = claims.read_claim(self.sweep_dir, run_id)
            if held is None or claims.is_stale(*held, self.timeout):
                self.waiting.discard(run_id)
                self.again(run_id)

    def finished(self) -> bool:
        return not self.queue and not self.waiting


def _launch_in_process(sched: _Scheduler, threads: int, launcher: str) -> None:
    setup_worker(threads)
    while not sched.finished():
        if not sched.queue:
            time.sleep(_POLL_S)
            sched.poll_waiting()
            continue
        run_id, weights = sched.queue.popleft()
        outcome = run_claimed(sched.sweep_dir, sched.plan, run_id, weights, launcher, sched.timeout)
        if outcome == OOM:  # nothing runs beside it here, so there is no concurrency to give back
            if run_id in sched.oom_alone:
                sched.fail(run_id, "out of GPU memory with no other run on the device: lower train.micro_batch_size")
                continue
            sched.oom_alone.add(run_id)
            sched.again(run_id)
            continue
        sched.outcome(run_id, outcome)


def _launch_local(sched: _Scheduler, workers: int, threads: int, launcher: str) -> None:
    import multiprocessing as mp

    import torch

    gpus = torch.cuda.device_count()
    ctx = mp.get_context("spawn")
    tasks, results = ctx.Queue(), ctx.Queue()
    procs: dict[int, object] = {}
    device: dict[int, int] = {}

    def start(wid: int, gpu: int) -> None:
        saved_env = dict(os.environ)
        try:
            os.environ["OMP_NUM_THREADS"] = str(threads)
            if gpus:
                os.environ["CUDA_VISIBLE_DEVICES"] = str(gpu)
            p = ctx.Process(
                target=local_worker, args=(str(sched.sweep_dir), tasks, results, threads, wid, launcher, sched.timeout)
            )
            p.start()
        finally:
            os.environ.clear()
            os.environ.update(saved_env)
        procs[wid], device[wid] = p, gpu

    for wid in range(min(workers, len(sched.queue))):
        start(wid, wid % max(1, gpus))
    next_wid = len(procs)
    in_flight: dict[int, str] = {}
    idle = sent = 0  # workers waiting for a run; runs sent that no worker has taken yet
    try:
        while True:
            while idle and sched.queue:
                tasks.put(sched.queue.popleft())
                idle, sent = idle - 1, sent + 1
            if sched.finished() and not in_flight and not sent:
                break
            try:
                msg = results.get(timeout=_POLL_S)
            except queue.Empty:
                sched.poll_waiting()
                for wid, p in list(procs.items()):
                    if p.exitcode is None:
                        continue
                    del procs[wid]
                    run_id = in_flight.pop(wid, None)
                    if run_id is not None:  # died mid-run (killed for memory, segfault): retry once
                        if run_id in sched.retried:
                            sched.fail(run_id, f"worker process died twice during this run (exit code {p.exitcode})")
                        else:
                            print(
                                f"worker {wid} died (exit code {p.exitcode}) during {run_id}; log: "
                                f"{log_path(sched.sweep_dir, run_id)}; retrying it in a new worker",
                                flush=True,
                            )
                            sched.retried.add(run_id)
                            sched.again(run_id)
                    if not sched.finished() and (run_id is not None or p.exitcode != 0):
                        start(next_wid, device[wid])
                        next_wid += 1
                if not procs:
                    break
                continue
            if msg[0] == "ready":
                idle += 1
            elif msg[0] == "took":
                in_flight[msg[1]] = msg[2]
                sent -= 1
            else:
                _, wid, run_id, outcome = msg
                in_flight.pop(wid, None)
                if outcome == OOM:
                    # the worker exits: one run fewer on its GPU; the last one on a GPU is replaced once
                    procs.pop(wid).join()
                    same_device = [w for w in procs if device[w] == device[wid]]
                    if not same_device:
                        if run_id in sched.oom_alone:
                            sched.fail(
                                run_id, "out of GPU memory with no other run on the GPU: lower train.micro_batch_size"
                            )
                            start(next_wid, device[wid])
                            next_wid += 1
                            continue
                        sched.oom_alone.add(run_id)
                        start(next_wid, device[wid])
                        next_wid += 1
                    print(
                        f"{run_id} ran out of GPU memory; re-queued with {max(1, len(same_device))} run(s) on "
                        f"GPU {device[wid]}",
                        flush=True,
                    )
                    sched.again(run_id)
                    continue
                sched.outcome(run_id, outcome)
        for _ in procs:
            tasks.put(None)
        for p in procs.values():
            p.join()
    finally:
        for p in procs.values():
            if p.is_alive():
                p.kill()


def _launch_slurm(sched: _Scheduler, slurm: SlurmArgs, launcher: str) -> None:
    import submitit

    sweep_dir, pending = sched.sweep_dir, list(sched.queue)
    executor = submitit.AutoExecutor(folder=sweep_dir / "slurm" / "%j", cluster=slurm.cluster)
    params = {
        "timeout_min": slurm.time_min,
        "cpus_per_task": slurm.cpus_per_task,
        "tasks_per_node": 1,
        "nodes": 1,
        "name": "regmix-sweep",
    }
    optional = {
        "gpus_per_node": slurm.gpus_per_task,
        "mem_gb": slurm.mem_gb,
        "slurm_partition": slurm.partition,
        "slurm_array_parallelism": slurm.max_parallel,
        "slurm_additional_parameters": slurm.additional,
    }
    params.update({k: v for k, v in optional.items() if v})
    executor.update_parameters(**params)
    tasks = min(slurm.tasks, len(pending))
    slices = [pending[i::tasks] for i in range(tasks)]
    jobs = executor.map_array(
        work_through,
        [str(sweep_dir)] * tasks,
        slices,
        [slurm.cpus_per_task] * tasks,
        [launcher] * tasks,
        [sched.timeout] * tasks,
    )
    print(f"submitted {len(jobs)} task(s): {', '.join(j.job_id for j in jobs[:4])}{' ...' if len(jobs) > 4 else ''}")
    seen: set[str] = set()
    ids = {r for r, _ in pending}
    while True:
        finished = all(j.done() for j in jobs)
        for path in sorted((sweep_dir / "runs").glob("*.json")):
            if path.stem in ids and path.stem not in seen and path.stat().st_mtime >= sched.progress.started:
                seen.add(path.stem)
                sched.progress.finished(path.stem)
        if finished:
            break
        time.sleep(_POLL_S)
    for job in jobs:
        try:
            job.result()
        except Exception as e:  # a task killed (time limit, node failure): its unfinished runs stay pending
            print(f"slurm task {job.job_id} ended early: {str(e).strip().splitlines()[-1][:300]}")


def launch(
    sweep_dir: Path,
    plan: SweepPlan,
    launcher: str,
    local: LocalArgs,
    slurm: SlurmArgs,
    retry_failed: bool,
    results: str,
    claim_timeout: float = claims.DEFAULT_TIMEOUT,
) -> dict[str, int]:
    """Run every pending run of ``plan`` with the chosen launcher; print and return the summary counts.

    Counts: ``done``/``failed`` trained by this invocation, ``skipped`` done before it or by another launcher,
    ``pending`` left without a record.
    """
    records = read_records(sweep_dir)
    order = list(plan.mixtures)
    if not plan.keep_checkpoints:  # a kill between a run's record and its clean-up leaves its out_dir (and claim)
        for run_id, rec in records.items():
            held = claims.read_claim(sweep_dir, run_id)
            if held is not None and rec.status == DONE and claims.is_stale(*held, claim_timeout):
                claims.claim_path(sweep_dir, run_id).unlink(missing_ok=True)
                held = None
            if held is None:
                shutil.rmtree(sweep_dir / "runs" / run_id, ignore_errors=True)
    todo = [
        (r, w)
        for r, w in plan.mixtures.items()
        if (r not in records or records[r].status != DONE) and (retry_failed or r not in records)
    ]
    reuse = None
    if plan.reuse is not None:  # the mixtures file's block, carried into results.csv for `regmix fit`
        domains = sorted(next(iter(plan.mixtures.values())))
        reuse = ReuseStructure.from_dict(plan.reuse, domains, f"{sweep_dir / 'sweep.json'} reuse")
    progress = _Progress(sweep_dir, order, results, len(order) - len(todo), reuse)
    sched = _Scheduler(sweep_dir, plan, todo, progress, claim_timeout)
    me = f"{socket.gethostname()}:{os.getpid()}"
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    workers = local.resolved_workers()
    try:
        if todo and launcher == "local" and workers == 0:
            _launch_in_process(sched, local.threads or cores, me)
        elif todo and launcher == "local":
            _launch_local(sched, workers, local.threads or max(1, cores // workers), me)
        elif todo:
            _launch_slurm(sched, slurm, me)
    finally:
        counts = progress.close()
    records = read_records(sweep_dir)
    counts["pending"] = sum(1 for r in order if r not in records)
    _summary(sweep_dir, results, order, records, counts, {r for r, _ in todo})
    return counts


def _summary(
    sweep_dir: Path, results: str, order: list[str], records: dict[str, RunRecord], counts: dict, attempted: set[str]
) -> None:
    print(
        f"sweep {sweep_dir}: {counts[DONE]} done, {counts[FAILED]} failed, {counts['skipped']} skipped, "
        f"{counts['pending']} pending; table: {sweep_dir / results}"
    )
    finals = {}
    for r in order:
        rec = records.get(r)
        if rec is not None and rec.status == DONE:
            final = next((p["losses"] for p in rec.losses if p["final"]), {})
            if final:
                finals[r] = final
    if finals:
        domain = sorted(next(iter(finals.values())))[0]
        by_loss = sorted((v[domain], r) for r, v in finals.items() if math.isfinite(v.get(domain, math.nan)))
        if by_loss:
            (best, best_id), (worst, worst_id) = by_loss[0], by_loss[-1]
            print(
                f"  val_loss/{domain} over {len(by_loss)} done runs: best {best_id} {best:.4f}, worst {worst_id} "
                f"{worst:.4f}, range {worst - best:.4f}"
            )
    for r in order:
        if r in attempted and r in records and records[r].status == FAILED:
            print(f"  failed {r}: {records[r].first_error_line()[:200]}")
