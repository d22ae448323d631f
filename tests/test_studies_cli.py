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

import pytest

from test_cli_errors import check_one_line

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "studies"))
import judge_audit  # noqa: E402
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
    (["--only", "nope"], "unknown task 'nope': use a named one .* or a generated one, genNN"),
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


@pytest.mark.parametrize("study", [judge_audit, search_engines, search_vs_judge], ids=lambda m: m.__name__)
def test_every_option_says_what_it_does_and_its_default(study):
    parser = study.build_parser()
    missing = [a.option_strings[0] for a in parser._actions
               if a.option_strings and a.option_strings[0] != "-h" and "default" not in (a.help or "")]
    assert not missing


def test_a_real_process_prints_one_line(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run([sys.executable, str(ROOT / "studies" / "judge_audit.py"), "--workers", "0",
                             "--out", str(tmp_path / "audit")], cwd=tmp_path, capture_output=True, text=True,
                            timeout=120, env=env)
    check_one_line(result.returncode, result.stderr, "--workers: must be > 0")
    assert not list(tmp_path.iterdir())
