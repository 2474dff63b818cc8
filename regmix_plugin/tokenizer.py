"""Train a small byte-level BPE tokenizer and save it as a LitGPT tokenizer directory.

Used by the demo and the tests, which may not download a tokenizer. LitGPT's ``Tokenizer`` reads
``tokenizer.json`` plus ``tokenizer_config.json`` (for ``bos_token``/``eos_token``); both are written here.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path

from regmix_plugin.atomic import write_json, write_text

BOS, EOS = "<|bos|>", "<|eos|>"


def train_tokenizer(texts: Iterable[str], out_dir: str | Path, vocab_size: int = 512) -> Path:
    """Train byte-level BPE on ``texts`` and write a LitGPT tokenizer directory to ``out_dir``.

    Deterministic for the same texts in the same order. Returns ``out_dir``.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[BOS, EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_text(out_dir / "tokenizer.json", tok.to_str())
    write_json(
        out_dir / "tokenizer_config.json",
        {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": BOS, "eos_token": EOS, "add_bos_token": False},
    )
    return out_dir


def tokenizer_hash(tokenizer_dir: str | Path) -> str:
    """SHA-256 of ``tokenizer.json`` (or ``tokenizer.model``): the identity stored in manifests.

    Two corpora prepared with the same hash share token ids; evaluate/sweep refuse a mismatch.
    """
    tokenizer_dir = Path(tokenizer_dir)
    for name in ("tokenizer.json", "tokenizer.model"):
        if (tokenizer_dir / name).is_file():
            return "sha256:" + hashlib.sha256((tokenizer_dir / name).read_bytes()).hexdigest()
    raise FileNotFoundError(
        f"--tokenizer_dir {str(tokenizer_dir)!r} has no tokenizer.json or tokenizer.model; "
        "point it at a LitGPT checkpoint/tokenizer directory"
    )


def vocab_size(tokenizer_dir: str | Path) -> int:
    """Number of token ids the tokenizer can emit (for sizing ``padded_vocab_size`` in recipes)."""
    data = json.loads((Path(tokenizer_dir) / "tokenizer.json").read_text())
    ids = list(data["model"]["vocab"].values()) + [t["id"] for t in data.get("added_tokens", [])]
    return max(ids) + 1


def check_tokenizer(
    tokenizer_dir: str | Path,
    expected_hash: str,
    flag: str,
    corpus: str,
    fix: str = "use the tokenizer the corpus was prepared with, or re-run `regmix prepare` with this one",
) -> None:
    """Refuse a tokenizer other than the one a corpus was prepared with (the one check every command uses).

    ``flag`` names where the tokenizer came from (``--tokenizer_dir``, ``--checkpoint_dir``), ``corpus`` the
    prepared corpus (``--data_path 'data/pile'``), ``fix`` what the user should do instead.
    """
    try:
        found = tokenizer_hash(tokenizer_dir)
    except FileNotFoundError:
        raise FileNotFoundError(
            f"{flag} {str(tokenizer_dir)!r} has no tokenizer.json or tokenizer.model, so its tokenizer cannot be "
            f"checked against {corpus}; point it at (or copy in) the tokenizer files the corpus was prepared with"
        ) from None
    if found != expected_hash:
        raise ValueError(
            f"tokenizer mismatch: {flag} {str(tokenizer_dir)!r} is {found[:19]}..., but {corpus} was prepared with "
            f"{expected_hash[:19]}...; {fix}"
        )
