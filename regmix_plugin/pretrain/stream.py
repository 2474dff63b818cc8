"""The weighted multi-domain token stream behind ``MixtureData``: deterministic, exact, resumable.

Each (rank, dataloader-worker) pair runs one *stream*. A stream picks the domain of every sample by
largest deficit (Megatron-style blending): sample ``n`` of a stage comes from the domain with the largest
``w_d * (n + 1) - count_d``, so at every prefix each domain's count is within one sample of
``w_d * samples``. Each domain is read from the stream's own disjoint share of its blocks and cycles on
its own: running out starts the domain's next epoch, reshuffled, and touches no other domain.

A stream's whole state is a few integers per domain (:class:`StreamState`). Where the stream is in every
domain follows from the per-domain sample counts, because each epoch's order is a seeded function of
``(seed, domain, epoch)``; that makes resuming an O(1) seek instead of a replay.
"""

from __future__ import annotations

import math
import warnings
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from regmix_plugin.formats.token_chunks import TokenSource
from regmix_plugin.layout import DEFAULT_MAX_EPOCHS, epoch_allowance

STATE_VERSION = 1


def domain_key(name: str) -> int:
    """A stable integer per domain name: shuffles do not change when other domains are added."""
    return zlib.crc32(name.encode())


class EpochOrder:
    """The order in which one stream visits its share of a domain's blocks, epoch by epoch.

    An epoch shuffles the domain's chunks, then the blocks inside each chunk (litdata's two-level shuffle:
    memory stays O(chunks + blocks per chunk)); position ``p`` of that order belongs to stream
    ``p % num_streams``. Every stream therefore gets ``num_blocks // num_streams`` blocks per epoch, disjoint
    from every other stream's, and a new subset and order each epoch.
    """

    def __init__(self, source: TokenSource, seed: int, domain: str, stream: int, num_streams: int):
        self.source, self.seed, self.key = source, seed, domain_key(domain)
        self.stream, self.num_streams = stream, num_streams
        self.per_epoch = source.num_blocks // num_streams
        self._epoch = -1
        self._cached_chunk: tuple[int, np.ndarray] | None = None

    def _set_epoch(self, epoch: int) -> None:
        rng = np.random.default_rng([self.seed, self.key, epoch])
        self._chunk_order = rng.permutation(len(self.source.chunk_blocks))
        self._ends = np.cumsum(self.source.chunk_blocks[self._chunk_order])
        self._epoch, self._cached_chunk = epoch, None

    def locate(self, count: int) -> tuple[int, int, int]:
        """``(epoch, chunk, block)`` of the stream's ``count``-th sample from this domain (0-based)."""
        epoch, k = divmod(count, self.per_epoch)
        if epoch != self._epoch:
            self._set_epoch(epoch)
        p = k * self.num_streams + self.stream
        slot = int(np.searchsorted(self._ends, p, side="right"))
        chunk = int(self._chunk_order[slot])
        local = p - (int(self._ends[slot - 1]) if slot else 0)
        if self._cached_chunk is None or self._cached_chunk[0] != chunk:
            rng = np.random.default_rng([self.seed, self.key, epoch, chunk])
            self._cached_chunk = (chunk, rng.permutation(int(self.source.chunk_blocks[chunk])))
        return epoch, chunk, int(self._cached_chunk[1][local])


# ---------------------------------------------------------------------------------------- schedule
@dataclass
class Stage:
    """Weights in force until stream-local sample ``end`` (exclusive); ``None`` means until the end."""

    weights: dict[str, float]
    end: int | None


@dataclass
class StreamState:
    """Everything needed to continue one stream exactly; saved in every LitGPT checkpoint.

    ``samples[d]`` counts samples the stream has taken from domain ``d`` since the start of training;
    ``stage_samples[d]`` counts them since the current stage began (blending is exact within a stage).
    ``override`` holds weights set by a :class:`MixtureCallback`, in force until the next scheduled stage.
    ``stage_log`` has one entry per stage the stream entered, written as it entered it and never changed:
    ``{stage, start, samples, weights, ...}``: the stream sample it began at, ``samples`` at that point (a
    stage's own counts are the difference to the next entry's), the weights it blended with (after any
    controller decision) and what the controller adds (``waited_s``, ``fault``). Checkpoints from before the
    log existed load with an empty one.
    """

    stream: int = 0
    num_streams: int = 1
    position: int = 0
    stage: int = 0
    samples: dict[str, int] = field(default_factory=dict)
    stage_samples: dict[str, int] = field(default_factory=dict)
    epochs: dict[str, int] = field(default_factory=dict)
    override: dict[str, float] | None = None
    version: int = STATE_VERSION
    stage_log: list[dict] = field(default_factory=list)

    def snapshot(self) -> dict:
        """A plain-dict copy (cheaper than ``dataclasses.asdict``, which runs for every batch)."""
        out = dict(self.__dict__)
        for key in ("samples", "stage_samples", "epochs"):
            out[key] = dict(out[key])
        if self.override is not None:
            out["override"] = dict(self.override)
        out["stage_log"] = list(self.stage_log)  # entries are never mutated: sharing them is safe and O(stages)
        return out

    def weights(self, stages: Sequence[Stage]) -> dict[str, float]:
        return self.override if self.override is not None else stages[self.stage].weights


class StageController(Protocol):
    """What a stream hands each new stage to, when it has a controller (``RegMixDController``)."""

    def enter_stage(self, stream: MixtureStream, state: StreamState) -> None:
        """Begin ``state.stage`` at the current position: reset the stage's counts, set its weights, log it."""


class MixtureCallback:
    """Hook called by every stream each ``interval`` samples; it may record or change the mixture.

    Subclass it and list it under ``--data.callbacks`` (jsonargparse ``class_path``). ``on_advance`` runs in
    the dataloader worker with that stream's :class:`StreamState` and the weights in force; returning a
    ``{domain: weight}`` mapping switches the stream to those weights from the next sample on (a new blending
    stage: exact proportions hold within it). The switch is part of the saved state, so it survives resume.
    For reproducible runs, make the decision a function of the state (as RegMix-D schedules are); weights
    computed online from losses can be passed in through a file the callback reads. ``interval=None``: never
    called per sample (a callback that acts elsewhere, as :class:`~regmix_plugin.pretrain.controller.RegMixDController`
    at stage switches).
    """

    def __init__(self, interval: int | None = 1000):
        if interval is not None and interval < 1:
            raise ValueError(
                f"{type(self).__name__} interval must be a positive number of samples or None, got {interval}"
            )
        self.interval = interval

    def on_advance(self, state: StreamState, weights: Mapping[str, float]) -> Mapping[str, float] | None:
        return None


# ----------------------------------------------------------------------------------------- streams
class MixtureStream(IterableDataset):
    """Infinite stream of ``[batch_size, block_size]`` token batches blended from several domains.

    Yields ``(batch, state)`` pairs; :class:`MixtureLoader` strips the state and keeps the latest one per
    worker for checkpoints. A ``controller`` (:class:`StageController`) takes over each stage after the first
    as it begins (RegMix-D decides its weights while training runs). Rank and world size come from litdata's
    distributed env captured at construction (tests set ``distributed_env`` to simulate ranks), workers from
    torch's worker info.
    """

    def __init__(
        self,
        sources: Mapping[str, TokenSource],
        stages: Sequence[Stage],
        batch_size: int,
        seed: int = 42,
        max_epochs: float = DEFAULT_MAX_EPOCHS,
        on_epoch_limit: str = "error",
        callbacks: Sequence[MixtureCallback] = (),
        validate_weights=None,
        controller: StageController | None = None,
    ):
        from regmix_plugin.litgpt_compat import distributed_env

        self.sources = dict(sources)
        self.stages = list(stages)
        self.batch_size = batch_size
        self.seed = seed
        self.max_epochs = max_epochs
        self.on_epoch_limit = on_epoch_limit
        self.callbacks = list(callbacks)
        self.validate_weights = validate_weights
        self.controller = controller
        self.distributed_env = distributed_env()
        self.resume_states: dict[int, dict] | None = None

    def stream_index(self) -> tuple[int, int, int]:
        """``(stream, num_streams, worker)`` of the calling process."""
        info = get_worker_info()
        workers, worker = (info.num_workers, info.id) if info is not None else (1, 0)
        env = self.distributed_env
        return env.global_rank * workers + worker, env.world_size * workers, worker

    def __iter__(self):
        stream, num_streams, worker = self.stream_index()
        if self.resume_states is not None and worker in self.resume_states:
            state = StreamState(**self.resume_states[worker])
            if state.num_streams != num_streams:
                raise ValueError(
                    f"the checkpoint's data stream was split over {state.num_streams} rank x worker streams, this "
                    f"run uses {num_streams}; resume with the same --devices and --data.num_workers"
                )
            state.stream = stream  # a checkpoint with rank 0's streams only: ranks are symmetric unless one faulted
        else:
            state = StreamState(stream=stream, num_streams=num_streams)
        yield from self._generate(state)

    def _generate(self, state: StreamState):
        names = sorted(self.sources)
        orders = {d: EpochOrder(self.sources[d], self.seed, d, state.stream, state.num_streams) for d in names}
        for d in names:
            if orders[d].per_epoch == 0 and any(s.weights.get(d, 0) > 0 for s in self.stages):
                src = self.sources[d]
                raise ValueError(
                    f"domain {d!r} has {src.num_blocks} blocks of {src.block_size} tokens, fewer than the "
                    f"{state.num_streams} rank x worker streams that must share it; lower --data.num_workers "
                    "or prepare more data for it"
                )
        block = next(iter(self.sources.values())).block_size
        # Batches keep the stored dtype (uint16 for vocabularies < 65536): 4x less to pass from workers than
        # int64; LitGPT's loop calls .long() on every batch anyway.
        dtype = np.result_type(*(s.dtype for s in self.sources.values()))
        warned: set[str] = set()
        if state.position == 0 and not state.stage_log:
            self.log_stage(state)
        while True:
            batch = np.empty((self.batch_size, block), dtype=dtype)
            for row in range(self.batch_size):
                self._advance_stage(state)
                d = self._pick(state)
                count = state.samples.get(d, 0)
                epoch, chunk, j = orders[d].locate(count)
                if count + 1 > epoch_allowance(orders[d].per_epoch, self.max_epochs):
                    self._epoch_limit(d, state, orders[d].per_epoch, warned)
                batch[row] = self.sources[d].block(chunk, j)
                state.samples[d] = count + 1
                state.stage_samples[d] = state.stage_samples.get(d, 0) + 1
                state.epochs[d] = (count + 1) // orders[d].per_epoch
                state.position += 1
                self._run_callbacks(state)
            yield torch.from_numpy(batch), state.snapshot()

    def _advance_stage(self, state: StreamState) -> None:
        while (end := self.stages[state.stage].end) is not None and state.position >= end:
            state.stage += 1
            self._enter_stage(state)

    def _enter_stage(self, state: StreamState) -> None:
        """Begin ``state.stage`` at the current position: blending restarts at the stage's weights."""
        if self.controller is not None:
            self.controller.enter_stage(self, state)
            return
        state.stage_samples, state.override = {}, None
        self.log_stage(state)

    def log_stage(self, state: StreamState, **extra: Any) -> None:
        """Append the stage just entered to ``state.stage_log`` (``extra``: what a controller adds)."""
        weights = dict(state.weights(self.stages))
        state.stage_log.append(
            {"stage": state.stage, "start": state.position, "samples": dict(state.samples), "weights": weights, **extra}
        )

    def _pick(self, state: StreamState) -> str:
        weights = state.weights(self.stages)
        n = sum(state.stage_samples.values()) + 1
        best, best_deficit = None, -math.inf
        for d, w in weights.items():  # insertion order is sorted by name: ties go to the first
            if w <= 0:
                continue
            deficit = w * n - state.stage_samples.get(d, 0)
            if deficit > best_deficit + 1e-12:
                best, best_deficit = d, deficit
        return best

    def _epoch_limit(self, d: str, state: StreamState, per_epoch: int, warned: set[str]) -> None:
        msg = (
            f"domain {d!r} is about to be repeated more than max_epochs={self.max_epochs:g} times: stream "
            f"{state.stream} has taken {state.samples.get(d, 0)} samples from its {per_epoch} blocks of it. "
            "Lower its weight, prepare more data, raise --data.max_epochs, or set --data.on_epoch_limit warn"
        )
        if self.on_epoch_limit == "error":
            raise RuntimeError(msg)
        if d not in warned:
            warned.add(d)
            warnings.warn(msg, stacklevel=2)

    def _run_callbacks(self, state: StreamState) -> None:
        for cb in self.callbacks:
            if cb.interval is not None and state.position % cb.interval == 0:
                new = cb.on_advance(state, state.weights(self.stages))
                if new is not None:
                    clean = self.validate_weights(new) if self.validate_weights else dict(new)
                    unknown = [d for d, w in clean.items() if w > 0 and d not in self.sources]
                    if unknown:
                        raise ValueError(
                            f"{type(cb).__name__} switched to domain(s) {unknown} that this run did not open; give "
                            "them a positive weight in some stage of --data.schedule/--data.weights"
                        )
                    state.override, state.stage_samples = clean, {}


class MixtureLoader(DataLoader):
    """A ``DataLoader`` over a :class:`MixtureStream` that is ``Stateful`` for Fabric checkpoints.

    It records the state that came with the last batch it handed out from each worker, so a checkpoint
    describes what training consumed, not what workers had prefetched.
    """

    def __init__(
        self,
        dataset: MixtureStream,
        num_workers: int = 0,
        length: int | None = None,
        budget_batches: int | None = None,
        **kwargs: Any,
    ):
        super().__init__(dataset, batch_size=None, num_workers=num_workers, **kwargs)
        self._states: dict[int, dict] = {}
        self._length = length
        # LitGPT fetches one batch past its budget before it stops; with the budget known, that batch (and any
        # later one) is not counted, so the final checkpoint reports exactly what was trained on.
        self._budget = budget_batches

    def _consumed(self) -> int:
        return sum(st["position"] for st in self._states.values()) // self.dataset.batch_size

    def __iter__(self):
        workers = max(1, self.num_workers)
        consumed = self._consumed()
        for i, (batch, state) in enumerate(super().__iter__()):
            if self._budget is None or consumed < self._budget:
                self._states[i % workers] = state
                consumed += 1
            yield batch

    def __len__(self) -> int:
        if self._length is None:
            raise TypeError("MixtureLoader has no length; set --data.max_tokens to give it one")
        return self._length

    def state_dict(self) -> dict:
        """What training consumed: ``streams`` (this rank's, by worker) and, on several ranks, ``ranks`` (every
        rank's ``streams``, by rank), so a checkpoint says what each rank trained on and each resumes its own.

        On several ranks this is a collective (``all_gather_object``): Fabric's ``save`` calls it on every rank.
        """
        ds = self.dataset
        out = {
            "version": STATE_VERSION,
            "num_workers": self.num_workers,
            "tokens_per_sample": next(iter(ds.sources.values())).block_size,
            "stages": [asdict(st) for st in ds.stages],
            "streams": dict(self._states),
        }
        env = ds.distributed_env
        if env.world_size > 1 and torch.distributed.is_available() and torch.distributed.is_initialized():
            ranks: list[Any] = [None] * env.world_size
            torch.distributed.all_gather_object(ranks, dict(self._states))
            out["ranks"] = {r: streams for r, streams in enumerate(ranks)}
        return out

    def load_state_dict(self, state_dict: dict) -> None:
        if state_dict.get("version") != STATE_VERSION or "streams" not in state_dict:
            raise ValueError(
                "the checkpoint's train_dataloader state was not written by regmix_plugin.MixtureData "
                f"(state format {STATE_VERSION}); resume with the data module it was trained with"
            )
        if state_dict["num_workers"] != self.num_workers:
            raise ValueError(
                f"the checkpoint was written with --data.num_workers {state_dict['num_workers']}, this run has "
                f"{self.num_workers}; resume with --data.num_workers {state_dict['num_workers']} to continue the "
                "stream exactly"
            )
        streams = state_dict["streams"]
        env = self.dataset.distributed_env
        ranks = state_dict.get("ranks") or {}
        if len(ranks) == env.world_size and env.global_rank in ranks:
            streams = ranks[env.global_rank]  # this rank's own record (the same as rank 0's unless one faulted)
        self._states = {int(k): v for k, v in streams.items()}
        self.dataset.resume_states = dict(self._states)


def summarize(streams: Mapping[Any, Mapping], block_size: int) -> dict[str, dict[str, int]]:
    """Sum per-stream states into ``{domain: {samples, tokens, epochs}}`` (epochs: the most any stream did)."""
    out: dict[str, dict[str, int]] = {}
    for st in streams.values():
        for d, n in st["samples"].items():
            row = out.setdefault(d, {"samples": 0, "tokens": 0, "epochs": 0})
            row["samples"] += n
            row["tokens"] += n * block_size
            row["epochs"] = max(row["epochs"], st["epochs"].get(d, 0))
    return out
