"""``MixtureData``: a LitGPT DataModule that streams a prepared multi-domain corpus at exact weights.

Use it from the stock loop::

    litgpt pretrain --config recipes/tiny_cpu.yaml
    # with, in the YAML:
    # data:
    #   class_path: regmix_plugin.MixtureData
    #   init_args: {data_path: data/tiny, weights: {prose: 0.7, code: 0.3}}

Weights are over samples (all samples are ``max_seq_length + 1`` tokens, so also over tokens). A mapping
whose sum is within ``domains.SUM_TOLERANCE`` (1e-3) of 1 is renormalised silently; anything further off
is refused. See :mod:`regmix_plugin.pretrain.stream` for the exactness, cycling and resume guarantees.

Validation (LitGPT's own ``val_loss``) reads ``val_domains`` (default: every domain with val data) round
robin, the same number of blocks from each, in a fixed order: ``val_loss`` is then the unweighted mean
loss over those domains, comparable between runs with different training mixtures.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from litgpt.data import DataModule
from litgpt.tokenizer import Tokenizer
from torch.utils.data import DataLoader, IterableDataset

from regmix_plugin.counts import TokenCount
from regmix_plugin.formats.manifest import Manifest, read_manifest
from regmix_plugin.layout import DEFAULT_MAX_EPOCHS, StreamLayout, epoch_allowance
from regmix_plugin.litgpt_compat import PretrainRun
from regmix_plugin.pretrain.stream import (
    MixtureCallback,
    MixtureLoader,
    MixtureStream,
    Stage,
    TokenSource,
)
from regmix_plugin.weights import exceeds_allowance, validate_weights


@dataclass
class MixtureData(DataModule):
    """Streams a corpus written by ``regmix prepare`` with per-domain weights or a staged schedule."""

    data_path: Path = Path("data/")
    """Prepared corpus: the ``--out_dir`` of ``regmix prepare`` (holds manifest.json and one folder per domain)."""
    weights: dict[str, float] | None = None
    """Sampling weight per domain, summing to 1; domains left out get 0 and are not opened."""
    schedule: list[dict[str, Any]] | None = None
    """Piecewise stages instead of ``weights``: ``[{until_fraction: 0.2, weights: {...}}, {weights: {...}}]``
    (or ``until_tokens``); the last stage runs to the end. ``until_fraction`` needs ``max_tokens``."""
    max_tokens: TokenCount | None = None
    """The run's token budget (repeat ``train.max_tokens``): lets the epoch guard fail at set-up and places
    ``until_fraction`` stage switches. LitGPT does not pass it to data modules."""
    max_epochs: float = DEFAULT_MAX_EPOCHS
    """Most times any domain may be repeated (as in RegMix's sampler)."""
    on_epoch_limit: Literal["error", "warn"] = "error"
    """What to do when a domain would be repeated more than ``max_epochs`` times."""
    val_domains: list[str] | None = None
    """Domains that LitGPT's ``val_loss`` averages over; default: every domain with val data."""
    val_blocks_per_domain: int | None = None
    """Validation blocks per val domain; default: as many as the smallest val domain has."""
    seed: int = 42
    """Seed of every domain's per-epoch shuffle."""
    num_workers: int = 4
    """DataLoader worker processes per rank; each runs its own exactly-blended stream."""
    callbacks: list[MixtureCallback] | None = None
    """Hooks called as the stream advances that may record or change the mixture (``MixtureCallback``)."""

    batch_size: int = field(init=False, repr=False, default=1)
    seq_length: int = field(init=False, repr=False, default=2048)
    manifest: Manifest | None = field(init=False, repr=False, default=None)
    stages: list[Stage] = field(init=False, repr=False, default_factory=list)
    tokenizer: Tokenizer | None = field(init=False, repr=False, default=None)
    run_context: PretrainRun | None = field(init=False, repr=False, default=None)

    def __post_init__(self) -> None:
        super().__init__()
        self.data_path = Path(self.data_path)
        problems = []
        if (self.weights is None) == (self.schedule is None):
            problems.append("set exactly one of --data.weights and --data.schedule")
        if self.schedule is not None:
            for i, stage in enumerate(self.schedule):
                extra = set(stage) - {"weights", "until_fraction", "until_tokens"}
                if "weights" not in stage or extra:
                    problems.append(
                        f"--data.schedule[{i}] must have 'weights' and at most one of 'until_fraction'/"
                        f"'until_tokens'{f'; unknown key(s) {sorted(extra)}' if extra else ''}"
                    )
                if "until_fraction" in stage and self.max_tokens is None:
                    problems.append(f"--data.schedule[{i}].until_fraction needs --data.max_tokens (the run's budget)")
        if not self.max_epochs > 0:
            problems.append(f"--data.max_epochs must be > 0, got {self.max_epochs}")
        if self.num_workers < 0:
            problems.append(f"--data.num_workers must be >= 0, got {self.num_workers}")
        if problems:
            raise ValueError("MixtureData: " + "; ".join(problems))
        # name-independent checks (sign, finiteness, sum) now; domain names once the manifest is read
        for key, w in self._weight_sets():
            validate_weights(w, w.keys() if isinstance(w, dict) else (), key=key)

    def _weight_sets(self) -> list[tuple[str, dict[str, float]]]:
        if self.weights is not None:
            return [("--data.weights", self.weights)]
        return [(f"--data.schedule[{i}].weights", s.get("weights")) for i, s in enumerate(self.schedule or [])]

    def connect(
        self, tokenizer: Tokenizer | None = None, batch_size: int = 1, max_seq_length: int | None = None, **kw: Any
    ) -> None:
        from regmix_plugin.litgpt_compat import running_pretrain

        self.batch_size = batch_size
        self.seq_length = (max_seq_length or 2048) + 1  # one more token: the last target
        self.tokenizer = tokenizer
        # the tokenizer's directory and the model config, checked against the corpus in setup()
        self.run_context = running_pretrain()

    def prepare_data(self) -> None:
        read_manifest(self.data_path, flag="--data.data_path")

    def setup(self, stage: str = "") -> None:
        self.manifest = read_manifest(self.data_path, flag="--data.data_path")
        known = self.manifest.train_domains()
        problems, clean = [], []
        for key, w in self._weight_sets():
            try:
                clean.append(validate_weights(w, known, key=key))
            except ValueError as e:
                problems.append(str(e))
        val_known = self.manifest.val_domains()
        for d in self.val_domains or []:
            if d not in val_known:
                problems.append(
                    f"--data.val_domains: {d!r} has no val data; domains with val data: {', '.join(val_known)}"
                )
        if not problems:
            used = sorted({d for w in clean for d, x in w.items() if x > 0} | set(self.val_domains or val_known))
            problems += self._corpus_problems(used)
        if problems:
            raise ValueError("\n".join(problems))
        # stage ends are in stream-local samples, placed by train_dataloader once the stream count is known
        self.stages = [Stage(weights=w, end=None) for w in clean]

    def _corpus_problems(self, domains: list[str]) -> list[str]:
        """The run's tokenizer and model vocabulary against the corpus, and the used domains' chunk sizes."""
        from regmix_plugin.formats.manifest import damage_message, damaged_domains
        from regmix_plugin.tokenizer import check_tokenizer

        problems = []
        corpus = f"--data.data_path {str(self.data_path)!r}"
        context = self.run_context
        if context is not None and context.tokenizer_dir is not None:
            try:
                check_tokenizer(context.tokenizer_dir, self.manifest.tokenizer_hash, "--tokenizer_dir", corpus)
            except (FileNotFoundError, ValueError) as e:
                problems.append(str(e))
        elif self.tokenizer is not None and self.tokenizer.vocab_size != self.manifest.vocab_size:
            problems.append(
                f"tokenizer mismatch: the tokenizer has {self.tokenizer.vocab_size} ids, but {corpus} was prepared "
                f"with one of {self.manifest.vocab_size}; use the tokenizer the corpus was prepared with"
            )
        config = None if context is None else context.config
        if config is not None:
            problems += self.manifest.vocab_problems(config.padded_vocab_size, domains, f" in {corpus}")
        damaged = damaged_domains(self.data_path, self.manifest, domains)
        if damaged:
            problems.append(f"{corpus}: " + damage_message(self.data_path, self.manifest, damaged))
        return problems

    def layout(self, world_size: int = 1) -> StreamLayout:
        """The run's split into (rank, worker) streams, after :meth:`connect` (batch size, sequence length)."""
        return StreamLayout(self.batch_size, self.num_workers, world_size, self.seq_length)

    def train_dataloader(self) -> DataLoader:
        active = sorted({d for st in self.stages for d, w in st.weights.items() if w > 0})
        sources = {d: TokenSource(self.data_path / d / "train", self.seq_length) for d in active}
        callbacks = list(self.callbacks or ())
        # a callback that also acts in the training process and owns the stage switches (RegMixDController)
        controllers = [cb for cb in callbacks if hasattr(cb, "loader")]
        if len(controllers) > 1:
            raise ValueError(
                f"--data.callbacks: at most one stage controller per run, got {len(controllers)} "
                f"({', '.join(type(c).__name__ for c in controllers)}); keep one"
            )
        controller = controllers[0] if controllers else None
        stream = MixtureStream(
            sources,
            self.stages,
            batch_size=self.batch_size,
            seed=self.seed,
            max_epochs=self.max_epochs,
            on_epoch_limit=self.on_epoch_limit,
            callbacks=[cb for cb in callbacks if cb is not controller],
            # a partial, not a lambda: it must pickle for spawn-started workers
            validate_weights=partial(validate_weights, known=self.manifest.train_domains(), key="callback weights"),
            controller=controller,
        )
        world = stream.distributed_env.world_size
        budget = self.check_budget(world, sources)
        length = (
            budget if budget is not None else sum(s.num_blocks for s in sources.values()) // (self.batch_size * world)
        )
        if controller is not None:
            return controller.loader(stream, self, num_workers=self.num_workers, length=length, budget_batches=budget)
        return MixtureLoader(stream, num_workers=self.num_workers, length=length, budget_batches=budget)

    def check_budget(self, world_size: int = 1, sources: dict[str, TokenSource] | None = None) -> int | None:
        """Place the stage switches and run the epoch guard for ``max_tokens``; return batches per rank.

        Called by :meth:`train_dataloader`, and by ``regmix recipe`` (after :meth:`connect` and :meth:`setup`)
        so a recipe whose budget repeats a domain too often is refused when it is written, not at train time.
        """
        if sources is None:
            active = sorted({d for st in self.stages for d, w in st.weights.items() if w > 0})
            sources = {d: TokenSource(self.data_path / d / "train", self.seq_length) for d in active}
        layout = self.layout(world_size)
        budget = None if self.max_tokens is None else layout.rank_batches(self.max_tokens)
        total = None if budget is None else layout.stream_samples(budget)
        self._place_stage_ends(total, layout)
        if total is not None:
            self._epoch_guard(sources, total, layout)
        return budget

    def _place_stage_ends(self, total: int | None, layout: StreamLayout) -> None:
        for st, spec in zip(self.stages, self.schedule or [{}], strict=True):
            st.end = layout.stage_end(spec, total)
        ends = [st.end for st in self.stages[:-1]]
        if any(e is None for e in ends) or ends != sorted(ends):
            raise ValueError(
                "--data.schedule: every stage but the last needs until_fraction/until_tokens, in increasing order"
            )
        if self.stages:
            self.stages[-1].end = None

    def _epoch_guard(self, sources: dict[str, TokenSource], total: int, layout: StreamLayout) -> None:
        planned: dict[str, float] = {}
        start = 0
        for st in self.stages:
            end = total if st.end is None else min(st.end, total)
            for d, w in st.weights.items():
                planned[d] = planned.get(d, 0.0) + w * max(0, end - start)
            start = end
        lines = []
        for d, n in sorted(planned.items()):
            blocks = sources[d].num_blocks if d in sources else 0
            per_epoch = layout.blocks_per_stream(blocks)
            # the planners' bound too (sample/optimize/schedule/entropy --constraints.block_size): one unit, one edge
            if exceeds_allowance(n, epoch_allowance(per_epoch, self.max_epochs)):
                epochs = n / per_epoch if per_epoch else math.inf
                lines.append(
                    f"  {d}: {n:,.0f} samples per stream from {per_epoch:,} blocks per stream = {epochs:.1f} epochs"
                )
        if lines:
            msg = (
                f"with --data.max_tokens {self.max_tokens:,} some domains would repeat more than "
                f"--data.max_epochs {self.max_epochs:g} times:\n" + "\n".join(lines) + "\nLower their weights, "
                "prepare more data, raise --data.max_epochs, or set --data.on_epoch_limit warn"
            )
            if self.on_epoch_limit == "error":
                raise ValueError(msg)
            import warnings

            warnings.warn(msg, stacklevel=2)

    def val_dataloader(self) -> DataLoader:
        domains = self.val_domains or self.manifest.val_domains()
        sources = {d: TokenSource(self.data_path / d / "val", self.seq_length) for d in domains}
        available = min(s.num_blocks for s in sources.values())
        per_domain = min(available, self.val_blocks_per_domain or available)
        if per_domain == 0:
            small = [d for d, s in sources.items() if s.num_blocks == 0]
            raise ValueError(
                f"val domain(s) {small} have no block of {self.seq_length} tokens; prepare more val data, "
                "lower the model's block_size, or leave them out of --data.val_domains"
            )
        return DataLoader(ValStream(sources, per_domain, self.batch_size), batch_size=None, num_workers=0)


class ValStream(IterableDataset):
    """The fixed validation sequence: ``blocks_per_domain`` evenly spaced blocks of every val domain, in turn.

    The blocks are :meth:`TokenSource.evenly_spaced`, the same definition ``regmix evaluate`` scores. Ranks take
    every ``world_size``-th block, so ranks read disjoint data and together read all of it.
    """

    def __init__(self, sources: dict[str, TokenSource], blocks_per_domain: int, batch_size: int):
        from regmix_plugin.litgpt_compat import distributed_env

        self.sources, self.blocks_per_domain, self.batch_size = sources, blocks_per_domain, batch_size
        self.distributed_env = distributed_env()

    def __iter__(self):
        names = sorted(self.sources)
        picks = {d: self.sources[d].evenly_spaced(self.blocks_per_domain) for d in names}
        env = self.distributed_env
        rows = []
        for p in range(env.global_rank, self.blocks_per_domain * len(names), env.world_size):
            d, i = names[p % len(names)], p // len(names)
            rows.append(np.asarray(self.sources[d].block_at(picks[d][i]), dtype=np.int64))
            if len(rows) == self.batch_size:
                yield torch.from_numpy(np.stack(rows))
                rows = []
        if rows:
            yield torch.from_numpy(np.stack(rows))
