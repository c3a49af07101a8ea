"""Open311 GeoReport v2 under ``/open311/v2/``: the API channel other systems (a city 12345
platform, a mobile app) exchange cases through.

    GET  services.{json,xml}                our categories (metadata false, type realtime)
    GET  services/{code}.{json,xml}         a service definition (no extra attributes)
    GET  requests.{json,xml}                service_request_id | service_code, start_date, end_date, status
    POST requests.{json,xml}                api_key + service_code + a place: files a case (core.cases.intake)
    GET  requests/{id}.{json,xml}           one request
    GET  tokens/{token}.{json,xml}          the request a client's own request id (its token) filed

A channel like the hotline: it translates a request into one ``core.cases.intake`` call and
renders cases back. It publishes no personal data: no phone numbers, names or household
addresses; the place is the grid (most specific first) and a point rounded to about 100 m;
the description is masked by ``core.people.redaction`` with the names known for the case, or not
published at all (a rule). Shredded cases are not served at all.

POST is idempotent per client request id: the ``Idempotency-Key`` header or a
``client_request_id`` field (also the token ``tokens/…`` resolves). The same key and id
always answer with the same case."""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from aiohttp import web
from sqlmodel import Session, select

from core import actions
from core.cases import catalogue, limits
from core.cases.intake import file_petition_in
from core.cases.models import Case, CaseStatus, Category, Channel
from core.cases.queries import known_names
from core.cases.texts import status_name
from core.errors import DatabaseBusy, DomainError, TooManyPetitions
from core.people import apikeys
from core.people.models import Department
from core.people.redaction import CONFIDENTIAL, PUBLIC, redact
from core.places.models import Grid
from core.places.routing import normalise_phone
from core.platform.clock import utcnow
from core.platform.db import session_scope
from core.platform.rules import load_rules

log = logging.getLogger(__name__)

PREFIX = "/open311/v2"
FORMATS = {"json": "application/json; charset=utf-8", "xml": "text/xml; charset=utf-8"}
REQUEST_FIELDS = ("service_request_id", "status", "status_notes", "service_name", "service_code", "description",
                  "agency_responsible", "service_notice", "requested_datetime", "updated_datetime",
                  "expected_datetime", "address", "address_id", "zipcode", "lat", "long", "media_url")
SERVICE_FIELDS = ("service_code", "service_name", "description", "metadata", "type", "keywords", "group")
CLOSED = (CaseStatus.closed, CaseStatus.merged)
CLIENT_ID = re.compile(r"[A-Za-z0-9.:-][A-Za-z0-9._:-]{0,79}")
MAX_DESCRIPTION = 4000
MAX_IDS = 100
SERVICES = web.AppKey("open311_services", object)


def rules() -> dict:
    return load_rules()["open311"]


class ApiError(Exception):
    """An Open311 error: HTTP status and the body's code and description."""

    def __init__(self, status: int, description: str, code: int | None = None):
        super().__init__(description)
        self.status, self.description, self.code = status, description, code or status


# ---- what is published ----------------------------------------------------------------------

def public_text(text: str | None, names: tuple[str, ...] = (), *, confidential: bool = False) -> str:
    """A resident's words as the public may read them (``core.people.redaction``, ``PUBLIC``):
    no e-mail, phone or identity number, no building, unit or room number, no name of the
    case's resident or household, nor one the text introduces. A confidential case (保密)
    loses every number of three digits or more as well (``CONFIDENTIAL``)."""
    return redact(text, names, CONFIDENTIAL if confidential else PUBLIC)[:MAX_DESCRIPTION]


def public_description(case: Case, category: Category | None, names: tuple[str, ...]) -> str | None:
    """The description as published: masked, or (``[open311] publish_descriptions = false``)
    the category's name alone, a summary that cannot carry anyone's words."""
    if not rules()["publish_descriptions"]:
        return category.name if category else str(rules()["summary_without_category"])
    return public_text(case.description, names, confidential=case.confidential) or None


def w3c(value: datetime | None, tz: str) -> str | None:
    if value is None:
        return None
    return value.replace(tzinfo=UTC).astimezone(ZoneInfo(tz)).isoformat(timespec="seconds")


def status_notes(case: Case, merged_into: str | None) -> str:
    notes = status_name(case.status)
    if case.status == CaseStatus.merged and merged_into:
        notes += f"（并入 {merged_into}）"
    elif case.status == CaseStatus.closed and case.close_reason:
        outcome = case.close_reason.split(":", 1)[-1] if case.close_reason.startswith("survey:") else case.close_reason
        notes += f"（{_OUTCOMES.get(outcome, '结案')}）"
    return notes


_OUTCOMES = {"satisfied": "回访满意", "basically": "回访基本满意", "not": "回访不满意", "not_evaluated": "未能回访",
             "not_a_petition": "非诉求", "withdrawn": "群众撤回", "duplicate_elsewhere": "重复诉求",
             "resolved_on_the_phone": "电话中已解决"}


class Names:
    """Categories, departments and grids by id (one read per request)."""

    def __init__(self, session: Session):
        self.categories = {c.id: c for c in session.exec(select(Category)).all()}
        self.departments = {d.id: d for d in session.exec(select(Department)).all()}
        self.grids = {g.id: g for g in session.exec(select(Grid)).all()}

    def place(self, grid_id: int | None) -> str | None:
        """The grid and its ancestors, most specific first, as the spec orders an address."""
        names, node = [], self.grids.get(grid_id) if grid_id else None
        while node is not None:
            names.append(node.name)
            node = self.grids.get(node.parent_id) if node.parent_id else None
        return ", ".join(names) or None


def request_dict(case: Case, names: Names, merged_into: str | None, tz: str,
                 people: tuple[str, ...] = ()) -> dict:
    category = names.categories.get(case.category_id) if case.category_id else None
    department = names.departments.get(case.department_id) if case.department_id else None
    decimals = int(rules()["coordinate_decimals"])
    closed = case.status in CLOSED
    return {
        "service_request_id": case.number,
        "status": "closed" if closed else "open",
        "status_notes": status_notes(case, merged_into),
        "service_name": category.name if category else None,
        "service_code": category.code if category else None,
        "description": public_description(case, category, people),
        "agency_responsible": department.name if department else None,
        "service_notice": None,
        "requested_datetime": w3c(case.created_at, tz),
        "updated_datetime": w3c(case.closed_at if case.status == CaseStatus.closed and case.closed_at
                                else case.updated_at, tz),
        "expected_datetime": w3c(case.resolution_due, tz),
        "address": names.place(case.grid_id),
        "address_id": None,
        "zipcode": None,
        "lat": round(case.latitude, decimals) if case.latitude is not None else None,
        "long": round(case.longitude, decimals) if case.longitude is not None else None,
        "media_url": None,
    }


def requests_out(session: Session, cases: list[Case], tz: str) -> list[dict]:
    names = Names(session)
    merged_ids = {c.merged_into_id for c in cases if c.merged_into_id}
    merged: dict[int, str] = {}
    if merged_ids:
        merged = {cid: number for cid, number in
                  session.exec(select(Case.id, Case.number).where(Case.id.in_(sorted(merged_ids)))).all()}
    people = known_names(session, cases)
    return [request_dict(c, names, merged.get(c.merged_into_id), tz, people.get(c.id, ())) for c in cases]


# ---- rendering -------------------------------------------------------------------------------


def _xml_value(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def to_xml(root: str, item: str, rows: list[dict]) -> str:
    top = ET.Element(root)
    for row in rows:
        element = ET.SubElement(top, item)
        for key, value in row.items():
            child = ET.SubElement(element, key)
            if isinstance(value, list):  # a service definition's attributes
                for entry in value:
                    attr = ET.SubElement(child, "attribute")
                    for k, v in entry.items():
                        ET.SubElement(attr, k).text = _xml_value(v)
            else:
                child.text = _xml_value(value)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(top, encoding="unicode")


def answer(fmt: str, root: str, item: str, rows: list[dict], status: int = 200) -> web.Response:
    if fmt == "xml":
        return web.Response(text=to_xml(root, item, rows), status=status, content_type="text/xml", charset="utf-8")
    return web.json_response(rows, status=status, dumps=_dumps)


def _dumps(value: object) -> str:
    return json.dumps(value, ensure_ascii=False)


def error(fmt: str, status: int, description: str, code: int | None = None) -> web.Response:
    return answer(fmt if fmt in FORMATS else "json", "errors", "error",
                  [{"code": code or status, "description": description}], status=status)


# ---- handlers --------------------------------------------------------------------------------


def _fmt(request: web.Request) -> str:
    return request.match_info.get("fmt", "json")


def _services(request: web.Request):  # noqa: ANN202
    return request.config_dict[SERVICES]


async def _db(request: web.Request, fn, *args):  # noqa: ANN001, ANN202
    services = _services(request)

    def work(engine, *a):  # noqa: ANN001, ANN202

        with session_scope(engine) as session:
            return fn(session, *a)

    return await services.db.run(work, services.engine, *args)


def _refuse_nul(fields) -> None:  # noqa: ANN001
    """No text we keep or search holds a NUL (PostgreSQL refuses one): a clear 400 instead."""
    for key, value in fields.items():
        if "\x00" in key or (isinstance(value, str) and "\x00" in value):
            raise ApiError(400, f"{key!r} contains a NUL character")


def _check_jurisdiction(request: web.Request, value: str | None = None) -> None:
    expected = str(rules()["jurisdiction_id"])
    given = value if value is not None else request.query.get("jurisdiction_id", "")
    if expected and given and given != expected:
        raise ApiError(404, f"jurisdiction_id {given!r} was not found (this endpoint serves {expected!r})")


def _service_rows(session: Session) -> list[dict]:
    names = Names(session)
    out = []
    for category in sorted(names.categories.values(), key=lambda c: c.code):
        if not category.active:  # retired: no longer offered, still named in old requests
            continue
        department = names.departments.get(category.department_id) if category.department_id else None
        out.append({
            "service_code": category.code,
            "service_name": category.name,
            "description": f"{category.name}（{department.name}）" if department else category.name,
            "metadata": False,
            "type": "realtime",
            "keywords": ", ".join(category.keywords or []),
            "group": department.name if department else "",
        })
    return out


async def service_list(request: web.Request) -> web.Response:
    _check_jurisdiction(request)
    return answer(_fmt(request), "services", "service", await _db(request, _service_rows))


async def service_definition(request: web.Request) -> web.Response:
    _check_jurisdiction(request)
    code = request.match_info["code"]

    def find(session):  # noqa: ANN001, ANN202
        return session.exec(select(Category.code).where(Category.code == code, Category.active == True)).first()  # noqa: E712

    if await _db(request, find) is None:
        raise ApiError(404, f"service_code {code!r} was not found")
    rows = [{"service_code": code, "attributes": []}]
    return answer(_fmt(request), "service_definitions", "service_definition", rows)


# The years a date parameter may name: beyond them a date is a typing slip (0001, 9999), and
# near datetime's own limits the time zone and the default span overflow.
FIRST_YEAR, LAST_YEAR = 1900, 2999


def _parse_w3c(name: str, value: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value.strip().replace(" ", "+"))
    except ValueError:
        raise ApiError(400, f"{name} must be a w3 date and time such as 2026-11-01T00:00:00+08:00, "
                            f"not {value!r}") from None
    if parsed.tzinfo is None:
        raise ApiError(400, f"{name} must say its time zone (Z or +08:00): {value!r}")
    if not FIRST_YEAR <= parsed.year <= LAST_YEAR:
        raise ApiError(400, f"{name} must be a date between {FIRST_YEAR} and {LAST_YEAR}, not {value!r}")
    return parsed.astimezone(UTC).replace(tzinfo=None)


def _list(session: Session, query, tz: str) -> list[dict]:  # noqa: ANN001
    stmt = select(Case).where(Case.shredded_at.is_(None))
    ids = [x.strip() for x in (query.get("service_request_id") or "").split(",") if x.strip()]
    if ids:
        if len(ids) > MAX_IDS:
            raise ApiError(400, f"at most {MAX_IDS} service_request_id at once")
        stmt = stmt.where(Case.number.in_(ids))  # overrides every other argument (the spec)
    else:
        days = int(rules()["default_days"])
        start_text, end_text = query.get("start_date") or "", query.get("end_date") or ""
        end = _parse_w3c("end_date", end_text) if end_text else None
        start = _parse_w3c("start_date", start_text) if start_text else None
        if start is None and end is None:
            end = utcnow()
        if start is None:
            start = end - timedelta(days=days)
        if end is None:
            end = min(utcnow(), start + timedelta(days=days))
        if end < start:
            raise ApiError(400, "end_date is before start_date")
        if end - start > timedelta(days=days):
            raise ApiError(400, f"start_date and end_date may not span more than {days} days")
        stmt = stmt.where(Case.created_at >= start, Case.created_at <= end)
        codes = [x.strip() for x in (query.get("service_code") or "").split(",") if x.strip()]
        if codes:
            known = dict(session.exec(select(Category.code, Category.id).where(Category.code.in_(codes))).all())
            unknown = [c for c in codes if c not in known]
            if unknown:
                raise ApiError(404, f"service_code {unknown[0]!r} was not found")
            stmt = stmt.where(Case.category_id.in_(sorted(known.values())))
        statuses = {x.strip() for x in (query.get("status") or "").split(",") if x.strip()}
        if statuses - {"open", "closed"}:
            raise ApiError(400, f"status is open or closed, not {sorted(statuses - {'open', 'closed'})[0]!r}")
        if statuses == {"open"}:
            stmt = stmt.where(Case.status.not_in(CLOSED))
        elif statuses == {"closed"}:
            stmt = stmt.where(Case.status.in_(CLOSED))
    limit = int(rules()["max_results"])
    cases = list(session.exec(stmt.order_by(Case.created_at.desc(), Case.id.desc()).limit(limit)).all())
    return requests_out(session, cases, tz)


async def list_requests(request: web.Request) -> web.Response:
    _check_jurisdiction(request)
    tz = _services(request).settings.timezone
    rows = await _db(request, _list, request.query, tz)
    return answer(_fmt(request), "service_requests", "request", rows)


async def one_request(request: web.Request) -> web.Response:
    _check_jurisdiction(request)
    number = request.match_info["id"]
    tz = _services(request).settings.timezone

    def find(session):  # noqa: ANN001, ANN202
        case = session.exec(select(Case).where(Case.number == number, Case.shredded_at.is_(None))).first()
        return requests_out(session, [case], tz) if case is not None else None

    rows = await _db(request, find)
    if rows is None:
        raise ApiError(404, f"service_request_id {number!r} was not found")
    return answer(_fmt(request), "service_requests", "request", rows)


def token_key(client_id: str, key_id: int) -> str:
    """The case's idempotency key for a client's request id: per API key, so two clients'
    ids never meet."""
    return actions.idempotency_key("open311", client_id, f"k{key_id}")


async def token(request: web.Request) -> web.Response:
    _check_jurisdiction(request)
    value = request.match_info["token"]
    if not CLIENT_ID.fullmatch(value):
        raise ApiError(404, f"token {value!r} was not found")

    def find(session):  # noqa: ANN001, ANN202
        pattern = "open311|" + value.replace("_", "\\_") + "|k%"
        return list(session.exec(select(Case.number).where(Case.idempotency_key.like(pattern, escape="\\"))
                                 .order_by(Case.id)).all())

    numbers = await _db(request, find)
    if not numbers:
        raise ApiError(404, f"token {value!r} was not found")
    return answer(_fmt(request), "service_requests", "request",
                  [{"service_request_id": n, "token": value} for n in numbers])


def _float(name: str, value: str, low: float, high: float) -> float:
    try:
        number = float(value)
    except ValueError:
        raise ApiError(400, f"{name} must be a number, not {value!r}") from None
    if not low <= number <= high:
        raise ApiError(400, f"{name} must be between {low:g} and {high:g}")
    return number


def petition_from(form: dict, client_id: str, key_id: int) -> actions.Petition:
    """The case an Open311 POST describes, or an ApiError naming what is wrong."""
    code = (form.get("service_code") or "").strip()
    if not code:
        raise ApiError(400, "service_code was not provided")
    lat_text, long_text = (form.get("lat") or "").strip(), (form.get("long") or "").strip()
    address = (form.get("address_string") or "").strip()
    address_id = (form.get("address_id") or "").strip()
    if bool(lat_text) != bool(long_text):
        raise ApiError(400, "lat and long must be sent together")
    if not lat_text and not address and not address_id:
        raise ApiError(400, "a location is required: lat and long, address_string or address_id")
    latitude = _float("lat", lat_text, -90, 90) if lat_text else None
    longitude = _float("long", long_text, -180, 180) if long_text else None
    description = (form.get("description") or "").strip()  # its length: core [limits] description
    for key in ("first_name", "last_name"):  # not stored, but no larger than any name we keep
        if not limits.fits("name", form.get(key)):
            raise ApiError(400, f"{key} is limited to {limits.limit_of('name')} characters")
    phone = (form.get("phone") or "").strip() or None
    if phone is not None:
        phone = normalise_phone(phone) or None
    return actions.Petition(
        channel=Channel.open311,
        description=description,
        idempotency_key=token_key(client_id, key_id),
        contact_phone=phone,
        latitude=latitude,
        longitude=longitude,
        address_text=address or (f"address_id {address_id}" if address_id else "") or None,  # core limits it
        category_code=code,
    )


def _file(session: Session, form: dict, api_key: str, client_id: str) -> tuple[str, bool]:
    key = apikeys.check_key(session, api_key)
    if key is None:
        raise ApiError(403, "Invalid api_key received -- cannot create a service request")
    petition = petition_from(form, client_id, key.id)
    category = catalogue.category(session, petition.category_code)
    if category is None or not category.active:
        raise ApiError(404, f"service_code {petition.category_code!r} was not found")
    if not petition.description:  # the service's own name says what it is about
        petition = dataclasses.replace(petition, description=category.name)
    result = file_petition_in(session, petition, actor=f"open311:{key.name}")
    return result.case.number, result.created, result.held


async def create_request(request: web.Request) -> web.Response:
    fmt = _fmt(request)
    data = await request.post()
    form = {k: v for k, v in data.items() if isinstance(v, str)}
    _refuse_nul(form)
    _check_jurisdiction(request, form.get("jurisdiction_id") or None)
    client_id = (request.headers.get("Idempotency-Key") or form.get("client_request_id") or "").strip()
    if not client_id:
        raise ApiError(400, "send the request's own id in the Idempotency-Key header or client_request_id, "
                            "so that a retried request never files a second case")
    if not CLIENT_ID.fullmatch(client_id):
        raise ApiError(400, "a client request id is 1-80 letters, digits, dots, colons, dashes or underscores")
    number, created, held = await _db(request, _file, form, form.get("api_key") or "", client_id)
    log.info("open311: %s request %s (client id %s)%s", "filed" if created else "repeated", number, client_id,
             f", held ({held.reason})" if held else "")
    notice = rules()["service_notice"] or None
    if held is not None:  # kept for an operator (core.cases.flood): the client is told, in the notice
        notice = (rules()["duplicate_notice"].format(earlier=held.duplicate_of) if held.duplicate_of
                  else rules()["held_notice"])
    rows = [{"service_request_id": number, "service_notice": notice,
             "account_id": form.get("account_id") or None}]
    return answer(fmt, "service_requests", "request", rows)


@web.middleware
async def errors(request: web.Request, handler):  # noqa: ANN001, ANN201
    """Every failure answered in the spec's error format, in the format asked for."""
    fmt = request.match_info.get("fmt", "json")
    try:
        _refuse_nul(request.query)
        return await handler(request)
    except ApiError as exc:
        log.info("open311: %s %s answered %d: %s", request.method, request.path, exc.status, exc.description)
        return error(fmt, exc.status, exc.description, exc.code)
    except DatabaseBusy:
        raise  # the app answers 503 with Retry-After
    except TooManyPetitions as exc:  # rules [intake.flood] refuse_above: nothing was written
        response = error(fmt, 429, f"too many requests from this phone number ({exc.details['count']} in "
                                   f"{exc.details['window_minutes']} minutes); send it again in {exc.retry_after} "
                                   "seconds with the same client request id")
        response.headers["Retry-After"] = str(exc.retry_after)
        return response
    except web.HTTPRequestEntityTooLarge:
        return error(fmt, 413, f"the request body is larger than {limits.limit_of('form_body_bytes')} bytes; "
                               "a service request is a small form")
    except DomainError as exc:
        log.info("open311: %s %s refused: %s", request.method, request.path, exc.message.splitlines()[0][:200])
        return error(fmt, 404 if exc.__class__.__name__ == "NotFound" else 400, exc.message)
    except web.HTTPException as exc:
        if exc.status == 405:
            return error(fmt, 405, "method not allowed")
        if exc.status == 404:
            return error(fmt, 404, "no such resource: the API has services, requests and tokens, "
                                   "each as .json or .xml")
        return error(fmt, exc.status, exc.reason)
    except Exception:  # a bug: logged with its traceback; the client gets the spec's "general error"
        log.exception("open311: %s %s failed", request.method, request.path)
        return error(fmt, 400, "general service error: the request could not be processed")


def build(shared) -> web.Application:  # noqa: ANN001
    # Bodies are bounded by the root app ([limits] form_body_bytes); a sub-app's own
    # client_max_size would never be consulted.
    api = web.Application(middlewares=[errors])
    api[SERVICES] = shared
    fmt = "{fmt:(json|xml)}"
    api.router.add_get(f"/services.{fmt}", service_list)
    api.router.add_get(r"/services/{code:[A-Za-z0-9_.-]{1,32}}." + fmt, service_definition)
    api.router.add_get(f"/requests.{fmt}", list_requests)
    api.router.add_post(f"/requests.{fmt}", create_request)
    api.router.add_get(r"/requests/{id:[0-9A-Za-z]{1,16}}." + fmt, one_request)
    api.router.add_get(r"/tokens/{token:[^/]{1,80}}." + fmt, token)
    return api



def setup(app: web.Application, shared) -> web.Application:  # noqa: ANN001
    api = build(shared)
    app.add_subapp(PREFIX, api)
    return api

