"""The proxy fast path (``--fused_loss``): the swap of LitGPT's output layer and loss, its undo, and its numbers.

On CPU the fused kernel cannot run, so the plumbing is proved with the pure-PyTorch reference
(``chunked_linear_cross_entropy``) through the real model and the real ``litgpt pretrain`` loop: same loss, same
gradients, same training, and everything restored afterwards. ``auto`` must keep today's plain path on CPU.
The GPU correctness guard (fused vs plain on 8 mixtures) runs only where CUDA and the kernel are present.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
from conftest import pretrain_config, tiny_model_config

from regmix_plugin.errors import RegmixError
from regmix_plugin.litgpt_compat import (
    HiddenStates,
    fused_cross_entropy,
    fused_pretrain,
    hidden_state_head,
    run_pretrain,
)
from regmix_plugin.pretrain import fused_loss


def _tiny_gpt(dtype=torch.float64):
    from litgpt import GPT, Config

    torch.manual_seed(0)
    return GPT(Config(**tiny_model_config(vocab=97, block_size=16))).to(dtype)


def test_fused_loss_and_gradients_equal_the_plain_path_in_float64():
    from litgpt.utils import chunked_cross_entropy

    model = _tiny_gpt()
    gen = torch.Generator().manual_seed(1)
    x = torch.randint(0, 97, (3, 16), generator=gen)
    y = torch.randint(0, 97, (3, 16), generator=gen)
    y[0, :5] = -100  # ignored targets count in neither path's mean
    keys = list(model.state_dict())

    plain = chunked_cross_entropy(model(x), y)
    plain.backward()
    plain_grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()

    with hidden_state_head(model) as bypassed:
        out = model(x)
        assert bypassed and isinstance(out, HiddenStates) and out.hidden.shape == (3, 16, 32)
        assert out.weight is model.lm_head.weight
        # 7-row chunks: several chunks, one ragged, so the chunked sum and its checkpointed backward are exercised
        fused = fused_cross_entropy(
            out, y, lambda *a, **k: fused_loss.chunked_linear_cross_entropy(*a, **k, chunk_rows=7)
        )
    fused.backward()
    assert abs(fused.item() - plain.item()) < 1e-12
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.grad, plain_grads[name], rtol=1e-10, atol=1e-12, msg=name)
    # undone: the same head object is an nn.Linear again, the model returns logits, parameters keep their names
    assert type(model.lm_head) is torch.nn.Linear and model(x).shape == (3, 16, 97)
    assert list(model.state_dict()) == keys


def test_sum_reduction_and_bf16_logits_follow_the_plain_definition():
    gen = torch.Generator().manual_seed(2)
    h = torch.randn(50, 8, generator=gen, dtype=torch.float64)
    w = torch.randn(13, 8, generator=gen, dtype=torch.float64)
    t = torch.randint(0, 13, (50,), generator=gen)
    ref = torch.nn.functional.cross_entropy(h @ w.T, t, reduction="sum")
    got = fused_loss.chunked_linear_cross_entropy(h, w, None, t, reduction="sum", chunk_rows=16)
    assert abs(got.item() - ref.item()) < 1e-10
    # bf16 inputs: the loss of bf16 logits is taken in fp32, as LitGPT's plain loss does after Fabric's cast
    hb, wb = h.bfloat16(), w.bfloat16()
    ref16 = torch.nn.functional.cross_entropy((hb @ wb.T).float(), t)
    got16 = fused_loss.chunked_linear_cross_entropy(hb, wb, None, t, chunk_rows=16)
    assert got16.dtype == torch.float32 and abs(got16.item() - ref16.item()) < 1e-6


def _metrics(out_dir: Path) -> list[float]:
    (path,) = sorted(out_dir.glob("logs/**/metrics.csv"))
    with open(path, newline="") as f:
        return [float(r["loss"]) for r in csv.DictReader(f) if r.get("loss")]


def test_litgpt_pretrain_through_the_fused_path_trains_like_the_plain_one_and_is_undone(
    tmp_path, prepared, tokenizer_dir
):
    import litgpt.model
    import litgpt.pretrain
    import litgpt.utils

    from regmix_plugin.pretrain.scoring import load_checkpoint

    weights = {"code": 0.5, "prose": 0.5, "tiny": 0.0}
    plain_cfg = pretrain_config(tmp_path / "plain", prepared, tokenizer_dir, weights)
    fused_cfg = pretrain_config(tmp_path / "fused", prepared, tokenizer_dir, weights)
    for cfg in (plain_cfg, fused_cfg):
        cfg["eval"].update(final_validation=True)
    run_pretrain(plain_cfg)
    with fused_pretrain(fused_loss.chunked_linear_cross_entropy, fused_cfg["precision"]) as run:
        assert litgpt.pretrain.GPT is not litgpt.model.GPT
        run_pretrain(fused_cfg)
    assert run.used  # the loss really went through the swapped function
    assert litgpt.pretrain.GPT is litgpt.model.GPT
    assert litgpt.pretrain.chunked_cross_entropy is litgpt.utils.chunked_cross_entropy

    plain, fused = _metrics(tmp_path / "plain"), _metrics(tmp_path / "fused")
    assert len(plain) == len(fused) == 10
    # fp32, same data and seed: only the summation order of the loss differs
    assert max(abs(a - b) for a, b in zip(plain, fused, strict=True)) < 1e-4
    # the checkpoint is an ordinary LitGPT model: it loads as a plain GPT and its output layer returns logits
    a, b = load_checkpoint(tmp_path / "plain" / "final"), load_checkpoint(tmp_path / "fused" / "final")
    assert type(b.lm_head) is torch.nn.Linear and list(a.state_dict()) == list(b.state_dict())
    for name, p in a.state_dict().items():
        torch.testing.assert_close(b.state_dict()[name], p, rtol=1e-3, atol=1e-4, msg=name)


def test_auto_is_the_plain_path_on_cpu_and_on_needs_the_kernel():
    assert fused_loss.resolve("auto", "cpu") == fused_loss.PLAIN
    assert fused_loss.resolve("off", "cuda") == fused_loss.PLAIN
    with pytest.raises(RegmixError, match="--fused_loss on: .*use --fused_loss auto"):
        fused_loss.resolve("on", "cpu")
    assert "--fused_loss must be one of auto, on, off" in fused_loss.check_mode("fast")
    assert fused_loss.check_mode("auto") is None and fused_loss.check_mode("off") is None


def test_sweep_records_usage_and_auto_keeps_todays_plain_path_on_cpu(tmp_path, prepared, tokenizer_dir):
    import litgpt.model
    import litgpt.pretrain
    import yaml

    from regmix_plugin.commands.sweep import EvalArgs, LocalArgs, sweep
    from regmix_plugin.formats.mixture_table import write_mixtures
    from regmix_plugin.formats.sweep_records import read_records

    write_mixtures(tmp_path / "mix.csv", {"m1": {"code": 0.5, "prose": 0.5, "tiny": 0.0}}, ["code", "prose", "tiny"])
    cfg = pretrain_config(Path("unused"), prepared, tokenizer_dir, None)
    cfg["train"].update(max_tokens=12 * 4 * 32)
    (tmp_path / "proxy.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    common = dict(
        mixtures=tmp_path / "mix.csv",
        data_path=prepared,
        recipe=tmp_path / "proxy.yaml",
        local=LocalArgs(workers=0),
        eval=EvalArgs(points=1, val_tokens=128, batch_size=4),
    )
    sweep(out_dir=tmp_path / "auto", **common)

    auto = read_records(tmp_path / "auto")["m1"]
    # auto on CPU is today's path: the worker resolved it to LitGPT's own loss and left LitGPT's names alone
    assert auto.status == "done" and auto.loss_kernel == "plain" and auto.device == "cpu"
    assert auto.peak_memory_bytes is None and auto.tokens_per_s > 0 and len(auto.losses) == 2
    assert litgpt.pretrain.GPT is litgpt.model.GPT
    raw = json.loads((tmp_path / "auto" / "runs" / "m1.json").read_text())
    assert {"device", "peak_memory_bytes", "tokens_per_s", "loss_kernel"} <= set(raw)
    assert auto.usage_line().startswith("cpu, ") and auto.usage_line().endswith("tokens/s, loss plain, eager")
    with pytest.raises(ValueError, match="--fused_loss on: "):
        sweep(out_dir=tmp_path / "on", fused_loss="on", **common)
    assert not (tmp_path / "on" / "runs").exists()
    # --compile auto trains eagerly on CPU (measured no faster compiled); `on` compiles as litgpt pretrain does,
    # and both follow the same curve
    assert auto.compiled is False
    sweep(out_dir=tmp_path / "compiled", compile="on", **common)
    compiled = read_records(tmp_path / "compiled")["m1"]
    assert compiled.status == "done" and compiled.compiled is True
    for a, c in zip(auto.losses, compiled.losses, strict=True):
        assert a["losses"] == pytest.approx(c["losses"], abs=1e-4)
    import torch

    assert litgpt.pretrain.torch is torch  # the eager view was put back
    with pytest.raises(ValueError, match="--compile must be one of auto, on, off, got 'fast'"):
        sweep(out_dir=tmp_path / "bad", compile="fast", **common)


def test_records_of_older_versions_still_load():
    from regmix_plugin.formats.sweep_records import RunRecord

    old = {"run_id": "m1", "status": "done", "mixture": {"a": 1.0}, "losses": [], "tokens": 1, "wall_s": 1.0}
    rec = RunRecord.from_dict(old)
    assert rec.device is None and rec.peak_memory_bytes is None and rec.tokens_per_s is None
    assert rec.usage_line() == ""


@pytest.mark.skipif(torch.cuda.is_available(), reason="with CUDA the bench measures for minutes")
def test_gpu_bench_says_there_is_no_gpu_and_exits_0_on_cpu():
    import subprocess
    import sys

    bench = Path(__file__).resolve().parents[1] / "bench" / "gpu_proxy_throughput.py"
    done = subprocess.run([sys.executable, str(bench)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("no CUDA device:") and "nothing was measured" in done.stdout


def test_tokens_per_s_is_the_rolling_rate_or_for_short_runs_the_per_iteration_one(tmp_path):
    from regmix_plugin.commands.sweep.measure import steady_tokens_per_s

    logs = tmp_path / "logs" / "csv" / "version_0"
    logs.mkdir(parents=True)
    head = "device/items_per_sec,iter,iter_time,loss,tokens\n"
    # short run: no rolling window yet; the first logged iteration (compilation, 9 s) is left out
    (logs / "metrics.csv").write_text(head + ",1,9.0,5.0,1000\n,2,0.5,4.0,2000\n,3,0.25,3.0,3000\n,4,1.0,3.0,4000\n")
    assert steady_tokens_per_s(tmp_path) == 2000.0  # median of 2000, 4000 and 1000 tokens/s
    (logs / "metrics.csv").write_text(head + "100.0,5,1,3,5000\n300.0,6,1,3,6000\n200.0,7,1,3,7000\n")
    assert steady_tokens_per_s(tmp_path) == 200.0
    assert steady_tokens_per_s(tmp_path / "nothing") is None
