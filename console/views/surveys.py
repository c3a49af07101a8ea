"""The manual-call list: follow-up surveys no machine could do (no phone line or chat to
reach the resident by, or attempts used up). The operator calls and records the answers."""

from __future__ import annotations

from aiohttp import web
from sqlmodel import select

from console import db
from console.access import phone_for, scoped
from console.views.common import audit_view, form, lang, needs_page, principal, render, who
from console.web import PREFIX, error_text, status_for
from core import actions
from core.cases.models import Case, Category
from core.errors import DomainError, NotFound
from core.followup import survey_policy
from core.followup.models import Survey, SurveyStatus
from core.people.models import Resident

OUTCOMES = ("no_answer", "busy", "wrong_number", "call_back_later")


def _list(session, p, who_):  # noqa: ANN001, ANN202
    stmt = (select(Survey, Case).join(Case, Case.id == Survey.case_id)
            .where(Survey.channel == "manual", Survey.status == SurveyStatus.pending)
            .order_by(Survey.created_at, Survey.id).limit(200))
    rows = []
    for survey, case in session.exec(scoped(stmt, p)).all():
        # a merged duplicate's caller is called on their own number (masked as their case says)
        caller = actions.caller_case(session, survey)
        resident = session.get(Resident, caller.resident_id) if caller.resident_id else None
        category = session.get(Category, case.category_id) if case.category_id else None
        rows.append({"survey": survey, "case": case, "category": category.name if category else "",
                     "caller_case": caller.number if caller.id != case.id else None,
                     "phone": phone_for(p, caller.contact_phone or (resident.phone if resident else None), caller)})
    if rows:  # the list shows residents' phone numbers
        audit_view(session, who_, "survey.manual_list", "survey", None,
                   {"cases": [r["case"].number for r in rows][:50], "phone_shown": p.sees_phone})
    return rows


async def _page(request: web.Request, *, error: str = "", status: int = 200) -> web.Response:
    rows = await db.run(request, _list, principal(request), who(request))
    return render(request, "manual_calls.html", {
        "rows": rows, "error": error, "done": request.query.get("done", ""), "outcomes": OUTCOMES,
        "solved_scale": survey_policy.solved_scale(), "satisfied_scale": survey_policy.satisfied_scale(),
    }, status=status)


@needs_page("manual_calls")
async def manual(request: web.Request) -> web.Response:
    return await _page(request)


def _record(session, p, survey_id: int, what: str, data: dict, who_):  # noqa: ANN001, ANN202
    survey = session.get(Survey, survey_id, with_for_update=True)
    if survey is None or survey.channel != "manual":
        raise NotFound(f"no survey {survey_id} on the manual-call list",
                       code="console.no_manual_survey", survey=survey_id)
    if session.exec(scoped(select(Case.id).where(Case.id == survey.case_id), p)).first() is None:
        raise NotFound(f"no survey {survey_id} on the manual-call list",
                       code="console.no_manual_survey", survey=survey_id)
    actor = f"operator:{p.name}"
    if what == "answer":
        actions.survey_attempt(session, survey, actor=actor, outcome="answered")
        actions.record_survey(session, survey, solved=data.get("solved", ""), satisfied=data.get("satisfied", ""),
                              comment=data.get("comment") or None, actor=actor)
    elif what == "attempt":
        outcome = data.get("outcome", "")
        if outcome not in OUTCOMES:
            raise NotFound(f"no outcome {outcome!r}", code="console.no_outcome", outcome=outcome)
        actions.survey_attempt(session, survey, actor=actor, outcome=outcome, data={"by": "phone, manually"})
    else:  # give up: closes as not evaluated
        actions.survey_unreachable(session, survey, actor=actor)
    audit_view(session, who_, f"survey.{what}", "survey", survey.id,
               {k: v[:200] for k, v in data.items() if k != "_csrf"})


@needs_page("manual_calls")
async def record(request: web.Request) -> web.Response:
    if not principal(request).may("survey"):
        raise web.HTTPForbidden()
    data = await form(request)
    what = request.match_info["what"]
    try:
        await db.run(request, _record, principal(request), int(request.match_info["survey"]), what, data,
                     who(request))
    except DomainError as exc:
        return await _page(request, error=error_text(lang(request), exc), status=status_for(exc))
    raise web.HTTPSeeOther(f"{PREFIX}/surveys/manual?done={what}")


def setup(app: web.Application) -> None:
    app.router.add_get("/surveys/manual", manual)
    app.router.add_post(r"/surveys/{survey:\d{1,12}}/{what:answer|attempt|give_up}", record)
