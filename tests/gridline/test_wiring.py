"""gridline.wiring: every entry point that can change a case wires what follows a change
first (a fresh process each, so nothing wired it before), in the owners' order, once."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from core.cases import events
from gridline.wiring import wire

ROOT = Path(__file__).resolve().parents[2]
WIRED = "chat.notice,sms.progress,staff.messages"

REPORT = "print(events.SUBSCRIBERS.wired, ','.join(events.SUBSCRIBERS.names()))"
ENTRY_POINTS = {
    # any CLI command that changes cases (serve, jobs, imports …) opens its database through open_database
    "cli": "from gridline.cli import app\n" + REPORT + "\napp(['db', 'upgrade'], standalone_mode=False)\n" + REPORT,
    "app": "from gridline.app import build_app\n" + REPORT + "\nbuild_app(channels=(), run_jobs=False)\n" + REPORT,
}


@pytest.mark.parametrize("entry", sorted(ENTRY_POINTS))
def test_an_entry_point_wires_the_subscribers_before_anything_changes(entry, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRIDLINE_")}
    env.update(GRIDLINE_DATA_DIR=str(tmp_path), GRIDLINE_DATABASE_URL=f"sqlite:///{tmp_path / 'g.sqlite3'}")
    script = "from core.cases import events\n" + ENTRY_POINTS[entry]
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stdout.splitlines() if line.startswith(("True", "False"))]
    assert lines == ["False ", f"True {WIRED}"]


def test_wiring_twice_registers_each_subscriber_once():
    wire()
    wire()
    assert ",".join(events.SUBSCRIBERS.names()) == WIRED
