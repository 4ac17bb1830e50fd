"""Published figures: every entry of published.yaml is complete and names real configs; a study whose arms match a
figure gets it printed beside the measured mean, with the settings that differ named."""

from __future__ import annotations

import statistics

import pytest

from fake_records import make_record
from rnnlab.conf_dir import group_options
from rnnlab.report.build import build_report
from rnnlab.report.collect import group_studies, load_records
from rnnlab.report.published import PublishedError, load, published_table
from rnnlab.report.render import render_html, render_markdown

IRNN_ACC = [0.91, 0.93, 0.92]


def test_every_published_figure_is_complete_and_names_existing_configs():
    figures = load()
    assert len(figures) >= 10 and len({f.id for f in figures}) == len(figures)
    models, data = set(group_options("model")), set(group_options("data"))
    for figure in figures:
        assert figure.unit and figure.metric and figure.checked, figure.id
        assert {"authors", "year", "venue"} <= set(figure.citation), figure.id
        assert set(figure.models) <= models, figure.id
        assert figure.data is None or figure.data in data, figure.id
        assert figure.models or figure.rules, figure.id


@pytest.mark.parametrize("entry, message", [
    ("- {id: x, figure: 1, unit: u, metric: test/acc, checked: c, models: [lstm], data: adding}", "missing citation"),
    ("- {id: x, figure: 1, unit: u, metric: test/acc, checked: c, models: [lstm], data: adding,"
     " citation: {authors: A, year: 2000}}", "citation needs"),
    ("- {id: x, figure: 1, unit: u, metric: test/acc, checked: c, models: [no_such_model], data: adding,"
     " citation: {authors: A, year: 2000, venue: V}}", "no conf/model/no_such_model.yaml"),
    ("- {id: x, figure: 1, unit: u, metric: test/acc, checked: c, models: [lstm], data: no_such_data,"
     " citation: {authors: A, year: 2000, venue: V}}", "no conf/data/no_such_data.yaml"),
    ("- {id: x, figure: 1, unit: u, metric: time_exponent, checked: c, rules: [backprop],"
     " citation: {authors: A, year: 2000, venue: V}}", "unknown learning rule backprop"),
])
def test_a_malformed_entry_is_refused_naming_what_is_wrong(entry, message):
    with pytest.raises(PublishedError, match=message):
        load("figures:\n" + entry)


def mnist_study(root):
    """IRNN on row-by-row MNIST (28 steps) with 32 units, 5 epochs: three seeds, plus an LSTM arm."""
    for model, values in (("irnn", IRNN_ACC), ("lstm", [0.95, 0.96, 0.97])):
        for seed, acc in enumerate(values):
            make_record(root / f"{model}{seed}", model=model, seed=seed, data="pixel_mnist", hidden_size=32,
                        config={"data": {"layout": "row", "permute": False}, "model": {"hidden_size": 32},
                                "trainer": {"max_epochs": 5}},
                        metrics={"test/acc": acc, "test/loss": 1 - acc})
    [study] = group_studies(load_records([root]))
    return study


def test_a_matching_arm_gets_the_published_figure_beside_its_measured_mean(tmp_path):
    study = mnist_study(tmp_path)
    table = published_table(study)
    rows = {(row[0], row[3]): row for row in table.rows}
    irnn = rows[("97 % test accuracy", "model=irnn data=pixel_mnist")]
    assert "Q. V. Le, N. Jaitly" in irnn[1] and "arXiv:1504.00941" in irnn[1]
    assert "784 steps" in irnn[2]
    mean = 100 * statistics.mean(IRNN_ACC)
    assert irnn[4].startswith(f"{mean:.4g} ± ") and "n=3" in irnn[4]
    assert irnn[5] == "data.layout pixel vs row"
    lstm = rows[("98.9 % test accuracy", "model=lstm data=pixel_mnist")]
    assert "model.hidden_size 100 vs 32" in lstm[5] and "data.layout pixel vs row" in lstm[5]
    # the permuted-MNIST figures match only permuted runs; no tanh-RNN arm here
    assert not any(key[0] in ("82 % test accuracy", "35 % test accuracy") for key in rows)


def test_the_report_shows_published_figures_only_when_one_matches(tmp_path):
    mnist_study(tmp_path / "mnist")
    report = build_report(load_records([tmp_path / "mnist"]), [str(tmp_path / "mnist")], figures=False)
    [(title, table)] = report.published
    assert title == "Published figures: study" and table.headers[-1] == "differences of setting"
    markdown = render_markdown(report)
    assert "## Published figures: study" in markdown and "data.layout pixel vs row" in markdown
    assert '<section id="published">' in render_html(report)
    for seed in (0, 1):  # the adding problem at T = 10 with a GRU: no published figure stands for it
        make_record(tmp_path / "adding" / f"gru{seed}", model="gru", seed=seed, metrics={"test/mse": 0.1})
    report = build_report(load_records([tmp_path / "adding"]), [str(tmp_path / "adding")], figures=False)
    assert report.published == [] and "Published figures" not in render_markdown(report)


def test_complexity_exponents_are_set_beside_the_fitted_ones(tmp_path):
    """Table II's published exponents (Williams & Zipser 1995) beside the exponent fitted over a hidden-size sweep."""
    for rule, exponent in (("rtrl", 4.0), ("bptt", 2.0)):
        for n in (8, 16, 32):
            for seed in (0, 1):
                make_record(tmp_path / f"{rule}{n}_{seed}", model="elman", seed=seed, hidden_size=n,
                            overrides=[f"training.rule={rule}", f"model.hidden_size={n}", f"seed={seed}"],
                            config={"training": {"rule": rule}, "model": {"hidden_size": n}},
                            flops_per_token=3.0 * n**exponent, cpu_ms_per_step=1e-3 * n**exponent,
                            metrics={"test/mse": 0.1})
    [study] = group_studies(load_records([tmp_path]))
    rows = published_table(study).rows
    rtrl = [row for row in rows if row[0].startswith("O(N^4)")]
    assert rtrl and all("training.rule=rtrl" in row[3] and "N^4.00" in row[4] for row in rtrl)
    assert all("Williams, D. Zipser (1995)" in row[1] for row in rtrl)
    assert any(row[0].startswith("O(N^2)") and "N^2.00" in row[4] for row in rows)
    assert not any(row[0].startswith("O(N^3)") for row in rows)  # no bu or gf runs here
