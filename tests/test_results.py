"""The proxy-results table and the official RegMix CSV pair: exact round trips, joins by id, clear errors."""

from __future__ import annotations

import numpy as np
import pytest

from regmix_plugin.formats.mixture_table import read_mixtures
from regmix_plugin.formats.official import read_regmix_csv
from regmix_plugin.formats.results import read_results, write_results

ROWS = [
    {
        "run_id": "a",
        "status": "done",
        "weight/arxiv": 0.25,
        "weight/pile_cc": 0.75,
        "val_loss/arxiv": 3.5,
        "val_loss/pile_cc": 4.0,
        "val_loss/pile_cc@1000": 5.0,
        "hellaswag": 0.31,
        "tokens": 2000,
        "wall_s": 1.5,
        "seed": 1,
        "error": "",
    },
    {
        "run_id": "b",
        "status": "failed",
        "weight/arxiv": 0.5,
        "weight/pile_cc": 0.5,
        "tokens": 100,
        "wall_s": 0.5,
        "seed": 2,
        "error": "diverged",
    },
    {
        "run_id": "c",
        "status": "done",
        "weight/arxiv": 1.0,
        "weight/pile_cc": 0.0,
        "val_loss/arxiv": 3.0,
        "val_loss/pile_cc": 4.5,
        "val_loss/pile_cc@1000": None,
        "hellaswag": 0.29,
        "tokens": 2000,
        "wall_s": 1.25,
        "seed": 3,
        "error": "",
    },
]


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_write_then_read_round_trips_exactly_and_keeps_only_done_runs(tmp_path, suffix):
    path = tmp_path / f"results{suffix}"
    write_results(path, ROWS)
    with pytest.warns(UserWarning, match=r"skipped 1 run\(s\) whose status is not 'done': b"):
        res = read_results(path)
    assert res.ids == ["a", "c"]
    assert res.domains == ["arxiv", "pile_cc"]
    assert res.weights.tolist() == [[0.25, 0.75], [1.0, 0.0]]
    # bookkeeping columns are neither metrics nor features
    assert sorted(res.metrics) == ["hellaswag", "val_loss/arxiv", "val_loss/pile_cc", "val_loss/pile_cc@1000"]
    assert res.metrics["val_loss/pile_cc"].tolist() == [4.0, 4.5]
    assert res.metrics["hellaswag"].tolist() == [0.31, 0.29]
    assert res.metrics["val_loss/pile_cc@1000"][0] == 5.0 and np.isnan(res.metrics["val_loss/pile_cc@1000"][1])


def test_csv_columns_come_out_in_contract_order(tmp_path):
    path = tmp_path / "r.csv"
    write_results(path, ROWS)
    header = path.read_text().splitlines()[0].split(",")
    assert header == [
        "run_id",
        "status",
        "weight/arxiv",
        "weight/pile_cc",
        "val_loss/arxiv",
        "val_loss/pile_cc",
        "val_loss/pile_cc@1000",
        "hellaswag",
        "tokens",
        "wall_s",
        "seed",
        "error",
    ]


def test_target_specs_resolve_to_weighted_columns(tmp_path):
    path = tmp_path / "r.csv"
    write_results(path, ROWS)
    with pytest.warns(UserWarning):
        res = read_results(path)
    # a glob averages final losses only; an '@' column needs an '@' in the pattern
    assert res.resolve_target("val_loss/*") == {"val_loss/arxiv": 0.5, "val_loss/pile_cc": 0.5}
    assert res.resolve_target("val_loss/*@*") == {"val_loss/pile_cc@1000": 1.0}
    cols = res.resolve_target({"val_loss/arxiv": 0.2, "hellaswag": -1.0})
    assert cols == {"val_loss/arxiv": 0.2, "hellaswag": -1.0}
    assert res.target_values(cols).tolist() == pytest.approx([0.2 * 3.5 - 0.31, 0.2 * 3.0 - 0.29])
    with pytest.raises(ValueError) as e:
        res.resolve_target("val_loss/github")
    assert "--target: no metric column matches 'val_loss/github'" in str(e.value)
    assert "Available: hellaswag, val_loss/arxiv, val_loss/pile_cc, val_loss/pile_cc@1000" in str(e.value)


def _official(tmp_path, mix_rows: str, loss_rows: str):
    mix = tmp_path / "mix.csv"
    mix.write_text("index,train_the_pile_arxiv,train_the_pile_pile_cc,train_the_pile_gutenberg_pg_19\n" + mix_rows)
    loss = tmp_path / "loss.csv"
    loss.write_text("index,metric/the_pile_pile_cc_val_loss,metric/the_pile_arxiv_val_loss\n" + loss_rows)
    return mix, loss


def test_official_pair_is_joined_by_id_and_column_name_not_position(tmp_path):
    # Rows in different orders, the loss file has a run the mixture file lacks and vice versa, and its
    # columns come in another order than the mixture file's domains.
    mix, loss = _official(
        tmp_path,
        "1,0.2,0.7,0.1\n2,0.5,0.5,0.0\n3,0.0,0.0,1.0\n",
        "3,6.3,7.3\n9,9.9,9.9\n1,6.1,7.1\n",
    )
    with pytest.warns(UserWarning, match=r"ignored 1 only in --mixtures \(2\) and 1 only in --losses \(9\)"):
        res = read_regmix_csv(mix, loss)
    assert res.ids == ["1", "3"]
    assert res.domains == ["arxiv", "gutenberg_pg_19", "pile_cc"]
    np.testing.assert_allclose(res.weights, [[0.2, 0.1, 0.7], [0.0, 1.0, 0.0]], rtol=0, atol=1e-12)
    assert res.metrics["metric/the_pile_pile_cc_val_loss"].tolist() == [6.1, 6.3]
    # official metric names answer to our names too
    assert res.resolve_target("val_loss/pile_cc") == {"metric/the_pile_pile_cc_val_loss": 1.0}
    assert res.resolve_target("metric/the_pile_arxiv_val_loss") == {"metric/the_pile_arxiv_val_loss": 1.0}
    assert sorted(res.resolve_target("val_loss/*")) == [
        "metric/the_pile_arxiv_val_loss",
        "metric/the_pile_pile_cc_val_loss",
    ]


def test_three_decimal_official_weights_are_accepted_within_their_rounding(tmp_path):
    # The published CSVs print 3 decimals: 36 of their first 100 rows sum to 0.998-1.002, beyond the 1e-3
    # tolerance of exact weights, but within 3 domains x 0.0005 of rounding here.
    mix, loss = _official(tmp_path, "1,0.333,0.333,0.333\n2,0.5,0.5,0.001\n", "1,6.0,7.0\n2,6.5,7.5\n")
    res = read_regmix_csv(mix, loss)
    assert res.weights.sum(1) == pytest.approx([1.0, 1.0], abs=1e-12)
    assert res.weights[0].tolist() == pytest.approx([1 / 3] * 3)


def test_weights_that_do_not_sum_to_one_name_file_row_id_and_fix(tmp_path):
    mix, loss = _official(tmp_path, "1,0.2,0.7,0.1\n2,0.5,0.3,0.1\n7,0.5,0.5,-0.2\n", "1,6,7\n2,6,7\n7,6,7\n")
    with pytest.raises(ValueError) as e:
        read_regmix_csv(mix, loss)
    msg = str(e.value)
    assert f"--mixtures {mix} row 2 (index 2): weights sum to 0.9, not 1" in msg
    # domains are named after stripping train_the_pile_: the third column is gutenberg_pg_19
    assert "row 3 (index 7): weight of 'gutenberg_pg_19' is negative (-0.2)" in msg
    assert "row 1 " not in msg
    assert "Fix these rows (weights >= 0, summing to 1) or drop them" in msg


def test_duplicate_ids_and_disjoint_files_are_refused(tmp_path):
    mix, loss = _official(tmp_path, "1,0.2,0.7,0.1\n1,0.5,0.5,0.0\n", "1,6,7\n")
    with pytest.raises(ValueError, match=rf"--mixtures {mix}: duplicate run id\(s\) 1; every run needs its own id"):
        read_regmix_csv(mix, loss)
    mix, loss = _official(tmp_path, "1,0.2,0.7,0.1\n2,0.5,0.5,0.0\n", "5,6,7\n6,6,7\n")
    with pytest.raises(ValueError, match="share no run id .* e.g. 1, 2 vs 5, 6. Pass the loss file that belongs"):
        read_regmix_csv(mix, loss)


def test_read_mixtures_reads_either_layout_against_a_models_domains(tmp_path):
    ours = tmp_path / "ours.csv"
    write_results(ours, [{"run_id": "x", "weight/arxiv": 0.4, "weight/github": 0.0, "weight/pile_cc": 0.6}])
    got = read_mixtures(ours, known=["arxiv", "github", "pile_cc"])
    assert (got.id_column, got.ids, got.weights.tolist()) == ("run_id", ["x"], [[0.4, 0.0, 0.6]])
    official = tmp_path / "official.csv"
    official.write_text("index,train_the_pile_pile_cc,train_the_pile_arxiv\n12,0.9,0.1\n")
    got = read_mixtures(official, known=["arxiv", "pile_cc"])
    assert (got.id_column, got.ids, got.weights.tolist()) == ("index", ["12"], [[0.1, 0.9]])
    unknown = (
        "(?s)does not fit the model \\(domains: github, pile_cc\\).*missing column\\(s\\) for domain\\(s\\) "
        "github: add weight/<domain> columns \\(0 is fine\\).*column\\(s\\) for domain\\(s\\) arxiv "
        "that the model does not"
    )
    with pytest.raises(ValueError, match=unknown):
        read_mixtures(official, known=["github", "pile_cc"])


def test_a_missing_domain_column_is_refused_not_filled_with_zero(tmp_path):
    # `regmix predict` once scored such a file as if github weighed 0 (issue 9, item 7)
    short = tmp_path / "short.csv"
    write_results(short, [{"run_id": "x", "weight/arxiv": 0.4, "weight/pile_cc": 0.6}])
    with pytest.raises(ValueError, match="missing column\\(s\\) for domain\\(s\\) github"):
        read_mixtures(short, known=["arxiv", "github", "pile_cc"])


def test_write_results_refuses_bad_rows_and_writes_nothing(tmp_path):
    path = tmp_path / "r.csv"
    bad = [
        {"run_id": "a", "weight/arxiv": 0.5, "weight/pile_cc": 0.2},
        {"run_id": "a", "weight/arxiv": 1.0, "weight/pile_cc": 0.0},
    ]
    with pytest.raises(ValueError) as e:
        write_results(path, bad)
    assert "duplicate run_id(s) a" in str(e.value)
    assert "run 'a' weights: weights sum to 0.7, not 1" in str(e.value)
    assert not path.exists() and list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match=r"unknown table format '.tsv'; use a .csv or .parquet path"):
        write_results(tmp_path / "r.tsv", ROWS)


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_numpy_numbers_are_written_as_numbers(tmp_path, suffix):
    """numpy's float64 is a float whose repr is ``np.float64(0.25)``: written as such, no reader took it back."""
    from regmix_plugin.formats.mixture_table import write_mixtures

    w = np.array([0.25, 0.75])
    write_mixtures(tmp_path / f"m{suffix}", {"a": {"x": w[0], "y": w[1]}}, ["x", "y"])
    np.testing.assert_array_equal(read_mixtures(tmp_path / f"m{suffix}").weights, [w])
