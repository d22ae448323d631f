"""Rewrite the generated blocks of the docs from the code, so the docs cannot drift from it: docs/rewards.md's
reward and statistic tables (from the registered classes) and docs/benchmarking.md's list of presets (from the
presets' own descriptions, which ``benchmark.py --help`` prints too), of tasks (the benchmark's table) and of the
agents judged by whole runs (the registered agents that do not train on the env's reward):
``python docs/gen_tables.py``.
``tests/test_docs.py`` fails when a block is out of date."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Callable

from corruption_env.rewards import reward_table
from corruption_env.statistics import statistic_table

PAGE = Path(__file__).with_name("rewards.md")
BENCHMARKING = Path(__file__).with_name("benchmarking.md")


def preset_list() -> str:
    from benchmarking.sweep import PRESETS

    width = max(map(len, PRESETS))
    return "```bash\n" + "".join(f"python benchmark.py --preset {name:{width}}  # {preset.description}\n"
                                 for name, preset in PRESETS.items()) + "```\n"


def task_list() -> str:
    """The benchmark's tasks, one line per dataset and kind (plain, or with a planted known answer)."""
    from benchmarking.sweep import TASKS
    from corruption_env.known_answer import is_known_answer

    groups: dict[str, list[str]] = {}
    for name, overrides in TASKS.items():
        kind = "known answers" if is_known_answer(overrides.get("dataset_kwargs", {})) else "plain"
        groups.setdefault(f"{overrides['dataset']}, {kind}", []).append(f"`{name}`")
    return "".join(f"- {group}: {', '.join(names)}\n" for group, names in groups.items())


def whole_run_agents() -> str:
    """The registered agents judged by whole runs (those that do not train on the env's reward)."""
    from agents import available_agents, trains_on_reward

    return ", ".join(f"`{name}`" for name in available_agents() if not trains_on_reward(name)) + "\n"


BLOCKS: dict[Path, dict[str, Callable[[], str]]] = {
    PAGE: {"reward-table": reward_table, "statistic-table": statistic_table},
    BENCHMARKING: {"preset-list": preset_list, "task-list": task_list, "whole-run-agents": whole_run_agents},
}


def render(text: str, page: Path = PAGE) -> str:
    """``text`` (of ``page``) with every ``<!-- NAME:start -->`` ... ``<!-- NAME:end -->`` block refilled."""
    for marker, table in BLOCKS[page].items():
        pattern = re.compile(rf"(<!-- {marker}:start -->\n).*?(<!-- {marker}:end -->)", re.S)
        if not pattern.search(text):
            raise ValueError(f"{page} has no <!-- {marker}:start --> ... <!-- {marker}:end --> block")
        text = pattern.sub(lambda m: m.group(1) + table() + m.group(2), text)
    return text


if __name__ == "__main__":
    for page in BLOCKS:
        page.write_text(render(page.read_text(), page))
        print(f"rewrote the generated blocks of {page}")
