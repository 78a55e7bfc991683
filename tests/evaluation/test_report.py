"""Result tables: pooling over training seeds, Wilson intervals, markdown, one report per setting."""

from __future__ import annotations

import json

import numpy as np
import pytest

from apo.evaluation.report import (markdown_table, method_table, paired_note, paired_rate_change, paired_sign_test,
                                   wilson, write_settings_report)


def results(**rates: list[bool]) -> dict:
    """An eval.json ``results`` dict from per-task success lists."""
    return {t: {"success_rate": float(np.mean(s)), "successes": s} for t, s in rates.items()}


RUNS = {
    "base": [results(a=[True, False, False, False], b=[False] * 4)],
    "apo": [results(a=[True, True, True, False], b=[True, False, False, False]),
            results(a=[True, True, False, False], b=[True, True, False, False])],
}


def test_method_table_pools_seeds_and_keeps_per_seed_rates():
    table = method_table(RUNS, ["a", "b"])
    a = table["apo"]["a"]
    assert a["success_rate"] == pytest.approx(5 / 8) and a["episodes"] == 8
    assert a["per_seed"] == [0.75, 0.5]
    assert a["ci95"] == pytest.approx(wilson(5, 8))  # the interval of the pooled episodes
    assert table["apo"]["average"]["success_rate"] == pytest.approx((5 / 8 + 3 / 8) / 2)
    assert table["apo"]["average"]["per_seed"] == pytest.approx([0.5, 0.5])
    assert table["base"]["average"]["success_rate"] == pytest.approx(0.125)
    # a subset of the tasks (one setting) has its own average
    assert method_table(RUNS, ["b"])["apo"]["average"]["success_rate"] == pytest.approx(3 / 8)


def test_markdown_shows_interval_seed_spread_and_delta_to_base():
    md = markdown_table(method_table(RUNS, ["a", "b"]), ["a", "b"])
    base_row, apo_row = md.splitlines()[2:4]
    lo, hi = wilson(5, 8)
    assert f"62% ({lo:.0%}-{hi:.0%})" in apo_row and apo_row.startswith("| **apo** |")
    assert "± 0.0" in apo_row and "(+37.5 pt)" in apo_row  # 50.0% vs 12.5%, two seeds with equal averages
    assert "±" not in base_row and "pt" not in base_row  # one seed: no spread; the base has no delta


def test_settings_report_writes_a_section_table_and_chart_per_setting(tmp_path):
    runs = {m: [dict(r, **{"a+texture": r["a"]}) for r in rs] for m, rs in RUNS.items()}
    settings = {"perturbed": (method_table(runs, ["a+texture"]), ["a+texture"]),
                "original": (method_table(runs, ["a", "b"]), ["a", "b"])}
    md = write_settings_report(settings, tmp_path, "T", extra={"k": 1}, descriptions={"perturbed": "under texture"})
    text = (tmp_path / "results.md").read_text()
    assert text == md and text.startswith("# T")
    assert text.index("## perturbed") < text.index("under texture") < text.index("## original")
    assert "| a+texture | average |" in text and "| a | b | average |" in text
    data = json.loads((tmp_path / "results.json").read_text())
    assert set(data["tables"]) == {"perturbed", "original"} and data["k"] == 1
    assert data["table"] == data["tables"]["perturbed"]  # the first setting is the headline table
    assert data["tasks"] == {"perturbed": ["a+texture"], "original": ["a", "b"]}
    assert data["tables"]["original"]["apo"]["a"]["episodes"] == 8
    assert (tmp_path / "success.png").stat().st_size > 0 and (tmp_path / "success_original.png").stat().st_size > 0
    with pytest.raises(ValueError):
        write_settings_report({}, tmp_path, "T")


# ----- paired sign test against the base -----

def seeded(seeds, **rates: list[bool]) -> dict:
    return {t: {"success_rate": float(np.mean(s)), "successes": s, "seeds": list(seeds)} for t, s in rates.items()}


def test_paired_sign_test_on_hand_worked_episodes():
    base = seeded([1, 2, 3, 4, 5, 6], a=[True, False, False, True, False, False])
    # the same episodes listed in another order: pairs are matched by env seed, not by position
    method = seeded([6, 5, 4, 3, 2, 1], a=[True, True, False, True, True, True])
    # seed 1: both succeed; 2, 3, 5, 6: won (4); 4: lost (1)
    got = paired_sign_test(method, base, ["a"])
    assert (got["won"], got["lost"]) == (4, 1)
    assert got["p_value"] == pytest.approx(12 / 32)  # 2 * P(X <= 1), X ~ Bin(5, 1/2) = 2 * 6/32
    all_won = paired_sign_test(seeded([1, 2, 3, 4, 5], a=[True] * 5), seeded([1, 2, 3, 4, 5], a=[False] * 5), ["a"])
    assert all_won == {"won": 5, "lost": 0, "p_value": pytest.approx(2 / 32)}
    same = paired_sign_test(base, base, ["a"])
    assert same == {"won": 0, "lost": 0, "p_value": 1.0}


def test_paired_sign_test_refuses_episodes_the_baseline_did_not_run():
    with pytest.raises(ValueError, match="seed 9"):
        paired_sign_test(seeded([1, 9], a=[True, True]), seeded([1, 2], a=[False, False]), ["a"])


def test_method_table_pairs_every_seed_with_the_base_and_the_note_lists_them():
    runs = {"base": [seeded([1, 2, 3, 4], a=[True, False, False, False])],
            "apo": [seeded([1, 2, 3, 4], a=[True, True, True, False]), seeded([1, 2, 3, 4], a=[False, True, False, False])]}
    table = method_table(runs, ["a"])
    assert "paired" not in table["base"]["average"]
    assert [(p["won"], p["lost"]) for p in table["apo"]["average"]["paired"]] == [(2, 0), (1, 1)]
    note = paired_note(table)
    assert note.startswith("Paired with base") and "apo +2/-0 (p = 0.5), +1/-1 (p = 1)" in note
    assert "paired" not in method_table(RUNS, ["a", "b"])["apo"]["average"]  # no env seeds recorded: no pairing
    assert paired_note(method_table(RUNS, ["a", "b"])) == ""


# ----- comparing eval.json files -----

def write_eval(folder, seeds=(10, 11), **rates: list[bool]):
    folder.mkdir(parents=True, exist_ok=True)
    res = {t: {"success_rate": float(np.mean(s)), "successes": s, "seeds": list(seeds)} for t, s in rates.items()}
    res["average"] = {"success_rate": float(np.mean([r["success_rate"] for r in res.values()]))}
    (folder / "eval.json").write_text(json.dumps({"results": res, "config": {}}))
    return folder


def test_compare_evals_builds_the_table_from_files(tmp_path):
    from apo.evaluation.report import compare_evals

    base = write_eval(tmp_path / "base", a=[True, False], b=[False, False])
    apo = write_eval(tmp_path / "apo", a=[True, True], b=[True, False])
    table, tasks = compare_evals({"base": base, "apo": apo / "eval.json"})  # a folder or the file itself
    assert tasks == ["a", "b"] and list(table) == ["base", "apo"]
    assert table["apo"]["a"]["success_rate"] == 1.0 and table["apo"]["a"]["ci95"] == pytest.approx(wilson(2, 2))
    assert table["apo"]["average"]["success_rate"] == pytest.approx(0.75)
    assert "(+50.0 pt)" in markdown_table(table, tasks)


def test_compare_evals_refuses_files_that_are_not_comparable(tmp_path):
    from apo.evaluation.report import EvalFileError, compare_evals

    base = write_eval(tmp_path / "base", a=[True, False])
    with pytest.raises(EvalFileError, match="other_seeds.*different env seeds"):
        compare_evals({"base": base, "other_seeds": write_eval(tmp_path / "s", seeds=(20, 21), a=[True, True])})
    with pytest.raises(EvalFileError, match="same tasks"):
        compare_evals({"base": base, "tasks": write_eval(tmp_path / "t", c=[True, True])})
    with pytest.raises(EvalFileError, match="does not exist"):
        compare_evals({"base": base, "missing": tmp_path / "nope"})
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "eval.json").write_text("{not json")
    with pytest.raises(EvalFileError, match="not an eval.json"):
        compare_evals({"bad": tmp_path / "bad"})


def test_paired_rate_change_on_hand_worked_episodes():
    base = {"a": {1: (10, 100), 2: (0, 100)}, "b": {5: (20, 100)}}  # 30 of 300 steps: 10%
    halved = {"a": {2: (0, 100), 1: (5, 100)}, "b": {5: (10, 100)}}  # every episode's help halved
    got = paired_rate_change([halved], base)
    assert got["baseline_rate"] == pytest.approx(0.1) and got["rate"] == pytest.approx(0.05)
    assert got["change"] == pytest.approx(-0.5)
    # the same ratio in every episode: whichever seeds a resample draws, the change stays -50%
    assert got["change_ci95"] == pytest.approx([-0.5, -0.5])
    # two training seeds pooled: (15 + 30) / 600 = 7.5% -> -25%
    assert paired_rate_change([halved, base], base)["change"] == pytest.approx(-0.25)


def test_paired_rate_change_interval_reflects_disagreeing_episodes():
    base = {"a": {s: (10, 100) for s in range(20)}}
    # half the seeds fixed, half unchanged: -50% overall, but a resample can draw more of either half
    mixed = {"a": {s: (0 if s % 2 else 10, 100) for s in range(20)}}
    got = paired_rate_change([mixed], base, resamples=4000)
    assert got["change"] == pytest.approx(-0.5)
    lo, hi = got["change_ci95"]
    assert -0.8 < lo < -0.5 < hi < -0.2
    # unpaired resampling would also move the baseline's rate; paired, a seed is drawn for both runs
    assert paired_rate_change([base], base)["change_ci95"] == pytest.approx([0.0, 0.0])


def test_paired_rate_change_leaves_out_resamples_whose_baseline_needed_no_person():
    base = {"a": {1: (10, 100), 2: (0, 100)}}
    policy = {"a": {1: (5, 100), 2: (3, 100)}}
    got = paired_rate_change([policy], base, resamples=4000)
    assert got["change"] == pytest.approx(-0.2)  # 8 / 200 against 10 / 200
    # the four equally likely draws of two seeds: (1, 1) -50%, (1, 2) and (2, 1) -20%, (2, 2) undefined (0 / 0)
    assert got["change_ci95"] == pytest.approx([-0.5, -0.2])
    assert 800 < got["undefined_resamples"] < 1200  # a quarter of the draws


def test_paired_rate_change_refuses_unpaired_runs():
    base = {"a": {1: (10, 100), 2: (0, 100)}}
    with pytest.raises(ValueError, match=r"env seeds \[3\]"):
        paired_rate_change([{"a": {1: (5, 100), 2: (0, 100), 3: (0, 100)}}], base)
    with pytest.raises(ValueError, match="b: env seeds"):
        paired_rate_change([{"a": base["a"], "b": {1: (0, 100)}}], base)
    with pytest.raises(ValueError, match="no person's steps"):
        paired_rate_change([base], {"a": {1: (0, 100), 2: (0, 100)}})
