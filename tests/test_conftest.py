"""The suite says when its PostgreSQL half was not collected."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NOTICE = "PostgreSQL tests not collected: GRIDLINE_TEST_PG is not set"


def _pytest_summary(pg_url: str | None) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("GRIDLINE_TEST_PG", "CI")}
    if pg_url is not None:
        env["GRIDLINE_TEST_PG"] = pg_url
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/support/test_waiting.py"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_summary_says_when_postgresql_was_not_collected():
    assert _pytest_summary(None).count(NOTICE) == 1
    # these tests touch no database: the URL is never connected to
    assert NOTICE not in _pytest_summary("postgresql://nobody@127.0.0.1:1/none")



def _collected(pg_url: str | None, *targets: str) -> list[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("GRIDLINE_TEST_PG", "CI")}
    if pg_url is not None:
        env["GRIDLINE_TEST_PG"] = pg_url
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "--collect-only", "-p", "no:cacheprovider", *targets],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return [line for line in done.stdout.splitlines() if "::" in line]


def test_a_one_database_test_runs_on_postgresql_only_where_it_is_set():
    marked = "tests/ivr/test_load.py::test_busy_recognisers_lose_no_call_and_no_audio"
    unmarked = "tests/core/cases/test_numbering.py"
    with_pg = _collected("postgresql://nobody@127.0.0.1:1/none", marked, unmarked)
    assert [i for i in with_pg if i.startswith(marked)] == [f"{marked}[postgres]"]
    others = [i for i in with_pg if not i.startswith(marked)]  # an unmarked test keeps both
    assert any("[sqlite" in i for i in others) and any("[postgres" in i for i in others)
    assert _collected(None, marked) == [f"{marked}[sqlite]"]
