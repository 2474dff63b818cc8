"""``regmix evaluate``: per-domain validation loss of a LitGPT checkpoint on a prepared corpus.

    regmix evaluate --checkpoint_dir out/pretrain/final --data_path data/pile --out losses.csv

Works on any checkpoint directory holding ``lit_model.pth`` (a ``litgpt pretrain`` checkpoint, whose
``"model"`` entry is used, or a plain state dict as ``litgpt download`` writes) and ``model_config.yaml``;
``litgpt pretrain`` copies the tokenizer files next to them, and their hash must equal the manifest's.
Weights are loaded with ``torch.load(weights_only=True)``: no code in the file runs.

Every domain is scored on the same fixed token budget (``val_tokens``) by :mod:`regmix_plugin.pretrain.scoring`, which
``regmix sweep`` uses on its proxies' checkpoints too, so sweep tables and this command agree to the last bit.
"""

from __future__ import annotations

import csv
import io
import math
import warnings
from pathlib import Path
from typing import Literal

from regmix_plugin.atomic import write_text
from regmix_plugin.counts import TokenCount
from regmix_plugin.formats.manifest import read_manifest
from regmix_plugin.pretrain.scoring import domain_losses, eval_domains, load_checkpoint, val_blocks
from regmix_plugin.tokenizer import check_tokenizer


def evaluate(
    checkpoint_dir: Path,
    data_path: Path = Path("data/"),
    out: Path | None = Path("losses.csv"),
    val_tokens: TokenCount = 262144,
    seq_length: int | None = None,
    batch_size: int = 16,
    domains: list[str] | None = None,
    device: str = "cpu",
    fused_loss: Literal["auto", "on", "off"] = "auto",
) -> dict[str, float]:
    """Score a LitGPT checkpoint on every val domain of a prepared corpus and write ``domain,val_loss,tokens``.

    Arguments:
        checkpoint_dir: LitGPT checkpoint directory (``lit_model.pth``, ``model_config.yaml`` and the tokenizer).
        data_path: Prepared corpus (the ``--out_dir`` of ``regmix prepare``) tokenized with the same tokenizer.
        out: CSV to write (``domain,val_loss,tokens``); null only prints.
        val_tokens: Target tokens scored per domain (fewer where a domain's val split is smaller).
        seq_length: Tokens of context per evaluated block; default: the model's ``block_size``.
        batch_size: Blocks per forward pass (changes speed, not the result beyond float rounding).
        domains: Domains to score; default: every domain with val data.
        device: Torch device, e.g. ``cpu`` or ``cuda:0``.
        fused_loss: On a CUDA device, compute the loss without materialising the logits (the fused kernel of
            ``pip install 'regmix-plugin[gpu]'``, as ``regmix sweep`` does): ``auto`` = when installed, ``on`` =
            required, ``off`` = never. The CPU path is always the plain one under ``auto``.
    """
    checkpoint_dir, data_path = Path(checkpoint_dir), Path(data_path)
    manifest = read_manifest(data_path)
    check_tokenizer(
        checkpoint_dir,
        manifest.tokenizer_hash,
        "--checkpoint_dir",
        f"--data_path {str(data_path)!r}",
        fix="evaluate on a corpus prepared with this model's tokenizer "
        "(`regmix prepare --tokenizer_dir <checkpoint_dir>`)",
    )
    names = eval_domains(manifest, domains)
    model = load_checkpoint(checkpoint_dir, device)
    seq = seq_length or model.config.block_size
    if seq > model.config.block_size or val_tokens < 1 or batch_size < 1:
        raise ValueError(
            f"need --seq_length <= the model's block_size {model.config.block_size}, --val_tokens >= 1 "
            f"and --batch_size >= 1; got {seq}, {val_tokens}, {batch_size}"
        )
    blocks, empty = val_blocks(data_path, names, seq, val_tokens)
    top = max((int(b.max()) for b in blocks.values()), default=0)
    if top >= model.config.padded_vocab_size:
        raise ValueError(
            f"--data_path holds token id {top}, beyond the model's padded_vocab_size "
            f"{model.config.padded_vocab_size}: the corpus was not tokenized for this model"
        )
    if empty:
        warnings.warn(
            f"domain(s) {', '.join(empty)} have fewer than {seq + 1} val tokens and are not evaluated", stacklevel=2
        )
    losses = domain_losses(model, blocks, batch_size, fused_loss)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["domain", "val_loss", "tokens"])
    for d, loss in losses.items():
        writer.writerow([d, repr(loss), int(blocks[d].shape[0] * seq)])
        print(f"{d:<24}{loss:>10.4f}  ppl {math.exp(min(loss, 700)):>10.2f}  ({blocks[d].shape[0] * seq:,} tokens)")
    if out is not None:
        write_text(out, buf.getvalue())
    return losses
