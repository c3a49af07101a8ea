"""The follow-up call from the command line: ``gridline simulate-survey`` (Twilio and the
resident for the calls due now, against a running server) and ``gridline residents
do-not-call``. The grid's part on a demo case, so its follow-up becomes due, is ``gridline
demo handle`` (gridline.commands.demo)."""

from __future__ import annotations

import asyncio
import getpass
from pathlib import Path

import typer
from rich.markup import escape
from sqlalchemy import update
from sqlmodel import select

from core import actions
from core.actions.survey import SURVEY_PHONE_JOB
from core.cases.models import Case
from core.followup.models import Survey
from core.platform import jobs
from core.platform.clock import local_text, utcnow
from core.platform.db import session_scope
from core.platform.models import Job, JobStatus
from core.platform.runner import RetryLater
from core.platform.settings import get_settings
from gridline.commands.common import console, fail, open_database
from ivr.database import run_db
from ivr.simulator import CallScript, Simulator, Turn
from ivr.survey_jobs import SurveyJobs
from ivr.survey_sim import SimulatedTwilio
from ivr.survey_twiml import SurveyFlowConfig, SurveyTwiml

residents_app = typer.Typer(help="Residents' contact wishes.", no_args_is_help=True)


def _actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (OSError, KeyError):
        return "cli"


def _due(engine, case: str, any_time: bool) -> tuple[list, list]:  # noqa: ANN001
    """(the queued follow-up calls due now — or all with ``any_time`` — , those not due yet)."""
    with session_scope(engine) as session:
        queued = session.exec(select(Job).where(Job.kind == SURVEY_PHONE_JOB, Job.status == JobStatus.queued)
                              .order_by(Job.run_at, Job.id)).all()
    if case:
        queued = [j for j in queued if (j.payload or {}).get("case") == case]
    now = utcnow()
    due = [j for j in queued if any_time or j.run_at <= now]
    return due, [j for j in queued if j not in due]


def _due_now(engine, job_id: int) -> None:  # noqa: ANN001
    with session_scope(engine) as session:
        session.execute(update(Job).where(Job.id == job_id, Job.status == JobStatus.queued).values(run_at=utcnow()))


def simulate_survey(
    case: str = typer.Option("", "--case", help="only this case's follow-up (its number)"),
    answer: str = typer.Option("human", help="how the resident's phone answers: human, machine, busy, "
                               "no-answer or failed"),
    digits: list[str] = typer.Option([], "--digits", help="keys for each question in order (1 2 3 the answers, "
                                     "9 wrong person, 0 operator, '-' no key), e.g. --digits 1 --digits 2"),
    say: Path = typer.Option(None, "--say", exists=True, dir_okay=False,
                             help="audio file the resident says as their comment (any format)"),
    any_time: bool = typer.Option(False, "--any-time", help="call now even outside the calling hours "
                                  "(rules [survey.phone] calling_hours)"),
    server: str = typer.Option("", help="where the server listens (default http://GRIDLINE_HOST:GRIDLINE_PORT)"),
    public_url: str = typer.Option("", help="the URL Twilio would use (default GRIDLINE_PUBLIC_URL)"),
    speed: float = typer.Option(1.0, help="audio pace: 1 = real time, 0 = as fast as possible"),
) -> None:
    """Play Twilio and the resident for the follow-up calls (回访) due now, against a running
    `gridline serve` without Twilio credentials: each call is placed by the same job handler
    the server runs, and the resident answers, presses --digits and says --say."""
    if answer not in ("human", "machine", "busy", "no-answer", "failed"):
        raise typer.BadParameter("--answer must be human, machine, busy, no-answer or failed")
    settings = get_settings()
    engine = open_database()
    if settings.twilio_account_sid:
        console.print("[yellow]note:[/yellow] GRIDLINE_TWILIO_ACCOUNT_SID is set: a server with it places the real "
                      "calls itself; this takes only the calls it gets to first")
    due, later = _due(engine, case, any_time)
    if not due:
        if later:
            first = min(j.run_at for j in later)
            fail(f"no follow-up call is due now; {len(later)} waiting, the first at {local_text(first)} "
                 "(calling hours, or a retry's wait): --any-time calls now")
        fail(f"no follow-up call is waiting{f' for case {case}' if case else ''}: a hotline case gets one when it "
             "is verified (`gridline demo handle NUMBER` plays the grid's part)")
    server = server or f"http://{settings.host}:{settings.port}"
    script = CallScript(digits=[None if d in ("-", "") else d for d in digits], turns=[Turn(say)] if say else [])

    async def main() -> None:
        sim = Simulator(server, settings.twilio_auth_token, public_url=public_url or settings.public_url,
                        speed=speed, pause_scale=min(speed, 1.0) if speed else 0.0,
                        echo=lambda text: console.print(f"[cyan]🔈[/cyan] {escape(text)}"))
        api = SimulatedTwilio(sim, asyncio.get_running_loop(), script, answer)
        handler = SurveyJobs(engine, api, from_number=settings.hotline_number or "+8657100000000",
                             twiml=SurveyTwiml(SurveyFlowConfig.load(), settings.public_url), db=run_db,
                             any_time=any_time)
        for job in due:
            if job.run_at > utcnow():  # --any-time: due now
                await asyncio.to_thread(_due_now, engine, job.id)
            claimed = await asyncio.to_thread(jobs.claim, engine, "simulate-survey", [SURVEY_PHONE_JOB], 1, [job.id])
            if not claimed:
                console.print(f"job {job.id} was taken by another process meanwhile")
                continue
            number = (job.payload or {}).get("case", "?")
            console.print(f"follow-up call for case [bold]{number}[/bold] (attempt {job.payload.get('attempt', 1)})")
            try:
                await handler.survey_phone(claimed[0])
                await api.finished()
            except RetryLater as wait:
                await asyncio.to_thread(jobs.reschedule, engine, job.id, utcnow() + wait.delay)
                console.print(f"  not now: {wait} (--any-time calls now)")
                continue
            except OSError as exc:
                await asyncio.to_thread(jobs.fail, engine, job.id, f"{type(exc).__name__}: {exc}")
                fail(f"cannot reach {server}: {exc}. Is `gridline serve` running?")
            await asyncio.to_thread(jobs.complete, engine, job.id)
            with session_scope(engine) as session:
                survey = session.get(Survey, job.payload["survey_id"])
                shown = session.get(Case, survey.case_id)
                console.print(f"  survey {survey.status.value}: solved={survey.solved or '-'} "
                              f"satisfied={survey.satisfied or '-'} comment={escape(survey.comment or '-')}; "
                              f"case {shown.number} {shown.status.value}")

    try:
        asyncio.run(main())
    except OSError as exc:
        fail(f"cannot reach {server}: {exc}. Is `gridline serve` running?")



@residents_app.command("do-not-call")
def do_not_call(
    phone: str = typer.Argument(..., help="the resident's number"),
    off: bool = typer.Option(False, "--off", help="phoning them is fine again"),
) -> None:
    """Never phone this resident for a follow-up: it goes to the operator's manual-call list
    (or is not evaluated), as rules.toml [survey.phone] do_not_call says. Audited."""
    engine = open_database()
    with session_scope(engine) as session:
        resident = actions.resident_for_phone(session, phone, actor=_actor())
        actions.set_do_not_call(session, resident, not off, actor=_actor())
        shown = resident.phone
    console.print(f"{shown}: {'may be phoned again' if off else 'never phoned for a follow-up'}")
