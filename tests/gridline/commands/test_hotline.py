"""`gridline simulate-call` run as a real process against a running hotline."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

from sqlmodel import select

from core.cases.models import CallSession
from core.platform.db import session_scope
from tests.ivr.conftest import TOKEN, fake_speech, rig  # noqa: F401  (fixtures)

ROOT = Path(__file__).resolve().parents[3]


async def test_a_say_file_that_is_not_audio_stops_before_the_call(rig, tmp_path):  # noqa: F811
    """--say README.md printed the greeting, then a 145-line traceback. Now the file is
    decoded before the call starts: one line naming it on stderr, exit code 2, no call."""
    env = {**os.environ, "GRIDLINE_TWILIO_AUTH_TOKEN": TOKEN, "GRIDLINE_PUBLIC_URL": rig.url,
           "GRIDLINE_DATA_DIR": str(tmp_path / "cli")}
    done = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "gridline", "simulate-call", "--say", "README.md", "--speed", "0",
                         "--server", rig.url], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert done.stdout == ""  # no greeting: the call never started
    assert done.stderr.splitlines() == [
        "error: --say README.md: not a readable audio file (Invalid data found when processing input)"]
    with session_scope(rig.engine) as session:
        assert session.exec(select(CallSession)).all() == []
