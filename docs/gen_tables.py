"""Rewrite the generated tables of docs/rewards.md (rewards and statistics) from the registered classes, so
the docs cannot drift from the code: ``python docs/gen_tables.py``. ``tests/test_docs.py`` fails when a
table is out of date."""
from __future__ import annotations

import re
from pathlib import Path

from corruption_env.rewards import reward_table
from corruption_env.statistics import statistic_table

PAGE = Path(__file__).with_name("rewards.md")
TABLES = {"reward-table": reward_table, "statistic-table": statistic_table}


def render(text: str) -> str:
    """``text`` with every ``<!-- NAME:start -->`` ... ``<!-- NAME:end -->`` block refilled."""
    for marker, table in TABLES.items():
        pattern = re.compile(rf"(<!-- {marker}:start -->\n).*?(<!-- {marker}:end -->)", re.S)
        if not pattern.search(text):
            raise ValueError(f"{PAGE} has no <!-- {marker}:start --> ... <!-- {marker}:end --> block")
        text = pattern.sub(lambda m: m.group(1) + table() + m.group(2), text)
    return text


if __name__ == "__main__":
    PAGE.write_text(render(PAGE.read_text()))
    print(f"rewrote the tables of {PAGE}")
