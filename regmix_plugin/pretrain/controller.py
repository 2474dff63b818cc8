"""Online RegMix-D inside the stock ``litgpt pretrain`` loop: the next stage's mixture from the run's own losses.

A recipe that runs as written on the README's tiny corpus (``data/tiny``) is ``recipes/demo/regmixd_online.yaml``;
its header has the whole sequence (staged proxies, ``regmix fit_trajectory --features losses``, the run)::

    regmix fit_trajectory --sweep out/tiny_sweep --target val_loss/prose --features losses --out out/tiny_trajectory
    litgpt pretrain --config recipes/demo/regmixd_online.yaml
    regmix inspect out/tiny_online/final          # per stage: requested and realised weights, stream faults

The part of such a recipe that makes it online::

    data:
      class_path: regmix_plugin.MixtureData
      init_args:
        data_path: data/tiny
        max_tokens: 122880                         # repeat train.max_tokens: it places the switches
        schedule:                                  # switch points; stage 0's weights; the offline fallback
        - {until_fraction: 0.3333, weights: {code: 0.5, prose: 0.5}}
        - {until_fraction: 0.6667, weights: {code: 0.5, prose: 0.5}}
        - {weights: {code: 0.5, prose: 0.5}}
        callbacks:
        - class_path: regmix_plugin.RegMixDController
          init_args: {model: out/tiny_trajectory, out_dir: out/tiny_online}   # out_dir: repeat the recipe's

Why this design. The stock loop exposes no per-domain loss and hands the data module no model, and the
mixture is drawn in the dataloader workers, ahead of training (prefetching). So:

* **What it observes**: the newest checkpoint ``out_dir/step-*`` the loop has saved, scored per domain with
  the same code as ``regmix evaluate`` (fixed val blocks, same tokenizer check). Set ``train.save_interval``
  so a checkpoint falls shortly before every switch point.
* **When it decides**: in the main process, just before the loop fetches batch ``switch - lag``, where
  ``switch`` is the first batch holding a sample of the new stage and ``lag`` (default: what the workers
  may prefetch, ``num_workers * prefetch_factor``) keeps workers from waiting. Deciding before the switch
  batch is what makes a deadlock impossible: the decision never needs a batch of the new stage.
* **How workers learn it**: the decision is written atomically to ``out_dir/regmixd/stage-<k>.json``; a
  stream entering stage k reads it (waiting if it is not there yet) and blends the new weights exactly
  from that sample on. Same file, same sample index, for every worker and rank: switch batches and stage
  ends come from one :class:`~regmix_plugin.layout.StreamLayout`, and every rank takes rank 0's run id.
* **A decision too late**: a stream that waited ``wait_timeout_s`` in vain keeps its mixture and records it
  next to the decision (``out_dir/regmixd/fault-stage-<k>-rank-<r>-worker-<w>.json``) and in its own state's
  ``stage_log``, so every checkpoint says what each stream trained; ``regmix inspect`` prints it.
* **What is kept**: every decision (batch, checkpoint scored, observed losses, weights, prediction, fault)
  goes to ``out_dir/decisions.jsonl`` and into the ``train_dataloader`` state of every later checkpoint; a
  resumed run replays the recorded decisions and never recomputes them. ``regmix inspect`` shows the
  stages as actually trained (the state's ``stages`` hold the decided weights; ``planned_stages`` the plan).
* **Faults**: no checkpoint, a missing or unreadable model, NaN losses: the stage keeps the mixture in force,
  one warning names the cause, and the run goes on. A long run never dies because of its controller.

At a switch into stage k (spanning run fractions ``[a, b]``) it takes the observed losses as the state at
``a``, simulates candidate mixtures over ``[a, b]`` with the trajectory model (Dirichlet around the mixture
in force blended half-and-half with uniform, only domains the run has opened, within each domain's epoch
allowance left for the rest of the run), averages the top-k and smooths toward the mixture in force.
"""

from __future__ import annotations

import json
import math
import os
import time
import uuid
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from regmix_plugin.formats.regmixd_run import DECISIONS, FAULT_FILE, STAGE_DIR, latest_checkpoint, read_decisions
from regmix_plugin.pretrain.control_plan import ControlPlan
from regmix_plugin.pretrain.stream import MixtureCallback, MixtureLoader, MixtureStream, StreamState

if TYPE_CHECKING:
    from regmix_plugin.models.trajectory import TrajectoryModel
    from regmix_plugin.pretrain.mixture_data import MixtureData


class RegMixDController(MixtureCallback):
    """Picks each stage's mixture during training from the run's observed per-domain losses (online RegMix-D)."""

    def __init__(
        self,
        model: str,
        out_dir: str,
        lag: int | None = None,
        val_tokens: int = 16384,
        eval_batch_size: int = 16,
        n_candidates: int = 20_000,
        top_k: int = 64,
        smoothing: float = 0.2,
        seed: int = 0,
        wait_timeout_s: float = 1800.0,
        objective: str = "joint",
        pessimism: float = 1.0,
    ):
        """
        Arguments:
            model: Trajectory model directory (``regmix fit_trajectory``; ``losses`` features to use the observations).
            out_dir: The run's ``out_dir`` (where the loop saves ``step-*`` checkpoints); repeat the recipe's.
            lag: Batches between the decision and the switch; default: what the workers may prefetch.
            val_tokens: Tokens scored per domain at each switch (as ``regmix evaluate --val_tokens``).
            eval_batch_size: Blocks per forward pass when scoring.
            n_candidates: Candidate mixtures simulated per switch.
            top_k: The stage's mixture is the mean of the best ``top_k`` candidates.
            smoothing: Weight of the mixture in force in the next stage's mixture.
            seed: Seed of the candidates (switch k draws with ``seed + k``).
            wait_timeout_s: Longest a data stream waits for a decision before it keeps its mixture and records a
                fault (``out_dir/regmixd/fault-*.json``, shown by ``regmix inspect``). A decision is made ``lag``
                batches ahead, so a stream waits not at all, or (on a rank other than 0, which is stalled in its
                next all-reduce anyway) as long as deciding takes: 0.45 s measured at the defaults on the tests'
                tiny model, 1.7-2.2 s in the 2-rank test. Deciding scores the checkpoint on the CPU, which for a
                1.1B model at the default val_tokens over 17 domains (~6e14 FLOP, plus loading ~13 GB of weights
                and optimizer state) is est. 10-20 min. A timeout that fires early makes every other rank train
                the old mixture; one that fires late only costs time when the decision cannot come at all (rank
                0 stuck, ``out_dir`` not shared between nodes). Hence 1800 s: ~2x the 1B estimate, half the
                hour it was.
            objective: ``joint`` (the remaining stages searched together for the predicted target at the run's
                end; this stage is their first; no smoothing) or ``greedy`` (best predicted target at the end of
                this stage), as ``regmix schedule --search.objective``.
            pessimism: Rank candidates by the prediction plus this many stds of the model's fold models, as
                ``regmix schedule --search.pessimism``.
        """
        if objective not in ("greedy", "joint"):
            raise ValueError(f"RegMixDController objective must be greedy or joint, got {objective!r}")
        if not (pessimism >= 0 and math.isfinite(pessimism)):
            raise ValueError(f"RegMixDController pessimism must be a finite number >= 0, got {pessimism}")
        super().__init__(interval=None)  # never called per sample: the controller acts at stage switches
        self.model, self.out_dir, self.lag = model, out_dir, lag
        self.val_tokens, self.eval_batch_size = val_tokens, eval_batch_size
        self.n_candidates, self.top_k, self.smoothing, self.seed = n_candidates, top_k, smoothing, seed
        self.wait_timeout_s = wait_timeout_s
        self.objective, self.pessimism = objective, pessimism
        _warn_if_open_loop(model)
        self.run_id: str | None = None
        self.decisions: dict[int, dict] = {}
        self._restored = False
        self.plan: ControlPlan | None = None
        """The run's stages, set by :meth:`begin` (or by whoever calls :meth:`decide` outside a run)."""
        self._blocks = None

    # ----------------------------------------------------------------------------------- worker side
    def stage_file(self, k: int) -> Path:
        return Path(self.out_dir) / STAGE_DIR / f"stage-{k}.json"

    def await_decision(self, k: int) -> tuple[dict[str, float] | None, float]:
        """``(weights of stage k as decided by rank 0, seconds waited)``; weights ``None`` if no decision came
        within ``wait_timeout_s``, ``{}`` if the decision was to keep the mixture in force (a controller fault)."""
        start = time.monotonic()
        while True:
            try:
                rec = json.loads(self.stage_file(k).read_text())
                if rec.get("run") == self.run_id:
                    return dict(rec.get("weights") or {}), time.monotonic() - start
            except (OSError, json.JSONDecodeError):
                pass
            waited = time.monotonic() - start
            if waited > self.wait_timeout_s:
                return None, waited
            time.sleep(0.02)

    def record_fault(self, fault: dict) -> Path:
        """Write a stream's fault next to the stage's decision: ``regmixd/fault-stage-<k>-rank-<r>-worker-<w>.json``
        (one file per stream and stage, written atomically: streams live in separate processes and ranks)."""
        from regmix_plugin.atomic import write_json

        path = self.stage_file(0).parent / FAULT_FILE.format(**fault)
        write_json(path, {"run": self.run_id, **fault})
        return path

    # ------------------------------------------------------------------------------------- main side
    def begin(self, loader: ControlledLoader) -> None:
        """Before the workers start: a run id (new, or the checkpoint's) and the decisions to replay."""
        ds = loader.dataset
        if self.run_id is None:
            self.run_id = _shared_run_id(ds.distributed_env.world_size)
        if self._restored:  # decisions made after the checkpoint was written are in decisions.jsonl
            for rec in read_decisions(Path(self.out_dir) / DECISIONS):
                if rec.get("run") == self.run_id:
                    self.decisions.setdefault(int(rec["stage"]), rec)
        budget = loader._budget
        if budget is None:
            raise ValueError("RegMixDController needs --data.max_tokens (the run's budget) to place its switches")
        layout = loader.data.layout(ds.distributed_env.world_size)  # the data module's own stage-end arithmetic
        total = layout.stream_samples(budget)
        lag = self.lag if self.lag is not None else loader.num_workers * (loader.prefetch_factor or 0)
        ends = [st.end for st in ds.stages[:-1]]
        switch = [layout.switch_batch(e) for e in ends]  # rank batches: the same index on every rank
        self.plan = ControlPlan(
            bounds=(0.0, *(e / total for e in ends), 1.0),
            stage_samples=tuple(e - s for s, e in zip([0, *ends], [*ends, total], strict=True)),
            per_epoch={d: layout.blocks_per_stream(src.num_blocks) for d, src in ds.sources.items()},
            max_epochs=ds.max_epochs,
            planned=tuple(dict(st.weights) for st in ds.stages),
            decide_at=tuple(max(0, s - lag) for s in switch),
            rank=ds.distributed_env.global_rank,
        )
        for rec in self.decisions.values():
            self._publish(rec)

    def before_batch(self, index: int, data: MixtureData) -> None:
        """Make (or replay) every decision due by batch ``index``; runs in the main process of each rank."""
        for k, at in enumerate(self.plan.decide_at, start=1):
            if at <= index and k not in self.decisions:
                if self.plan.rank != 0:
                    continue  # rank 0 decides; the other ranks' streams read its files
                rec = self._decide(k, index, data)
                self.decisions[k] = rec
                self._publish(rec)
                with open(Path(self.out_dir) / DECISIONS, "a") as f:
                    f.write(json.dumps(rec) + "\n")
                    f.flush()
                    os.fsync(f.fileno())

    def _publish(self, rec: dict) -> None:
        from regmix_plugin.atomic import write_json

        path = self.stage_file(rec["stage"])
        try:
            if json.loads(path.read_text()) == rec:
                return
        except (OSError, json.JSONDecodeError):
            pass
        write_json(path, rec)

    def in_force(self, k: int) -> dict[str, float]:
        """The weights stage ``k - 1`` trained on (decided, or planned for stage 0 / a stage not decided)."""
        weights = dict(self.plan.planned[0])
        for j in range(1, k):
            rec = self.decisions.get(j)
            if rec is not None and rec.get("weights"):
                weights = dict(rec["weights"])
        return weights

    def _decide(self, k: int, index: int, data: MixtureData) -> dict:
        a, b = self.plan.bounds[k], self.plan.bounds[k + 1]
        current = self.in_force(k)
        rec = {
            "run": self.run_id,
            "stage": k,
            "decided_at_batch": index,
            "fraction": [a, b],
            "checkpoint": None,
            "observed": None,
            "weights": None,
            "predicted_target": None,
            "fault": None,
        }
        try:
            rec.update(self._search(k, index, data))
        except Exception as e:  # noqa: BLE001 -- any fault keeps the mixture in force: the run must not die here
            rec["fault"] = f"{type(e).__name__}: {e}"
            warnings.warn(
                f"RegMixDController: stage {k} keeps the current mixture {_fmt(current)} because the "
                f"controller could not decide: {rec['fault']}",
                stacklevel=2,
            )
        return rec

    def _search(self, k: int, index: int, data: MixtureData) -> dict:
        """Score the newest checkpoint per domain, then :meth:`decide` stage ``k`` from those losses."""
        from regmix_plugin.formats.trajectory_model import load_trajectory_model
        from regmix_plugin.pretrain.scoring import domain_losses, load_checkpoint, val_blocks
        from regmix_plugin.tokenizer import check_tokenizer

        traj = load_trajectory_model(self.model, flag="RegMixDController model")
        ckpt = latest_checkpoint(Path(self.out_dir), index)
        if ckpt is None:
            raise FileNotFoundError(
                f"no checkpoint step-* at or before batch {index} in {self.out_dir}; set "
                "train.save_interval so one is saved before each switch"
            )
        # Inside `litgpt pretrain` the checkpoint is this run's: its architecture is the run's config and its
        # tokenizer was checked against the corpus at set-up. So neither comes from the checkpoint's copies,
        # which litgpt writes after the weights: a run killed in between leaves weights `resume: auto` loads
        # next to an empty model_config.yaml, and the resumed run must score them as the uninterrupted run did.
        context = data.run_context
        if context is None or context.tokenizer_dir is None:
            check_tokenizer(ckpt, data.manifest.tokenizer_hash, "checkpoint", str(data.data_path))
        model = load_checkpoint(ckpt, config=None if context is None else context.config)
        if self._blocks is None:
            self._blocks = val_blocks(data.data_path, traj.loss_domains, model.config.block_size, self.val_tokens)[0]
        missing = [d for d in traj.loss_domains if d not in self._blocks]
        if missing:
            raise ValueError(f"the trajectory model's domains {missing} have no val data in {data.data_path}")
        observed = domain_losses(model, self._blocks, self.eval_batch_size)
        return {"checkpoint": ckpt.name, **self.decide(k, observed, traj)}

    def decide(self, k: int, observed: Mapping[str, float], traj: TrajectoryModel) -> dict:
        """Stage ``k``'s mixture from the per-domain losses ``observed`` at its start: what a switch does once the
        checkpoint is scored, with no checkpoint needed (the RegMix-D ground truth calls it too).

        Needs :attr:`plan` and the decisions of stages ``1..k-1`` in :attr:`decisions` (the mixture in force).
        Returns the decision's ``observed``, ``weights``, ``predicted_target`` and ``top_k_mean``.
        """
        from regmix_plugin.models.schedule_search import SearchArgs, best_remaining_schedule, best_stage_mixture

        observed = {d: float(v) for d, v in observed.items()}
        bad = {d: v for d, v in observed.items() if not math.isfinite(v)}
        if bad:
            raise ValueError(f"non-finite observed losses {bad}")
        plan = self.plan
        a, b = plan.bounds[k], plan.bounds[k + 1]
        current = self.in_force(k)
        domains = traj.weight_domains
        if traj.features == "losses":
            state = np.array([observed[d] for d in traj.loss_domains])
        else:
            state = self._mean_mixture(k, domains, a) if a > 0 else np.zeros(len(domains))
        opened = set(plan.per_epoch)
        cur = np.array([current.get(d, 0.0) for d in domains])
        active = np.array([d in opened for d in domains], float)
        prior = 0.5 * cur + 0.5 * active / active.sum()
        search = SearchArgs(
            self.n_candidates,
            self.top_k,
            self.smoothing,
            seed=self.seed,
            objective=self.objective,
            pessimism=self.pessimism,
        )
        if self.objective == "joint":
            left = plan.allowance(k, domains, self.in_force, of_run=True)
            mixes, top = best_remaining_schedule(
                traj, plan.bounds[k:], state, prior, np.zeros(len(domains)), active.copy(), left, search, k
            )
            mix = mixes[0]
        else:
            upper = active * plan.allowance(k, domains, self.in_force)
            mix, top = best_stage_mixture(traj, a, b, state, prior, np.zeros(len(domains)), upper, search, k, cur)
        losses, _ = traj.advance(a, b, mix[None], np.atleast_2d(state))
        return {
            "observed": observed,
            "weights": {d: float(f"{w:.10g}") for d, w in zip(domains, mix, strict=True) if w > 0 or d in opened},
            "predicted_target": float(traj.predict_target(losses)[0]),
            "top_k_mean": float(top.mean()),
        }

    def _mean_mixture(self, k: int, domains: list[str], a: float) -> np.ndarray:
        acc = np.zeros(len(domains))
        for j in range(k):
            w = self.in_force(j + 1)
            span = self.plan.bounds[j + 1] - self.plan.bounds[j]
            acc += span * np.array([w.get(d, 0.0) for d in domains])
        return acc / a

    def loader(self, stream: MixtureStream, data: MixtureData, **kwargs) -> ControlledLoader:
        """Called by ``MixtureData.train_dataloader`` with the run's stream (whose controller this is): the loader
        that gives this controller each batch index first and saves its decisions."""
        if len(data.stages) < 2:
            raise ValueError(
                "RegMixDController needs a --data.schedule with at least two stages: its until_fraction "
                "entries are the switch points, its first stage's weights the mixture to start from"
            )
        return ControlledLoader(stream, data, **kwargs)

    def enter_stage(self, stream: MixtureStream, state: StreamState) -> None:
        """A stream begins stage ``state.stage`` (>= 1): it takes rank 0's decision, or keeps its mixture and
        records why (in the worker)."""
        current = dict(state.weights(stream.stages))
        # the mixture in force carries on unless a decision replaces it (a decision's own fault keeps it too)
        state.stage_samples, state.override = {}, current
        k = state.stage
        decided, waited = self.await_decision(k)
        fault = None
        if decided is None:
            fault = f"no decision after {waited:.1f} s (wait_timeout_s {self.wait_timeout_s:g})"
        elif decided:
            clean = stream.validate_weights(decided) if stream.validate_weights else decided
            unopened = [d for d, w in clean.items() if w > 0 and d not in stream.sources]
            if unopened:
                fault = f"the decision gives weight to domain(s) {unopened} this stream did not open"
            else:
                state.override = clean
        if fault is not None:
            rank, worker = stream.distributed_env.global_rank, stream.stream_index()[2]
            path = self.record_fault(
                {
                    "stage": k,
                    "rank": rank,
                    "worker": worker,
                    "stream": state.stream,
                    "start": state.position,
                    "reason": fault,
                    "waited_s": round(waited, 3),
                    "trained": current,
                }
            )
            warnings.warn(
                f"RegMixDController: stage {k}: data stream rank {rank} worker {worker} keeps its mixture "
                f"{_fmt(current)}: {fault}; recorded in {path}",
                stacklevel=2,
            )
        stream.log_stage(state, waited_s=round(waited, 3), fault=fault)

    def state_dict(self) -> dict:
        return {"run": self.run_id, "decisions": [self.decisions[k] for k in sorted(self.decisions)]}

    def load_state_dict(self, state: dict) -> None:
        self.run_id = state.get("run")
        self.decisions = {int(r["stage"]): r for r in state.get("decisions", [])}
        self._restored = True


def _fmt(w: dict) -> str:
    return "{" + ", ".join(f"{d}: {v:.3f}" for d, v in w.items()) + "}"


def _shared_run_id(world_size: int) -> str:
    """A new run id, rank 0's on every rank: streams accept only decision files of their own run, and every
    rank's streams read rank 0's (a collective: every rank's loader begins at the same step)."""
    run_id = uuid.uuid4().hex
    import torch.distributed as dist

    if world_size > 1 and dist.is_available() and dist.is_initialized():
        box = [run_id]
        dist.broadcast_object_list(box, src=0)
        run_id = box[0]
    return run_id


def _warn_if_open_loop(model: str) -> None:
    """Say at construction when ``model`` cannot use what the controller observes (``mixtures`` features).

    A warning, not a refusal: such a model still gives a valid schedule (the offline search's, re-run at every
    switch), the model is read again at each switch (it may be refitted meanwhile), and a long run never dies
    because of its controller. A model not there yet is a fault at the switch, as before.
    """
    from regmix_plugin.formats.trajectory_model import TRAJECTORY_FILE

    try:
        features = json.loads((Path(model) / TRAJECTORY_FILE).read_text()).get("features")
    except (OSError, json.JSONDecodeError, AttributeError):
        return
    if features == "mixtures":
        warnings.warn(
            f"RegMixDController: the trajectory model {model!r} has `mixtures` features: it ignores the losses the "
            "controller observes, so every switch repeats the offline schedule search. Refit it with `regmix "
            f"fit_trajectory --features losses --out {model}` to steer by the run's own losses",
            stacklevel=3,
        )


# ------------------------------------------------------------------------------------------------ loader
class ControlledLoader(MixtureLoader):
    """A MixtureLoader that gives the stream's controller each batch index first and saves its decisions."""

    def __init__(self, dataset: MixtureStream, data: MixtureData, **kwargs):
        super().__init__(dataset, **kwargs)
        self.data = data

    def __iter__(self):
        ctl = self.dataset.controller
        ctl.begin(self)
        index = self._consumed()
        inner = super().__iter__()
        while True:
            ctl.before_batch(index, self.data)
            try:
                batch = next(inner)
            except StopIteration:
                return
            index += 1
            yield batch

    def state_dict(self) -> dict:
        out = super().state_dict()
        ctl = self.dataset.controller
        out["planned_stages"] = out["stages"]
        out["stages"] = [dict(st) for st in out["stages"]]
        for k, rec in ctl.decisions.items():
            out["stages"][k]["weights"] = dict(rec["weights"] or ctl.in_force(k))
        out["regmixd"] = ctl.state_dict()
        return out

    def load_state_dict(self, state_dict: dict) -> None:
        super().load_state_dict(state_dict)
        if "regmixd" in state_dict:
            self.dataset.controller.load_state_dict(state_dict["regmixd"])
