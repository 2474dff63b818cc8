"""The reuse structure's maths (reduce/expand/round/check) and the fingerprint comparison, without a corpus."""

from __future__ import annotations

import numpy as np
import pytest

from regmix_plugin.formats.reuse import BLOCK, ReuseStructure, compare_domains

DOMAINS = ("arxiv", "code", "prose", "web")


def structure(**kw) -> ReuseStructure:
    # arxiv, prose and web unchanged in ratio 1:3:6 (given unnormalised); code is free
    return ReuseStructure(DOMAINS, {"arxiv": 0.1, "prose": 0.3, "web": 0.6}, **kw)


def test_reduce_and_expand_round_trip_and_keep_ratios():
    s = structure()
    assert s.block == ["arxiv", "prose", "web"] and s.free == ["code"] and s.coordinates == [BLOCK, "code"]
    reduced = np.array([[0.8, 0.2], [0.5, 0.5], [1.0, 0.0]])
    full = s.expand(reduced)
    np.testing.assert_allclose(full[0], [0.08, 0.2, 0.24, 0.48])
    np.testing.assert_allclose(full.sum(1), 1.0)
    np.testing.assert_allclose(s.reduce(full), reduced)
    assert not s.broken(full).any()
    assert s.expand_mixture({BLOCK: 0.5, "code": 0.5}) == pytest.approx(
        {"arxiv": 0.05, "code": 0.5, "prose": 0.15, "web": 0.3}
    )
    assert s.reduce_mixture({"arxiv": 0.05, "code": 0.5, "prose": 0.15, "web": 0.3}) == pytest.approx(
        {BLOCK: 0.5, "code": 0.5}
    )


def test_ratios_are_normalised_and_bad_records_refused():
    assert structure().ratios == pytest.approx({"arxiv": 0.1, "prose": 0.3, "web": 0.6})
    assert ReuseStructure(DOMAINS, {"web": 2.0, "prose": 2.0}).ratios == {"prose": 0.5, "web": 0.5}
    with pytest.raises(ValueError, match="'?nope'?.*not among"):
        ReuseStructure(DOMAINS, {"nope": 1.0}, source="old.yaml")
    with pytest.raises(ValueError, match="positive sum"):
        ReuseStructure(DOMAINS, {"web": 0.0})
    with pytest.raises(ValueError, match="model.json: the reuse record needs"):
        ReuseStructure.from_dict({"free": []}, DOMAINS, "model.json")


def test_round_units_keeps_the_ratios_within_one_unit_and_sums_exactly():
    s = structure(decimals=4)
    rng = np.random.default_rng(0)
    for reduced in rng.dirichlet([1.0, 1.0], size=200):
        units = s.round_units(reduced, 4)
        assert units.sum() == 10**4
        block_total = units[[0, 2, 3]].sum()
        # the block cells are the largest-remainder split of the rounded total: within one unit of total*ratio
        assert np.all(np.abs(units[[0, 2, 3]] - block_total * np.array([0.1, 0.3, 0.6])) < 1)
        assert not s.broken(units / 10**4).any()


def test_broken_flags_rows_that_change_the_block_ratios():
    s = structure(decimals=4)
    good = s.expand(np.array([0.6, 0.4]))
    bad = good + np.array([0.01, 0.0, -0.01, 0.0])  # moves weight from prose to arxiv: same total, other ratios
    assert s.broken(np.stack([good, bad])).tolist() == [False, True]
    assert s.broken(good + np.array([0.00005, 0, -0.00005, 0])).tolist() == [False]  # within one 1e-4 unit


def test_record_round_trips():
    s = structure(source="v1/mixture.yaml", decimals=4)
    back = ReuseStructure.from_dict(s.to_dict(), DOMAINS, "x")
    assert back == s and back.to_dict()["free"] == ["code"]


def test_compare_domains_by_fingerprint_then_name():
    previous = {"arxiv": "a1", "code": "c1", "old": "o1", "prose": None}
    current = {"arxiv": "a1", "code": "c2", "prose": "p2", "web": "w1"}
    c = compare_domains(previous, current)
    assert (c.unchanged, c.changed, c.new, c.dropped, c.by_name) == (
        ["arxiv", "prose"],
        ["code"],
        ["web"],
        ["old"],
        ["prose"],
    )
    assert "dropped: old" in c.summary() and "by name only: prose" in c.summary()
