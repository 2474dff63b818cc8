"""A ground truth where the best mixture changes during training, for RegMix-D's tests.

Three training domains and a val-only target, with learning dynamics written down in advance (not fitted
to make any method win):

* ``fast`` is learned quickly and then saturates: ``L = 2.0 + 1.5 exp(-e_fast / 0.08)``, where ``e_fast``
  is the share of the run spent on it so far;
* ``slow`` keeps paying all run long, ``L = 2.5 + 2.0 (1 + e_slow / 0.05) ** -0.5``, and is learned faster
  once ``fast`` is mastered: each slow sample counts ``0.25 + 0.75 * mastery(fast)`` (a prerequisite, as
  basic language before harder text);
* ``other`` helps a little, with diminishing returns: ``L = 2.2 + 1.0 (1 + e_other / 0.1) ** -0.7``;
* ``target`` = ``0.3 L_fast + 0.5 L_slow + 0.2 L_other``.

A static mixture must keep paying for ``fast`` after it has saturated; a schedule can front-load it. The
proxies observe every loss with Gaussian noise. ``true_losses`` is exact (no noise): the judge.
"""

from __future__ import annotations

import numpy as np

DOMAINS = ("fast", "other", "slow")  # sorted, as mixture domains are
LOSS_DOMAINS = ("fast", "other", "slow", "target")
TARGET = {"fast": 0.3, "slow": 0.5, "other": 0.2}
STEPS = 240  # integration steps over the run


def true_losses(segments, at=(1.0,)):
    """Exact per-domain losses (rows: ``at`` fractions; columns: LOSS_DOMAINS) for ``(start, end, w)`` segments.

    ``w`` may be a (n, 3) batch of mixtures: then the result is (n, len(at), 4).
    """
    at = list(at)
    first = np.atleast_2d(segments[0][2])
    n = len(first)
    e = np.zeros((n, 3))
    out = np.zeros((n, len(at), 4))
    dt = 1.0 / STEPS
    j = 0
    for step in range(STEPS + 1):
        t = step * dt
        while j < len(at) and at[j] <= t + 1e-12:
            out[:, j] = _losses(e)
            j += 1
        if step == STEPS or j == len(at):
            break
        mid = t + dt / 2
        w = np.atleast_2d(next(seg[2] for seg in segments if seg[0] - 1e-12 <= mid <= seg[1] + 1e-12))
        mastery = 1 - (_losses(e)[:, 0] - 2.0) / 1.5
        e = e + dt * w * np.stack([np.ones(n), np.ones(n), 0.25 + 0.75 * mastery], 1)
    return out if n > 1 or np.ndim(segments[0][2]) > 1 else out[0]


def _losses(e):
    fast = 2.0 + 1.5 * np.exp(-e[:, 0] / 0.08)
    other = 2.2 + 1.0 * (1 + e[:, 1] / 0.1) ** -0.7
    slow = 2.5 + 2.0 * (1 + e[:, 2] / 0.05) ** -0.5
    target = TARGET["fast"] * fast + TARGET["slow"] * slow + TARGET["other"] * other
    return np.stack([fast, other, slow, target], 1)


def proxy_records(n_runs, stages, seed, eval_points=6, noise=0.01, tokens=1_000_000, concentrations=(0.3, 1.0, 3.0)):
    """Sweep records (``runs/<id>.json`` shape) of proxies: an independent Dirichlet draw per stage."""
    rng = np.random.default_rng(seed)
    times = [(i + 1) / eval_points for i in range(eval_points)]
    records = {}
    for r in range(n_runs):
        ws = [rng.dirichlet(np.full(3, rng.choice(concentrations))) for _ in range(stages)]
        segs = [(k / stages, (k + 1) / stages, w) for k, w in enumerate(ws)]
        L = true_losses(segs, times) + noise * rng.standard_normal((eval_points, 4))
        schedule = [{"weights": dict(zip(DOMAINS, map(float, w), strict=True))} for w in ws]
        for k in range(stages - 1):
            schedule[k]["until_fraction"] = (k + 1) / stages
        rid = f"p{seed}-{r:03d}"
        records[rid] = {
            "run_id": rid,
            "status": "done",
            "tokens": tokens,
            "mixture": schedule[0]["weights"] if stages == 1 else None,
            "schedule": schedule if stages > 1 else None,
            "losses": [
                {
                    "tokens": round(t * tokens),
                    "final": t == 1.0,
                    "losses": dict(zip(LOSS_DOMAINS, map(float, row), strict=True)),
                }
                for t, row in zip(times, L, strict=True)
            ],
        }
    return records
