"""The proxy fast path's loss: cross-entropy computed from hidden states and the output weight, without logits.

A RegMix proxy is 2 layers of width 256 under a 50432-row output layer, so the ``(tokens, vocab)`` logits
tensor is where its memory and memory traffic go (issue 12: 3.3 GB in bf16 and 6.6 GB in fp32 per micro batch
of 16 x 2048). A fused linear cross-entropy never materialises it.

Kernel: Apple's Cut Cross-Entropy (``pip install regmix-plugin[gpu]``, module ``cut_cross_entropy``), chosen
over Liger-Kernel's ``LigerFusedLinearCrossEntropy`` **from their code, not by a measurement** (no GPU was
available when this was written; ``bench/gpu_proxy_throughput.py`` is the measurement to make):

* CCE computes the log-sum-exp and its gradient tile by tile in on-chip memory and writes no logits to global
  memory at all; its README's A100 benchmark has the loss forward+backward at 1.5x the speed of the plain
  PyTorch loss (134.8 vs 208.8 ms) at 1/24th the memory.
* Liger materialises the logits chunk by chunk: its chunk is ``next_pow2(ceil(BT / ceil(V / H)))`` rows, which
  for the proxy (BT = 32768, V = 50432, H = 256) is 256 rows, i.e. 128 sequential chunks per micro batch, each a
  thin matmul, a cross-entropy kernel and two gradient matmuls over a 256 x 50432 logits block in global
  memory. It saves memory, but the logits still make a round trip through global memory, which is the cost
  the proxy is bound by; small ``H`` is its worst case.

Implementation ``cce_kahan_full_c`` is used: CCE's README recommends it for pretraining (it keeps every
contribution to the classifier gradient instead of filtering those below bf16 precision). ``cce`` filters
them and may be faster; which one wins on an H100 is for the bench to show.

:func:`chunked_linear_cross_entropy` is a pure-PyTorch version of the same function: a few hundred rows of
logits at a time, recomputed in the backward pass. It is what the CPU tests run through LitGPT's loop to
prove the plumbing (the loss equals the plain path's); it is not a fast path.
"""

from __future__ import annotations

from importlib.util import find_spec

from regmix_plugin.errors import RegmixError

MODES = ("auto", "on", "off")
KERNEL = "cut-cross-entropy"
PLAIN = "plain"
CCE_IMPL = "cce_kahan_full_c"
_CPU_CHUNK_ROWS = 1024


def kernel_installed() -> bool:
    """Whether Cut Cross-Entropy (the ``[gpu]`` extra) is importable (cheap: does not import it)."""
    return find_spec("cut_cross_entropy") is not None


def unavailable_reason(need_cuda: bool = True) -> str | None:
    """Why the fused kernel cannot run here (``None`` if it can)."""
    if not kernel_installed():
        return "cut-cross-entropy is not installed (`pip install 'regmix-plugin[gpu]'`)"
    if need_cuda:
        import torch

        if not torch.cuda.is_available():
            return "CUDA is not available (the kernel runs on NVIDIA GPUs, Ampere or newer)"
    return None


def check_mode(mode: str, flag: str = "--fused_loss", need_cuda: bool = True) -> str | None:
    """The problem with ``mode`` on this machine, as a message naming ``flag`` and the fix, or ``None``."""
    if mode not in MODES:
        return f"{flag} must be one of {', '.join(MODES)}; got {mode!r}"
    reason = unavailable_reason(need_cuda) if mode == "on" else None
    if reason:
        return f"{flag} on: {reason}; use {flag} auto to fall back to the plain loss"
    return None


def resolve(mode: str, device_type: str, flag: str = "--fused_loss") -> str:
    """The loss path a run takes: :data:`KERNEL` or :data:`PLAIN`. ``auto`` keeps the plain path on CPU."""
    if mode == "off":
        return PLAIN
    if device_type == "cuda" and unavailable_reason(need_cuda=True) is None:
        return KERNEL
    if mode == "on":
        raise RegmixError(
            check_mode("on", flag, need_cuda=device_type != "cuda")
            or f"{flag} on needs a CUDA device; this run is on {device_type}"
        )
    return PLAIN


def kernel_linear_cross_entropy(hidden, weight, bias, targets, reduction: str = "mean", ignore_index: int = -100):
    """Cut Cross-Entropy's ``linear_cross_entropy``: ``cross_entropy(hidden @ weight.T + bias, targets)``."""
    from cut_cross_entropy import linear_cross_entropy

    return linear_cross_entropy(
        hidden, weight, targets, bias=bias, ignore_index=ignore_index, reduction=reduction, impl=CCE_IMPL
    )


def chunked_linear_cross_entropy(
    hidden, weight, bias, targets, reduction: str = "mean", ignore_index: int = -100, chunk_rows: int = _CPU_CHUNK_ROWS
):
    """The same function in plain PyTorch, ``chunk_rows`` rows of logits at a time (the CPU reference).

    With gradients on, each chunk is checkpointed, so its logits are recomputed in the backward pass instead of
    kept. The mean is over targets that are not ``ignore_index``, as ``litgpt.utils.chunked_cross_entropy``.
    """
    import torch
    from torch.utils.checkpoint import checkpoint

    h = hidden.reshape(-1, hidden.size(-1))
    t = targets.reshape(-1)
    total = None
    for hs, ts in zip(h.split(chunk_rows), t.split(chunk_rows), strict=True):
        if torch.is_grad_enabled() and (hs.requires_grad or weight.requires_grad):
            part = checkpoint(_chunk_sum, hs, weight, bias, ts, ignore_index, use_reentrant=False)
        else:
            part = _chunk_sum(hs, weight, bias, ts, ignore_index)
        total = part if total is None else total + part
    if reduction == "sum":
        return total
    if reduction != "mean":
        raise ValueError(f"reduction must be 'mean' or 'sum'; got {reduction!r}")
    count = (t != ignore_index).sum()
    return total / count.maximum(torch.ones_like(count))


def _chunk_sum(h, weight, bias, t, ignore_index: int):
    import torch

    logits = torch.nn.functional.linear(h, weight, bias)
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()  # as the plain path: the loss of low-precision logits is taken in fp32
    return torch.nn.functional.cross_entropy(logits, t, ignore_index=ignore_index, reduction="sum")


def loss_function(path: str):
    """The linear cross-entropy callable of a loss path (:data:`KERNEL` or the CPU reference)."""
    return kernel_linear_cross_entropy if path == KERNEL else chunked_linear_cross_entropy


def pretrain_context(path: str, precision: str | None):
    """The ``with`` block in which in-process ``litgpt pretrain`` runs use the loss path ``path``."""
    from contextlib import nullcontext

    from regmix_plugin.litgpt_compat import fused_pretrain

    return nullcontext() if path == PLAIN else fused_pretrain(loss_function(path), precision)
