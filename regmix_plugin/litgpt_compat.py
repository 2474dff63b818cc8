"""The one module that touches LitGPT's and litdata's internals, each behind a check of the supported versions.

Public APIs come first everywhere else; what is here relies on details that a new release may change:

* running the stock ``litgpt pretrain`` in this process (:func:`run_pretrain`), which means presenting the argv
  that LitGPT's ``save_checkpoint`` re-parses;
* parsing a recipe exactly as ``litgpt pretrain --config`` does (:func:`litgpt_parse`);
* what ``litgpt pretrain`` does not hand its data module: the tokenizer's directory and the model config
  (:func:`running_pretrain`), read from the running ``litgpt.pretrain.main`` call (why nothing else works: there);
* the sweep worker's two caches (:func:`install_worker_caches`): jsonargparse's docstring parsing and LitGPT's
  per-checkpoint hyperparameter re-parse;
* the proxy fast path (:func:`fused_pretrain`, :func:`hidden_state_head`): the output layer bypassed and
  the loss function ``litgpt.pretrain`` calls swapped for a fused linear cross-entropy, within a ``with`` block;
* an eager proxy (:func:`eager_pretrain`): the ``torch.compile`` that ``litgpt.pretrain.main`` always calls made
  a no-op, within a ``with`` block;
* for tests only, several ranks on CPU (:func:`ddp_instead_of_fsdp_for_tests`): LitGPT's pretrain picks FSDP
  for more than one device, which Fabric refuses on CPU;
* litdata's private names: ``_DistributedEnv`` (rank/world size), the dtype tables and chunk header layout of
  token chunks, ``_convert_bytes_to_int``, the ``no_header_numpy`` data format.

The supported ranges are :data:`SUPPORTED`; anything outside them fails with a message naming the range
instead of misreading data.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Mapping
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import yaml

from regmix_plugin.atomic import write_text
from regmix_plugin.errors import RegmixError

#: Package -> (lowest supported version, first unsupported version). Mirrored in pyproject.toml's pins.
SUPPORTED = {"litgpt": ("0.5.13", "0.6"), "litdata": ("0.2.59", "0.3")}
#: litdata's data format of token chunks written by ``regmix prepare`` (TokensLoader, numpy, no header).
TOKENS_FORMAT = "no_header_numpy"


class UnsupportedVersion(RegmixError):
    """An installed LitGPT/litdata outside the range this release was built and tested against."""


@cache
def check_version(package: str) -> None:
    """Refuse a version of ``package`` outside :data:`SUPPORTED`, naming the range and the fix."""
    from importlib.metadata import version

    from packaging.version import Version

    low, high = SUPPORTED[package]
    found = version(package)
    if not Version(low) <= Version(found) < Version(high):
        raise UnsupportedVersion(
            f"regmix-plugin supports {package} >={low},<{high}, but {found} is installed; "
            f"run `pip install '{package}>={low},<{high}'` or upgrade regmix-plugin"
        )


# ------------------------------------------------------------------------------------------------ litdata
def distributed_env():
    """litdata's view of this process's rank and world size (``.global_rank``, ``.world_size``)."""
    check_version("litdata")
    from litdata.utilities.env import _DistributedEnv

    return _DistributedEnv.detect()


def token_dtype(data_format: str) -> np.dtype:
    """The numpy dtype of a token directory from its ``index.json`` ``data_format`` (``"no_header_numpy:5"``)."""
    check_version("litdata")
    import torch
    from litdata.constants import _NUMPY_DTYPES_MAPPING, _TORCH_DTYPES_MAPPING

    serializer, dtype_id = data_format.split(":")
    if serializer == TOKENS_FORMAT:
        return np.dtype(_NUMPY_DTYPES_MAPPING[int(dtype_id)])
    if serializer == "no_header_tensor":
        return torch.empty(0, dtype=_TORCH_DTYPES_MAPPING[int(dtype_id)]).numpy().dtype
    raise ValueError(f"data_format {serializer!r} is not token data written by `regmix prepare`")


def chunk_header_bytes(items: int) -> int:
    """Bytes before the tokens of a litdata chunk of ``items`` items: ``[num_items][num_items + 1 offsets]``, uint32."""
    return (1 + items + 1) * 4


def bytes_to_int(size: str) -> int:
    """litdata's parser of sizes such as ``"64MB"``."""
    check_version("litdata")
    from litdata.utilities.format import _convert_bytes_to_int

    return _convert_bytes_to_int(size)


def empty_token_index() -> dict:
    """The ``index.json`` of an empty token directory (litdata writes none for zero items)."""
    return {"chunks": [], "config": {"data_format": [f"{TOKENS_FORMAT}:5"]}}


# ------------------------------------------------------------------------------------------------- litgpt
@contextmanager
def _argv(argv: list[str]):
    saved = sys.argv
    sys.argv = argv
    try:
        yield
    finally:
        sys.argv = saved


def write_config(config: Mapping[str, Any], path: str | Path) -> Path:
    """Write a pretrain config mapping as YAML (atomically) and return its path."""
    write_text(path, yaml.safe_dump(_plain(config), sort_keys=False))
    return Path(path)


def _plain(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj


def run_pretrain(config: Mapping[str, Any] | str | Path, config_path: str | Path | None = None) -> None:
    """Run ``litgpt pretrain --config FILE`` in this process (the stock loop; nothing is forked).

    ``config`` is a YAML path or a mapping; a mapping is first written to ``config_path`` (default:
    ``<out_dir>/pretrain_config.yaml``) so that the checkpoint's saved hyperparameters point at a real file.
    """
    check_version("litgpt")
    from litgpt.__main__ import main as litgpt_main

    if isinstance(config, Mapping):
        path = Path(config_path or Path(config["out_dir"]) / "pretrain_config.yaml")
        write_config(config, path)
    else:
        path = Path(config)
    with _argv(["litgpt", "pretrain", "--config", str(path)]):
        litgpt_main()


def litgpt_parse(config: dict) -> Any:
    """Parse and instantiate ``config`` exactly as ``litgpt pretrain --config`` would (raises on a bad recipe)."""
    check_version("litgpt")
    from jsonargparse import ArgumentParser
    from litgpt.pretrain import setup

    parser = ArgumentParser(exit_on_error=False)
    parser.add_function_arguments(setup)
    return parser.instantiate_classes(parser.parse_object(config))


class PretrainRun(NamedTuple):
    """What the running ``litgpt pretrain`` knows and does not hand its data module."""

    tokenizer_dir: Path | None
    """``--tokenizer_dir`` as the loop resolved it (``checkpoints/`` prefixed where LitGPT adds it), or None."""
    config: Any
    """The ``litgpt.Config`` the loop builds its model from (``--model_name`` or ``--model_config``)."""


def running_pretrain() -> PretrainRun | None:
    """The tokenizer directory and model config of the ``litgpt pretrain`` run calling us, or None outside one.

    MixtureData must refuse a tokenizer other than the corpus's and a vocabulary smaller than its token ids before
    training starts, and RegMixDController must score checkpoints with the run's own architecture. Nothing LitGPT
    hands a data module carries either: ``litgpt.pretrain.get_dataloaders`` calls
    ``data.connect(tokenizer=tokenizer, batch_size=train.micro_batch_size, max_seq_length=model.max_seq_length)``
    and nothing else, where

    * ``tokenizer`` is a ``litgpt.Tokenizer``, which keeps the directory's *name* (``model_name``) and the loaded
      processor, not the directory, so the corpus's tokenizer hash (over the directory's files) cannot be
      checked from it; and it is None when the run has no ``--tokenizer_dir``;
    * ``max_seq_length`` is the model's, not its vocabulary: the config (``padded_vocab_size``) is a local of
      ``litgpt.pretrain.main``, never passed to the data module, a callback or a hook;
    * ``setup`` and ``main`` take ``data`` as an argument and keep no module-level state, and LitGPT has no
      callback API in ``pretrain``; ``prepare_data``/``setup``/``train_dataloader`` take no arguments.

    What was rejected: re-parsing ``sys.argv`` against ``litgpt.pretrain.setup`` (what LitGPT's own
    ``save_checkpoint`` does) sees neither a ``--model_config`` given as an object by a Python caller of
    ``setup`` nor LitGPT's resolution (``Config.from_name``, ``extend_checkpoint_dir``), and instantiates the
    recipe's data module and callbacks a second time; patching ``get_dataloaders`` changes the stock loop for
    everyone in the process. ``tokenizer_dir`` and ``config`` are the exact objects ``main`` received, and
    ``main`` is on the stack while ``connect`` runs (``main -> get_dataloaders -> connect``), so they are read
    from its frame, looked up by its code object (a renamed or restructured ``main`` returns None here and
    the checks that need it are skipped, never misread). Outside such a run (a user calling ``connect``
    directly), None too.
    """
    check_version("litgpt")
    import litgpt.pretrain as pretrain

    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code is pretrain.main.__code__:
            local = frame.f_locals
            return PretrainRun(local.get("tokenizer_dir"), local.get("config"))
        frame = frame.f_back
    return None


def parse_or_explain(config: dict, where: str, fix: str) -> Any:
    """:func:`litgpt_parse`, turning a rejection into one user error: ``where``, LitGPT's reason, then ``fix``."""
    try:
        return litgpt_parse(config)
    except Exception as e:  # jsonargparse raises several types; all mean the recipe is not runnable
        msg = "\n    ".join(str(e).strip().splitlines()[:12])
        raise RegmixError(f"{where}: `litgpt pretrain` would reject the recipe:\n    {msg}\n{fix}") from None


def install_worker_caches() -> None:
    """Make repeated in-process ``litgpt pretrain`` runs cheap (sweep workers; ~3 s -> ~1 s per run)."""
    check_version("litgpt")
    _cache_docstrings()
    _reuse_hyperparameters()


def _cache_docstrings() -> None:
    """Memoise docstring parsing: jsonargparse re-reads and re-parses the source of every class on each
    ``litgpt pretrain`` parse (and again in ``save_checkpoint``), ~2.5 s of a ~3 s per-run overhead here.
    Docstrings only feed ``--help`` text, and an object's docstring cannot change within a process."""
    import docstring_parser

    if getattr(docstring_parser.parse_from_object, "_regmix_cached", False):
        return
    original, cache = docstring_parser.parse_from_object, {}

    def parse_from_object(obj, style=docstring_parser.DocstringStyle.AUTO):
        try:
            key = (obj, style)
            if key not in cache:
                cache[key] = original(obj, style=style)
            return cache[key]
        except TypeError:  # unhashable object
            return original(obj, style=style)

    parse_from_object._regmix_cached = True
    docstring_parser.parse_from_object = parse_from_object


def _reuse_hyperparameters() -> None:
    """Write ``hyperparameters.yaml`` once per run: litgpt's ``save_checkpoint`` re-parses the whole
    ``litgpt pretrain`` argv for every checkpoint (~0.3 s each, 6 per run at the default eval points), and the
    result depends only on the argv and the config file, which do not change within a run; later checkpoints
    of the run get a byte-identical copy."""
    import litgpt.pretrain as pretrain

    if getattr(pretrain.save_hyperparameters, "_regmix_cached", False):
        return
    original, last = pretrain.save_hyperparameters, {}

    def save_hyperparameters(function, checkpoint_dir, known_commands=None):
        argv = [a for a in sys.argv if a != "pretrain"]  # litgpt strips the subcommand from sys.argv in place
        config = argv[argv.index("--config") + 1] if "--config" in argv else None
        key = (function, tuple(argv), Path(config).read_bytes() if config else b"")
        previous = last.get("path")
        if last.get("key") == key and previous is not None and previous.is_file():
            shutil.copyfile(previous, Path(checkpoint_dir) / "hyperparameters.yaml")
            return
        original(function, checkpoint_dir, known_commands)
        last.update(key=key, path=Path(checkpoint_dir) / "hyperparameters.yaml")

    save_hyperparameters._regmix_cached = True
    pretrain.save_hyperparameters = save_hyperparameters


# ------------------------------------------------------------------------------------------ eager runs
@contextmanager
def eager_pretrain(enabled: bool = True):
    """Within the block, the ``torch.compile(model)`` of ``litgpt.pretrain.main`` returns the model unchanged.

    Only ``litgpt.pretrain``'s own name ``torch`` is swapped (for a view of torch whose ``compile`` is the
    identity), so nothing else in the process is affected; restored on exit. ``enabled=False`` does nothing.
    """
    if not enabled:
        yield
        return
    check_version("litgpt")
    import types

    import litgpt.pretrain as pretrain

    real = pretrain.torch

    class _EagerTorch(types.ModuleType):
        def __getattr__(self, name):
            return getattr(real, name)

    view = _EagerTorch("torch")
    view.compile = lambda model, *args, **kwargs: model
    pretrain.torch = view
    try:
        yield
    finally:
        pretrain.torch = real


# ------------------------------------------------------------------------ fused output layer and loss
# The proxy fast path (``regmix sweep --fused_loss``) without forking litgpt/pretrain.py: for the duration of a
# ``with`` block, the model that ``litgpt.pretrain.main`` builds gets an output layer that returns its input and
# its weight (:class:`HiddenStates`) instead of logits, and the ``chunked_cross_entropy`` that ``fit`` and
# ``validate`` call computes the loss from them with a fused linear cross-entropy. Parameters and their names are
# untouched (the head is the same ``nn.Linear`` with the same weight, only its class differs while the block
# runs), so checkpoints are ordinary LitGPT checkpoints.
class HiddenStates(NamedTuple):
    """What the bypassed output layer returns in place of the logits (a named tuple: Fabric's output casting and
    ``torch.compile`` both pass named tuples through)."""

    hidden: Any
    weight: Any
    bias: Any


@cache
def _hidden_head_class():
    import torch

    class HiddenStateHead(torch.nn.Linear):
        """An ``nn.Linear`` whose forward hands back its input and parameters instead of multiplying."""

        def forward(self, x):
            return HiddenStates(x, self.weight, self.bias)

    return HiddenStateHead


def _bypassable(model) -> bool:
    import torch

    # softcapped logits (Gemma 2) are not a linear cross-entropy; those models keep their plain head
    return type(model.lm_head) is torch.nn.Linear and model.config.final_logit_softcapping is None


@contextmanager
def hidden_state_head(model):
    """Within the block, ``model(idx)`` returns :class:`HiddenStates` instead of logits (if it can; see
    :func:`_bypassable`); yields whether it does."""
    if not _bypassable(model):
        yield False
        return
    head, plain = model.lm_head, type(model.lm_head)
    head.__class__ = _hidden_head_class()  # same object, same Parameter: no copy, no re-initialisation, no RNG
    try:
        yield True
    finally:
        head.__class__ = plain


def fused_cross_entropy(out, targets, loss_fn, dtype=None, reduction: str = "mean", ignore_index: int = -100):
    """The cross-entropy of a :class:`HiddenStates` through ``loss_fn(hidden, weight, bias, targets, ...)``.

    ``dtype`` is the precision the plain head would have multiplied in (bf16 under ``bf16-mixed`` autocast);
    Fabric hands module outputs back in fp32, so hidden and weight are cast to it here.
    """
    hidden, weight, bias = out
    if dtype is not None:
        hidden, weight = hidden.to(dtype), weight.to(dtype)
        bias = None if bias is None else bias.to(dtype)
    return loss_fn(hidden, weight, bias, targets, reduction=reduction, ignore_index=ignore_index)


#: ``precision`` of a pretrain config -> the dtype its output layer multiplies in.
_HEAD_DTYPES = {
    "bf16-mixed": "bfloat16",
    "bf16-true": "bfloat16",
    "16-mixed": "float16",
    "16-true": "float16",
    "32-true": "float32",
    "64-true": "float64",
}


def head_dtype(precision: str | None):
    """The torch dtype the output layer computes in under a ``precision`` setting (``None``: fp32)."""
    import torch

    return getattr(torch, _HEAD_DTYPES.get(precision or "32-true", "float32"))


class FusedRun:
    """What a :func:`fused_pretrain` block did: ``used`` is True once a loss was computed by ``loss_fn``."""

    used: bool = False


@contextmanager
def fused_pretrain(loss_fn, precision: str | None):
    """Make ``litgpt pretrain`` (run in this process within the block) train and validate through ``loss_fn``.

    Patches two names of ``litgpt.pretrain`` and restores them on exit: ``GPT`` (a subclass whose output layer
    is bypassed, see :func:`hidden_state_head`) and ``chunked_cross_entropy`` (which sends :class:`HiddenStates`
    to ``loss_fn`` and anything else to LitGPT's own function). LitGPT's FLOP counter runs the model and loss
    on the meta device; there the plain product is computed, so its MFU still counts the output layer.
    Yields a :class:`FusedRun`.
    """
    check_version("litgpt")
    import litgpt.pretrain as pretrain
    import torch

    plain_gpt, plain_loss = pretrain.GPT, pretrain.chunked_cross_entropy
    dtype, run = head_dtype(precision), FusedRun()

    class GPT(plain_gpt):
        def __init__(self, config, *args, **kwargs):
            super().__init__(config, *args, **kwargs)
            if _bypassable(self):
                self.lm_head.__class__ = _hidden_head_class()

    def chunked_cross_entropy(logits, targets, chunk_size: int = 128, ignore_index: int = -100):
        if not isinstance(logits, HiddenStates):
            return plain_loss(logits, targets, chunk_size=chunk_size, ignore_index=ignore_index)
        hidden, weight, bias = logits
        if hidden.device.type == "meta":
            return plain_loss(
                torch.nn.functional.linear(hidden, weight, bias),
                targets,
                chunk_size=chunk_size,
                ignore_index=ignore_index,
            )
        run.used = True
        return fused_cross_entropy(logits, targets, loss_fn, dtype, ignore_index=ignore_index)

    GPT.__name__ = GPT.__qualname__ = plain_gpt.__name__
    pretrain.GPT, pretrain.chunked_cross_entropy = GPT, chunked_cross_entropy
    try:
        yield run
    finally:
        pretrain.GPT, pretrain.chunked_cross_entropy = plain_gpt, plain_loss


# ---------------------------------------------------------------------------------------- test hook
@contextmanager
def ddp_instead_of_fsdp_for_tests(backend: str = "gloo"):
    """TEST HOOK, never active in normal use: within the block, the ``FSDPStrategy`` that ``litgpt pretrain``
    builds for ``devices * num_nodes > 1`` is a ``DDPStrategy(process_group_backend=backend)`` instead.

    Fabric refuses FSDP on CPU, so a multi-rank CPU test of the stock loop (``tests/test_multirank.py``, under
    ``torchrun --nproc_per_node 2``; Fabric sees the torchelastic environment and does not launch processes
    itself) needs another strategy. Everything else the loop does, data module and callbacks included, is
    unchanged. Only the name ``FSDPStrategy`` of ``litgpt.pretrain`` is swapped, for a class whose construction
    returns the DDP strategy; ``isinstance(strategy, FSDPStrategy)`` stays False, so LitGPT initialises the
    weights itself as it does for one device. Restored on exit.
    """
    check_version("litgpt")
    import litgpt.pretrain as pretrain
    from lightning.fabric.strategies import DDPStrategy

    class _DDPInsteadOfFSDP:
        def __new__(cls, *args, **kwargs):
            return DDPStrategy(process_group_backend=backend)

    real = pretrain.FSDPStrategy
    pretrain.FSDPStrategy = _DDPInsteadOfFSDP
    try:
        yield
    finally:
        pretrain.FSDPStrategy = real
