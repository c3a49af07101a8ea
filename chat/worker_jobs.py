"""The worker side's durable jobs, and the ticker that schedules the periodic ones.

    staff_message      a dispatch (or escalation), a check request, a failed check
                       (queued by ``core.people.staff`` with the case change that causes it)
    staff_reminder     a yellow or red deadline (queued by the reminder sweep)
    staff_sweep        the reminder sweep (``core.deadlines.reminders.queue_reminders``)
    staff_digest       the daily digest, fanned out as ``staff_digest_chat`` per chat
    staff_unlinked     tell a chat it was unlinked (``gridline workers unlink``)

A message that is no longer news when its job runs (the case moved on, was dispatched
again, the report was checked) is dropped. A chat that blocked the bot is skipped.

The caller's own recording of a hotline case is sent as a Telegram voice message: the WAV
is decoded and encoded as OGG/Opus with PyAV (what Telegram plays as a voice message).

Jobs are also woken the moment a transaction that queued one commits (``wake_on_commit``),
so a dispatch message leaves as soon as the case is dispatched, not at the next poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
from datetime import datetime
from fractions import Fraction
from pathlib import Path, PurePosixPath
from typing import Any

import av
import numpy as np
from aiohttp import web
from sqlalchemy import event
from sqlalchemy.orm import Session
from telegram import BotCommandScopeChat, InputFile, ReplyKeyboardRemove
from telegram.error import Forbidden, TelegramError

from chat import store, worker, worker_store
from chat.followup import JobHandlers
from chat.sending import CHAT_LANE, URGENT_LANE, chat_of_job
from chat.texts import BOT, t
from core.deadlines import reminders
from core.people import staff
from core.platform import jobs
from core.platform.clock import utcnow
from core.platform.i18n import reason_text
from core.platform.media import MediaMissing, MediaUnavailable, fetched
from core.platform.models import Job
from speech_models.audio import decode_file

log = logging.getLogger(__name__)

TICK_SECONDS = 30.0
OPUS_RATE = 48000


# ---------------------------------------------------------------- the recording as a voice message


def voice_from_recording(path: Path) -> tuple[bytes, int]:
    """A recording (WAV or anything PyAV reads) as OGG/Opus mono: (bytes, seconds)."""
    audio = decode_file(path, sample_rate=OPUS_RATE)
    samples = np.frombuffer(audio.pcm, dtype="<i2")
    out = io.BytesIO()
    with av.open(out, mode="w", format="ogg") as container:
        stream = container.add_stream("libopus", rate=OPUS_RATE)
        stream.layout = "mono"
        stream.bit_rate = 24000
        frame_size = 960  # 20 ms, Opus's usual frame
        pts = 0
        for i in range(0, max(len(samples), 1), frame_size):
            chunk = samples[i:i + frame_size]
            if len(chunk) < frame_size:
                chunk = np.pad(chunk, (0, frame_size - len(chunk)))
            frame = av.AudioFrame.from_ndarray(chunk.reshape(1, -1), format="s16", layout="mono")
            frame.sample_rate = OPUS_RATE
            frame.pts = pts
            frame.time_base = Fraction(1, OPUS_RATE)
            pts += frame_size
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return out.getvalue(), round(len(samples) / OPUS_RATE)


# ---------------------------------------------------------------- the handlers


class StaffJobs(JobHandlers):
    """The staff jobs; ``_bot`` (not running yet: retry later) and ``_send`` (False for a
    chat that blocked the bot or is gone) are the resident notifications' own."""

    @property
    def d(self):
        return self.chatbot.deps

    async def _photos(self, chat_id: int, paths: list[str], number: str, language: str, key: str) -> bool:
        bot = self._bot()
        for n, path in enumerate(paths, start=1):
            try:  # a photo is small (the Bot API's 20 MB at most)
                data = await asyncio.to_thread(self.d.media.get_bytes, path)
            except (MediaMissing, MediaUnavailable) as exc:
                log.warning("case %s: photo %s cannot be read: %s", number, path, exc)
                continue
            try:
                await bot.send_photo(chat_id, InputFile(data, filename=PurePosixPath(path).name),
                                     caption=t(language, key, number=number, n=n, count=len(paths)))
            except Forbidden:
                return False
            except TelegramError as exc:  # one bad photo must not hold the task back
                log.warning("case %s: photo %s not sent: %s", number, path, exc)
        return True

    async def _recordings(self, chat_id: int, paths: list[str], number: str, language: str) -> bool:
        bot = self._bot()
        for path in paths:
            try:
                async with fetched(self.d.media, path) as file:
                    data, seconds = await asyncio.to_thread(voice_from_recording, file)
            except (MediaMissing, MediaUnavailable) as exc:
                log.warning("case %s: recording %s cannot be read: %s", number, path, exc)
                continue
            except Exception as exc:  # unreadable audio: the card says so, the rest goes out
                log.warning("case %s: recording %s not converted: %s", number, path, exc)
                continue
            try:
                await bot.send_voice(chat_id, InputFile(data, filename=f"{number}.ogg"), duration=seconds,
                                     caption=t(language, "staff.recording_caption", number=number))
            except Forbidden:
                return False
            except TelegramError as exc:
                log.warning("case %s: recording not sent: %s", number, exc)
        return True

    # -- staff_message ----------------------------------------------------------------

    async def message(self, job: Job) -> None:
        p = job.payload or {}
        self._bot()
        d = self.d
        case_id, send, to = int(p["case_id"]), p.get("send"), p.get("to", "")
        found = await d.db(worker_store.staff_message, case_id, send, p.get("stamp", ""), to)
        if not found.news:
            log.info("staff message %s for case %s to %s is no longer news", send, p.get("case"), to)
            return
        target, view = found.target, found.card
        if target is None or view is None:
            return
        chat_id, language = int(target.chat_id), target.language
        # A reason core wrote as a code (the SLA sweep's) in the worker's words; typed ones as they are.
        reason = reason_text(language, p.get("reason"), p, catalogue=BOT)
        if send == "dispatch":
            if not await self._photos(chat_id, view.photos, view.number, language, "staff.photo_caption"):
                return
            if not await self._recordings(chat_id, view.recordings, view.number, language):
                return
            escalated = p.get("action") == "escalate"
            extra = [t(language, "staff.card_reason", reason=reason)] if escalated and reason else []
            header = "staff.card_escalated" if escalated else "staff.card_dispatch"
            await self._send(chat_id, worker.card_text(language, d.tz, view, header, extra=extra),
                             reply_markup=worker.buttons(d, language, view, "owner"))
            if view.confidential:
                await d.db(worker_store.card_shown, case_id, to, send)
        elif send == "check":
            if not await self._photos(chat_id, view.report_photos, view.number, language,
                                      "staff.report_photo_caption"):
                return
            await self._send(chat_id, worker.card_text(language, d.tz, view, "staff.card_check",
                                                       extra=worker.report_lines(language, view)),
                             reply_markup=worker.buttons(d, language, view, "checker"))
            if view.confidential:
                await d.db(worker_store.card_shown, case_id, to, send)
        elif send == "check_failed":
            extra = [t(language, "staff.card_reason", reason=reason or "—"), t(language, "staff.check_failed_hint")]
            await self._send(chat_id, worker.card_text(language, d.tz, view, "staff.card_check_failed", extra=extra),
                             reply_markup=worker.buttons(d, language, view, "owner"))
            if view.confidential:
                await d.db(worker_store.card_shown, case_id, to, send)
        else:
            log.warning("unknown staff message %r in job %s", send, job.id)

    # -- reminders ----------------------------------------------------------------------

    async def reminder(self, job: Job) -> None:
        p = job.payload or {}
        self._bot()
        d = self.d
        found = await d.db(worker_store.reminder_current, int(p["case_id"]), p["clock"], p["stamp"])
        if found is None:
            return  # accepted, reported or dispatched anew since
        view, owner_keys = found
        due = store.local(datetime.fromisoformat(p["due"]), d.tz)
        owner = await d.db(worker_store.owner_name, p.get("owner"))
        for key in p.get("to", []):
            target = await d.db(worker_store.chat_for, key)
            if target is None:
                continue
            language = target.language
            if key in owner_keys:
                text = t(language, f"staff.remind_{p['colour']}_{p['clock']}", number=view.number, due=due)
                markup = worker.buttons(d, language, view, "owner")
            else:
                text = t(language, f"staff.remind_leader_{p['clock']}", number=view.number, due=due,
                         owner=owner or t(language, "staff.unknown"))
                markup = None
            await self._send(int(target.chat_id), text, reply_markup=markup)

    async def sweep(self, job: Job) -> None:
        queued = await self.d.db(reminders.queue_reminders)
        if queued:
            log.info("reminder sweep queued %d reminder(s)", len(queued))
            self.d.services.jobs.wake()

    # -- digest -------------------------------------------------------------------------

    async def digest(self, job: Job) -> None:
        p = job.payload or {}
        at = datetime.fromisoformat(p["at"])
        if utcnow() > at + reminders.digest_late_limit():
            log.info("the digest of %s is too late to send now; skipped", p.get("day"))
            return
        count = await self.d.db(reminders.queue_digest_chats, p["day"])
        if count:
            self.d.services.jobs.wake()

    async def digest_chat(self, job: Job) -> None:
        p = job.payload or {}
        self._bot()
        d = self.d
        chat_id = p["chat_id"]
        target = await d.db(worker_store.me, chat_id)
        if target is None:
            return
        found = await d.db(worker_store.tasks, chat_id)
        tasks = found[1] if found else []
        if not tasks:
            return
        language = target.language
        text = "\n".join([t(language, "staff.digest_header", count=len(tasks)),
                          *worker.task_lines(language, d.tz, tasks)])
        await self._send(int(chat_id), text, reply_markup=worker.task_buttons(d, tasks))

    # -- unlinked -----------------------------------------------------------------------

    async def unlinked(self, job: Job) -> None:
        p = job.payload or {}
        bot = self._bot()
        d = self.d
        chat_id = str(p.get("chat_id", ""))
        if not chat_id.lstrip("-").isdigit() or await d.db(worker_store.me, chat_id) is not None:
            return  # linked again meanwhile
        app = self.chatbot.application
        worker.directory_of(app).drop(chat_id)
        language = p.get("language") or "zh"
        await self._send(int(chat_id), t(language, "staff.unlinked"), reply_markup=ReplyKeyboardRemove())
        with contextlib.suppress(TelegramError):
            await bot.delete_my_commands(scope=BotCommandScopeChat(int(chat_id)))
        await self.chatbot.edit_chat(int(chat_id), lambda data: data.pop(worker.INPUT_KEY, None) is not None)


# ---------------------------------------------------------------- wiring


def wake_on_commit(engine: Any, runner: Any, loop: asyncio.AbstractEventLoop):  # noqa: ANN201
    """Wake the job runner when a transaction on ``engine`` that queued a job commits
    (from whichever thread). Returns a function that removes the listeners."""
    flag = jobs.QUEUED

    def after_flush(session: Session, _context: Any) -> None:
        if any(isinstance(obj, Job) for obj in session.new):
            session.info[flag] = True

    def after_commit(session: Session) -> None:
        if session.get_nested_transaction() is not None:
            return  # a savepoint released: nothing is visible to others before the real commit
        if session.info.pop(flag, False) and session.get_bind() is engine:
            with contextlib.suppress(RuntimeError):  # the loop is closing
                loop.call_soon_threadsafe(runner.wake)

    def after_rollback(session: Session) -> None:
        if session.get_nested_transaction() is None:
            session.info.pop(flag, None)

    event.listen(Session, "after_flush", after_flush)
    event.listen(Session, "after_commit", after_commit)
    event.listen(Session, "after_rollback", after_rollback)

    def remove() -> None:
        event.remove(Session, "after_flush", after_flush)
        event.remove(Session, "after_commit", after_commit)
        event.remove(Session, "after_rollback", after_rollback)

    return remove


def setup(app: web.Application, services: Any, chatbot: Any) -> StaffJobs:
    """Register the jobs and start the ticker with the aiohttp app."""
    handlers = StaffJobs(chatbot)
    # The messages on the chat's lane, several at once, a chat's own in order (chat.sending).
    messages = {"lane": CHAT_LANE, "order_key": chat_of_job}
    services.jobs.register(staff.MESSAGE_JOB, handlers.message, lane=URGENT_LANE, order_key=chat_of_job)
    services.jobs.register(reminders.REMIND_JOB, handlers.reminder, **messages)
    services.jobs.register(reminders.SWEEP_JOB, handlers.sweep)
    services.jobs.register(reminders.DIGEST_JOB, handlers.digest)
    services.jobs.register(reminders.DIGEST_CHAT_JOB, handlers.digest_chat, **messages)
    services.jobs.register(staff.UNLINKED_JOB, handlers.unlinked, **messages)
    deps = chatbot.deps

    async def tick() -> None:
        while True:
            try:
                # Only where jobs run (not in tests that drive jobs by hand, nor in a
                # web-only instance): the sweep and digest are for the job runners.
                if services.jobs.running:
                    await deps.db(reminders.schedule_sweep)
                    await deps.db(reminders.schedule_digest, deps.tz)
                if chatbot.ready.is_set():
                    await worker.directory_of(chatbot.application).reload(deps)
                services.jobs.wake()
            except Exception:  # database restarting: try at the next tick
                log.exception("could not schedule the staff sweep and digest")
            await asyncio.sleep(TICK_SECONDS)

    async def lifecycle(app: web.Application):
        remove = wake_on_commit(services.engine, services.jobs, asyncio.get_running_loop())
        ticker = asyncio.get_running_loop().create_task(tick(), name="staff-ticker")
        yield
        ticker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await ticker
        remove()

    app.cleanup_ctx.append(lifecycle)
    return handlers
