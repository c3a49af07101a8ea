"""console.access: one scoping function for every page and file, masking by role (rules
data), and an audit row for every view of personal data."""

from __future__ import annotations

from sqlmodel import select

from console.access import (
    Principal,
    case_scope,
    principal_for,
    role_rules,
    scoped,
)
from console.models import ConsoleUser
from core import actions
from core.cases.models import Case, Channel
from core.people.models import AuditEntry
from core.platform.db import session_scope
from tests.console.conftest import PASSWORD, PHONE, csrf_of, login


def _principal(engine, name) -> Principal:
    with session_scope(engine) as session:
        return principal_for(session, session.exec(select(ConsoleUser).where(ConsoleUser.name == name)).one())


def _visible(engine, name) -> set[str]:
    p = _principal(engine, name)
    with session_scope(engine) as session:
        return set(session.exec(scoped(select(Case.number), p)).all())


def test_operators_see_every_case_workers_their_own_and_their_grids(engine, world):
    everything = {world.triage_case, world.other_grid_case}
    assert _visible(engine, "op") == everything and _visible(engine, "sup") == everything
    assert case_scope(_principal(engine, "op")) is None
    # w2 (W-M2) owns the dispatched case in micro grid 2; w1 (micro grid 1) sees neither
    assert _visible(engine, "w2") == {world.other_grid_case}
    assert _visible(engine, "w1") == set()
    # the department of the category owns the dispatched case
    assert _visible(engine, "dept") == {world.other_grid_case}


def test_a_grid_includes_the_grids_below_it(engine, world):
    from console.auth import add_user

    with session_scope(engine) as session:
        add_user(session, "area-lead", "correct horse battery", "worker", grid_codes=[world.district.grids["area"].code])
        case = actions.get_case(session, world.triage_case)
        actions.locate(session, case, actor="t", grid_id=world.district.grids["micro1"].id, reason="t")
    assert _visible(engine, "area-lead") == {world.triage_case, world.other_grid_case}


def test_an_account_with_nothing_to_answer_for_sees_nothing(engine, world):
    from console.access import RoleRules

    p = Principal(1, "x", "worker", None, None, "zh", RoleRules("own", False, frozenset(), frozenset()))
    with session_scope(engine) as session:
        assert session.exec(scoped(select(Case.id), p)).all() == []


def test_phone_rules_are_data():
    assert role_rules("operator").see_phone and not role_rules("viewer").see_phone
    assert not role_rules("department").see_phone
    assert role_rules("no-such-role").pages == frozenset()


async def test_a_worker_cannot_open_another_grids_case_or_its_audio(client, world):
    await login(client, "w1")
    page = await client.get(f"/console/cases/{world.other_grid_case}")
    assert page.status == 403
    audio = await client.get(f"/console/cases/{world.triage_case}/files/{world.recording_id}")
    assert audio.status == 403
    # no Range trick either
    ranged = await client.get(f"/console/cases/{world.triage_case}/files/{world.recording_id}",
                              headers={"Range": "bytes=0-99"})
    assert ranged.status == 403
    # a case-search shows none of them
    html = await (await client.get("/console/search?text=飞线")).text()
    assert world.other_grid_case not in html
    # and actions on it are refused the same way
    token = await csrf_of(client)
    act = await client.post(f"/console/cases/{world.other_grid_case}/act/accept", data={"_csrf": token})
    assert act.status == 403


async def test_a_worker_opens_its_own_case(client, world):
    await login(client, "w2")
    page = await client.get(f"/console/cases/{world.other_grid_case}")
    assert page.status == 200


async def test_phone_numbers_are_masked_by_role(client, world):
    shown = {}
    for name in ("op", "viewer", "dept", "w2"):
        await login(client, name)
        html = await (await client.get(f"/console/cases/{world.other_grid_case}")).text()
        shown[name] = html.split('id="phone">', 1)[1].split("<", 1)[0]
    assert shown["op"] == "+8613911112222" and shown["w2"] == "+8613911112222"
    assert shown["viewer"] == "139****2222" and shown["dept"] == "139****2222"


async def test_resident_names_are_masked_too(client, engine, world):
    await login(client, "viewer")
    html = await (await client.get(f"/console/cases/{world.triage_case}")).text()
    assert "陈**" in html and "陈阿婆" not in html and PHONE not in html


async def test_phone_search_only_for_roles_that_see_phones(client, world):
    await login(client, "viewer")
    assert (await client.get("/console/search?phone=13800138000")).status == 403
    await login(client, "op")
    html = await (await client.get("/console/search?phone=13800138000")).text()
    assert world.triage_case in html


async def test_every_view_of_personal_data_has_its_audit_row(client, engine, world):
    await login(client, "op")
    number = world.triage_case
    assert (await client.get(f"/console/cases/{number}")).status == 200
    assert (await client.get(f"/console/cases/{number}/files/{world.recording_id}",
                             headers={"Range": "bytes=100-199"})).status == 206
    assert (await client.get("/console/search?phone=13800138000")).status == 200
    with session_scope(engine) as session:
        rows = session.exec(select(AuditEntry).where(AuditEntry.actor == "console:op")
                            .order_by(AuditEntry.id)).all()
    views = [(r.action, r.target_id) for r in rows if r.action not in ("console.login", "console.device_trust")]
    assert views == [("case.view", number), ("case.file", number), ("case.search_phone", "13800138000")]
    assert all(r.remote == "127.0.0.1" for r in rows)
    assert rows[-2].detail == {"attachment": world.recording_id, "kind": "recording"}


async def test_admins_read_the_audit_log(client, world):
    await login(client, "op")
    await client.get(f"/console/cases/{world.triage_case}")
    await login(client, "admin")
    html = await (await client.get("/console/audit?actor=console:op")).text()
    assert "查看诉求" in html and world.triage_case in html  # the action in words (issue 26)
    assert ">case.view<" not in html
    await login(client, "op")
    assert (await client.get("/console/audit")).status == 403


async def test_chat_case_for_scoping_needs_no_grid(engine, world):
    """A case without a grid is visible to scope-all roles only."""
    with session_scope(engine) as session:
        case, _ = actions.submit_petition(session, actions.Petition(channel=Channel.chat, description="无网格"))
    assert case.number in _visible(engine, "op") and case.number not in _visible(engine, "w2")


async def test_a_community_account_lands_on_its_communitys_queues(client, engine, world):
    """Issue 26: an account scoped to a community (grids, no worker or department of its own)
    landed on an empty queue page. Now it sees the workers of its grids with their open
    cases, and opens their queues (its own grids' cases only)."""
    from console.auth import add_user

    with session_scope(engine) as session:
        add_user(session, "luobu", PASSWORD, "department", grid_codes=[world.district.grids["community"].code])
    await login(client, "luobu")
    home = await client.get("/console/", allow_redirects=True)
    html = await home.text()
    assert home.url.path == "/console/queues"
    assert 'href="/console/queues/worker/W-M2"' in html and 'href="/console/queues/worker/W-C"' in html
    queue = await client.get("/console/queues/worker/W-M2")
    assert queue.status == 200 and world.other_grid_case in await queue.text()
