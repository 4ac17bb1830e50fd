"""The survey's claims judged on constructed numbers: supported, contradicted, and not measured."""

from __future__ import annotations

import pytest

from fake_records import make_record
from rnnlab.conf_dir import group_options
from rnnlab.report.collect import group_studies, load_records
from rnnlab.report.quantities import cost_series, reaches, task_baseline
from rnnlab.report.survey import CLAIMS, ROWS
from rnnlab.report.verdicts import Settings, configured, judge, judge_all


def claim(text: str):
    [found] = [c for c in CLAIMS if c.text == text]
    return found


def study_of(root):
    [study] = group_studies(load_records([root]))
    return study


def settings(study, **kwargs) -> Settings:
    return Settings({study.name: "test/mse"}, **kwargs)


def sweep(root, arms: dict[str, dict], seeds=(0, 1, 2), per_seed=None):
    """One record per (arm, seed); ``arms`` maps a model name to make_record keywords, ``per_seed`` varies them."""
    for model, kwargs in arms.items():
        for seed in seeds:
            extra = per_seed(model, seed) if per_seed else {}
            make_record(root / f"{model}{seed}", model=model, seed=seed, **{**kwargs, **extra})


def test_parameter_and_memory_claims_follow_the_numbers(tmp_path):
    sweep(tmp_path / "a", {"gru": {"params": 13121}, "lstm": {"params": 17473}},
          per_seed=lambda m, s: {"model_memory_mb": (90.0 if m == "gru" else 120.0) + s})
    study = study_of(tmp_path / "a")
    fewer = judge(claim("GRU has fewer parameters than LSTM"), study, settings(study))
    assert fewer.verdict == "supported" and "13121 (n=3) vs 17473 (n=3)" in fewer.evidence
    memory = judge(claim("GRU uses less memory than LSTM"), study, settings(study))
    assert memory.verdict == "supported" and "Welch p" in memory.evidence
    sweep(tmp_path / "b", {"gru": {"params": 20000}, "lstm": {"params": 17473}},
          per_seed=lambda m, s: {"model_memory_mb": (150.0 if m == "gru" else 120.0) + s})
    study = study_of(tmp_path / "b")
    assert judge(claim("GRU has fewer parameters than LSTM"), study, settings(study)).verdict == "contradicted"
    assert judge(claim("GRU uses less memory than LSTM"), study, settings(study)).verdict == "contradicted"
    # elman is not in this study: the claim about it is not measured here
    assert judge(claim("LSTM has more parameters than a simple RNN"), study, settings(study)) is None


def test_noisy_differences_without_significance_are_inconclusive(tmp_path):
    sweep(tmp_path, {"elman": {}, "lstm": {}},
          per_seed=lambda m, s: {"model_memory_mb": [5.0, 9.0, 6.0][s] + (0.1 if m == "lstm" else 0.0)})
    study = study_of(tmp_path)
    judgement = judge(claim("LSTM uses more memory than a simple RNN"), study, settings(study))
    assert judgement.verdict == "inconclusive" and "Welch p" in judgement.evidence
    assert "seeds per arm would decide it" in judgement.evidence  # the budget that would


def test_vanishing_gradient_claim_reads_the_gradient_flow_keys(tmp_path):
    ratios = {"lstm": {10: 0.3, 50: 0.05}, "elman": {10: 1e-3, 50: 1e-7}}
    sweep(tmp_path / "a", {"lstm": {}, "elman": {}},
          per_seed=lambda m, s: {"metrics": {"test/mse": 0.1, **{f"grad_ratio_{lag}": r * (1 + 0.1 * s)
                                                                  for lag, r in ratios[m].items()}}})
    study = study_of(tmp_path / "a")
    judgement = judge(claim("LSTM is more robust to vanishing gradients than a simple RNN"), study, settings(study))
    assert judgement.verdict == "supported" and "lag 50" in judgement.evidence
    swapped = {"lstm": ratios["elman"], "elman": ratios["lstm"]}
    sweep(tmp_path / "b", {"lstm": {}, "elman": {}},
          per_seed=lambda m, s: {f"grad_ratio_{lag}": r * (1 + 0.1 * s) for lag, r in swapped[m].items()})
    study = study_of(tmp_path / "b")  # top-level keys this time
    judgement = judge(claim("LSTM is more robust to vanishing gradients than a simple RNN"), study, settings(study))
    assert judgement.verdict == "contradicted"
    sweep(tmp_path / "c", {"lstm": {}, "elman": {}})
    study = study_of(tmp_path / "c")
    assert judge(claim("LSTM is more robust to vanishing gradients than a simple RNN"), study, settings(study)) is None
    [verdict] = [j for j in judge_all([study], settings(study))
                 if j.claim.text == "LSTM is more robust to vanishing gradients than a simple RNN"]
    assert verdict.verdict == "not measured" and "grad_ratio_<lag>" in verdict.evidence


def length_sweep(root, solved: dict[str, set[int]], record_baseline: bool):
    """model x data.seq_len; test/loss 0.001 where ``solved`` says so, else 0.16 (trivial baseline 1/6)."""
    for model, lengths in solved.items():
        for length in (10, 50, 100):
            for seed in (0, 1):
                loss = 0.001 if length in lengths else 0.16
                extra = {"baseline": 1 / 6} if record_baseline else {}
                make_record(root / f"{model}{length}_{seed}", model=model, seed=seed,
                            overrides=[f"model={model}", f"data.seq_len={length}", f"seed={seed}"],
                            config={"data": {"seq_len": length}}, metrics={"test/loss": loss, "test/mse": loss},
                            **extra)


@pytest.mark.parametrize("record_baseline", [True, False])
def test_long_term_reach_is_the_longest_length_solved(tmp_path, record_baseline):
    length_sweep(tmp_path / "a", {"lstm": {10, 50, 100}, "elman": {10}}, record_baseline)
    study = study_of(tmp_path / "a")
    groups = {g.settings["model"]: g for g in reaches(study, 0.1)}
    assert groups["lstm"].longest == 100 and groups["elman"].longest == 10
    reach = claim("LSTM learns longer-term dependencies than a simple RNN")
    judgement = judge(reach, study, settings(study))
    assert judgement.verdict == "supported" and "T = 100" in judgement.evidence and "T = 10 " in judgement.evidence
    length_sweep(tmp_path / "b", {"lstm": set(), "elman": {10, 50}}, record_baseline)
    study = study_of(tmp_path / "b")
    judgement = judge(reach, study, settings(study))
    assert judgement.verdict == "contradicted" and "none solved" in judgement.evidence


def test_the_baseline_comes_from_the_datamodule_when_the_record_lacks_it():
    record = {"config": {"data": {"_target_": "rnnlab.data.synthetic.AddingDataModule", "seq_len": 10,
                                  "batch_size": 8}}}
    assert task_baseline(record) == pytest.approx(1 / 6, rel=1e-3)
    assert task_baseline({"baseline": 0.5}) == 0.5
    assert task_baseline({"config": {"data": {"_target_": "no.such.Module"}}}) is None


def rule_sweep(root, rule: str, exponent: float):
    """training.rule x model.hidden_size with FLOPs and CPU time per data point exactly c * N**exponent."""
    for n in (8, 16, 32, 64):
        for seed in (0, 1):
            micros = 0.01 * n**exponent
            make_record(root / f"{rule}{n}_{seed}", model="elman", seed=seed, hidden_size=n,
                        overrides=[f"training.rule={rule}", f"model.hidden_size={n}", f"seed={seed}"],
                        config={"training": {"rule": rule}, "model": {"hidden_size": n}},
                        flops_per_token=1000 * micros, cpu_ms_per_step=micros * 100 / 1000, metrics={"test/mse": 0.1})


def test_complexity_claims_compare_the_fitted_exponent(tmp_path):
    rule_sweep(tmp_path / "a", "rtrl", 4.0)
    rule_sweep(tmp_path / "a", "bptt", 4.0)
    study = study_of(tmp_path / "a")
    fits = {s.measure: s.fit.exponent for s in cost_series(study) if "rtrl" in s.label}
    assert fits == pytest.approx({"FLOPs": 4.0, "CPU µs": 4.0}, abs=1e-9)
    rtrl = judge(claim("RTRL costs O(N⁴) per time step"), study, settings(study))
    assert rtrl.verdict == "supported" and "N^4.00" in rtrl.evidence
    bptt = judge(claim("BPTT costs O(N²) per time step"), study, settings(study))
    assert bptt.verdict == "contradicted" and "vs claimed N^2" in bptt.evidence
    assert judge(claim("BU: block update costs O(N³) per time step on average"), study, settings(study)) is None


def greff_sweep(root, variant: str, variant_mse: list[float]):
    vanilla_mse = [0.010, 0.012, 0.011]
    for name, values in (("vanilla", vanilla_mse), (variant, variant_mse)):
        for seed, mse in enumerate(values):
            make_record(root / f"{name}{seed}", model="lstm", seed=seed,
                        overrides=["model=lstm", f"model.variant={name}", f"seed={seed}"],
                        config={"model": {"variant": name}}, metrics={"test/mse": mse})


def test_lstm_variant_claims_use_the_primary_metric_in_its_better_direction(tmp_path):
    greff_sweep(tmp_path / "a", "nfg", [0.050, 0.060, 0.055])
    study = study_of(tmp_path / "a")
    assert judge(claim("removing the forget gate hurts performance"), study, settings(study)).verdict == "supported"
    greff_sweep(tmp_path / "b", "nfg", [0.005, 0.004, 0.0045])
    study = study_of(tmp_path / "b")
    assert judge(claim("removing the forget gate hurts performance"), study, settings(study)).verdict == "contradicted"
    greff_sweep(tmp_path / "c", "cifg", [0.0100, 0.0101, 0.0099])  # at most 10% worse than vanilla (0.011), p < 0.05
    study = study_of(tmp_path / "c")
    judgement = judge(claim("coupling input and forget gates does not hurt performance"), study, settings(study))
    assert judgement.verdict == "supported" and "test/mse" in judgement.evidence and "margin" in judgement.evidence
    greff_sweep(tmp_path / "d", "cifg", [0.090, 0.080, 0.085])
    study = study_of(tmp_path / "d")
    judgement = judge(claim("coupling input and forget gates does not hurt performance"), study, settings(study))
    assert judgement.verdict == "contradicted"
    greff_sweep(tmp_path / "e", "cifg", [0.011, 0.010, 0.013])  # no significant difference is not proof of none
    study = study_of(tmp_path / "e")
    judgement = judge(claim("coupling input and forget gates does not hurt performance"), study, settings(study))
    assert judgement.verdict == "inconclusive" and "seeds per arm would decide it" in judgement.evidence


def test_comparable_performance_is_an_equivalence_test(tmp_path):
    """"GRU performs comparably to LSTM": two one-sided tests against a ±10% margin of the LSTM's mean."""
    claim_text = "GRU performs comparably to LSTM"
    for name, gru, verdict in (("same", [0.0101, 0.0099, 0.0100], "supported"),
                               ("far", [0.0200, 0.0210, 0.0190], "contradicted"),
                               ("noisy", [0.005, 0.015, 0.010], "inconclusive")):
        sweep(tmp_path / name, {"gru": {}, "lstm": {}}, per_seed=lambda m, s, gru=gru: {
            "metrics": {"test/mse": gru[s] if m == "gru" else [0.0100, 0.0101, 0.0099][s]}})
        study = study_of(tmp_path / name)
        judgement = judge(claim(claim_text), study, settings(study))
        assert judgement.verdict == verdict and "TOST" in judgement.evidence, (name, judgement.evidence)


def test_four_times_the_parameters_is_judged_as_a_ratio_at_equal_hidden_size(tmp_path):
    h, i = 64, 2
    sweep(tmp_path, {"lstm": {"params": 4 * h * (i + h + 2) + h + 1}, "elman": {"params": h * (i + h + 2) + h + 1}})
    study = study_of(tmp_path)
    judgement = judge(claim("a typical LSTM has about four times the parameters of a simple RNN of the same hidden "
                            "size"), study, settings(study))
    assert judgement.verdict == "supported" and "= 3.9" in judgement.evidence


def test_survey_rows_name_configs_that_exist():
    """Every model and optimizer a row names is a config of its group (Hydra groups are the registry)."""
    for row in ROWS:
        for model in row.selector.models:
            assert model in group_options("model"), (row.name, model)
        for optimizer in row.selector.optimizers:
            assert optimizer in group_options("optimizer"), (row.name, optimizer)
    tables = {row.table for row in ROWS}
    assert tables == {"II", "III", "IV"} and all(c.subject in {r.name for r in ROWS} for c in CLAIMS)
    gru = next(row for row in ROWS if row.name == "GRU")
    assert configured(gru, lambda group: ["lstm"] if group == "model" else []) == "model=gru (no config yet)"


def test_rows_cells_and_claims_name_their_source():
    """Claims and rows taken from other papers carry their citation and are never attributed to the survey."""
    from rnnlab.report.survey import SURVEY, TABLE_II, TABLE_III

    greff = {row.name for row in TABLE_III if row.name.split(":")[0] in ("NIG", "NFG", "NOG", "NIAF", "NOAF", "NP",
                                                                         "CIFG", "FGR")}
    assert len(greff) == 8 and all(row.source == "Greff et al. 2017" for row in TABLE_III if row.name in greff)
    assert all(c.source == "Greff et al. 2017" for c in CLAIMS if c.subject in greff)
    assert all(list(row.survey) == ["advantages", "disadvantages"] for row in TABLE_III)
    assert {row.name for row in TABLE_II} >= {"BPTT", "RTRL", "FFP: fast forward propagation",
                                              "GF: Green's function", "BU: block update"}
    bu = next(row for row in TABLE_II if row.name == "BU: block update")
    assert bu.selector.rules == ("bu",) and bu.exponent == 3.0 and bu.source == SURVEY
    evolutionary = next(row for row in TABLE_II if row.name.startswith("Evolutionary"))
    assert "local minima" in evolutionary.survey["disadvantages"] and "escape" not in evolutionary.survey["advantages"]
    assert not any("GRU costs less computation" in c.text for c in CLAIMS)
    original = next(row for row in TABLE_III if row.name.startswith("LSTM, original"))
    assert original.source != SURVEY and original.cell("advantages") == original.survey["advantages"]


def test_cost_claims_skip_arms_matched_by_a_parameter_budget(tmp_path):
    """At a parameter budget every arm has the same count by construction: "more parameters" is not judged there."""
    sweep(tmp_path, {"lstm": {"params": 10033}, "elman": {"params": 10095}},
          per_seed=lambda m, s: {"config": {"model": {"param_budget": 10000}}})
    study = study_of(tmp_path)
    assert judge(claim("LSTM has more parameters than a simple RNN"), study, settings(study)) is None
    assert judge(claim("LSTM uses more memory than a simple RNN"), study, settings(study)) is None


def rule_file_sweep(root, rule: str, exponent: float, own_settings: dict):
    """Records as ``training=<rule>`` writes them: the rule's settings class as ``_target_``, and ``own_settings``
    (keys only that rule's file has) typed on the command line."""
    target = {"bptt": "TrainingSettings", "rtrl": "RTRLSettings"}[rule]
    for n in (8, 16, 32):
        for seed in (0, 1, 2):
            micros = 0.01 * n**exponent * (1 + 0.02 * seed)
            make_record(root / f"{rule}{n}_{seed}", model="elman", seed=seed, hidden_size=n,
                        overrides=[f"training={rule}", *(f"training.{k}={v}" for k, v in own_settings.items()),
                                   f"model.hidden_size={n}", f"seed={seed}"],
                        config={"training": {"_target_": f"rnnlab.training.rules.{target}", **own_settings},
                                "model": {"hidden_size": n}},
                        flops_per_token=1000 * micros, cpu_ms_per_step=micros * 100 / 1000, metrics={"test/mse": 0.1})


def test_rules_pair_across_keys_only_one_rules_file_has(tmp_path):
    """``training.update_every`` exists under rtrl only: bptt's arms leave it unset, and the pair still forms."""
    rule_file_sweep(tmp_path / "a", "rtrl", 4.0, {"update_every": 2})
    rule_file_sweep(tmp_path / "a", "bptt", 2.0, {})
    study = study_of(tmp_path / "a")
    assert "training.update_every" in study.swept
    labels = {frozenset(arm.label.split()) for arm in study.arms}
    assert {"training=bptt", "model.hidden_size=8"} in labels  # no training.update_every=- for bptt
    assert {"training=rtrl", "training.update_every=2", "model.hidden_size=8"} in labels
    judgement = judge(claim("RTRL costs more time per step than BPTT"), study, settings(study))
    assert judgement.verdict == "supported", judgement.evidence
    assert "training=rtrl" in judgement.evidence and "model.hidden_size=8" in judgement.evidence
    fits = {s.label: s.fit.exponent for s in cost_series(study) if s.measure == "FLOPs"}
    assert sorted(fits.values()) == pytest.approx([2.0, 4.0], abs=1e-9)
