"""The measurement scripts (``studies/``) are held to the CLIs' standard: a bad input is one line on stderr and exit
status 2 before any work starts, with nothing written; every option says what it does and its default; the judge
audit's report is read from the audit's own files alone. Run in-process (``main(argv)``), one as a real subprocess."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from test_cli_errors import check_one_line

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "studies"))
import ceiling  # noqa: E402
import confirmation  # noqa: E402
import cpu_levers  # noqa: E402
import corruptor_space  # noqa: E402
import fidelity  # noqa: E402
import judge_audit  # noqa: E402
import main_command  # noqa: E402
import search_check  # noqa: E402
import search_engines  # noqa: E402
import search_vs_judge  # noqa: E402

AUDIT = ROOT / "docs" / "results" / "judge_audit"  # two units, one seed each, written before units named their length


def exit_code(main, argv) -> int:
    """main's return value, or the status of the SystemExit argparse raises."""
    try:
        return main(argv)
    except SystemExit as exc:
        return exc.code


@pytest.mark.parametrize("args,pattern", [
    (["--only", "nope"], r"unknown task 'nope'; available: .* a generated one \(genNN"),
    (["--only", "cifar10"], "task 'cifar10' is a dataset without a known answer"),
    (["--only", "gen00_not_its_name"], "unknown task 'gen00_not_its_name'"),
    (["--workers", "0"], "--workers: must be > 0"),
    (["--run-updates", "0"], "--run-updates 0: must be >= 2"),
    (["--seeds", "0"], "--seeds: must be > 0"),
    (["--tasks", "0"], "no task to audit: give --tasks 1 or more"),
    (["--report", "{tmp}/missing"], "no audit there"),
])
def test_the_judge_audit_refuses_bad_inputs_before_any_work(tmp_path, capsys, args, pattern):
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    out = tmp_path / "audit"
    code = exit_code(judge_audit.main, [*args, "--out", str(out)])
    check_one_line(code, capsys.readouterr().err, pattern)
    assert not list(tmp_path.iterdir())  # no audit folder, no report folder made


def copied_audit(tmp_path: Path) -> Path:
    folder = tmp_path / "audit"
    shutil.copytree(AUDIT / "units", folder / "units")
    return folder


def test_the_audit_report_reads_the_run_length_from_the_units_and_says_one_seed_has_no_interval(tmp_path, capsys):
    """An audit of 30-update judge runs is reported without --run-updates (which once defaulted to 50 and raised a
    KeyError), as are the units written before they recorded it; a task of one seed has no interval, and says so."""
    folder = copied_audit(tmp_path)
    for path in (folder / "units").glob("*.json"):  # the same units, as an audit of 30-update judge runs writes them
        unit = json.loads(path.read_text())
        for corruptor in unit["corruptors"].values():
            for judged in corruptor["judges"].values():
                judged["15"], judged["30"] = judged.pop("25"), judged.pop("50")
        path.write_text(json.dumps({**unit, "run_updates": 30}))
    for audit in (folder, copied_audit(tmp_path / "as_committed")):
        assert judge_audit.main(["--report", str(audit)]) == 0
        text = (audit / "audit.md").read_text()
        assert "one seed: no interval" in text and "keep everything" not in text
        assert "nan" not in text.lower()
    assert capsys.readouterr().out.count("# Judge audit") == 2


def test_the_audit_refuses_to_reuse_units_run_at_other_lengths(tmp_path, capsys):
    """The committed units are 50-update judge runs: an audit asked for 30-update judge runs in their folder says so
    in one line and runs nothing, instead of reporting them as 30-update runs."""
    folder = copied_audit(tmp_path)
    before = sorted(p.read_text() for p in (folder / "units").glob("*.json"))
    code = exit_code(judge_audit.main, ["--run-updates", "30", "--tasks", "2", "--seeds", "1", "--out",
                                        str(folder)])
    check_one_line(code, capsys.readouterr().err,
                   r"s0.json was run with --run-updates 50, not --run-updates 30: give the same, or another --out")
    assert sorted(p.read_text() for p in (folder / "units").glob("*.json")) == before
    assert not (folder / "audit.md").exists()


@pytest.mark.parametrize("args,pattern", [
    (["--task", "nope"], "argument --task: invalid choice: 'nope'"),
    (["--k", "abc"], "argument --k: expected an integer, got 'abc'"),
    (["--threads", "0"], "argument --threads: must be > 0"),
    (["--parts-only", "--skip-parts"], "--parts-only and --skip-parts together measure nothing"),
    (["--population", "2"], "population must be an integer >= 4 for optimizer 'cmaes'"),
])
def test_the_search_engines_study_refuses_bad_inputs_before_any_work(capsys, args, pattern):
    check_one_line(exit_code(search_engines.main, args), capsys.readouterr().err, pattern)


@pytest.mark.parametrize("args,pattern", [
    (["--seeds", "0"], "argument --seeds: must be > 0"),
    (["--seeds", "4"], "has no row shortcut_fixed_shared/agent/cmaes/-/s3"),
    (["--runs", "{tmp}/missing.csv"], "missing.csv cannot be read"),
])
def test_the_search_vs_judge_study_refuses_bad_inputs_before_any_work(tmp_path, capsys, args, pattern):
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    check_one_line(exit_code(search_vs_judge.main, args), capsys.readouterr().err, pattern)


def test_search_vs_judge_help_starts_nothing(capsys):
    assert exit_code(search_vs_judge.main, ["--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: studies/search_vs_judge.py") and "--runs" in out and "oracle map judge" not in out


@pytest.mark.parametrize("args,pattern", [
    (["--tasks", "nope"], "unknown task 'nope'"),
    (["--tasks", ","], "--tasks is empty"),
    (["--seeds", "0"], "--seeds: must be > 0"),
    (["--workers", "0"], "--workers: must be > 0"),
    (["--report", "{tmp}/missing"], "holds no fidelity units"),
])
def test_the_fidelity_study_refuses_bad_inputs_before_any_work(tmp_path, capsys, args, pattern):
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    check_one_line(exit_code(fidelity.main, [*args, "--out", str(tmp_path / "fidelity")]), capsys.readouterr().err,
                   pattern)
    assert not list(tmp_path.iterdir())


def test_the_fidelity_study_refuses_to_mix_units_of_another_generator_or_length(tmp_path, capsys):
    """A unit is keyed by the CAM-Net weights and the evaluation length too: a study continued after either changed
    stops in one line before any run, and leaves the units as they were."""
    current = fidelity.generator_of(fidelity.task_setup("shortcut_random")[0])
    assert current and len(current) == 16
    path = fidelity.unit_path(tmp_path, "shortcut_random", "keep_all", 0)
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"generator": "0" * 16}))
    check_one_line(exit_code(fidelity.main, ["--tasks", "shortcut_random", "--out", str(tmp_path)]),
                   capsys.readouterr().err, "run with CAM-Net weights 0000000000000000, shortcut_random now has")
    assert [p.name for p in path.parent.iterdir()] == ["keep_all_s0.json"]
    assert json.loads(path.read_text()) == {"generator": "0" * 16}
    path.write_text(json.dumps({"generator": current, "eval_steps": 250}))  # the right weights, another length
    check_one_line(exit_code(fidelity.main, ["--tasks", "shortcut_random", "--out", str(tmp_path)]),
                   capsys.readouterr().err, "ran 250 updates, shortcut_random now runs 500")


def test_the_corruptor_space_study_refuses_to_continue_units_of_another_search(tmp_path, capsys):
    """Its units are the default search's: units searched otherwise (those written before the defaults became the
    fidelity study's choice record no search: RankMe after 50 updates) stop a continued study in one line, untouched."""
    path = corruptor_space.unit_path(tmp_path, "shortcut_random", "cell_scorer", 0)
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"task": "shortcut_random"}))
    now = corruptor_space.search_name(corruptor_space.default_search())
    assert now.startswith("alpha_req after 25 then 50 updates")
    check_one_line(exit_code(corruptor_space.main, ["--tasks", "shortcut_random", "--seeds", "1", "--out",
                                                    str(tmp_path)]),
                   capsys.readouterr().err, f"was searched with rankme after 50 updates, 2400 in all, the search "
                                            f"asked for is {now}: give a new --out")
    assert [p.name for p in path.parent.iterdir()] == [path.name] and json.loads(path.read_text()) == {
        "task": "shortcut_random"}


def test_the_corruptor_space_study_compares_optimisers_unit_by_unit(tmp_path, capsys):
    """Each optimiser's searches are units of their own, keyed by it and by the confirmation: a continued study asked
    for another confirmation stops in one line; the report tells the optimisers apart, a line each."""
    def unit(optimizer: str, seed: int, planted: float, runs: int | None) -> dict:
        return {"task": "shortcut_random", "corruptor": "cell_scorer", "seed": seed, "keep_planted": planted,
                "keep_other": 0.9, "keep_fraction": 0.7, "answer_runs": runs, "cpu_minutes": 10.0,
                "chosen": {"keep_level": 0.0, "temperature": 0.0},
                "search": corruptor_space.default_search(optimizer, confirm=False)}

    for optimizer, seed, planted, runs in (("cmaes", 0, 0.1, 12), ("sep_cmaes", 0, 0.5, None),
                                           ("sep_cmaes", 1, 0.15, 30)):
        path = corruptor_space.unit_path(tmp_path, "shortcut_random", "cell_scorer", seed, optimizer)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(unit(optimizer, seed, planted, runs)))
    assert len({p.name for p in (tmp_path / "units").iterdir()}) == 3
    text = corruptor_space.report(tmp_path)
    assert "- cmaes: found in 1 of 1 (task, seed) searches; planted keep <= 0.2 reached in 1, after 12 runs" in text
    assert "- sep_cmaes: found in 1 of 2 (task, seed) searches; planted keep <= 0.2 reached in 1, after 30 runs" in text
    assert corruptor_space.main(["--report", str(tmp_path)]) == 0 and (tmp_path / "report.md").read_text() == text
    check_one_line(exit_code(corruptor_space.main, ["--tasks", "shortcut_random", "--seeds", "1", "--optimizers",
                                                    "sep_cmaes", "--out", str(tmp_path)]),
                   capsys.readouterr().err, "the search asked for is .* confirmed by rankme after 500 updates on 2 "
                                            "seeds, 2 finalists, sep_cmaes, the keep level held at 0.75 of the cells "
                                            "in the first stage: give a new --out")


def test_the_corruptor_space_study_refuses_units_whose_keep_level_was_searched_in_the_first_stage(tmp_path, capsys):
    """A unit recorded before the first stage held the keep level (its search has no ``first_stage_keep``) was
    searched otherwise: a continued study stops in one line."""
    search = {k: v for k, v in corruptor_space.default_search().items() if k != "first_stage_keep"}
    path = corruptor_space.unit_path(tmp_path, "shortcut_random", "cell_scorer", 0)
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"task": "shortcut_random", "search": search}))
    check_one_line(exit_code(corruptor_space.main, ["--tasks", "shortcut_random", "--seeds", "1", "--out",
                                                    str(tmp_path)]),
                   capsys.readouterr().err, "2 finalists, the search asked for is .* 2 finalists, the keep level held "
                                            "at 0.75 of the cells in the first stage: give a new --out")


def fidelity_units(folder: Path, task: str, quality: dict[str, float], judges: dict, noise: float = 0.004,
                   at_50: dict | None = None, at_50_on: dict[int, dict] | None = None) -> None:
    """Units of a fake study: each corruptor's kNN is its ``quality`` plus seed noise; ``judges`` maps a judge to
    ``f(quality, seed_outcome, rng) -> value``, read at every length (``at_50``: other functions after 50;
    ``at_50_on``: others again after 50 on the seeds it names)."""
    rng = np.random.default_rng(0)
    for seed in range(3):
        for kind, q in quality.items():
            knn = q + rng.normal(0, noise)
            values = {j: float(f(q, knn, rng)) for j, f in judges.items()}
            early = {**values, **{j: float(f(q, knn, rng))
                                  for j, f in {**(at_50 or {}), **(at_50_on or {}).get(seed, {})}.items()}}
            unit = {"task": task, "kind": kind, "seed": seed, "eval_steps": 500, "diverged": False, "knn": knn,
                    "linear": knn, "keep_planted": None, "judges": {"50": early, "200": values, "500": values},
                    "cpu_seconds_at": {"50": 10.0, "200": 40.0, "500": 100.0}}
            path = fidelity.unit_path(folder, task, kind, seed)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(unit))


def test_the_fidelity_report_scores_a_judge_that_reads_the_outcome_at_the_ceiling_and_noise_near_zero(tmp_path):
    """A judge equal to its own run's outcome ranks the corruptors as that seed's kNN does: its Spearman with the
    other seeds' outcome is the ceiling exactly; a judge of pure noise scores near 0; a judge that prefers the
    worst corruptors scores negative and regrets the spread."""
    from corruption_env.statistics import STATISTICS

    quality = {k: 0.60 + 0.01 * i for i, k in enumerate(fidelity.ANSWER_CORRUPTORS)}
    sign = {j: 1.0 if STATISTICS[j].higher_is_better else -1.0 for j in fidelity.JUDGES}
    judges = {j: (lambda q, knn, rng: 0.0) for j in fidelity.JUDGES}
    judges["rankme"] = lambda q, knn, rng: 100 * knn  # reads its own run's outcome
    judges["lidar"] = lambda q, knn, rng: rng.normal()  # noise
    judges["heldout_loss"] = lambda q, knn, rng: sign["heldout_loss"] * -q  # prefers the worst (oriented)
    fidelity_units(tmp_path, "shortcut_random", quality, judges)
    task = fidelity.fidelity_report(tmp_path)["tasks"]["shortcut_random"]
    assert task["differ"] and task["seeds"] == [0, 1, 2] and len(task["kinds"]) == 10
    assert task["spearman"]["rankme"]["500"] == pytest.approx(task["ceiling"]) and task["ceiling"] > 0.8
    assert abs(task["spearman"]["lidar"]["500"]) < 0.6
    assert task["spearman"]["heldout_loss"]["500"] < -0.8
    assert task["regret"]["heldout_loss"]["500"] > 0.08 > task["regret"]["rankme"]["500"]
    assert task["cpu"] == {"50": 10.0, "200": 40.0, "500": 100.0}
    text = fidelity.report(tmp_path, "header")
    assert json.loads((tmp_path / "fidelity.json").read_text())["groups"]["named"]["tasks"] == ["shortcut_random"]
    assert "| rankme |" in text and "probe_accuracy (labels)" in text and "ceiling" in text.lower()
    assert task["oracle_minus_keep_all"]["labels_at"] == {"50": 0.0, "200": 0.0, "500": 0.0}  # the label judge: 0
    assert "| shortcut_random | +0.000 | +0.000 | +0.000 | " in text


def test_the_fidelity_report_simulates_successive_halving_on_the_units(tmp_path):
    """A judge that reads the outcome at both lengths: halving picks as well as the long run alone. A judge that
    reads it backwards after 50 updates and right after 200: the long run alone picks well, halving cannot (the
    quarter it keeps after 50 are the worst), and the short run alone picks the worst. Only pairs the search can run
    (the second length a whole multiple F of the first) are simulated, each promoting its top 1/F."""
    quality = {k: 0.60 + 0.01 * i for i, k in enumerate(fidelity.ANSWER_CORRUPTORS)}
    judges = {j: (lambda q, knn, rng: 0.0) for j in fidelity.JUDGES}
    judges["rankme"] = judges["lidar"] = lambda q, knn, rng: 100 * q
    judges["alpha_req"] = lambda q, knn, rng: -q  # reads it backwards after 500
    fidelity_units(tmp_path, "shortcut_random", quality, judges,
                   at_50={"lidar": lambda q, knn, rng: -100 * q, "alpha_req": lambda q, knn, rng: q})
    halving = fidelity.fidelity_report(tmp_path)["tasks"]["shortcut_random"]["halving"]
    assert set(halving["rankme"]) == {"50>200", "50>500"}  # 200 then 500 is no whole multiple
    assert halving["lidar"]["50>500"]["halving"] == halving["lidar"]["50>500"]["first"]  # the top tenth: one goes on
    right, backwards, late = (halving[j]["50>200"] for j in ("rankme", "lidar", "alpha_req"))
    assert right["halving"] == right["last"] == right["first"] < 0.02
    assert backwards["last"] < 0.02 and backwards["halving"] > 0.05 and backwards["first"] > 0.08
    # right after 50, backwards after 200: halving keeps the best quarter, then takes its worst (the 3rd best)
    assert late["first"] < 0.01 < late["halving"] < 0.03 < 0.08 < late["last"]
    assert "Successive halving as the search runs it" in fidelity.report(tmp_path, "header")


def test_the_fidelity_report_measures_the_first_rung_on_two_run_seeds(tmp_path):
    """A judge that reads the corruptors backwards after 50 updates on one run seed (0) and right on the others, and
    right after 200 on all: judged on seed 0 alone, the first rung keeps the worst quarter and halving picks from it;
    judged on two seeds (their mean), the bias is outweighed and halving picks the best. The report's section says so
    for the chosen rungs."""
    quality = {k: 0.60 + 0.01 * i for i, k in enumerate(fidelity.ANSWER_CORRUPTORS)}
    judges = {j: (lambda q, knn, rng: 0.0) for j in fidelity.JUDGES}
    judges["lidar"] = lambda q, knn, rng: 100 * q
    fidelity_units(tmp_path, "shortcut_random", quality, judges, noise=0.001,
                   at_50_on={0: {"lidar": lambda q, knn, rng: -q}})
    result = fidelity.fidelity_report(tmp_path)
    r = result["tasks"]["shortcut_random"]["halving"]["lidar"]["50>200"]
    assert r["halving_two_seeds"] == r["first_two_seeds"] == 0.0
    assert r["halving"] > 0.02 and r["first"] > 0.02  # the two orderings (of six) with seed 0 first pick wrong
    section = "\n".join(fidelity.two_seed_first_rung({**result, "chosen": {"judge": "lidar", "rungs": [50, 200]}}))
    assert "## The first rung on two run seeds (lidar after 50 then 200 updates)" in section
    assert f"| named (1) | {r['halving']:.3f} | 0.000 | {r['first']:.3f} | 0.000 | 28 / 35 |" in section


def test_the_search_s_judge_and_rungs_are_chosen_on_the_development_split_by_the_declared_rule(tmp_path):
    """The development tasks: RankMe reads the corruptors backwards after 50 updates (the search before the study)
    and right from 200; LiDAR after 50 puts the best in its top quarter but not first, and reads right from 200;
    kNN with labels is right at 50 but is no label-free judge. The rule takes the lowest regret, then the cheapest:
    LiDAR after 50 then 200 (10 + (2 x 40 - 10) / 4 CPU s a candidate) over any judge at 200 alone (40)."""
    quality = {k: 0.60 + 0.01 * i for i, k in enumerate(fidelity.ANSWER_CORRUPTORS)}
    judges = {j: (lambda q, knn, rng: 0.0) for j in fidelity.JUDGES}
    judges["rankme"] = judges["lidar"] = lambda q, knn, rng: 100 * q
    at_50 = {"rankme": lambda q, knn, rng: -q, "lidar": lambda q, knn, rng: -abs(q - 0.68),
             "probe_accuracy": lambda q, knn, rng: q}
    development = [t for t in fidelity.DEFAULT_TASKS if fidelity.split_of(t) == "development"]
    for task in development[:-1]:
        fidelity_units(tmp_path, task, quality, judges, noise=0.001, at_50=at_50)
    assert not fidelity.fidelity_report(tmp_path)["chosen"]["final"]  # a development task missing: provisional
    assert "Not yet chosen" in fidelity.report(tmp_path, "header")
    fidelity_units(tmp_path, development[-1], quality, judges, noise=0.001, at_50=at_50)
    result = fidelity.fidelity_report(tmp_path)
    assert result["chosen"]["final"] and result["chosen"]["tasks"] == development
    chosen = result["chosen"]
    assert (chosen["judge"], chosen["rungs"]) == ("lidar", [50, 200]) and chosen["regret"] < 0.001
    assert chosen["cpu"] == pytest.approx(10 + (2 * 40 - 10) / 4)
    before = next(w for w in result["groups"]["development"]["ways"] if w["judge"] == "rankme" and w["rungs"] == [50])
    assert before["regret"] > 0.08
    assert not any("probe_accuracy" in w["judge"] for w in result["groups"]["development"]["ways"])
    text = fidelity.report(tmp_path, "header")
    assert "**lidar after 50 then 200 updates**" in text
    rescued = {(r["judge"], r["rungs"]) for r in fidelity.first_rung_wrong(result["tasks"]["gen00"])}
    assert ("lidar", "50 then 200") in rescued and ("rankme", "50 then 200") not in rescued  # its quarter is the worst
    assert "- gen00: " in text and "lidar 50 then 200 (" in text


@pytest.mark.parametrize("study", [ceiling, confirmation, corruptor_space, cpu_levers, fidelity, judge_audit, main_command,
                                   search_check, search_engines, search_vs_judge],
                         ids=lambda m: m.__name__)
def test_every_option_says_what_it_does_and_its_default(study):
    parser = study.build_parser()
    missing = [a.option_strings[0] for a in parser._actions
               if a.option_strings and a.option_strings[0] != "-h" and "default" not in (a.help or "")]
    assert not missing


@pytest.mark.parametrize("args,pattern", [
    (["--setting", "nf16"], "--setting expects NAME\\[@CHECKOUT\\]=KEY:VALUE"),
    (["--setting", "before@="], "--setting expects NAME\\[@CHECKOUT\\]=KEY:VALUE"),
    (["--setting", "before@{tmp}="], "--setting before: .* is not a checkout of this project"),
    (["--setting", "nf16=camnet_checkpoint:'{tmp}/none.pt'"], "--setting nf16: no CAM-Net checkpoint at"),
    (["--setting", "x=batch_size"], "--setting expects key:value pairs"),
    (["--seeds", "0,a"], "--seeds expects comma-separated integers"),
    (["--kernels", "native,avx9"], "--kernels: unknown avx9; choose from native, avx2"),
    (["--report", "{tmp}/missing"], "no units in"),
])
def test_the_main_command_study_refuses_bad_inputs_before_any_work(tmp_path, capsys, args, pattern):
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    check_one_line(exit_code(main_command.main, [*args, "--out", str(tmp_path / "out")]), capsys.readouterr().err,
                   pattern)
    assert not list(tmp_path.iterdir())


def main_command_unit(setting: str, seed: int, wall: float, knn: float) -> dict:
    return {"kernels": "native", "setting": setting, "env_kwargs": [] if setting == "default" else ["batch_size:32"],
            "commit": main_command.Setting(setting, []).commit, "order": 0 if setting == "default" else 1,
            "seed": seed, "algo": "ppo", "train_args": [], "cpu": "a CPU", "wall_s": wall, "cpu_s": 2 * wall,
            "peak_rss_mb": 1000, "train_s": 1.0, "eval_s": 1.0, "precision_line": "precision: fp32 (asked for)",
            "rows": {"keep_all": {"knn": knn, "linear": knn, "seconds": 1.0}}}


def test_the_main_command_report_pairs_runs_by_seed_and_refuses_mixed_units(tmp_path, capsys):
    """The report's ratio is the median of per-seed ratios and each row's difference is paired by seed; a continued
    study whose units ran a setting with other env kwargs (or other train args) stops in one line, nothing touched."""
    units = tmp_path / "units"
    units.mkdir()
    for seed, (wall_a, wall_b, knn_a, knn_b) in enumerate([(100, 50, 0.60, 0.61), (200, 120, 0.70, 0.69),
                                                           (300, 150, 0.80, 0.83)]):
        for setting, wall, knn in (("default", wall_a, knn_a), ("half", wall_b, knn_b)):  # "default" sorts first
            (units / f"native_{setting}_s{seed}.json").write_text(json.dumps(main_command_unit(setting, seed, wall,
                                                                                               knn)))
    text = main_command.report(tmp_path)
    half = next(line for line in text.splitlines() if line.startswith("| half |"))
    assert "| 0.50 | 0.50 |" in half  # per-seed ratios 0.5, 0.6, 0.5: median 0.50 (the ratio of medians is 0.6)
    keep_all = next(line for line in text.splitlines() if line.startswith("| keep_all |"))
    assert keep_all.endswith("| +0.010 ± 0.020 |")  # differences +0.01, -0.01, +0.03
    before = sorted(p.read_text() for p in units.iterdir())
    code = exit_code(main_command.main, ["--setting", "default=", "--setting", "half=batch_size:16",
                                         "--out", str(tmp_path)])
    check_one_line(code, capsys.readouterr().err, "ran setting 'half' with \\['batch_size:32'\\]")
    code = exit_code(main_command.main, ["--train-args", "--total-timesteps 8", "--out", str(tmp_path)])
    check_one_line(code, capsys.readouterr().err, "ran --algo ppo --train-args \\[\\], not")
    assert sorted(p.read_text() for p in units.iterdir()) == before


def write_runs(folder: Path, rows: list[tuple[str, str, int, float, str]]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["task,name,seed,status,knn,keep_planted"] + [f"{t},{n},{s},ok,{k},{p}" for t, n, s, k, p in rows]
    (folder / "runs.csv").write_text("\n".join(lines) + "\n")
    return folder


def test_the_search_check_tells_answer_tasks_and_counts_seeds_against_keep_all(tmp_path, capsys):
    """An answer task is one whose oracle margin over keep_all exceeds its seed sd; planted keep is counted on answer
    tasks only; kNN within one keep_all sd counts apart from kNN at least keep_all's. The same run in two folders is
    refused in one line."""
    rows = []
    for seed, (keep_all, oracle, search, planted) in enumerate([(0.60, 0.66, 0.65, 0.1), (0.62, 0.67, 0.615, 0.4),
                                                                 (0.61, 0.65, 0.64, 0.2)]):
        rows += [("answer", "keep_all", seed, keep_all, ""), ("answer", "oracle", seed, oracle, "0.0"),
                 ("answer", "cmaes", seed, search, str(planted))]
    for seed, (keep_all, oracle, search) in enumerate([(0.70, 0.75, 0.60), (0.72, 0.68, 0.72), (0.71, 0.70, 0.705)]):
        rows += [("noise", "keep_all", seed, keep_all, ""), ("noise", "oracle", seed, oracle, "0.0"),
                 ("noise", "cmaes", seed, search, "0.9")]
    folder = write_runs(tmp_path / "bench", rows)
    text = search_check.report(search_check.read_runs([folder]), "cmaes", 0.3)
    assert "| answer | +0.050 (0.010) | yes | 0.010 |" in text
    assert "| noise | +0.000 (0.046) | no | 0.010 |" in text
    assert "planted keep <= 0.3: 2 of 3 (task, seed) pairs" in text  # the noise task's 0.9 is not counted
    assert "kNN >= keep_all's − one seed sd: 5 of 6" in text  # answer s1 (-0.005) is within, noise s0 (-0.10) not
    assert "kNN >= keep_all's: 3 of 6" in text
    write_runs(tmp_path / "again", rows[:3])
    check_one_line(exit_code(search_check.main, [str(folder), str(tmp_path / "again")]), capsys.readouterr().err,
                   "answer keep_all seed 0 is in both")
    check_one_line(exit_code(search_check.main, [str(tmp_path / "none")]), capsys.readouterr().err,
                   "holds no runs.csv")


def test_the_ceiling_report_pairs_by_seed_across_folders_and_judges_the_target(tmp_path, capsys):
    """The ceiling against its own sweep's keep_all and another folder's simclr_aug, paired by seed: met only where
    the mean gain reaches the target and its CI is above 0; a keep_all in both folders is two rows, told apart."""
    import csv

    def write(folder: Path, rows: list[dict]) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        fields = ["task", "status", *sorted({k for r in rows for k in r})]
        with (folder / "runs.csv").open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=fields)
            writer.writeheader()
            writer.writerows({"task": "fm", "status": "ok", **r} for r in rows)
        return folder

    search = {"keep_fraction": 0.5, "final_keep_planted": "", "theta/keep_level": -1.0, "theta/temperature": 0.3,
              "best_candidate_judge": 0.61, "keep_all_judge": 0.6, "confirmation_margin": 0.004, "keeps_everything": 0.0}
    ceil = write(tmp_path / "ceiling", [
        *({"name": "cmaes_labels", "seed": s, "knn": k, **search} for s, k in enumerate([0.852, 0.85, 0.853])),
        *({"name": "keep_all", "seed": s, "knn": k, "keep_fraction": 1.0} for s, k in enumerate([0.835, 0.832, 0.835]))])
    other = write(tmp_path / "plain", [
        *({"name": "simclr_aug", "seed": s, "knn": k} for s, k in enumerate([0.837, 0.836, 0.8355])),
        *({"name": "keep_all", "seed": s, "knn": k} for s, k in enumerate([0.8357, 0.832, 0.8353]))])
    assert "judged by a judge and lengths not recorded" in ceiling.report(ceil, [other], 0.01)
    (ceil / "run_settings.json").write_text(json.dumps({f"fm/agent/cmaes_labels/-/s{s}": {
        "kind": "agent", "name": "cmaes_labels", "agent_defaults": {"judge": "probe_accuracy", "run_updates": 50},
        "agent_options": {"run_updates": 25, "rungs": 4}} for s in range(3)}))
    text = ceiling.report(ceil, [other], 0.01)
    assert "judged by probe_accuracy after 25 then 50 then 100 then 200 updates." in text  # what its judge saw
    assert "| keep_all (plain) | 3 |" in text and "| keep_all | 3 |" in text
    assert "| **label-judged ceiling (cell scorer)** | 3 | 0.8517 " in text
    assert "| 0 | 0.50 | - | +0.30 |" in text  # keep level -1 keeps half the cells
    assert "above keep_all + 0.01 (paired +0.0177" in text and "above simclr_aug + 0.01 (paired +0.0155" in text
    assert "not above" not in text
    assert "not above keep_all + 0.02" in ceiling.report(ceil, [other], 0.02)
    check_one_line(exit_code(ceiling.main, [str(tmp_path / "none")]), capsys.readouterr().err, "holds no runs.csv")


def write_fidelity_units(folder: Path, task: str, knn: dict[str, list[float]], judges: dict[tuple, dict]) -> None:
    """Fidelity units of ``task``: per corruptor its kNN on each seed; ``judges[(judge, length)][corruptor]`` its
    (seed-independent) judge there, 0 where not given."""
    for kind, values in knn.items():
        for seed, value in enumerate(values):
            read = {length: {judge: judges.get((judge, length), {}).get(kind, 0.0)
                             for judge in confirmation.CONFIRM_JUDGES} for length in ("50", "500")}
            path = folder / task / f"{kind}_s{seed}.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps({"task": task, "kind": kind, "seed": seed, "diverged": False, "knn": value,
                                        "judges": read}))


def test_the_confirmation_is_chosen_where_it_stops_the_short_judges_masking_bias_and_keeps_the_answers(tmp_path):
    """Two development tasks: on the answer task the search's judge (alpha-ReQ after 50 updates) picks the oracle;
    on the other it picks a mask that loses kNN, as alpha-ReQ's masking bias does. Only RankMe after 500 updates
    both rejects that mask and keeps the oracle; RankMe after 50 rejects both, LiDAR after 500 keeps both. The rule
    (at most 10 % worse on the development split, then the most answers kept) chooses RankMe after 500."""
    write_fidelity_units(tmp_path, "gen00", {"keep_all": [0.59, 0.60, 0.61], "oracle": [0.66] * 3,
                                             "random": [0.55] * 3},
                         {("alpha_req", "50"): {"oracle": 2.0, "random": 1.0}, ("rankme", "500"): {"oracle": 1.0},
                          ("rankme", "50"): {"keep_all": 1.0}, ("lidar", "500"): {"oracle": 1.0}})
    write_fidelity_units(tmp_path, "gen02", {"keep_all": [0.59, 0.60, 0.61], "random": [0.55] * 3,
                                             "cowmask": [0.50] * 3},
                         {("alpha_req", "50"): {"random": 1.0}, ("rankme", "500"): {"keep_all": 1.0},
                          ("rankme", "50"): {"keep_all": 1.0}, ("lidar", "500"): {"random": 1.0}})
    rows, chosen = confirmation.choose(tmp_path)
    by = {r["confirm"]: r["development"] for r in rows}
    assert by[None] == {"picks": 12, "worse": 6, "answers": 6, "found": 6}  # the search as it was: masks on gen02
    assert by[("rankme", "500")] == {"picks": 12, "worse": 0, "answers": 6, "found": 6}
    assert by[("rankme", "50")]["found"] == 0 and by[("lidar", "500")]["worse"] == 6
    assert chosen["confirm"] == ("rankme", "500")
    assert "**rankme, 500**" in confirmation.choice_report(rows, chosen)


def test_the_confirmation_of_two_finalists_keeps_the_answer_the_first_stage_ranked_second(tmp_path):
    """The first stage's best is a partial answer and the oracle its runner-up, both above keep_all there: confirming
    the pick alone rejects it (keep_all is kept: no answer); confirming the best two keeps the oracle."""
    write_fidelity_units(tmp_path, "gen00", {"keep_all": [0.59, 0.60, 0.61], "oracle": [0.66] * 3,
                                             "partial": [0.58] * 3, "random": [0.55] * 3},
                         {("alpha_req", "50"): {"partial": 3.0, "oracle": 2.0, "keep_all": 1.0},
                          ("rankme", "500"): {"oracle": 2.0, "keep_all": 1.0}})
    text = confirmation.finalists_report(tmp_path, ("rankme", "500"), most=2)
    assert "| 1 | 0 of 6; 0 of 6 |" in text and "| 2 | 0 of 6; 6 of 6 |" in text and "2 seeds" not in text
    # a fourth seed under way (keep_all alone has it): the task is read on the three every corruptor has
    unit = lambda kind, seed: tmp_path / "gen00" / f"{kind}_s{seed}.json"  # noqa: E731
    unit("keep_all", 3).write_text(unit("keep_all", 0).read_text().replace('"seed": 0', '"seed": 3'))
    assert confirmation.finalists_report(tmp_path, ("rankme", "500"), most=2) == text
    # every corruptor on four seeds: confirmed on two of them as the search does (4 x 3 x 2 orderings), then scored
    for kind in ("oracle", "partial", "random"):
        unit(kind, 3).write_text(unit(kind, 0).read_text().replace('"seed": 0', '"seed": 3'))
    two = confirmation.finalists_report(tmp_path, ("rankme", "500"), most=2).split("\n\n")[1]
    assert "2 seeds" in two and "| 1 | 0 of 24; 0 of 24 |" in two and "| **2** | 0 of 24; 24 of 24 |" in two
    assert "choice of finalists on the development split, confirmed on two seeds: 2 " in text_of(tmp_path)


def text_of(folder: Path) -> str:
    return confirmation.finalists_report(folder, ("rankme", "500"), most=2)


def test_the_finalists_rule_keeps_the_single_pick_where_a_runner_up_that_loses_passes_its_confirmation(tmp_path):
    """Beside the task whose runner-up is the oracle, a task whose runner-up loses kNN yet out-judges keep_all at
    the confirmation: two finalists keep one more answer and make 24 of 48 picks worse, over the 10 % bar, so the
    rule keeps confirming the pick alone; on three seeds nothing is chosen (the rule reads two-seed confirmations)."""
    judges = {("alpha_req", "50"): {"partial": 3.0, "oracle": 2.0, "keep_all": 1.0},
              ("rankme", "500"): {"oracle": 2.0, "keep_all": 1.0}}
    write_fidelity_units(tmp_path, "gen00", {"keep_all": [0.59, 0.60, 0.61], "oracle": [0.66] * 3,
                                             "partial": [0.58] * 3}, judges)
    write_fidelity_units(tmp_path, "gen02", {"keep_all": [0.59, 0.60, 0.61], "partial": [0.58] * 3,
                                             "random": [0.50] * 3},
                         {("alpha_req", "50"): {"partial": 3.0, "random": 2.0, "keep_all": 1.0},
                          ("rankme", "500"): {"random": 2.0, "keep_all": 1.0}})
    assert confirmation.choose_finalists(tmp_path, ("rankme", "500"), most=2)[1] is None
    for task in ("gen00", "gen02"):
        for path in (tmp_path / task).glob("*_s0.json"):
            fourth = path.read_text().replace('"seed": 0', '"seed": 3')
            path.with_name(path.name.replace("_s0", "_s3")).write_text(fourth)
    rows, chosen = confirmation.choose_finalists(tmp_path, ("rankme", "500"), most=2)
    assert [r["development"] for r in rows] == [{"picks": 48, "worse": 0, "answers": 24, "found": 0},
                                                {"picks": 48, "worse": 24, "answers": 24, "found": 24}]
    assert chosen["finalists"] == 1 and "confirmed on two seeds: 1 " in text_of(tmp_path)


@pytest.mark.parametrize("args,pattern", [([], "give --choose \\(part 1\\), or --searches"),
                                          (["--searches", "{tmp}/none", "--out", "{tmp}/out"], "holds no runs.csv"),
                                          (["--choose", "--fidelity", "{tmp}"], "holds no finished fidelity units")])
def test_the_confirmation_study_refuses_bad_inputs_in_one_line(tmp_path, capsys, args, pattern):
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    check_one_line(exit_code(confirmation.main, args), capsys.readouterr().err, pattern)
    assert not (tmp_path / "out").exists()


def test_a_real_process_prints_one_line(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run([sys.executable, str(ROOT / "studies" / "judge_audit.py"), "--workers", "0",
                             "--out", str(tmp_path / "audit")], cwd=tmp_path, capture_output=True, text=True,
                            timeout=120, env=env)
    check_one_line(result.returncode, result.stderr, "--workers: must be > 0")
    assert not list(tmp_path.iterdir())


def test_the_free_level_corruptors_keep_their_own_share_and_rank_cells_by_the_planted_pattern():
    """In an env without a keep budget, anti_k30 keeps 30 % of each image's cells, the planted pattern first;
    oracle_k50 half of them, the pattern never; random_k30 30 % wherever it falls."""
    from corruption_env import CorruptionEnv, EnvConfig

    env = CorruptionEnv(EnvConfig(image_size=16, scale=2, batch_size=4, mask_grid=4, episode_length=50,
                                  decorruptor="bicubic", heldout_size=16, keep_budget=None, action_mode="scores",
                                  dataset_kwargs={"train_size": 256, "test_size": 64, "shortcut": "random",
                                                  "shortcut_bits": 4}))
    obs, _ = env.reset(seed=0)
    acts = {kind: judge_audit.make_act(kind, env, seed=0) for kind in judge_audit.FREE_LEVEL}
    for kind, act in acts.items():
        planted = env.planted_cells.reshape(4, 16)
        action = act(obs)
        kept = action.reshape(4, 16) > 0
        share = judge_audit.FREE_LEVEL[kind][1]
        assert (kept.sum(axis=1) == round(16 * share)).all(), kind
        obs, _, _, _, info = env.step(action)
        assert info["keep_planted"] == pytest.approx(kept[planted].mean())  # the env keeps what was scored above 0
        if kind == "anti_k30":  # the pattern (4 bits, at most 5 cells here) kept whole
            assert kept[planted].all() and planted.any()
        if kind == "oracle_k50":
            assert not kept[planted].any()


def test_the_fidelity_report_reads_the_free_level_corruptors_only_in_its_own_part(tmp_path):
    """Free-level units in a task's folder leave the study's report as it was and make their own."""
    quality = {k: 0.60 + 0.01 * i for i, k in enumerate(fidelity.ANSWER_CORRUPTORS)}
    judges = {j: (lambda q, knn, rng: 0.0) for j in fidelity.JUDGES}
    fidelity_units(tmp_path, "shortcut_random", quality, judges)
    before = fidelity.report(tmp_path, "header")
    fidelity_units(tmp_path, "shortcut_random", {k: 0.5 for k in judge_audit.FREE_LEVEL}, judges)
    assert fidelity.report(tmp_path, "header") == before
    # a fourth seed under way (keep_all alone so far) leaves both parts as they were
    free_before = fidelity.report(tmp_path, "header", free_level=True)
    unit = fidelity.unit_path(tmp_path, "shortcut_random", "keep_all", 0)
    fourth = fidelity.unit_path(tmp_path, "shortcut_random", "keep_all", 3)
    fourth.write_text(unit.read_text().replace('"seed": 0', '"seed": 3'))
    assert fidelity.report(tmp_path, "header") == before
    assert fidelity.report(tmp_path, "header", free_level=True) == free_before
    free = fidelity.fidelity_report(tmp_path, free_level=True)["tasks"]["shortcut_random"]
    assert set(free["kinds"]) == {*fidelity.ANSWER_CORRUPTORS, *judge_audit.FREE_LEVEL} and free["complete"]
    assert "anti_k30: anti scores, 30% kept" in fidelity.report(tmp_path, "header", free_level=True)
    assert (tmp_path / "fidelity_free_level.md").exists()


def test_the_confirmation_emulates_the_search_on_the_free_level_part_only_when_asked(tmp_path):
    """The short judge ranks the anti-answer that keeps 30 % of the cells first (alpha-ReQ's masking bias) and it
    loses kNN: the search without confirmation picks it on every ordering; RankMe after 500 rejects it. The
    study's own emulation does not see the free-level corruptors."""
    write_fidelity_units(tmp_path, "gen00", {"keep_all": [0.59, 0.60, 0.61], "oracle": [0.66] * 3,
                                             "random": [0.55] * 3, "anti_k30": [0.40] * 3},
                         {("alpha_req", "50"): {"anti_k30": 3.0, "oracle": 2.0, "keep_all": 1.0},
                          ("rankme", "500"): {"oracle": 2.0, "keep_all": 1.0}})
    assert set(confirmation.read_fidelity(tmp_path)["gen00"]) == {"keep_all", "oracle", "random"}
    rows, _ = confirmation.choose(tmp_path, free_level=True)
    by = {r["confirm"]: r["development"] for r in rows}
    assert by[None] == {"picks": 6, "worse": 6, "answers": 6, "found": 0}
    assert by[("rankme", "500")] == {"picks": 6, "worse": 0, "answers": 6, "found": 0}
    (tmp_path / "gen00" / "anti_k30_s0.json").unlink()  # a task without all three seeds of it: not read
    with pytest.raises(confirmation.UsageError, match="free-level part"):
        confirmation.choose(tmp_path, free_level=True)


def test_the_corruptor_space_report_says_what_the_confirmation_made_of_each_pick():
    """A pick that lost its confirmation is not an answer found, and the row says the search keeps every cell."""
    lost = {"confirmation_margin": -2.0, "confirmed": False, "keeps_everything": True}
    assert corruptor_space.confirmation(lost) == "lost (-2): keeps every cell"
    assert corruptor_space.confirmation({"confirmation_margin": 4.71, "confirmed": True}) == "won by +4.71"
    assert corruptor_space.confirmation({}) == "none"


def test_the_corruptor_space_report_says_whether_the_first_stage_saw_an_answer():
    """Where a miss comes from: the candidates at the last rung, best judged first, and how many of them (and which
    rank) kept <= 0.3 of the planted cells; candidates stopped at a lower rung, or whose run diverged, are not
    counted (the search's own ranking, the one its finalists come from)."""
    from agents.search import WholeRunSearch

    rows = [{"judge": -0.98, "keep_planted": 0.16, "keep_other": 0.95, "rung": 1},
            {"judge": -0.95, "keep_planted": 1.0, "keep_other": 0.67, "rung": 1},
            {"judge": -0.90, "keep_planted": 0.1, "keep_other": 0.9, "rung": 0},
            {"judge": -0.96, "keep_planted": 0.3, "keep_other": 0.9, "rung": 1}]
    rows.append({"judge": float("nan"), "keep_planted": 0.0, "keep_other": 1.0, "rung": 1})  # diverged: left out
    search = WholeRunSearch.__new__(WholeRunSearch)
    search.history, search.rungs = rows, 2
    unit = {"last_rung": corruptor_space.last_rung(search)}
    assert unit["last_rung"] == [[-0.95, 1.0, 0.67], [-0.96, 0.3, 0.9], [-0.98, 0.16, 0.95]]
    assert corruptor_space.answers_seen(unit) == "2 of 3 (best #2)"
    assert corruptor_space.answers_seen({"last_rung": unit["last_rung"][:1]}) == "0 of 1"
    assert corruptor_space.answers_seen({}) == ""
