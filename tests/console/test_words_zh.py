"""Chinese everywhere (issue 26): every page each role opens, and every refusal the case page
can give, read in Mandarin shows no code (``needs_triage``, ``reported_done``, ``system``)
and no English sentence — over a real aiohttp server on both databases."""

from __future__ import annotations

import re
from html.parser import HTMLParser

from sqlmodel import select

from core import actions
from core.cases.models import Case, Channel
from core.platform.db import session_scope
from tests.console.conftest import csrf_of, login

# What a person reads: text, and the attributes a browser shows (placeholder, title, alt …).
SHOWN_ATTRIBUTES = ("placeholder", "title", "alt", "aria-label")
SNAKE = re.compile(r"\b[a-z]+(?:_[a-z0-9]+)+\b")
# Two English words in a row are a phrase ("via hotline"); a single Latin word may be a name.
SENTENCE = re.compile(r"\b[A-Za-z]{2,}(?:[ ,'’]+[A-Za-z]{2,})+")
ACTOR_CODE = re.compile(r"\b(?:system|hotline|console|resident|worker|leader|demo|cli)(?::|\b(?= ))")
# ASCII that is not a word to translate: the language switch's own name, account names,
# worker codes and the numbers of cases.
ALLOWED = {"English"}


class _Shown(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.parts: list[str] = []
        self._hidden = 0

    def handle_starttag(self, tag, attrs):  # noqa: ANN001
        if tag in ("script", "style", "title", "code", "pre"):
            self._hidden += 1
        values = dict(attrs)
        if values.get("type") == "hidden":
            return
        self.parts.extend(str(values[a]) for a in SHOWN_ATTRIBUTES if values.get(a))

    def handle_endtag(self, tag):  # noqa: ANN001
        if tag in ("script", "style", "title", "code", "pre") and self._hidden:
            self._hidden -= 1

    def handle_data(self, data):  # noqa: ANN001
        if not self._hidden and data.strip():
            self.parts.append(data.strip())


def shown_text(html: str) -> list[str]:
    parser = _Shown()
    parser.feed(html)
    return parser.parts


def foreign_words(html: str, names: set[str]) -> list[str]:
    """The pieces of a page a Mandarin reader would find in code or in English."""
    bad = []
    for piece in shown_text(html):
        for found in (*SNAKE.findall(piece), *SENTENCE.findall(piece), *ACTOR_CODE.findall(piece)):
            if found.strip(" :") not in ALLOWED | names:
                bad.append(f"{found!r} in {piece[:80]!r}")
    return bad


ACCOUNTS = ("admin", "op", "sup", "viewer", "w1", "w2", "dept")


def _lived_case(engine, world) -> str:
    """A case that went all the way: dispatched, accepted, done, verified, closed with a
    reason code and a note, carrying flags on the way (its timeline names every kind of actor)."""
    with session_scope(engine) as session:
        case, _ = actions.submit_petition(session, actions.Petition(
            channel=Channel.hotline,
            description="楼下垃圾三天没人收", category_code="flying_lead",
            flags=("needs_triage", "low_confidence")), actor="hotline")
        actions.locate(session, case, actor="system", grid_id=world.district.grids["micro2"].id,
                       reason="console.located")
        actions.dispatch(session, case, actor="console:op")
        actions.accept(session, case, actor="worker:W-M2")
        actions.report_done(session, case, actor="worker:W-M2", note="已清运")
        actions.verify(session, case, actor="leader")
        actions.close(session, case, actor="system:sla", reason="resolved_on_the_phone: 居民满意")
        return case.number


async def _pages_of(client) -> list[str]:
    """The menu of the logged-in account, plus its own pages."""
    html = await (await client.get("/console/search")).text()
    paths = re.findall(r'<nav>(.*?)</nav>', html, re.S)
    menu = re.findall(r'href="(/console/[^"?]+)"', paths[0]) if paths else []
    return [*menu, "/console/account", "/console/", "/console/queues/mine",
            "/console/search?status=closed", "/console/search?text=路灯"]


async def test_every_page_of_every_role_is_in_chinese(client, engine, world):
    lived = _lived_case(engine, world)
    with session_scope(engine) as session:
        numbers = [n for n in session.exec(select(Case.number)).all()]
    assert lived in numbers
    problems: dict[str, list[str]] = {}
    walked = 0
    for account in ACCOUNTS:
        await login(client, account)
        paths = await _pages_of(client)
        paths += [f"/console/cases/{n}" for n in numbers]
        for path in paths:
            resp = await client.get(path)
            if resp.status == 403 and path.startswith("/console/cases/"):
                pass  # out of this account's scope: the refusal page is checked like any other
            html = await resp.text()
            assert "<h1>" in html, (account, path, resp.status)
            walked += 1
            bad = foreign_words(html, set(ACCOUNTS))
            if bad:
                problems[f"{account} {path}"] = bad
    assert walked > 60
    assert problems == {}


async def test_the_closed_case_says_who_and_why_in_words(client, engine, world):
    lived = _lived_case(engine, world)
    await login(client, "sup")
    html = await (await client.get(f"/console/cases/{lived}")).text()
    assert "电话中已解答：居民满意" in html  # the close reason's code in words, the note as typed
    assert "系统 · 时限检查" in html and "网格员 · W-M2" in html and "领导" in html and "控制台 · op" in html
    assert "resolved_on_the_phone" not in html


ERRORS = (
    "/console/cases/999999", "/console/search?date_from=yesterday", "/console/search?grid=nowhere",
    "/console/search?status=lost", "/console/queues/worker/NOBODY", "/console/nothing-here",
    "/console/search?channel=fax", "/console/reports/download?kind=nothing&format=pdf",
    "/console/reports/download?kind=monthly&period=2026-13&format=pdf",
    "/console/reports/download?kind=monthly&period=2026-11&format=doc",
)


async def test_every_error_page_is_in_chinese(client, engine, world):
    await login(client, "admin")
    for path in ERRORS:
        resp = await client.get(path)
        html = await resp.text()
        assert resp.status >= 400, path
        assert 'class="error"' in html or 'id="error"' in html, path
        assert foreign_words(html, set(ACCOUNTS)) == [], path


# Every refusal the case page can give: (account, which case, action, form).
REFUSALS = (
    ("sup", "triage", "verify", {}),
    ("sup", "triage", "reopen", {"reason": "不满意"}),
    ("sup", "triage", "merge", {"into": "SELF", "confirmed": "yes"}),
    ("sup", "triage", "merge", {"into": "999999"}),
    ("sup", "triage", "merge", {"into": ""}),
    ("sup", "triage", "close", {}),
    ("sup", "triage", "dispatch", {}),
    ("sup", "triage", "dispatch", {"category": "flying_lead"}),
    ("sup", "triage", "dispatch", {"category": "no_such_thing", "grid": "1"}),
    ("sup", "triage", "locate", {"grid": "nowhere"}),
    ("sup", "triage", "locate", {}),
    ("sup", "triage", "classify", {"urgency": "whenever"}),
    ("sup", "triage", "edit_text", {"description": ""}),
    ("sup", "triage", "annotate", {"note": ""}),
    ("sup", "triage", "return", {"reason": "x"}),
    ("sup", "triage", "escalate", {"reason": "x"}),
    ("sup", "other", "return", {"reason": ""}),
    ("sup", "other", "annotate", {"note": "长" * 5000}),
    ("sup", "other", "dispatch", {"grid": "x"}),
    ("op", "other", "review", {}),
    ("op", "triage", "unmerge", {}),
    ("admin", "triage", "shred", {"confirmed": "yes"}),
)


async def test_every_refusal_of_the_case_page_is_in_chinese(client, engine, world):
    numbers = {"triage": world.triage_case, "other": world.other_grid_case}
    account = None
    for who, which, action, form in REFUSALS:
        if who != account:
            await login(client, who)
            account = who
        data = {k: numbers["triage"] if v == "SELF" else numbers["other"] if v == "OTHER" else v
                for k, v in form.items()}
        token = await csrf_of(client)
        resp = await client.post(f"/console/cases/{numbers[which]}/act/{action}", data={"_csrf": token, **data},
                                 allow_redirects=False)
        html = await resp.text()
        assert resp.status in (404, 409, 422), (action, form, resp.status)
        assert 'role="alert"' in html, (action, form)
        message = re.search(r'role="alert"[^>]*>(.*?)</p>', html, re.S).group(1)
        assert re.search(r"[\u4e00-\u9fff]", message), (action, form, message)
        # what the person typed may be echoed back in the message: it is theirs, not a code
        assert foreign_words(html, set(ACCOUNTS) | set(form.values())) == [], (action, form)


async def test_the_confirm_pages_the_undo_and_the_ended_session_are_in_chinese(client, engine, world):
    """Issue 26: merge, close and shred ask on a page of their own; a merge is undone within
    the day and refused after; a form sent after the session ended gets a page with the way
    back. Every one of them in words."""
    from datetime import timedelta

    from core.platform import clock

    numbers = (world.triage_case, world.other_grid_case)
    await login(client, "admin")
    pages = []
    for action, form in (("merge", {"into": numbers[1]}), ("close", {"reason": "withdrawn", "note": "居民来电撤回"})):
        token = await csrf_of(client)
        resp = await client.post(f"/console/cases/{numbers[0]}/act/{action}", data={"_csrf": token, **form})
        assert resp.status == 200 and 'id="confirm-form"' in (html := await resp.text()), action
        pages.append((action, html))
    token = await csrf_of(client)
    assert (await client.post(f"/console/cases/{numbers[0]}/act/merge",
                              data={"_csrf": token, "into": numbers[1], "confirmed": "yes"})).status == 200
    pages.append(("merged", await (await client.get(f"/console/cases/{numbers[0]}")).text()))
    pages.append(("surviving", await (await client.get(f"/console/cases/{numbers[1]}")).text()))
    token = await csrf_of(client)
    resp = await client.post(f"/console/cases/{numbers[0]}/act/shred", data={"_csrf": token})
    pages.append(("shred", await resp.text()))
    assert resp.status == 200 and "确认销毁" in pages[-1][1]
    clock.freeze(clock.utcnow() + timedelta(hours=25))
    await login(client, "admin")  # a day later: a new session
    token = await csrf_of(client)
    resp = await client.post(f"/console/cases/{numbers[0]}/act/unmerge", data={"_csrf": token})
    assert resp.status == 409 and "不能再撤销合并" in (late := await resp.text())
    pages.append(("too late", late))
    client.session.cookie_jar.clear()
    resp = await client.post(f"/console/cases/{numbers[1]}/act/annotate", data={"note": "写了一半"})
    assert resp.status == 401 and "登录已过期" in (ended := await resp.text())
    pages.append(("ended", ended))
    for what, html in pages:
        assert foreign_words(html, set(ACCOUNTS)) == [], what
