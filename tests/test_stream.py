"""MixtureData's stream on real litdata chunks: exact prefixes, cycling, ranks/workers, resume, stages."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from litdata.utilities.env import _DistributedEnv

from regmix_plugin.pretrain.mixture_data import MixtureData
from regmix_plugin.pretrain.stream import MixtureCallback, MixtureLoader, StreamState, TokenSource

SEQ = 32  # max_seq_length; blocks are SEQ + 1 tokens


def module(prepared, batch_size=1, **kw) -> MixtureData:
    kw.setdefault("weights", {"prose": 0.5, "code": 0.3, "tiny": 0.2})
    kw.setdefault("num_workers", 0)
    dm = MixtureData(data_path=prepared, **kw)
    dm.connect(batch_size=batch_size, max_seq_length=SEQ)
    dm.prepare_data()
    dm.setup()
    return dm


def block_owner(prepared) -> dict[bytes, tuple[str, int]]:
    """Every train block's bytes -> (domain, global block index), to identify what the stream served."""
    out = {}
    for d in ("prose", "code", "tiny"):
        src = TokenSource(prepared / d / "train", SEQ + 1)
        i = 0
        for c, n in enumerate(src.chunk_blocks):
            for j in range(int(n)):
                out[np.asarray(src.block(c, j), dtype=np.int64).tobytes()] = (d, i)
                i += 1
    return out


def served(loader, n_batches, owner) -> list[tuple[str, int]]:
    return [
        owner[row.numpy().astype(np.int64).tobytes()] for batch in itertools.islice(loader, n_batches) for row in batch
    ]


def test_every_prefix_within_one_sample(prepared):
    owner = block_owner(prepared)
    weights = {"prose": 0.55, "code": 0.3, "tiny": 0.15}
    seq = served(module(prepared, weights=weights).train_dataloader(), 400, owner)
    counts = dict.fromkeys(weights, 0)
    worst = 0.0
    for n, (d, _) in enumerate(seq, 1):
        counts[d] += 1
        worst = max(worst, *(abs(counts[k] - w * n) for k, w in weights.items()))
    assert worst <= 1.0, worst
    assert counts == {"prose": 220, "code": 120, "tiny": 60}


def test_zero_weight_domain_is_never_opened_or_served(prepared):
    dm = module(prepared, weights={"prose": 0.6, "code": 0.4, "tiny": 0.0})
    loader = dm.train_dataloader()
    assert sorted(loader.dataset.sources) == ["code", "prose"]
    assert {d for d, _ in served(loader, 50, block_owner(prepared))} == {"prose", "code"}


def test_tiny_domain_cycles_alone_with_reshuffle_and_epoch_count(prepared):
    owner = block_owner(prepared)
    tiny_blocks = TokenSource(prepared / "tiny" / "train", SEQ + 1).num_blocks
    loader = module(prepared, weights={"prose": 0.4, "tiny": 0.6}, max_epochs=100).train_dataloader()
    seq = served(loader, 10 * tiny_blocks, owner)
    tiny = [i for d, i in seq if d == "tiny"]
    epochs = [tiny[k : k + tiny_blocks] for k in range(0, len(tiny) - tiny_blocks + 1, tiny_blocks)]
    assert len(epochs) >= 5
    for ep in epochs:  # every epoch visits every block exactly once
        assert sorted(ep) == list(range(tiny_blocks))
    assert len({tuple(ep) for ep in epochs}) == len(epochs)  # and in a new order each time
    state = loader.state_dict()["streams"][0]
    assert state["epochs"]["tiny"] == state["samples"]["tiny"] // tiny_blocks
    # the big domain was not disturbed: its blocks are exactly those of a prose-only stream
    prose = [i for d, i in seq if d == "prose"]
    alone = [i for _, i in served(module(prepared, weights={"prose": 1.0}).train_dataloader(), len(prose), owner)]
    assert prose == alone
    assert len(set(prose)) == len(prose)  # prose has not finished its first epoch


def test_ranks_and_workers_read_disjoint_data_with_exact_proportions(prepared):
    owner = block_owner(prepared)
    weights = {"prose": 0.5, "code": 0.5}
    per_stream = {}
    for rank in range(2):
        loader = module(prepared, batch_size=2, weights=weights, num_workers=2).train_dataloader()
        loader.dataset.distributed_env = _DistributedEnv(world_size=2, global_rank=rank, num_nodes=1)
        batches = list(itertools.islice(loader, 20))  # 10 batches from each of 2 real worker processes
        for w in range(2):
            rows = [r for b in batches[w::2] for r in b]
            per_stream[(rank, w)] = [owner[r.numpy().astype(np.int64).tobytes()] for r in rows]
        streams = loader.state_dict()["streams"]
        assert sorted(streams) == [0, 1] and all(s["num_streams"] == 4 for s in streams.values())
    for seq in per_stream.values():
        counts = {"prose": 0, "code": 0}
        for n, (d, _) in enumerate(seq, 1):
            counts[d] += 1
            assert all(abs(counts[k] - 0.5 * n) <= 1 for k in counts)
    for d in weights:  # within a domain's first epoch, no block is served to two streams
        blocks = [i for seq in per_stream.values() for dd, i in seq if dd == d]
        assert len(blocks) == len(set(blocks)) == 40


@pytest.mark.parametrize("workers", [0, 2])
def test_resume_continues_the_stream_exactly(prepared, workers):
    owner = block_owner(prepared)
    kw = dict(batch_size=3, num_workers=workers, weights={"prose": 0.5, "code": 0.25, "tiny": 0.25}, max_epochs=50)
    full = served(module(prepared, **kw).train_dataloader(), 40, owner)
    first = module(prepared, **kw).train_dataloader()
    head = served(first, 14, owner)  # workers have prefetched beyond this; the state must not count that
    state = first.state_dict()
    second = module(prepared, **kw).train_dataloader()
    second.load_state_dict(state)
    tail = served(second, 26, owner)
    assert head + tail == full


def test_resume_refuses_another_worker_count(prepared):
    first = module(prepared, num_workers=2).train_dataloader()
    list(itertools.islice(first, 4))
    other = module(prepared, num_workers=1).train_dataloader()
    with pytest.raises(ValueError, match="--data.num_workers 2"):
        other.load_state_dict(first.state_dict())


def test_schedule_switch_is_exact_per_stage_and_survives_resume(prepared):
    owner = block_owner(prepared)
    tokens_per_batch = 2 * SEQ
    kw = dict(
        batch_size=2,
        weights=None,
        max_tokens=100 * tokens_per_batch,  # 100 batches = 200 samples; the switch lands at sample 60
        schedule=[
            {"until_fraction": 0.3, "weights": {"prose": 0.75, "tiny": 0.25}},
            {"weights": {"code": 0.6, "tiny": 0.4}},
        ],
        max_epochs=50,
    )
    seq = served(module(prepared, **kw).train_dataloader(), 100, owner)
    stage1, stage2 = seq[:60], seq[60:]
    for stage, weights in ((stage1, {"prose": 0.75, "tiny": 0.25}), (stage2, {"code": 0.6, "tiny": 0.4})):
        counts = dict.fromkeys(weights, 0)
        for n, (d, _) in enumerate(stage, 1):
            counts[d] = counts.get(d, 0) + 1
            assert all(abs(counts[k] - w * n) <= 1 for k, w in weights.items()), (n, counts)
    assert {d for d, _ in stage1} == {"prose", "tiny"} and {d for d, _ in stage2} == {"code", "tiny"}
    for cut in (20, 45):  # before and after the switch
        first = module(prepared, **kw).train_dataloader()
        head = served(first, cut, owner)
        second = module(prepared, **kw).train_dataloader()
        second.load_state_dict(first.state_dict())
        assert head + served(second, 100 - cut, owner) == seq


class SwitchAt(MixtureCallback):
    """Test callback: switches to its weights once the stream has served ``at`` samples."""

    def __init__(self, at: int = 10, weights: dict | None = None):
        super().__init__(interval=1)
        self.at, self.weights = at, weights or {"code": 1.0}

    def on_advance(self, state: StreamState, weights):
        return self.weights if state.position == self.at else None


def test_callback_switches_mixture_and_the_switch_survives_resume(prepared):
    owner = block_owner(prepared)
    kw = dict(weights={"prose": 0.5, "code": 0.5}, callbacks=[SwitchAt(10, {"code": 0.25, "prose": 0.75})])
    seq = served(module(prepared, **kw).train_dataloader(), 50, owner)
    after = [d for d, _ in seq[10:]]
    assert after.count("prose") == 30 and after.count("code") == 10
    first = module(prepared, **kw).train_dataloader()
    head = served(first, 25, owner)
    assert first.state_dict()["streams"][0]["override"] == {"code": 0.25, "prose": 0.75, "tiny": 0.0}
    second = module(prepared, **kw).train_dataloader()
    second.load_state_dict(first.state_dict())
    assert head + served(second, 25, owner) == seq


def test_val_stream_is_round_robin_with_equal_blocks(prepared):
    dm = module(prepared, batch_size=4, val_blocks_per_domain=3)
    owner = {}
    for d in ("code", "prose", "tiny"):
        src = TokenSource(prepared / d / "val", SEQ + 1)
        owner.update({np.asarray(src.block_at(i), dtype=np.int64).tobytes(): d for i in src.evenly_spaced(3)})
    rows = [r for b in dm.val_dataloader() for r in b]
    assert [owner[r.numpy().tobytes()] for r in rows] == ["code", "prose", "tiny"] * 3
    again = [r for b in dm.val_dataloader() for r in b]
    assert all(torch.equal(a, b) for a, b in zip(rows, again, strict=True))
    # one definition of the val set: LitGPT's val_loss and `regmix evaluate` score the very same blocks
    from regmix_plugin.pretrain.scoring import val_blocks

    scored, _ = val_blocks(prepared, ["code", "prose", "tiny"], SEQ, 3 * SEQ)
    for k, d in enumerate(("code", "prose", "tiny")):
        assert np.array_equal(np.stack([r.numpy() for r in rows[k::3]]), scored[d])


def test_epoch_guard_at_setup_names_the_numbers(prepared):
    tiny_blocks = TokenSource(prepared / "tiny" / "train", SEQ + 1).num_blocks
    budget = 40 * tiny_blocks * SEQ  # 40 * blocks samples; tiny at 0.5 would repeat 20 times
    dm = module(prepared, weights={"prose": 0.5, "tiny": 0.5}, max_tokens=budget, max_epochs=15)
    with pytest.raises(ValueError, match=r"tiny: .* = 20\.0 epochs[\s\S]*--data.on_epoch_limit warn"):
        dm.train_dataloader()
    dm = module(prepared, weights={"prose": 0.5, "tiny": 0.5}, max_tokens=budget, on_epoch_limit="warn")
    with pytest.warns(UserWarning, match="tiny"):
        dm.train_dataloader()


def test_epoch_guard_at_runtime_without_budget(prepared):
    tiny_blocks = TokenSource(prepared / "tiny" / "train", SEQ + 1).num_blocks
    loader = module(prepared, weights={"tiny": 1.0}, max_epochs=2).train_dataloader()
    it = iter(loader)
    for _ in range(2 * tiny_blocks):
        next(it)
    with pytest.raises(RuntimeError, match="more than max_epochs=2 times"):
        next(it)
    loader = module(prepared, weights={"tiny": 1.0}, max_epochs=2, on_epoch_limit="warn").train_dataloader()
    with pytest.warns(UserWarning, match="max_epochs=2"):
        list(itertools.islice(loader, 3 * tiny_blocks))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            dict(weights={"prose": 0.5, "pile_cc": 0.5}),
            r"unknown domain\(s\) 'pile_cc'.*Known domains: code, prose, tiny",
        ),
        (dict(weights={"prose": 1.2, "code": -0.2}), r"weight of 'code' is negative"),
        (dict(weights={"prose": math.nan, "code": 1.0}), r"weight of 'prose' is nan, not finite"),
        (dict(weights={"prose": 0.5, "code": 0.4}), r"--data.weights: weights sum to 0.9, not 1"),
        (dict(weights={"prose": 1.0}, schedule=[{"weights": {"prose": 1.0}}]), r"exactly one of --data.weights"),
        (dict(weights=None), r"exactly one of --data.weights and --data.schedule"),
        (
            dict(
                weights=None, schedule=[{"until_fraction": 0.5, "weights": {"prose": 1.0}}, {"weights": {"code": 1.0}}]
            ),
            r"until_fraction needs --data.max_tokens",
        ),
        (
            dict(weights=None, schedule=[{"until_step": 3, "weights": {"prose": 1.0}}]),
            r"unknown key\(s\) \['until_step'\]",
        ),
        (dict(val_domains=["nope"]), r"--data.val_domains: 'nope' has no val data"),
    ],
)
def test_bad_input_gives_one_clear_error(prepared, kwargs, message):
    with pytest.raises(ValueError, match=message):
        module(prepared, **kwargs).train_dataloader()


def test_sum_drift_within_tolerance_is_renormalised(prepared):
    dm = module(prepared, weights={"prose": 0.5004, "code": 0.5})
    assert dm.stages[0].weights["prose"] == pytest.approx(0.5004 / 1.0004)


def test_missing_corpus_names_the_flag(tmp_path):
    dm = MixtureData(data_path=tmp_path / "nothing", weights={"a": 1.0})
    with pytest.raises(FileNotFoundError, match=r"--data.data_path .* run `regmix prepare"):
        dm.prepare_data()


def test_domain_smaller_than_the_streams_is_refused(prepared):
    tiny_blocks = TokenSource(prepared / "tiny" / "train", SEQ + 1).num_blocks
    loader = module(prepared, weights={"tiny": 1.0}).train_dataloader()
    loader.dataset.distributed_env = _DistributedEnv(world_size=tiny_blocks + 1, global_rank=0, num_nodes=1)
    with pytest.raises(ValueError, match="fewer than the .* streams"):
        next(iter(loader))


def test_loader_state_is_what_inspect_reads(prepared):
    loader = module(prepared, batch_size=4).train_dataloader()
    assert isinstance(loader, MixtureLoader)
    list(itertools.islice(loader, 25))
    st = loader.state_dict()
    assert st["tokens_per_sample"] == SEQ + 1
    assert st["streams"][0]["samples"] == {"prose": 50, "code": 30, "tiny": 20}


class Never(MixtureCallback):
    """Test callback with ``interval=None``: it must never be called per sample."""

    def __init__(self):
        super().__init__(interval=None)

    def on_advance(self, state, weights):
        raise AssertionError("a callback with interval None was called per sample")


def test_a_callback_with_interval_none_is_never_called_and_interval_zero_is_refused(prepared):
    owner = block_owner(prepared)
    kw = dict(weights={"prose": 0.5, "code": 0.5})
    plain = served(module(prepared, **kw).train_dataloader(), 20, owner)
    assert served(module(prepared, callbacks=[Never()], **kw).train_dataloader(), 20, owner) == plain
    with pytest.raises(ValueError, match="interval must be a positive number of samples or None, got 0"):
        MixtureCallback(interval=0)


def test_two_stage_controllers_in_one_run_are_refused_naming_them(prepared, tmp_path):
    from regmix_plugin.pretrain.controller import RegMixDController

    two = [RegMixDController(str(tmp_path / "m"), str(tmp_path)) for _ in range(2)]
    stages = [{"until_tokens": 64, "weights": {"prose": 1.0}}, {"weights": {"code": 1.0}}]
    dm = module(prepared, weights=None, schedule=stages, callbacks=two)
    named = r"--data.callbacks: at most one stage controller per run, got 2 \(RegMixDController, RegMixDController\)"
    with pytest.raises(ValueError, match=named):
        dm.train_dataloader()
