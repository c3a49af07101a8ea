"""The web chat for residents at ``/chat/``: the intake dialog (``chat.intake``) in a page.

Residents open it from a QR code (``/chat/?g=<signed grid code>``), a link in their grid's
WeChat group or an SMS; nothing to install, no account. The page (``chat/static/webchat.html``,
one file with its script and styles) talks to a small JSON API:

* ``GET  /chat/api/state``    the conversation so far, the buttons now, the CSRF token;
* ``POST /chat/api/step``     a message, a button, a location, start or cancel;
* ``POST /chat/api/photo``    a photo (multipart), ``POST /chat/api/voice`` a voice note;
* ``GET  /chat/api/cases``    "my cases", ``POST /chat/api/survey`` the survey's answer;
* ``GET  /chat/api/events``   progress of the device's cases, live (server-sent events);
* ``POST /chat/api/phone``    a number to verify by SMS code, ``POST /chat/api/phone/code`` the code,
  ``POST /chat/api/phone/unlink`` the verified number let go (to change it, or for good).

Who the resident is: a random device id in a signed HttpOnly cookie. Every post carries
the CSRF token (an HMAC of the device id; a page of another site cannot read it, nor send
the header without our CORS consent) and an idempotency key made by the page: a post sent
again (an offline queue flushed twice, a retry after a crash) gets the first answer and does
nothing twice. The dialog's state, the draft and the conversation are written with the
post's answer after every step (``chat.web_store.save_step``). Posts are limited per device
and per client address (rules ``[web_chat]``), answered 429 with the wait; the buckets are
rows in the database, so the limits hold however many instances serve the page.
"""

from __future__ import annotations

import asyncio
import copy
import functools
import hashlib
import hmac
import json
import logging
import re
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from aiohttp import web
from sqlmodel import select

from chat import media, store, web_store
from chat.intake import Dialog, Event, Reply, new_draft
from chat.media import Heard, _write
from chat.texts import t
from core.cases.texts import status_name
from core.errors import DatabaseBusy, DomainError
from core.followup import sms as progress_sms
from core.people.phones import dialable, is_mobile, parse
from core.places.models import Grid
from core.platform.clock import to_local, utcnow
from core.platform.db import session_scope
from core.platform.images import resize_photo
from core.platform.media import keep
from core.platform.rules import load_rules
from core.platform.runner import RetryLater
from core.platform.tasks import cancel_and_wait
from speech_models.audio import AudioError, decode_file

log = logging.getLogger(__name__)

COOKIE = "gl_device"
COOKIE_AGE = 2 * 365 * 24 * 3600
STATIC = Path(__file__).resolve().parent / "static"
KEY_RE = re.compile(r"^[A-Za-z0-9_-]{8,64}$")
LANGUAGES = ("zh", "en")
PAGE_LABELS = (
    "title", "greeting", "placeholder", "send", "report", "mine", "cancel", "next", "skip", "location", "map",
    "map_pick", "map_use", "photo", "voice", "voice_stop", "big_text", "language", "offline", "sending",
    "mine_empty", "due", "survey_ask", "survey_satisfied", "throttled", "refused", "location_denied", "no_mic",
    "busy", "too_big", "not_audio", "not_photo", "phone_title", "phone_why", "phone_placeholder", "phone_send",
    "code_placeholder", "code_check", "phone_ok", "phone_unlink",
)
SOLVED = ("solved", "partly", "not")
SATISFIED = ("satisfied", "basically", "not")
SOLVED_LABELS = {"solved": "survey.solved", "partly": "survey.partly", "not": "survey.not_solved"}
SATISFIED_LABELS = {"satisfied": "survey.satisfied", "basically": "survey.basically", "not": "survey.not_satisfied"}


def web_rules() -> dict:
    return dict(load_rules()["web_chat"])


# ---------------------------------------------------------------- signing


class Signer:
    """Device cookies, CSRF tokens and grid codes, signed with one key."""

    def __init__(self, secret: bytes):
        self._key = hashlib.sha256(b"gridline-web-chat\0" + secret).digest()

    def _mac(self, purpose: str, value: str, size: int = 32) -> str:
        return hmac.new(self._key, f"{purpose}\0{value}".encode(), hashlib.sha256).hexdigest()[:size]

    def device_cookie(self, device_id: str) -> str:
        return f"{device_id}.{self._mac('device', device_id)}"

    def device_of(self, cookie: str | None) -> str | None:
        device_id, _, sig = (cookie or "").partition(".")
        if not KEY_RE.match(device_id) or not hmac.compare_digest(sig, self._mac("device", device_id)):
            return None
        return device_id

    def csrf(self, device_id: str) -> str:
        return self._mac("csrf", device_id)

    def sms_code(self, device_id: str, phone: str, code: str) -> str:
        """What is kept of a verification code: an HMAC bound to the device and the number."""
        return self._mac("sms-code", f"{device_id}\0{phone}\0{code}", 64)

    def grid_code(self, code: str) -> str:
        return f"{code}.{self._mac('grid', code, 16)}"

    def grid_of(self, signed: str | None) -> str | None:
        code, _, sig = (signed or "").rpartition(".")
        if not code or len(code) > 64 or not hmac.compare_digest(sig, self._mac("grid", code, 16)):
            return None
        return code


# ---------------------------------------------------------------- the dialog's database, for the engine


@dataclass
class Ports:
    run: Callable[..., Awaitable[Any]]
    engine: Any
    tz: str

    async def grid_at(self, lat: float, lon: float) -> str | None:
        return await self.run(store.grid_at, self.engine, lat, lon)

    async def match_address(self, text: str) -> tuple[str, str] | None:
        return await self.run(store.match_address, self.engine, text)

    async def address_choices(self, text: str) -> list[tuple[int, str]]:
        return await self.run(store.address_choices, self.engine, text)

    async def pick_address(self, text: str, choices: list[tuple[int, str]]) -> int | None:
        return await self.run(store.pick_address, self.engine, text, choices)

    async def category_options(self, text: str) -> list[tuple[str, str]]:
        return await self.run(store.category_options, self.engine, text)

    async def file(self, petition: Any) -> Any:
        return await self.run(store.file, self.engine, petition)

    def due_text(self, due: Any) -> str:
        return store.local(due, self.tz)


class Refused(Exception):
    """A post answered with an error the page shows (status, catalogue key, values)."""

    def __init__(self, status: int, key: str, **values: Any):
        super().__init__(key)
        self.status, self.key, self.values = status, key, values


@dataclass
class WebChat:
    services: Any
    signer: Signer | None = None
    rules: dict = field(default_factory=web_rules)
    locks: dict[str, list] = field(default_factory=dict)  # device -> [lock, holders and waiters]
    speech: Any = None
    _map: dict | None = None
    _starting: asyncio.Lock = field(default_factory=asyncio.Lock)

    def __post_init__(self) -> None:
        self.upload_bytes = int(self.rules["upload_mb"]) * 1024 * 1024
        self.ports = Ports(self.db, self.services.engine, self.services.settings.timezone)
        self.page = (STATIC / "webchat.html").read_text(encoding="utf-8")
        self.worker = (STATIC / "webchat-sw.js").read_text(encoding="utf-8")

    async def db(self, func: Callable[..., Any], *args: Any) -> Any:
        return await self.services.db.run(func, *args)

    async def start(self) -> None:
        """The signing key, read (or made) on the first request: nothing waits for the
        database while the app starts (the other channels' start-up goes on undisturbed)."""
        if self.signer is not None:
            return
        async with self._starting:
            if self.signer is None:
                secret = getattr(self.services.settings, "web_chat_secret", "") or ""
                key = secret.encode() if secret else await self.db(web_store.signing_secret, self.services.engine)
                self.signer = Signer(key)

    # ---- who is asking

    def _device(self, request: web.Request) -> str | None:
        return self.signer.device_of(request.cookies.get(COOKIE))

    def _set_cookie(self, response: web.StreamResponse, device_id: str) -> None:
        https = self.services.settings.public_url.lower().startswith("https://")
        response.set_cookie(COOKIE, self.signer.device_cookie(device_id), max_age=COOKIE_AGE, path="/chat/",
                            httponly=True, samesite="Lax", secure=https)

    async def _posted(self, request: web.Request) -> tuple[str, dict, str] | web.Response:
        """A post's device, its JSON body and the page's language; or the refusal to answer
        with (no device cookie, a bad CSRF token, a body that is not JSON)."""
        try:
            device_id = await self._posting_device(request)
            body = await _json(request)
        except Refused as exc:
            return _error(exc.status, await self._lang(request), exc.key, **exc.values)
        return device_id, body, await self._lang(request)

    async def _posting_device(self, request: web.Request) -> str:
        """A post's device, checked: the signed cookie, the CSRF header made for it, and an
        Origin (when the browser sends one) that is this server; then the rate limits, counted
        in the database (``core.platform.buckets``) so they hold across instances."""
        device_id = self._device(request)
        token = request.headers.get("X-CSRF-Token", "")
        if device_id is None or not hmac.compare_digest(token, self.signer.csrf(device_id)):
            raise Refused(403, "web.refused")
        origin = request.headers.get("Origin")
        if origin and origin.rstrip("/") not in self._own_origins(request):
            raise Refused(403, "web.refused")
        address = request.remote or "?"
        taken = await self.db(web_store.take_post, self.services.engine, device_id, address, self.rules)
        if not taken.ok:
            raise Refused(429, "web.throttled", seconds=max(1, round(taken.wait + 0.5)))
        return device_id

    def _own_origins(self, request: web.Request) -> set[str]:
        public = self.services.settings.public_url.rstrip("/")
        return {public, f"{request.scheme}://{request.host}"}

    # ---- the page

    async def page_view(self, request: web.Request) -> web.Response:
        device_id = self._device(request)
        new = device_id is None
        if new:
            device_id = secrets.token_urlsafe(18)
        language = self._language(request)
        grid_code = self.signer.grid_of(request.query.get("g"))
        if request.query.get("g") and grid_code is None:
            log.info("web chat: a grid code that is not ours (%.40r) ignored", request.query.get("g"))
        if grid_code:  # the device's row is made here with its hint; otherwise by its first state read
            grid = await self.db(_grid_name, self.services.engine, grid_code)
            await self.db(web_store.open_device, self.services.engine, device_id, language, grid)
        boot = {"lang": language, "labels": self._labels(language), "other": self._labels(_other(language))}
        html = self.page.replace("__BOOT__", json.dumps(boot, ensure_ascii=False).replace("</", "<\\/"))
        html = html.replace("__LANG__", "zh-CN" if language == "zh" else "en")
        response = web.Response(text=html, content_type="text/html", charset="utf-8", headers=_page_headers())
        if new:
            self._set_cookie(response, device_id)
        return response

    async def worker_view(self, request: web.Request) -> web.Response:
        """The page's service worker (``chat/static/webchat-sw.js``): keeps the page for a
        reload with no connection. Checked for a newer version on every visit (no-cache)."""
        return web.Response(text=self.worker, content_type="text/javascript", charset="utf-8",
                            headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"})

    def _language(self, request: web.Request) -> str:
        asked = request.query.get("lang") or ""
        if asked in LANGUAGES:
            return asked
        accept = request.headers.get("Accept-Language", "").lower()
        return "en" if accept.startswith("en") else "zh"

    def _labels(self, language: str) -> dict[str, str]:
        out = {k: t(language, f"web.{k}") for k in PAGE_LABELS}
        out.update({f"solved_{k}": t(language, v) for k, v in SOLVED_LABELS.items()})
        out.update({f"satisfied_{k}": t(language, v) for k, v in SATISFIED_LABELS.items()})
        return out

    # ---- state

    async def state_view(self, request: web.Request) -> web.Response:
        device_id = self._device(request)
        if device_id is None:
            return _error(403, "zh", "web.refused")
        dev = await self.db(web_store.open_device, self.services.engine, device_id, self._language(request), None)
        grid_note = t(dev.language, "web.grid_hint", grid=dev.grid_hint) if dev.grid_hint else None
        return web.json_response({
            "csrf": self.signer.csrf(device_id),
            "language": dev.language,
            "state": dev.state,
            "dialog": (dev.draft or {}).get("id"),
            "version": dev.version,
            "messages": dev.messages,
            "grid": grid_note,
            "phone": await self.db(_verified_phone, self.services.engine, device_id),
        }, headers=_no_store())

    async def language_post(self, request: web.Request) -> web.Response:
        try:
            device_id = await self._posting_device(request)
            body = await _json(request)
        except Refused as exc:
            return _error(exc.status, "zh", exc.key, **exc.values)
        language = body.get("language")
        if language not in LANGUAGES:
            return _error(400, "zh", "web.refused")
        await self.db(web_store.set_language, self.services.engine, device_id, language)
        return web.json_response({"language": language, "labels": self._labels(language)})

    # ---- the dialog

    async def step_post(self, request: web.Request) -> web.Response:
        try:
            device_id = await self._posting_device(request)
            body = await _json(request)
            key = _key(body.get("key"))
            event, shown = _event(body)
        except Refused as exc:
            return _error(exc.status, await self._lang(request), exc.key, **exc.values)
        return await self._step(device_id, key, event, shown, body.get("dialog"))

    async def _lang(self, request: web.Request) -> str:
        device_id = self._device(request)
        dev = await self.db(web_store.device, self.services.engine, device_id) if device_id else None
        return dev.language if dev else "zh"

    async def _step(self, device_id: str, key: str, event: Event, shown: str | None,
                    dialog_id: str | None) -> web.Response:
        # One step at a time per device in this instance (its version check covers the others);
        # the lock is forgotten when nobody holds or waits for it.
        held = self.locks.setdefault(device_id, [asyncio.Lock(), 0])
        held[1] += 1
        try:
            async with held[0]:
                return await self._step_locked(device_id, key, event, shown, dialog_id)
        finally:
            held[1] -= 1
            if held[1] == 0:
                self.locks.pop(device_id, None)

    async def _step_locked(self, device_id: str, key: str, event: Event, shown: str | None,
                           dialog_id: str | None) -> web.Response:
        engine = self.services.engine
        earlier, dev = await self.db(web_store.for_step, engine, device_id, key)
        if earlier is not None:
            return web.json_response({**earlier, "replayed": True})
        if dev is None:
            return _error(403, "zh", "web.refused")
        if event.kind == "button" and dialog_id and dialog_id != (dev.draft or {}).get("id"):
            # A button of an earlier dialog (a page left open, a replayed post): expired.
            return _error(409, dev.language, "survey.expired")
        dialog = Dialog(self.ports, dev.language, "web", lambda: self._fresh(dev), "web", device_id,
                        file_unheard_voice=True)
        try:
            turn = await dialog.step(dev.state, copy.deepcopy(dev.draft), event)
        except DomainError as exc:
            log.info("web chat %s: filing refused (%s)", device_id, exc)
            return _error(422, dev.language, "dialog.filing_refused")
        except DatabaseBusy:
            return _error(503, dev.language, "web.busy")
        except Exception:
            # The draft on the server is as it was; the page keeps the post and sends it again.
            log.exception("web chat %s: a step failed", device_id)
            return _error(503, dev.language, "web.busy")
        now = utcnow().isoformat(timespec="seconds")
        said = [{"from": "me", "text": shown, "at": now}] if shown else []
        said += [_reply_json(r, now) for r in turn.replies]
        answer = {
            "state": turn.state,
            "dialog": (turn.draft or {}).get("id"),
            "replies": [_reply_json(r, now) for r in turn.replies],
            "case": turn.filed.number if turn.filed is not None else None,
            "version": dev.version + 1,
        }
        saved = await self.db(web_store.save_step, engine, device_id, dev.version, turn.state, turn.draft,
                              said, key, answer)
        if not saved:
            earlier = await self.db(web_store.answered, engine, device_id, key)
            if earlier is not None:
                return web.json_response({**earlier, "replayed": True})
            return _error(409, dev.language, "web.refused")
        return web.json_response({**answer, "version": dev.version + 1})

    async def _fresh(self, dev: web_store.Device) -> dict:
        engine = self.services.engine
        info = await self.db(store.resident_for_chat, engine, web_store.chat_key(dev.id), dev.language)
        if dev.resident_id != info.id:
            await self.db(web_store.set_resident, engine, dev.id, info.id)
        draft = new_draft(info.id, info.phone, info.household_address)
        if dev.grid_hint and not info.household_address:
            # The grid of the QR code: offered to routing as the place when the resident skips
            # "where"; routing matches it like a typed address, and staff see it as typed.
            draft["address_typed"] = dev.grid_hint
        return draft

    # ---- files

    async def photo_post(self, request: web.Request) -> web.Response:
        return await self._file_post(request, "photo")

    async def voice_post(self, request: web.Request) -> web.Response:
        return await self._file_post(request, "voice")

    async def _file_post(self, request: web.Request, kind: str) -> web.Response:
        try:
            device_id = await self._posting_device(request)
            key = _key(request.query.get("key") or request.headers.get("X-Idempotency-Key"))
        except Refused as exc:
            return _error(exc.status, await self._lang(request), exc.key, **exc.values)
        language = await self._lang(request)
        earlier = await self.db(web_store.answered, self.services.engine, device_id, key)
        if earlier is not None:
            return web.json_response({**earlier, "replayed": True})
        try:
            data, declared = await self._read_upload(request)
        except Refused as exc:
            return _error(exc.status, language, exc.key, **exc.values)
        try:
            if kind == "photo":
                event = await self._photo_event(data)
                shown = t(language, "web.photo")
            else:
                event = await self._voice_event(data, declared)
                shown = t(language, "web.voice")
        except Refused as exc:
            return _error(exc.status, language, exc.key, **exc.values)
        return await self._step(device_id, key, event, shown, request.query.get("dialog"))

    async def _read_upload(self, request: web.Request) -> tuple[bytes, str]:
        """The first file part of a multipart post, refused past the limit while reading."""
        if request.content_length and request.content_length > self.upload_bytes + 64 * 1024:
            raise Refused(413, "web.too_big", mb=self.rules["upload_mb"])
        try:
            reader = await request.multipart()
            part = await reader.next()
            while part is not None and not getattr(part, "filename", None):
                part = await reader.next()
        except (ValueError, AssertionError, KeyError):
            raise Refused(400, "web.refused") from None
        if part is None:
            raise Refused(400, "web.refused")
        chunks, size = [], 0
        while chunk := await part.read_chunk(256 * 1024):
            size += len(chunk)
            if size > self.upload_bytes:
                raise Refused(413, "web.too_big", mb=self.rules["upload_mb"])
            chunks.append(chunk)
        return b"".join(chunks), part.headers.get("Content-Type", "")

    async def _keep(self, kind: str, ext: str, data: bytes) -> tuple[int, str]:
        """Keep a file like the bot keeps one (``chat.media``): the spool, the media store,
        an unattached ``Attachment`` that the petition takes."""

        s = self.services
        now = to_local(utcnow())  # the district's day, as case numbers use
        relative = f"chat/{now:%Y}/{now:%m}/web-{kind}-{now:%d%H%M%S}-{secrets.token_hex(6)}{ext}"
        mime = await asyncio.to_thread(_write, Path(s.settings.data_dir), relative, data)
        kept = await asyncio.to_thread(keep, s.media, relative)
        att = await self.db(store.save_attachment, s.engine, kind, relative, mime, len(data),
                            hashlib.sha256(data).hexdigest(), s.spool if kept.pending else None)
        return att, relative

    async def _photo_event(self, data: bytes) -> Event:
        try:
            jpeg = await asyncio.to_thread(resize_photo, data, int(self.rules["photo_side"]))
        except ValueError:
            raise Refused(415, "web.not_photo") from None
        att, path = await self._keep("photo", ".jpg", jpeg)
        return Event("photo", attachment=att, path=path)

    async def _voice_event(self, data: bytes, declared: str) -> Event:

        try:  # audio at all? PyAV decodes WebM/Opus, MP4/AAC, OGG … ; nothing is kept if not
            decoded = await asyncio.to_thread(decode_file, data)
        except AudioError:
            raise Refused(415, "web.not_audio") from None
        if not decoded.pcm:
            raise Refused(415, "web.not_audio")
        ext = ".m4a" if "mp4" in declared or "aac" in declared else ".webm" if "webm" in declared else ".ogg"
        att, path = await self._keep("voice", ext, data)
        speech = self.speech if self.speech is not None else self.services.speech
        if speech is None:
            return Event("voice", attachment=att, path=path, voice_problem="unavailable")

        try:
            heard: Heard = await media.transcribe(speech, path, self.services.media)
        except media.SpeechUnavailable:
            return Event("voice", attachment=att, path=path, voice_problem="unavailable")
        except media.Unreadable:
            return Event("voice", attachment=att, path=path, voice_problem="failed")
        if not heard.text:
            return Event("voice", attachment=att, path=path, voice_problem="unclear")
        return Event("voice", attachment=att, path=path, heard=heard)

    async def map_view(self, request: web.Request) -> web.Response:
        if self._device(request) is None:
            return _error(403, "zh", "web.refused")
        if self._map is None:
            self._map = await self.db(web_store.grid_map, self.services.engine)
        return web.json_response(self._map)

    # ---- my cases, the survey, progress

    async def cases_view(self, request: web.Request) -> web.Response:
        device_id = self._device(request)
        if device_id is None:
            return _error(403, "zh", "web.refused")
        language = await self._lang(request)
        lines = await self.db(web_store.cases, self.services.engine, device_id)
        tz = self.services.settings.timezone
        return web.json_response({"cases": [{
            "number": c.number,
            "status": status_name(c.status, language),
            "category": c.category,
            "description": c.description[:140],
            "created": store.local(c.created, tz),
            "due": store.local(c.due, tz) if c.due else None,
            "survey": c.survey,
        } for c in lines]}, headers=_no_store())

    async def survey_post(self, request: web.Request) -> web.Response:
        posted = await self._posted(request)
        if isinstance(posted, web.Response):
            return posted
        device_id, body, language = posted
        solved, satisfied = body.get("solved"), body.get("satisfied")
        survey_id = body.get("survey")
        if solved not in SOLVED or satisfied not in SATISFIED or not isinstance(survey_id, int):
            return _error(400, language, "web.refused")
        chat = web_store.chat_key(device_id)
        try:
            number, status = await self.db(functools.partial(store.record_survey, actor=f"resident:{chat}"),
                                           self.services.engine, survey_id, chat, solved, satisfied, None)
        except store.SurveyRefused as exc:
            key = "web.survey_done" if exc.why == "answered" else "survey.not_yours"
            return _error(409, language, key)
        key = {"closed": "web.survey_thanks", "answered": "web.survey_noted"}.get(status, "web.survey_reopen")
        return web.json_response({"text": t(language, key, number=number), "status": status})

    # ---- phone verification by SMS code

    def _code_hash(self, device_id: str) -> Callable[[str, str], str]:
        return functools.partial(self.signer.sms_code, device_id)

    async def phone_post(self, request: web.Request) -> web.Response:
        """A number typed in the page: a 6-digit code goes to it by SMS (the hotline's
        sender), within the limits per device and per number; only its HMAC is kept."""
        posted = await self._posted(request)
        if isinstance(posted, web.Response):
            return posted
        device_id, body, language = posted
        typed = body.get("phone")
        if not isinstance(typed, str) or len(typed) > 40 or parse(typed) is None:
            return _error(400, language, "web.phone_invalid")
        if not is_mobile(typed):
            return _error(400, language, "web.phone_not_mobile")
        send = self.services.extras.get("send_sms")
        if send is None:
            return _error(503, language, "web.phone_unavailable")
        phone = dialable(typed)
        refusal = await self.db(web_store.code_refusal, self.services.engine, device_id, phone, self.rules)
        if refusal:
            return _error(429, language, refusal, seconds=int(self.rules["verify_resend_seconds"]))
        code = f"{secrets.randbelow(1_000_000):06d}"
        minutes = int(self.rules["verify_code_minutes"])
        code_id = await self.db(web_store.keep_code, self.services.engine, device_id, phone,
                                self._code_hash(device_id)(phone, code), minutes)
        try:
            await asyncio.to_thread(send, phone, t(language, "web.sms_code", code=code, minutes=minutes))
        except Exception as exc:  # Twilio refused or is unreachable: the resident may ask again
            log.warning("web chat: verification SMS to %s not sent: %s", _masked(phone), exc)
            await self.db(web_store.drop_code, self.services.engine, code_id)
            return _error(503, language, "web.phone_send_failed")
        return web.json_response({"text": t(language, "web.phone_sent", phone=_masked(phone), minutes=minutes)})

    async def code_post(self, request: web.Request) -> web.Response:
        """The code from the SMS: right -> the number is the device's, linked to the resident
        registered under it; wrong -> counted (``verify_attempts``), expired -> ask again."""
        posted = await self._posted(request)
        if isinstance(posted, web.Response):
            return posted
        device_id, body, language = posted
        code = "".join(str(body.get("code") or "").split())
        if not re.fullmatch(r"[0-9]{6}", code):
            return _error(400, language, "web.code_wrong", left="?")
        checked = await self.db(web_store.check_code, self.services.engine, device_id, self._code_hash(device_id),
                                code, self.rules, language)
        if checked.outcome == "wrong":
            return _error(400, language, "web.code_wrong", left=checked.left)
        if checked.outcome in ("expired", "locked"):
            return _error(400 if checked.outcome == "expired" else 429, language, f"web.code_{checked.outcome}",
                          seconds=int(self.rules["verify_resend_seconds"]))
        text = t(language, "web.phone_verified", phone=_masked(checked.phone))
        if checked.household:
            text += t(language, "web.phone_household", address=checked.household)
        return web.json_response({"text": text, "phone": _masked(checked.phone)})

    async def unlink_post(self, request: web.Request) -> web.Response:
        """"解除绑定 / 更换号码": the device lets its verified number go; a number (the same
        or a new one) is linked again only with a new SMS code."""
        posted = await self._posted(request)
        if isinstance(posted, web.Response):
            return posted
        device_id, _body, language = posted
        phone = await self.db(web_store.unlink_phone, self.services.engine, device_id)
        if phone is None:
            return _error(409, language, "web.phone_none")
        return web.json_response({"text": t(language, "web.phone_unlinked", phone=_masked(phone))})

    async def events_view(self, request: web.Request) -> web.StreamResponse:
        """Progress of the device's cases while the page is open: an event when a case's
        status (or its survey) changes. Reads the database every ``progress_every_s``."""
        device_id = self._device(request)
        if device_id is None:
            return _error(403, "zh", "web.refused")
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store",
                                               "X-Accel-Buffering": "no"})
        await response.prepare(request)
        language = await self._lang(request)
        every = float(self.rules["progress_every_s"])
        seen = await self.db(web_store.statuses, self.services.engine, device_id)
        await response.write(b"retry: 3000\n\n")
        mark = float(self.rules["live_mark_s"])
        marked = 0.0
        try:
            while True:
                if time.monotonic() - marked > mark / 3:  # progress goes by SMS only once this runs out
                    await self.db(web_store.set_live, self.services.engine, device_id,
                                  utcnow() + timedelta(seconds=mark))
                    marked = time.monotonic()
                await asyncio.sleep(every)
                now = await self.db(web_store.statuses, self.services.engine, device_id)
                for number, status in now.items():
                    if seen.get(number) != status:
                        plain = status.split("+")[0]
                        payload = {"number": number, "status": status_name(plain, language),
                                   "survey": status.endswith("+survey"),
                                   "text": t(language, "web.progress", number=number,
                                             status=status_name(plain, language))}
                        data = json.dumps(payload, ensure_ascii=False)
                        await response.write(f"event: progress\ndata: {data}\n\n".encode())
                seen = now
                await response.write(b": keep-alive\n\n")
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            try:  # closed: progress goes by SMS from now on (a failed write lets the mark run out)
                await asyncio.shield(self.db(web_store.set_live, self.services.engine, device_id, None))
            except Exception as exc:
                log.info("web chat: could not unmark the closed page of a device: %s", exc)
        return response


# ---------------------------------------------------------------- helpers


def _masked(phone: str | None) -> str:
    digits = phone or ""
    return digits[:-8] + "****" + digits[-4:] if len(digits) > 8 else digits


def _verified_phone(engine: Any, device_id: str) -> str | None:
    dev = web_store.verified(engine, device_id)
    return _masked(dev) if dev else None


def _other(language: str) -> str:
    return "en" if language == "zh" else "zh"


def _page_headers() -> dict[str, str]:
    # Nothing may load from elsewhere: the page's own script and styles, our own API.
    csp = ("default-src 'self'; script-src 'unsafe-inline' 'self'; style-src 'unsafe-inline' 'self'; "
           "img-src 'self' data: blob:; media-src 'self' blob:; connect-src 'self'; frame-ancestors 'none'; "
           "base-uri 'none'; form-action 'self'")
    return {"Content-Security-Policy": csp, "Cache-Control": "no-store", "Referrer-Policy": "no-referrer",
            "X-Content-Type-Options": "nosniff"}


def _no_store() -> dict[str, str]:
    return {"Cache-Control": "no-store"}


def _error(status: int, language: str, key: str, **values: Any) -> web.Response:
    headers = {"Retry-After": str(values["seconds"])} if status == 429 else {"Retry-After": "2"} if status == 503 else None
    return web.json_response({"error": key, "text": t(language, key, **values)}, status=status, headers=headers)


async def _json(request: web.Request) -> dict:
    try:
        body = await request.json()
    except (ValueError, UnicodeDecodeError):
        raise Refused(400, "web.refused") from None
    if not isinstance(body, dict):
        raise Refused(400, "web.refused")
    return body


def _key(value: Any) -> str:
    if not isinstance(value, str) or not KEY_RE.match(value):
        raise Refused(400, "web.refused")
    return value


def _event(body: dict) -> tuple[Event, str | None]:
    """A posted step -> (the engine's event, what the conversation shows the resident said)."""
    kind = body.get("kind")
    if kind == "text":
        text = body.get("text")
        if not isinstance(text, str) or len(text) > 20_000:
            raise Refused(400, "web.refused")
        return Event("text", text=text), text
    if kind == "button":
        action, label = body.get("action"), body.get("label")
        if not isinstance(action, str) or not re.match(r"^[a-z]{1,4}(:[0-9x]{1,2})?$", action):
            raise Refused(400, "web.refused")
        return Event("button", action=action), label if isinstance(label, str) else None
    if kind == "location":
        lat, lon = body.get("lat"), body.get("lon")
        if not all(isinstance(v, int | float) for v in (lat, lon)) or not (-90 <= lat <= 90 and -180 <= lon <= 180):
            raise Refused(400, "web.refused")
        return Event("location", lat=float(lat), lon=float(lon)), f"📍 {lat:.5f}, {lon:.5f}"
    if kind in ("start", "cancel"):
        return Event(kind), body.get("label") if isinstance(body.get("label"), str) else None
    raise Refused(400, "web.refused")


def _reply_json(reply: Reply, at: str) -> dict:
    out: dict[str, Any] = {"from": "bot", "text": reply.text, "at": at}
    if reply.buttons:
        out["buttons"] = [{"label": label, "action": action} for label, action in reply.buttons]
    if reply.controls:
        out["controls"] = reply.controls
    if reply.case:
        out["case"] = reply.case
    return out


def _grid_name(engine: Any, code: str) -> str | None:


    with session_scope(engine) as session:
        grid = session.exec(select(Grid).where(Grid.code == code)).first()
        return grid.name if grid else None


def grid_link(public_url: str, signer: Signer, code: str) -> str:
    return f"{public_url.rstrip('/')}/chat/?g={signer.grid_code(code)}"


WEB_CHAT = web.AppKey("gridline_web_chat", WebChat)


def setup(app: web.Application, services: Any, **options: Any) -> WebChat:
    """Mount ``/chat/`` on the Gridline app (``options`` go to ``WebChat``: tests, bench)."""
    chat = WebChat(services, **options)
    app[WEB_CHAT] = chat
    def started(handler: Callable[[web.Request], Awaitable[web.StreamResponse]]):  # noqa: ANN202
        @functools.wraps(handler)
        async def with_key(request: web.Request) -> web.StreamResponse:
            await chat.start()
            return await handler(request)

        return with_key

    app.router.add_get("/chat", _to_page)
    app.router.add_get("/chat/", started(chat.page_view))
    app.router.add_get("/chat/sw.js", chat.worker_view)
    app.router.add_get("/chat/api/state", started(chat.state_view))
    app.router.add_post("/chat/api/step", started(chat.step_post))
    app.router.add_post("/chat/api/photo", started(chat.photo_post))
    app.router.add_post("/chat/api/voice", started(chat.voice_post))
    app.router.add_post("/chat/api/language", started(chat.language_post))
    app.router.add_get("/chat/api/cases", started(chat.cases_view))
    app.router.add_post("/chat/api/survey", started(chat.survey_post))
    app.router.add_get("/chat/api/events", started(chat.events_view))
    app.router.add_get("/chat/api/map", started(chat.map_view))
    app.router.add_post("/chat/api/phone", started(chat.phone_post))
    app.router.add_post("/chat/api/phone/code", started(chat.code_post))
    app.router.add_post("/chat/api/phone/unlink", started(chat.unlink_post))
    # Progress by SMS for a verified number while the page is closed, through the progress-SMS policy.
    progress_sms.register_channel(progress_sms.OtherChannel("web_chat", web_store.verified_number,
                                                            web_store.page_open))

    # With the Telegram bot off, the chat's jobs still come for web residents.
    if "survey_chat" not in services.jobs.handlers:
        services.jobs.register("survey_chat", functools.partial(survey_for_web, services))
    if "notify_resident" not in services.jobs.handlers:
        services.jobs.register("notify_resident", functools.partial(notice_for_web, services))

    async def cleanup(job: Any) -> None:
        swept = await chat.db(web_store.sweep_devices, services.engine, chat.rules)
        if swept.devices or swept.drafts:
            log.info("web chat: removed %d unused device(s), let go %d unfinished petition(s); kept %d "
                     "unused with an open case or survey", swept.devices, swept.drafts, swept.kept)

    services.jobs.register(web_store.CLEANUP_JOB, cleanup)

    async def forget_old_posts() -> None:
        """Answers to posts older than a page's offline queue can be are forgotten, hourly;
        the daily sweep of unused devices is queued (once across instances)."""
        while True:
            try:
                await chat.db(web_store.schedule_cleanup, services.engine)
                services.jobs.wake()
                forgotten = await chat.db(web_store.forget_requests, services.engine)
                if forgotten:
                    log.info("web chat: forgot %d answered post(s) older than %s", forgotten,
                             web_store.REQUESTS_KEPT)
                await chat.db(web_store.forget_buckets, services.engine)
            except Exception as exc:  # the database restarting: next hour
                log.warning("web chat: could not forget old posts: %s", exc)
            await asyncio.sleep(3600)

    async def lifecycle(app: web.Application):  # noqa: ANN202
        cleaner = asyncio.get_running_loop().create_task(forget_old_posts(), name="web-chat-cleanup")
        yield
        await cancel_and_wait(cleaner)

    app.cleanup_ctx.append(lifecycle)
    return chat


async def _to_page(request: web.Request) -> web.Response:
    raise web.HTTPFound("/chat/" + (f"?{request.query_string}" if request.query_string else ""))


async def survey_for_web(services: Any, job: Any) -> None:
    """``survey_chat`` when the Telegram bot is off: a web chat's survey is shown by its
    page (one attempt counted); a Telegram chat's waits for the bot."""


    survey_id = int((job.payload or {}).get("survey_id") or 0)
    view = await services.db.run(store.survey_view, services.engine, survey_id)
    if view is None or not view.pending or not view.chat_id:
        return
    if view.chat_id.startswith("web:"):
        await services.db.run(store.count_attempt, services.engine, survey_id)
        return
    raise RetryLater(timedelta(seconds=60), "the Telegram bot is not running")


async def notice_for_web(services: Any, job: Any) -> None:
    """``notify_resident`` when the Telegram bot is off: a web chat hears of the change from
    its page's progress stream; a Telegram chat's waits for the bot."""


    if str((job.payload or {}).get("chat_id") or "").startswith("web:"):
        return
    raise RetryLater(timedelta(seconds=60), "the Telegram bot is not running")
