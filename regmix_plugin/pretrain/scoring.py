"""Per-domain validation loss of a LitGPT checkpoint: the one scoring code of ``evaluate``, ``sweep`` and the demo.

Every domain is scored on the same fixed token budget: blocks of ``seq_length + 1`` tokens evenly spaced over
the domain's val split (:meth:`regmix_plugin.pretrain.stream.TokenSource.evenly_spaced`, the same blocks MixtureData's
``val_loss`` uses), so every model scored with the same settings sees exactly the same tokens. The loss is the
mean next-token cross-entropy over all those tokens, accumulated in float64. Weights are loaded with
``torch.load(weights_only=True)``: no code in a checkpoint runs.
"""

from __future__ import annotations

import contextlib
import warnings
from pathlib import Path

import numpy as np

from regmix_plugin.formats.manifest import Manifest


def load_checkpoint(checkpoint_dir: Path, device: str = "cpu", config=None):
    """The ``litgpt.GPT`` of a checkpoint directory, in eval mode (weights loaded without unpickling code).

    ``config``: the ``litgpt.Config`` to build, when the caller knows it (the run that wrote the checkpoint);
    by default the directory's ``model_config.yaml``.
    """
    import torch
    from litgpt import GPT, Config

    checkpoint_dir = Path(checkpoint_dir)
    need = ("lit_model.pth",) if config is not None else ("lit_model.pth", "model_config.yaml")
    missing = [f for f in need if not (checkpoint_dir / f).is_file()]
    if missing:
        raise FileNotFoundError(
            f"--checkpoint_dir {str(checkpoint_dir)!r} lacks {', '.join(missing)}; pass a LitGPT checkpoint directory "
            "such as out/pretrain/final"
        )
    if config is None:
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
    from regmix_plugin.formats.token_chunks import TokenSource

    out, empty = {}, []
    want = max(1, val_tokens // seq_length)
    for d in domains:
        src = TokenSource(Path(data_path) / d / "val", seq_length + 1)
        if src.num_blocks == 0:
            empty.append(d)
            continue
        out[d] = np.stack([np.asarray(src.block_at(i), dtype=np.int64) for i in src.evenly_spaced(want)])
    return out, empty


def domain_losses(
    model, blocks: dict[str, np.ndarray], batch_size: int = 16, fused_loss: str = "auto", flag: str = "--fused_loss"
) -> dict[str, float]:
    """Mean next-token cross-entropy of ``model`` on each domain's blocks (float64 accumulation).

    On a GPU with the fused kernel (``fused_loss`` auto or on; :mod:`regmix_plugin.pretrain.fused_loss`) the loss is
    computed from the hidden states without materialising the logits; on CPU ``auto`` is the plain path.
    """
    import torch

    from regmix_plugin.litgpt_compat import fused_cross_entropy, hidden_state_head
    from regmix_plugin.pretrain.fused_loss import PLAIN, loss_function, resolve

    device = next(model.parameters()).device
    path = resolve(fused_loss, device.type, flag)
    out = {}
    head = hidden_state_head(model) if path != PLAIN else contextlib.nullcontext(False)
    with torch.no_grad(), head as bypassed:
        for d, arr in sorted(blocks.items()):
            total, count = 0.0, 0
            for start in range(0, len(arr), batch_size):
                batch = torch.from_numpy(arr[start : start + batch_size]).to(device)
                result = model(batch[:, :-1])
                if bypassed:
                    loss = fused_cross_entropy(result, batch[:, 1:], loss_function(path), reduction="sum")
                else:
                    loss = torch.nn.functional.cross_entropy(
                        result.reshape(-1, result.size(-1)).float(), batch[:, 1:].reshape(-1), reduction="sum"
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
            warnings.warn(
                f"domain(s) {', '.join(without)} have no val data and are not evaluated; "
                "re-run `regmix prepare` with a larger --val_fraction to score them",
                stacklevel=2,
            )
        return have
    bad = [d for d in domains if d not in have]
    if bad:
        raise ValueError(
            f"{flag}: {', '.join(bad)} have no val data in the corpus; domains with val data: {', '.join(have)}"
        )
    return list(domains)
