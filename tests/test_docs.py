"""The docs are generated from, or checked against, the code: the reward and statistic tables are current,
every registered reward and statistic is documented, the README stays a front door, and pages speak about the
software as it is (project history only in the changelog)."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from corruption_env.rewards import available_rewards
from corruption_env.statistics import available_statistics

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
sys.path.insert(0, str(DOCS))
from gen_tables import BLOCKS, PAGE, render  # noqa: E402


@pytest.mark.parametrize("page", sorted(BLOCKS), ids=lambda p: p.name)
def test_generated_tables_are_current(page):
    text = page.read_text()
    assert render(text, page) == text, f"docs/{page.name}'s generated blocks are out of date: run python docs/gen_tables.py"


def test_every_registered_reward_and_statistic_is_documented():
    text = PAGE.read_text()
    missing = [n for n in available_rewards() + available_statistics() if f"`{n}`" not in text]
    assert not missing, f"not in docs/rewards.md: {missing}"


def test_readme_is_a_front_door_with_both_commands():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 250
    assert "pip install -e . && python train_agent.py --algo ppo" in text
    assert 'pip install -e ".[test,ray]" && python -m pytest' in text


@pytest.mark.parametrize("page", [ROOT / "README.md", *sorted(DOCS.glob("*.md"))], ids=lambda p: p.name)
def test_pages_speak_about_the_software_not_its_history(page):
    if page.name == "changelog.md":
        return
    text = page.read_text()
    found = re.search(r"\b(wave \d|issue \d+)", text, flags=re.I) or re.search(r"\bDESIGN\.md", text)
    assert not found, f"{page.name} speaks of project history ({found.group(0)!r}): move it to docs/changelog.md"


def test_ruff_finds_no_unused_or_undefined_names():
    ruff = pytest.importorskip("ruff")
    del ruff
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "--select", "F", "--output-format", "concise",
                             "corruption_env", "agents", "benchmarking", "studies", "tests", "docs", "train_agent.py",
                             "benchmark.py"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
