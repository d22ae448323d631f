"""The docs' extension examples run as written (docs that lie are worse than none), and the README's layout and
links match the tree."""
from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
DOCS = README.parent / "docs"


def python_blocks(page: Path, section: str) -> list[str]:
    """The ```python blocks under the heading ``section`` of ``page`` (up to the next heading of its level)."""
    text = page.read_text()
    match = re.search(rf"^(#+) {re.escape(section)}\n(.*?)(?=^\1 |\Z)", text, flags=re.S | re.M)
    assert match, f"{page.name} has no section {section!r}"
    return re.findall(r"```python\n(.*?)```", match.group(2), flags=re.S)


@pytest.fixture
def isolated_registries(monkeypatch, tmp_path):
    import agents
    from corruption_env import rewards, statistics

    monkeypatch.setattr(agents.AGENTS, "entries", dict(agents.AGENTS.entries))
    monkeypatch.setattr(rewards.REWARDS, "entries", dict(rewards.REWARDS.entries))
    monkeypatch.setattr(statistics.STATISTICS, "entries", dict(statistics.STATISTICS.entries))
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    sys.modules.pop("my_algos", None)


def test_plugging_in_your_own_algorithm_example_runs(isolated_registries):
    blocks = python_blocks(DOCS / "training.md", "Plugging in your own algorithm")
    assert len(blocks) >= 2
    module, usage = blocks[0], blocks[1:]
    (isolated_registries / "my_algos.py").write_text(module)
    namespace: dict = {}
    for block in usage:
        exec(compile(block, "README.md", "exec"), namespace)  # noqa: S102 - the README's own example


@pytest.mark.parametrize("section", ["Writing a reward definition", "Adding a statistic"])
def test_custom_reward_and_statistic_examples_run(isolated_registries, section):
    namespace: dict = {}
    blocks = python_blocks(DOCS / "rewards.md", section)
    assert blocks
    for block in blocks:
        exec(compile(block, "rewards.md", "exec"), namespace)  # noqa: S102


def test_layout_section_matches_the_tree():
    """Every module of the packages is in the README's Layout, and every path there exists."""
    text = README.read_text()
    block = re.search(r"^## Layout\n+```\n(.*?)```", text, flags=re.S | re.M).group(1)
    listed, folder = set(), ""
    for line in block.splitlines():
        name = line.split()[0]
        if not line.startswith(" "):
            folder = name if name.endswith("/") else ""
            listed.add(name)
        else:
            listed.add(folder + name)
    root = README.parent
    assert all((root / path).exists() for path in listed), sorted(p for p in listed if not (root / p).exists())
    modules = {str(p.relative_to(root)) for package in ("corruption_env", "agents") for p in (root / package).glob("*.py")
               if p.name != "__init__.py"}
    assert modules <= listed, sorted(modules - listed)


PAGES = [README, *sorted(DOCS.glob("*.md"))]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_relative_link_and_image_of_the_readme_and_docs_is_in_git(page):
    """A link a new user clicks from a fresh clone must lead somewhere: every relative target is tracked."""
    import posixpath
    import subprocess

    root = README.parent
    here = page.parent.relative_to(root).as_posix()
    targets = {posixpath.normpath(posixpath.join(here, t.split("#")[0]))
               for t in re.findall(r"\]\(([^)\s]+)\)", page.read_text())
               if not re.match(r"[a-z]+://|#|mailto:", t)}
    assert targets or page != README, "the README links nothing?"
    if not (root / ".git").exists():  # an unpacked source tree: the files must at least be there
        missing = sorted(t for t in targets if not (root / t).exists())
    else:
        tracked = set(subprocess.run(["git", "ls-files"], cwd=root, capture_output=True, text=True,
                                     check=True).stdout.splitlines())
        missing = sorted(t for t in targets if t.rstrip("/") not in tracked
                         and not any(f.startswith(t.rstrip("/") + "/") for f in tracked))
    assert not missing, f"{page.name} links to files that are not in git: {missing}"
