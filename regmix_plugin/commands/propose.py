"""``regmix propose``: the next batch of proxy mixtures to train, chosen where a fitted model is promising or unsure.

    regmix fit --results out/sweep/results.csv --target val_loss/pile_cc --regressor gp --out out/model
    regmix propose --model out/model --results out/sweep/results.csv --data_path data/pile --n 16 \\
        --constraints.target_tokens 25e9 --out next.csv
    regmix sweep --mixtures next.csv ...

Candidates are drawn by ``regmix sample``'s own generator (:func:`regmix_plugin.draws.distinct_draws`: Dirichlet
draws around the prior, floored at ``--drop_below``, rounded to ``--decimals`` so rows sum to exactly 1) and kept
only inside every ``--constraints.*`` bound; ``--candidates FILE`` takes the rows of a mixtures file instead (a
pool the user is willing to run). A candidate equal, after rounding to ``--decimals`` places, to a row of
``--results`` (finished or failed), ``--pending`` or an existing ``--out`` is never proposed.

Acquisition: the lower confidence bound ``mean - kappa * std`` of the model (``mean + kappa * std``,
maximised, with ``--maximize``). ``--kappa`` defaults to 1.96, the one-sided ~97.5% bound of a normal posterior
and scikit-optimize's default for LCB: fixed on that principle, not tuned on any result. ``kappa = 0`` is pure
exploitation; larger values explore more.

Batch rule: the **kriging believer** (Ginsbourger, Le Riche & Carraro, 2010) with a minimum-distance exclusion
(ours). After each pick the GP is conditioned on that mixture at its own predicted mean, with the fitted kernel
hyperparameters kept (no refit, :meth:`GPRegressor.condition_on`): the mean is unchanged, the std shrinks around
the pick. Every candidate closer than ``--min_l1`` in L1 to a pick is then excluded, so **no two rows of a batch
are closer than ``--min_l1`` in L1** (default 0.1: such mixtures share at least 95% of their tokens). The
believer alone did not spread a batch where the GP's length scales are long next to the promising region
(:mod:`regmix_plugin.models.acquisition` gives the measurement).

Trust region (TuRBO, Eriksson et al., NeurIPS 2019): by default the bound is searched only inside a box around
the run with the best predicted target, in the GP's input space (sqrt weights), of side ``--trust_length`` scaled
by the GP's length scales. Without it, with few runs the least-known corners of the simplex win the bound (their
std dwarfs every mean difference near the optimum) and the whole batch is spent exploring them.
``--trust_length`` 0.8 is TuRBO's starting length; ``regmix sweep --active`` adapts it from round to round by
TuRBO's rules (double after 3 improving rounds, halve after ``ceil(max(4/n, d/n))`` rounds without); by hand, pass
a smaller one after rounds that did not improve. The box doubles when it cannot hold a batch ``--min_l1`` apart
(ours), and ``null`` searches the whole space. Generated candidates in the box are TuRBO's perturbations of its
centre, under the same constraints, rounding and duplicate rules; ``--candidates`` rows are kept if inside.

The std is a Gaussian process's posterior std (``regmix fit --regressor gp``) or an ensemble's spread
(``--regressor ensemble``: the std of its members' z-scored predictions, :mod:`regmix_plugin.models.ensemble`).
An ensemble believes its own mean at each pick member by member: its GP member is conditioned as above, its
LightGBM member refitted with the pick appended at that value (scikit-optimize's ``Optimizer.ask(n_points)``
does the same for any surrogate), its laws kept as fitted. Other models have no std and are refused.
"""

from __future__ import annotations

from pathlib import Path

from regmix_plugin.counts import TokenCount
from regmix_plugin.models.acquisition import DEFAULT_KAPPA, DEFAULT_MIN_L1, TRUST_INIT, propose_batch
from regmix_plugin.weights import ConstraintArgs, SamplerArgs


def propose(
    model: Path,
    results: Path,
    out: Path = Path("proposed.csv"),
    n: int = 16,
    kappa: float = DEFAULT_KAPPA,
    min_l1: float = DEFAULT_MIN_L1,
    pending: Path | None = None,
    candidates: Path | None = None,
    data_path: Path | None = None,
    domain_tokens: dict[str, TokenCount] | None = None,
    constraints: ConstraintArgs = ConstraintArgs(),
    temperature: float = 0.5,
    sampler: SamplerArgs = SamplerArgs(),
    drop_below: float = 2e-4,
    decimals: int = 4,
    n_candidates: int = 10_000,
    maximize: bool = False,
    id_prefix: str = "prop-",
    seed: int = 0,
    trust_length: float | None = TRUST_INIT,
) -> None:
    """Propose the next ``--n`` mixtures to train: the model's lower confidence bound, batched by the kriging believer.

    Arguments:
        model: A model directory written by ``regmix fit --regressor gp`` or ``--regressor ensemble``.
        results: The results table the model was fit on (a sweep's ``results.csv``, or the official mixture CSV):
            its rows, finished or failed, are never proposed again and their run ids never reused.
        out: The mixtures CSV to write (``regmix sweep --mixtures`` takes it). If it exists, the new rows are
            appended to it (atomically) and its rows count as pending.
        n: How many mixtures to propose.
        kappa: Weight of the posterior std in the bound ``mean - kappa * std``; 1.96 is the one-sided 97.5% bound.
        min_l1: No two proposed rows are closer than this in L1 (sum of absolute weight differences; half of it is
            the share of tokens moved). 0 turns the exclusion off (the plain kriging believer).
        pending: A mixtures CSV of runs planned but not finished: never proposed again, ids never reused.
        candidates: Propose only rows of this mixtures CSV (a pool); their run ids are kept unless taken.
        data_path: A corpus prepared by `regmix prepare`: its tempered token distribution is the candidates' prior,
            as in `regmix sample`, and its token counts give the epoch bound. Without it, the prior is the mean
            mixture of the fitted runs.
        domain_tokens: Train tokens per domain for the epoch bound, when there is no ``--data_path``.
        constraints: Every candidate respects these: the epoch bound at ``--constraints.target_tokens``, per-domain
            min/max weights, excluded domains (every ``--constraints.*`` flag is listed below).
        temperature: Exponent of the token distribution that makes the prior (with ``--data_path``), as in `sample`.
        sampler: Dirichlet concentration strengths around the prior (shared with `sample` and `optimize`).
        drop_below: Weights below this become 0 before a candidate is rounded, as in `sample`.
        decimals: Decimal places of the proposed weights, and of the rounding that decides a duplicate.
        n_candidates: How many distinct candidates to draw and score (without ``--candidates``).
        maximize: The target is a score to maximise: the bound becomes ``mean + kappa * std``, maximised.
        id_prefix: Run ids of new rows are this prefix and a number past every id of this prefix already used.
        seed: Seed of the candidate draws.
        trust_length: Side of the trust region, in the unit cube of sqrt weights scaled by the GP's length scales
            (TuRBO's starting length is 0.8; the active loop adapts it); null searches the whole space.
    """
    propose_batch(
        model=model,
        results=results,
        out=out,
        n=n,
        kappa=kappa,
        min_l1=min_l1,
        pending=pending,
        candidates=candidates,
        data_path=data_path,
        domain_tokens=domain_tokens,
        constraints=constraints,
        temperature=temperature,
        sampler=sampler,
        drop_below=drop_below,
        decimals=decimals,
        n_candidates=n_candidates,
        maximize=maximize,
        id_prefix=id_prefix,
        seed=seed,
        trust_length=trust_length,
    )
