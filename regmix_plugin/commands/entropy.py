"""`regmix entropy`: a training-free mixture from the entropy of each domain's tokens (BiMix §5.3).

    regmix entropy --data_path data/pile --out mixture.yaml --measure conditional
    regmix recipe --mixture mixture.yaml --template recipes/pile/tinyllama_1b_regmix.yaml --out my_1b.yaml

The weights are ``softmax(H)`` over the training domains (``regmix_plugin.models.token_entropy`` says how ``H`` is
estimated), projected onto the same constraints as ``regmix optimize`` (the ``--constraints.*`` flags). The
output is a ``mixture.yaml`` like ``optimize``'s, so ``regmix recipe`` takes it unchanged, and ``regmix sample
--prior_source entropy`` centres the proxies on it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from regmix_plugin.counts import TokenCount
from regmix_plugin.formats.manifest import read_manifest
from regmix_plugin.formats.mixture_yaml import write_mixture
from regmix_plugin.models.token_entropy import entropy_mixture
from regmix_plugin.weights import ConstraintArgs


def entropy(
    data_path: Path,
    out: Path = Path("mixture.yaml"),
    measure: Literal["conditional", "joint", "shannon"] = "conditional",
    max_tokens: TokenCount = 4_000_000,
    seed: int = 0,
    tokenizer_dir: Path | None = None,
    constraints: ConstraintArgs = ConstraintArgs(),
) -> None:
    """Write a mixture whose weights are the softmax of each training domain's token entropy.

    Arguments:
        data_path: A corpus prepared by `regmix prepare`.
        out: The mixture YAML to write (same format as `regmix optimize`'s).
        measure: ``conditional`` (H of the next token given the current one; BiMix's best), ``joint``
            (H of adjacent pairs) or ``shannon`` (unigram H).
        max_tokens: Tokens sampled per domain (random blocks, seeded); smaller domains are read whole.
        seed: Seed of the sample.
        tokenizer_dir: The tokenizer you will train with; refused if it is not the one the corpus was
            prepared with.
        constraints: What the mixture must respect: the epoch bound at ``--constraints.target_tokens``,
            per-domain min/max weights, excluded domains (every ``--constraints.*`` flag is listed below).
    """
    record = entropy_mixture(data_path, measure, max_tokens, seed, tokenizer_dir, ConstraintArgs.of(constraints))
    header = (
        f"Mixture chosen by `regmix entropy --measure {measure}` ({record['provenance']['created']}): softmax of each\n"
        f"domain's token entropy on a seeded sample of at most {max_tokens:,} tokens, projected onto the constraints.\n"
        "Make a training recipe: regmix recipe --mixture THIS.yaml --template RECIPE.yaml --out NEW.yaml"
    )
    write_mixture(Path(out), record, header, read_manifest(data_path))
    top = sorted(record["weights"].items(), key=lambda kv: -kv[1])[:5]
    print(
        f"{measure} entropy mixture over {len(record['weights'])} domains (largest: "
        + ", ".join(f"{d} {w:.3f}" for d, w in top)
        + f"); wrote {out}"
    )
