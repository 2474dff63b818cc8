"""``regmix evaluate``: per-domain validation loss of a LitGPT checkpoint on a prepared corpus.

    regmix evaluate --checkpoint_dir out/pretrain/final --data_path data/pile --out losses.csv

Works on any checkpoint directory holding ``lit_model.pth`` (a ``litgpt pretrain`` checkpoint, whose
``"model"`` entry is used, or a plain state dict as ``litgpt download`` writes) and ``model_config.yaml``;
``litgpt pretrain`` copies the tokenizer files next to them, and their hash must equal the manifest's.
Weights are loaded with ``torch.load(weights_only=True)``: no code in the file runs.

Every domain is scored on the same fixed token budget (``val_tokens``): blocks of ``seq_length + 1`` tokens
evenly spaced over the domain's val split, so every model evaluated with the same settings sees exactly the
same tokens. The loss is the mean next-token cross-entropy over all those tokens. ``regmix sweep`` calls
:func:`domain_losses` on its proxies' checkpoints, so sweep tables and this command agree to the last bit.
"""

from __future__ import annotations

import csv
import io
import math
import warnings
from pathlib import Path

import numpy as np

from regmix_plugin.atomic import write_text
from regmix_plugin.manifest import Manifest, read_manifest
from regmix_plugin.tokenizer import tokenizer_hash


def check_tokenizer(checkpoint_dir: Path, manifest: Manifest, data_path: Path, flag: str = "--checkpoint_dir") -> None:
    """Refuse a checkpoint whose tokenizer is not the one the corpus was tokenized with."""
    try:
        found = tokenizer_hash(checkpoint_dir)
    except FileNotFoundError:
        raise FileNotFoundError(
            f"{flag} {str(checkpoint_dir)!r} has no tokenizer.json or tokenizer.model, so its tokenizer cannot be "
            f"checked against {data_path}; copy the tokenizer files of the training run into it"
        ) from None
    if found != manifest.tokenizer_hash:
        raise ValueError(
            f"tokenizer mismatch: {flag} {str(checkpoint_dir)!r} has tokenizer {found[:19]}..., but --data_path "
            f"{str(data_path)!r} was prepared with {manifest.tokenizer_hash[:19]}...; evaluate on a corpus prepared "
            "with this model's tokenizer (`regmix prepare --tokenizer_dir <checkpoint_dir>`)"
        )


def load_model(checkpoint_dir: Path, device: str = "cpu"):
    """The ``litgpt.GPT`` of a checkpoint directory, in eval mode (weights loaded without unpickling code)."""
    import torch
    from litgpt import GPT, Config

    checkpoint_dir = Path(checkpoint_dir)
    missing = [f for f in ("lit_model.pth", "model_config.yaml") if not (checkpoint_dir / f).is_file()]
    if missing:
        raise FileNotFoundError(
            f"--checkpoint_dir {str(checkpoint_dir)!r} lacks {', '.join(missing)}; pass a LitGPT checkpoint directory "
            "such as out/pretrain/final"
        )
    config = Config.from_file(checkpoint_dir / "model_config.yaml")
    state = torch.load(checkpoint_dir / "lit_model.pth", map_location="cpu", weights_only=True)
    state = state.get("model", state)
    # a state dict saved from a torch.compile'd module without Fabric's unwrapping carries this prefix
    state = {k.removeprefix("_orig_mod."): v for k, v in state.items()}
    model = GPT(config)
    model.load_state_dict(state)
    return model.to(device).eval()


def val_blocks(
    data_path: Path, domains: list[str], seq_length: int, val_tokens: int
) -> tuple[dict[str, np.ndarray], list[str]]:
    """The fixed evaluation blocks per domain (``(k, seq_length + 1)`` int64) and the domains too small for one."""
    from regmix_plugin.stream import TokenSource

    out, empty = {}, []
    want = max(1, val_tokens // seq_length)
    for d in domains:
        src = TokenSource(Path(data_path) / d / "val", seq_length + 1)
        if src.num_blocks == 0:
            empty.append(d)
            continue
        picks = np.unique(np.linspace(0, src.num_blocks - 1, min(want, src.num_blocks)).round().astype(np.int64))
        ends = np.cumsum(src.chunk_blocks)
        rows = []
        for i in picks:
            chunk = int(np.searchsorted(ends, i, side="right"))
            j = int(i) - (int(ends[chunk - 1]) if chunk else 0)
            rows.append(np.asarray(src.block(chunk, j), dtype=np.int64))
        out[d] = np.stack(rows)
    return out, empty


def domain_losses(model, blocks: dict[str, np.ndarray], batch_size: int = 16) -> dict[str, float]:
    """Mean next-token cross-entropy of ``model`` on each domain's blocks (float64 accumulation)."""
    import torch

    device = next(model.parameters()).device
    out = {}
    with torch.no_grad():
        for d, arr in sorted(blocks.items()):
            total, count = 0.0, 0
            for start in range(0, len(arr), batch_size):
                batch = torch.from_numpy(arr[start : start + batch_size]).to(device)
                logits = model(batch[:, :-1])
                loss = torch.nn.functional.cross_entropy(
                    logits.reshape(-1, logits.size(-1)).float(), batch[:, 1:].reshape(-1), reduction="sum"
                )
                total += float(loss.double())
                count += batch[:, 1:].numel()
            out[d] = total / count
    return out


def eval_domains(manifest: Manifest, domains: list[str] | None, flag: str = "--domains") -> list[str]:
    """The domains to score: those asked for (each must have val data), or every domain with val data."""
    have = manifest.val_domains()
    if domains is None:
        without = sorted(set(manifest.domains) - set(have))
        if without:
            warnings.warn(f"domain(s) {', '.join(without)} have no val data and are not evaluated; "
                          "re-run `regmix prepare` with a larger --val_fraction to score them")
        return have
    bad = [d for d in domains if d not in have]
    if bad:
        raise ValueError(f"{flag}: {', '.join(bad)} have no val data in the corpus; domains with val data: {', '.join(have)}")
    return list(domains)


def evaluate(
    checkpoint_dir: Path,
    data_path: Path = Path("data/"),
    out: Path | None = Path("losses.csv"),
    val_tokens: int = 262144,
    seq_length: int | None = None,
    batch_size: int = 16,
    domains: list[str] | None = None,
    device: str = "cpu",
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
    """
    checkpoint_dir, data_path = Path(checkpoint_dir), Path(data_path)
    manifest = read_manifest(data_path)
    check_tokenizer(checkpoint_dir, manifest, data_path)
    names = eval_domains(manifest, domains)
    model = load_model(checkpoint_dir, device)
    seq = seq_length or model.config.block_size
    if seq > model.config.block_size or val_tokens < 1 or batch_size < 1:
        raise ValueError(f"need --seq_length <= the model's block_size {model.config.block_size}, --val_tokens >= 1 "
                         f"and --batch_size >= 1; got {seq}, {val_tokens}, {batch_size}")
    blocks, empty = val_blocks(data_path, names, seq, val_tokens)
    top = max((int(b.max()) for b in blocks.values()), default=0)
    if top >= model.config.padded_vocab_size:
        raise ValueError(f"--data_path holds token id {top}, beyond the model's padded_vocab_size "
                         f"{model.config.padded_vocab_size}: the corpus was not tokenized for this model")
    if empty:
        warnings.warn(f"domain(s) {', '.join(empty)} have fewer than {seq + 1} val tokens and are not evaluated")
    losses = domain_losses(model, blocks, batch_size)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["domain", "val_loss", "tokens"])
    for d, loss in losses.items():
        writer.writerow([d, repr(loss), int(blocks[d].shape[0] * seq)])
        print(f"{d:<24}{loss:>10.4f}  ppl {math.exp(min(loss, 700)):>10.2f}  ({blocks[d].shape[0] * seq:,} tokens)")
    if out is not None:
        write_text(out, buf.getvalue())
    return losses
