"""Every benchmark script still starts: its imports resolve against the code as it is now and
it answers ``--help`` (a module moved elsewhere once broke three of them unnoticed, since no
test ran them). The figures themselves are the scripts' business, never a test's."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# dataset.py is the benches' library; run alone it loads N cases (its one argument).
SCRIPTS = sorted(p.name for p in (ROOT / "bench").glob("*.py") if p.name != "dataset.py")


def test_every_script_is_listed():
    assert {"load.py", "chat.py", "speech.py", "ivr.py", "core.py", "address.py"} <= set(SCRIPTS)


@pytest.mark.parametrize("script", SCRIPTS)
def test_the_script_answers_help(script):
    done = subprocess.run([sys.executable, str(ROOT / "bench" / script), "--help"], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "usage:" in done.stdout


def test_the_datasets_module_imports():
    done = subprocess.run([sys.executable, "-c", "import sys; sys.path.insert(0, 'bench'); import dataset; "
                           "print(dataset.DISTRICT_YEAR_CASES)"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert int(done.stdout.strip()) > 0
