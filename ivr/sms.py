"""Progress SMS (``sms_progress`` jobs, queued by ``core.followup.sms``): a short Mandarin message to
a hotline caller's mobile when the case is dispatched (the grid and the due date) and when
it is closed, through Twilio Messages, from the Messaging Service when one is set
(``GRIDLINE_TWILIO_MESSAGING_SERVICE_SID``), else from the hotline number.

Once per case and status: the job's dedupe key says so, and a job run again after a send
that was not recorded (the process died) first looks for the message at Twilio."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Engine

from core.cases.models import Case, Category
from core.followup import sms
from core.people.phones import dialable
from core.places.models import Grid
from core.platform.db import session_scope
from core.platform.models import Job

log = logging.getLogger(__name__)

Db = Callable[..., Awaitable[Any]]


@dataclass
class Message:
    to: str  # E.164
    body: str


def compose(engine: Engine, case_id: int, status: str, prompts: dict, tz: str) -> Message | None:
    """The SMS for this case and status, or ``None`` when none is due any more (the number
    opted out meanwhile, or is not a mobile)."""
    texts = prompts["sms"]
    with session_scope(engine) as session:
        case = session.get(Case, case_id)
        if case is None or case.shredded_at is not None:
            return None
        phone, _ = sms.sms_number(session, case)
        to = dialable(phone)
        if to is None:
            return None
        category = session.get(Category, case.category_id) if case.category_id else None
        grid = session.get(Grid, case.grid_id) if case.grid_id else None
        values = {"number": case.number, "category": category.name if category else texts["category_unknown"],
                  "grid": grid.name if grid else ""}
        if status == "dispatched":
            if case.resolution_due is not None:
                due = case.resolution_due.replace(tzinfo=ZoneInfo("UTC")).astimezone(ZoneInfo(tz))
                body = texts["dispatched"].format(due=texts["date"].format(month=due.month, day=due.day), **values)
            else:
                body = texts["dispatched_no_due"].format(**values)
        elif status in texts:
            body = texts[status].format(**values)
        else:
            log.warning("no SMS text for status %r (prompts [sms]); none sent", status)
            return None
        return Message(to, body)


class ProgressSms:
    def __init__(self, engine: Engine, api: Any, *, settings: Any, prompts: dict, db: Db):
        self.engine = engine
        self.api = api
        self.settings = settings
        self.prompts = prompts
        self.db = db
        self.sent = 0

    async def handle(self, job: Job) -> None:
        payload = job.payload or {}
        message = await self.db(compose, self.engine, int(payload["case_id"]), str(payload["status"]), self.prompts,
                                self.settings.timezone)
        if message is None:
            return
        if job.attempts > 1:  # an earlier run may have sent it and died before the job was done
            sid = await asyncio.to_thread(self.api.find_sms, to=message.to, since=job.created_at, body=message.body)
            if sid is not None:
                log.info("progress SMS for case %s (%s) was sent already: %s", payload["case_id"], payload["status"],
                         sid)
                return
        sid = await asyncio.to_thread(self.api.send_sms, to=message.to, body=message.body,
                                      from_=self.settings.hotline_number,
                                      messaging_service_sid=self.settings.twilio_messaging_service_sid)
        self.sent += 1
        log.info("progress SMS for case %s (%s) sent: %s", payload["case_id"], payload["status"], sid)


class TextSms:
    """One SMS now, through the same Twilio Messages sender as the progress SMS (the
    Messaging Service when set, else the hotline number): the web chat's verification codes
    (``services.extras["send_sms"]``). Blocking: run it in a thread."""

    def __init__(self, api: Any, settings: Any):
        self.api = api
        self.settings = settings

    def send(self, to: str, body: str) -> str:
        return self.api.send_sms(to=to, body=body, from_=self.settings.hotline_number,
                                 messaging_service_sid=self.settings.twilio_messaging_service_sid)
