"""Where a run's samples go: the one home of the arithmetic between tokens, rank batches and stream samples.

A run of ``world_size`` ranks with ``workers`` dataloader workers each has ``world_size * workers`` data
streams. Three units meet here, and every conversion between them is a method of :class:`StreamLayout`:

* **tokens**: ``max_tokens`` and ``until_tokens`` (LitGPT counts ``seq_length - 1`` tokens per sample);
* **stream samples**: a position inside one stream, what a schedule's stage ends count
  (:class:`regmix_plugin.pretrain.stream.Stage`); every stream has the same stage ends;
* **rank batches**: the index of a batch one rank's training loop fetches, counted per rank. All ranks step
  together, so rank batch ``i`` is fetched at the same optimizer step on every rank. Worker ``w`` serves rank
  batches ``w, w + workers, ...`` (torch's round robin); its ``j``-th batch holds its samples
  ``[j * batch_size, (j + 1) * batch_size)``.

``MixtureData`` places its stage ends with it and ``RegMixDController`` its switch batches, so the two can
never disagree about when a stage begins (they once did: the controller multiplied by the world size a
second time and every stream of a 2-rank run waited for a decision that came twice too late).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

#: Most times a domain may be repeated in a run, as in RegMix's sampler: the default of every flag and field that
#: bounds it (``--constraints.max_epochs`` of the planners, ``--data.max_epochs`` of MixtureData).
DEFAULT_MAX_EPOCHS = 15.0


def epoch_allowance(blocks_per_stream: int, max_epochs: float) -> float:
    """Samples a stream may take from a domain of which it reads ``blocks_per_stream`` blocks: ``max_epochs`` passes.

    This is the one definition of a domain's epoch allowance. MixtureData's guard, the stream and the RegMix-D
    controller call it with each stream's disjoint share (:meth:`StreamLayout.blocks_per_stream`); the planners
    (``sample``, ``optimize``, ``schedule``, ``entropy``) with the whole domain as one stream, counting blocks
    of ``--constraints.block_size + 1`` tokens (``weights.domain_blocks``), or tokens when no block size is given.
    """
    return max_epochs * int(blocks_per_stream)


@dataclass(frozen=True)
class StreamLayout:
    """How one run's batches split over (rank, worker) streams; converts between tokens, samples and batches."""

    batch_size: int
    """Samples per batch (the micro batch size)."""
    workers: int
    """DataLoader workers per rank; 0 (the stream runs in the training process) counts as one stream."""
    world_size: int = 1
    """Ranks (devices x nodes)."""
    seq_length: int = 2
    """Tokens per sample, including the last target (``block_size + 1``)."""

    @property
    def streams_per_rank(self) -> int:
        return max(1, self.workers)

    @property
    def num_streams(self) -> int:
        return self.streams_per_rank * self.world_size

    def rank_batches(self, max_tokens: int) -> int:
        """Batches each rank trains on in a run of ``max_tokens`` (LitGPT counts ``seq_length - 1`` per sample)."""
        return int(max_tokens) // self.world_size // (self.batch_size * (self.seq_length - 1))

    def stream_samples(self, rank_batches: int) -> int:
        """Samples the busiest stream of a rank serves in ``rank_batches`` batches (workers take turns)."""
        return math.ceil(rank_batches / self.streams_per_rank) * self.batch_size

    def stage_end(self, spec: Mapping[str, Any], stream_samples: int | None) -> int | None:
        """The stream sample at which a ``--data.schedule`` entry ends (``None``: it runs to the end)."""
        if "until_fraction" in spec:
            return round(float(spec["until_fraction"]) * stream_samples)
        if "until_tokens" in spec:
            return int(spec["until_tokens"]) // (self.seq_length - 1) // self.num_streams
        return None

    def switch_batch(self, end: int) -> int:
        """The first rank batch holding a sample at or after stream sample ``end``: the same on every rank."""
        return (int(end) // self.batch_size) * self.streams_per_rank

    def blocks_per_stream(self, num_blocks: int) -> int:
        """Blocks of a domain each stream reads per epoch (its disjoint share)."""
        return int(num_blocks) // self.num_streams
