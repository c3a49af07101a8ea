"""`gridline jobs` (the background job process) and its old name `gridline worker`, kept
hidden for one release with a warning, as real subprocesses."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.support.fake_twilio import FakeTwilio
from tests.support.jobs_process import JobsProcess
from tests.support.serve import database_url
from tests.support.waiting import until

ROOT = Path(__file__).resolve().parents[3]


def _gridline(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("GRIDLINE_")}
    return subprocess.run([sys.executable, "-m", "gridline.cli", *args], cwd=ROOT, env={**clean, **(env or {})},
                          capture_output=True, text=True, timeout=120)


def test_jobs_help_names_its_work_and_the_old_name_is_hidden():
    jobs = _gridline("jobs", "--help")
    assert jobs.returncode == 0, jobs.stderr
    assert "--speech" in jobs.stdout and "--surveys" in jobs.stdout
    listing = _gridline("--help")
    assert listing.returncode == 0
    names = {line.split()[1] for line in listing.stdout.splitlines() if line.startswith("│ ") and len(line.split()) > 1}
    assert "jobs" in names and "workers" in names  # the job process, and the grid workers' chats
    assert "worker" not in names


def test_the_old_name_warns_on_stderr_and_answers_like_jobs(tmp_path):
    env = {"GRIDLINE_DATA_DIR": str(tmp_path), "GRIDLINE_DATABASE_URL": f"sqlite:///{tmp_path}/g.sqlite3"}
    new = _gridline("jobs", env=env)
    old = _gridline("worker", env=env)
    assert new.returncode == old.returncode == 1  # no work named: the same refusal
    assert "say which work to take" in new.stdout and "say which work to take" in old.stdout
    assert "deprecated" not in new.stderr
    assert "`gridline worker` is deprecated and goes away in the next release: use `gridline jobs`" in old.stderr


async def test_the_old_name_still_takes_the_jobs(engine, tmp_path):
    """`gridline worker --surveys` runs the same job process as `gridline jobs --surveys`:
    it takes the survey jobs until SIGTERM, and says on stderr that its name is old."""
    rules = tmp_path / "rules.toml"
    rules.write_text('[survey.phone]\ncalling_hours = ["00:00", "23:59"]\non_holidays = true\n')
    with FakeTwilio() as fake:
        env = {"GRIDLINE_DATABASE_URL": database_url(engine), "GRIDLINE_TWILIO_ACCOUNT_SID": fake.account_sid,
               "GRIDLINE_TWILIO_AUTH_TOKEN": fake.auth_token, "GRIDLINE_TWILIO_API_URL": fake.base_url,
               "GRIDLINE_HOTLINE_NUMBER": fake.phone_number, "GRIDLINE_PUBLIC_URL": "http://127.0.0.1:9",
               "GRIDLINE_RULES": str(rules)}
        old = JobsProcess(tmp_path / "old", env, "--surveys", command="worker").start()
        try:
            await until(lambda: "taking survey_phone" in old.output, timeout=60, message="the survey jobs taken")
        finally:
            code = old.stop()
    assert code == 0
    assert "`gridline worker` is deprecated" in old.output
    assert "Traceback" not in old.output
