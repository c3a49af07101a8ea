"""The case page and its actions."""

from __future__ import annotations

from aiohttp import web

from console import casework, db
from console.access import console_rules, hides_voice, name_for, phone_for, text_for
from console.i18n import CONSOLE, has, t
from console.views.common import form, lang, principal, render, who
from console.views.files import file_states
from console.web import PREFIX, close_reason_text, error_text, status_for
from core.cases import limits
from core.errors import DomainError
from core.platform import i18n, media_types


def _transcript(case, p, threshold: float, people: tuple[str, ...]) -> list[dict]:  # noqa: ANN001
    """Segments with their words; chat transcripts have no word timings (one piece each).
    A name or a number is spoken over several words (王 / 小明, 幺三九 / 一二三四), so a role
    that reads masked text gets a segment with personal data in it masked whole, as one piece."""
    out = []
    for seg in case.transcript or []:
        words = seg.get("words") or []
        pieces = [{"text": str(w.get("word", "")), "start": float(w.get("start", 0.0)),
                   "end": float(w.get("end", 0.0)), "conf": float(w.get("conf", 1.0)),
                   "low": float(w.get("conf", 1.0)) < threshold} for w in words]
        whole = "".join(piece["text"] for piece in pieces) if pieces else str(seg.get("text", ""))
        masked = text_for(p, whole, people, case)
        if not pieces or masked != whole:
            conf = min([float(seg.get("confidence", 1.0))] + [piece["conf"] for piece in pieces])
            pieces = [{"text": masked, "start": float(seg.get("start", 0.0)),
                       "end": float(seg.get("end", 0.0)), "conf": conf, "low": conf < threshold}]
        out.append({"start": float(seg.get("start", 0.0)), "words": pieces})
    return out


def _case_of(view, case_id: int):  # noqa: ANN001, ANN202
    """The case or suggested duplicate a piece of text belongs to (its confidentiality decides the mask)."""
    if case_id == view.case.id:
        return view.case
    return next((d.case for d in view.duplicates if d.case.id == case_id), view.case)


def event_reason(language: str, e) -> str | None:  # noqa: ANN001
    """An event's reason in words: intake writes ``via <channel>``, a close its reason code
    with the note typed; the rest are core's reason codes or words people typed."""
    if e.action == "submit" and (e.reason or "").startswith("via "):
        channel = e.reason[4:]
        if has(language, f"channel.{channel}"):
            return t(language, "timeline.via", channel=t(language, f"channel.{channel}"))
    if e.action == "close":
        return close_reason_text(language, e.reason)
    return i18n.reason_text(language, e.reason, e.data, catalogue=CONSOLE)


def _comment_words(view) -> dict[str, str]:  # noqa: ANN001
    """Each survey comment recording's words (file path → the survey's transcript): the comment's
    event names the file it attached and its survey; the survey keeps the words."""
    surveys = {s.id: s.comment for s in view.surveys if s.comment}
    out = {}
    for e in view.events:
        data = e.data or {}
        if e.action == "survey_comment" and data.get("attachment") and data.get("survey_id") in surveys:
            out[data["attachment"]] = surveys[data["survey_id"]]
    return out


def _plays(f) -> bool:  # noqa: ANN001
    return media_types.servable(f.mime_type) in media_types.AUDIO


def _shows(f) -> bool:  # noqa: ANN001
    return media_types.servable(f.mime_type) in media_types.IMAGES


async def show(request: web.Request, *, error: str = "", status: int = 200,
               typed: tuple[str, dict] | None = None) -> web.Response:
    """The case page; after a refused form, ``typed`` (the action and its fields) puts what
    the person wrote back into that form, beside the error."""
    p = principal(request)
    number = request.match_info["number"]
    try:
        view = await db.run(request, casework.case_view, p, number, who(request))
    except casework.Forbidden:
        raise web.HTTPForbidden() from None
    threshold = float(console_rules()["low_word_confidence"])
    case = view.case
    # A confidential case read by a role that may not see its resident: no voice to play.
    voices = () if hides_voice(p, case) else ("recording", "voice", "survey_comment")
    states = await file_states(request, view.files)
    people = view.people.get(view.case.id, ())
    offered = casework.offered(p, view.case, view.undo_until)
    callers = [(n, name_for(p, name, view.caller_cases.get(n, case)), phone_for(p, phone, view.caller_cases.get(n, case)))
               for n, name, phone in view.callers]
    comment_words = _comment_words(view)
    return render(request, "case.html", {
        "v": view, "c": view.case, "error": error, "done": request.query.get("done", ""),
        "phone": phone_for(p, case.contact_phone or (view.resident.phone if view.resident else None), case),
        "resident_name": name_for(p, view.resident.name if view.resident else None, case),
        "description": text_for(p, case.description, people, case),
        "transcript": _transcript(case, p, threshold, people),
        "recordings": [f for f in view.files if f.kind in ("recording", "voice") and f.kind in voices and _plays(f)],
        "photos": [f for f in view.files if f.kind == "photo" and _shows(f)],
        "comments": [(f, comment_words.get(f.path)) for f in view.files
                     if f.kind == "survey_comment" and f.kind in voices and _plays(f)],
        # a file that is neither (its bytes were no audio or image we allow): a download only
        "downloads": [f for f in view.files if f.kind in ("recording", "voice", "photo")
                      and (f.kind == "photo" or f.kind in voices)
                      and not (_plays(f) if f.kind != "photo" else _shows(f))],
        "voice_withheld": sum(1 for f in view.files if f.kind in ("recording", "voice", "survey_comment")
                              and f.kind not in voices),
        "text_for": lambda s, case_id=view.case.id: text_for(p, s, view.people.get(case_id, ()),
                                                             _case_of(view, case_id)),
        "kept": lambda action, field: typed[1].get(field, "") if typed and typed[0] == action else "",
        "limit": limits.limit_of,
        "file_state": states,
        "offered": offered,
        "event_reason": lambda e: event_reason(lang(request), e),
        "can": lambda action: action in offered,
        "callers": callers,
        "caller_of": {n: " ".join(x for x in (name, phone) if x) for n, name, phone in callers},
    }, status=status)


async def case_page(request: web.Request) -> web.Response:
    return await show(request)


async def confirm(request: web.Request, number: str, action: str, data: dict) -> web.Response:
    """The page between the button of a step that cannot simply be taken back and the step:
    what it will do, to which cases and callers, with a button that sends the form again
    confirmed and a way back. Nothing is written until then."""
    p = principal(request)
    try:
        step = await db.run(request, casework.confirmation, p, number, action, data)
    except casework.Forbidden:
        raise web.HTTPForbidden() from None
    except DomainError as exc:
        return await show(request, error=error_text(lang(request), exc), status=status_for(exc), typed=(action, data))
    language = lang(request)
    return render(request, "confirm.html", {
        "step": step, "c": step.case, "fields": step.form,
        "callers": [(n, name_for(p, name), phone_for(p, phone)) for n, name, phone in step.callers],
        "describe": lambda case: text_for(p, case.description, ()),
        "reason_words": close_reason_text(language, step.form.get("reason")) if action == "close" else "",
    })


async def act(request: web.Request) -> web.Response:
    p = principal(request)
    number, action = request.match_info["number"], request.match_info["action"]
    data = await form(request)
    if action in casework.CONFIRMED_STEPS and data.get("confirmed") != "yes":
        return await confirm(request, number, action, data)
    services = request.config_dict[db.SERVICES]
    extras = {"data_dir": request.config_dict[db.DATA_DIR], "store": services.media} if action == "shred" else {}
    try:
        await db.run(request, casework.apply, p, number, action, data, who(request), **extras)
    except casework.Forbidden:
        raise web.HTTPForbidden() from None
    except DomainError as exc:
        # The core refused (an illegal transition, a missing reason, a text too long): its
        # words in the page's language, with what was typed kept in the form.
        return await show(request, error=error_text(lang(request), exc), status=status_for(exc),
                          typed=(action, data))
    raise web.HTTPSeeOther(f"{PREFIX}/cases/{number}?done={action}")


def setup(app: web.Application) -> None:
    app.router.add_get(r"/cases/{number:\d{1,16}}", case_page)
    app.router.add_post(r"/cases/{number:\d{1,16}}/act/{action:[a-z_]{1,20}}", act)
