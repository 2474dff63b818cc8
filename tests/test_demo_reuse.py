"""The demo's opt-in ``reuse`` scenario, its wiring only (the full scenario trains ~110 proxies: bench/reuse_spread.py).

What the scenario's result rests on: version 1 lacks the new domain, every version shares one tokenizer, and the
unchanged domains prepare to byte-identical chunks (equal fingerprints), so `sample --reuse` keeps them as the block
and `fit --also` accepts version 1's runs.
"""

from __future__ import annotations

import pytest


def test_reuse_scenario_versions_share_tokenizer_and_unchanged_fingerprints(tmp_path):
    from regmix_plugin.demo.corpus import DEMO_DOMAINS
    from regmix_plugin.demo.reuse import corpora, pipelines
    from regmix_plugin.formats.manifest import read_manifest
    from regmix_plugin.formats.reuse import compare_domains
    from regmix_plugin.models.regressors import MIN_CV_RUNS

    v1, full, reuse = pipelines(tmp_path, quick=True, proxies=None, workers=1, seed=0, new_domain="math")
    assert (v1.proxies, full.proxies, reuse.proxies) == (12, 12, max(MIN_CV_RUNS, 3))
    assert reuse.reuse_from == v1.out_dir / "mixture.yaml" and full.reuse_from is None and v1.reuse_from is None
    corpora(v1, full, reuse, "math", quick=True)
    m1, m2, m3 = (read_manifest(p.out_dir / "data") for p in (v1, full, reuse))
    assert m1.train_domains() == sorted(set(DEMO_DOMAINS) - {"math"})
    assert m2.train_domains() == m3.train_domains() == sorted(DEMO_DOMAINS)
    assert m1.tokenizer_hash == m2.tokenizer_hash == m3.tokenizer_hash
    cmp = compare_domains(m1.fingerprints(), m2.fingerprints())
    assert (cmp.unchanged, cmp.changed, cmp.new, cmp.dropped, cmp.by_name) == (m1.train_domains(), [], ["math"], [], [])
    assert m2.fingerprints() == m3.fingerprints()


@pytest.mark.parametrize("domain", ["prose", "web"])
def test_reuse_scenario_refuses_a_new_domain_it_cannot_add(tmp_path, cli, domain):
    code, _, err = cli("demo", "--scenario", "reuse", "--new_domain", domain, "--out_dir", tmp_path / "d")
    assert code == 2 and f"--new_domain {domain!r}: pick a demo domain other than the target" in err
    assert not (tmp_path / "d").exists()
