"""The run's stages as the RegMix-D controller sees them (:class:`ControlPlan`), and the epoch allowance left."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from regmix_plugin.layout import epoch_allowance


@dataclass(frozen=True)
class ControlPlan:
    """The run's stages as the controller sees them: fixed when the training loader begins, the same on every rank.

    Built by :meth:`RegMixDController.begin` from the data module's :class:`~regmix_plugin.layout.StreamLayout`;
    built directly to decide stages outside a run (:meth:`RegMixDController.decide`, the RegMix-D ground truth).
    """

    bounds: tuple[float, ...]
    """Run fractions where the stages begin, then 1.0: stage ``k`` spans ``[bounds[k], bounds[k + 1]]``."""
    stage_samples: tuple[int, ...]
    """Samples of one stream in each stage (stage ends count stream samples)."""
    per_epoch: Mapping[str, int]
    """Blocks each stream reads per epoch, for every domain the run opened (and only those)."""
    max_epochs: float
    """Most times a domain may be repeated over the run (``--data.max_epochs``)."""
    planned: tuple[Mapping[str, float], ...]
    """Each stage's weights as ``--data.schedule`` planned them; stage 0's are the mixture the run starts with."""
    decide_at: tuple[int, ...] = ()
    """Rank batch before which stage ``k`` (1-based: entry ``k - 1``) is decided: its switch batch minus the lag."""
    rank: int = 0
    """This process's global rank: rank 0 decides, the others replay its decisions."""

    @property
    def total(self) -> int:
        """Samples of one stream over the whole run."""
        return sum(self.stage_samples)

    def allowance(
        self, k: int, domains: list[str], in_force: Callable[[int], Mapping[str, float]], of_run: bool = False
    ) -> np.ndarray:
        """Highest weight per domain in stage k so no domain exceeds max_epochs over the whole run, given the
        weights ``in_force(j)`` that stage ``j - 1`` trained on.

        ``of_run``: instead, what each domain may still use from stage k on, as a share of the whole run.
        """
        used = {d: 0.0 for d in domains}
        for j in range(k):
            w = in_force(j + 1)
            for d in domains:
                used[d] += w.get(d, 0.0) * self.stage_samples[j]
        cap = {d: epoch_allowance(self.per_epoch.get(d, 0), self.max_epochs) for d in domains}
        if of_run:
            return np.array([max(0.0, cap[d] - used[d]) / self.total for d in domains])
        n = self.stage_samples[k]
        return np.array([min(1.0, max(0.0, (cap[d] - used[d]) / n)) if n > 0 else 1.0 for d in domains])
