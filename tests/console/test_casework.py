"""console.casework: every lifecycle action of the case page goes through core.actions,
writes its CaseEvent and an audit row, and settles the flags the rules name."""

from __future__ import annotations

import re

from sqlmodel import select

from core import actions
from core.cases.models import Attachment, CaseEvent, CaseStatus, Channel
from core.people.models import AuditEntry
from core.platform.db import session_scope
from tests.console.conftest import csrf_of, login


async def _act(client, number, action, **data):
    token = await csrf_of(client)
    return await client.post(f"/console/cases/{number}/act/{action}", data={"_csrf": token, **data},
                             allow_redirects=False)


def _case(engine, number):
    with session_scope(engine) as session:
        case = actions.get_case(session, number)
        events = session.exec(select(CaseEvent).where(CaseEvent.case_id == case.id).order_by(CaseEvent.id)).all()
        return case, [(e.action, e.actor) for e in events]


async def test_operator_corrects_classifies_locates_and_dispatches(client, engine, world):
    await login(client, "op")
    n = world.triage_case
    assert (await _act(client, n, "edit_text", description="洋坊新村9号楼路灯坏了")).status == 303
    case, events = _case(engine, n)
    assert case.description == "洋坊新村9号楼路灯坏了" and case.transcript[0]["text"] == "洋坊新村九号楼路灯坏了"
    assert case.flags is None  # the correction settled both transcript flags
    assert ("classify", "console:op") in events and ("flag", "console:op") in events
    assert (await _act(client, n, "classify", category="streetlight", urgency="urgent")).status == 303
    assert (await _act(client, n, "locate", grid=world.district.grids["micro1"].code)).status == 303
    assert (await _act(client, n, "dispatch", worker="W-M1")).status == 303
    case, events = _case(engine, n)
    assert case.status == CaseStatus.dispatched and case.worker_id == world.district.workers["W-M1"].id
    assert case.urgency.value == "urgent" and case.response_due is not None
    assert [a for a, _ in events] == ["submit", "classify", "flag", "classify", "locate", "dispatch"]
    with session_scope(engine) as session:
        audited = session.exec(select(AuditEntry.action).where(AuditEntry.target_id == n,
                                                               AuditEntry.action.like("case.%"))).all()
    assert {"case.edit_text", "case.classify", "case.locate", "case.dispatch"} <= set(audited)


async def test_supervisor_moves_a_stuck_case_through_its_life(client, engine, world):
    await login(client, "sup")
    n = world.other_grid_case
    assert (await _act(client, n, "accept")).status == 303
    case, events = _case(engine, n)
    assert events[-1] == ("accept", "console:sup for W-M2")
    assert (await _act(client, n, "escalate", reason="久拖未办")).status == 303
    assert _case(engine, n)[0].owner_level.value == "area"
    assert (await _act(client, n, "accept")).status == 303
    assert (await _act(client, n, "report_done", note="已拆除")).status == 303
    assert (await _act(client, n, "verify", passed="no", note="还有一根线")).status == 303
    assert _case(engine, n)[0].status == CaseStatus.in_progress
    assert (await _act(client, n, "report_done", note="都拆了")).status == 303
    assert (await _act(client, n, "verify", passed="yes")).status == 303
    assert _case(engine, n)[0].status == CaseStatus.verified
    assert (await _act(client, n, "close", reason="resolved_on_the_phone", note="居民来电说已好",
                      confirmed="yes")).status == 303
    assert _case(engine, n)[0].status == CaseStatus.closed
    assert (await _act(client, n, "reopen", reason="又有人飞线")).status == 303
    assert _case(engine, n)[0].status == CaseStatus.reopened
    assert (await _act(client, n, "annotate", note="已电话联系居民")).status == 303
    assert _case(engine, n)[1][-1] == ("note", "console:sup")


async def test_return_and_merge(client, engine, world):
    await login(client, "w2")  # the owner returns a misrouted case
    resp = await _act(client, world.other_grid_case, "return", reason="不是本网格")
    assert resp.status == 303
    assert _case(engine, world.other_grid_case)[0].status == CaseStatus.returned
    await login(client, "op")
    resp = await _act(client, world.other_grid_case, "merge", into=world.triage_case, confirmed="yes")
    assert resp.status == 303
    case, _ = _case(engine, world.other_grid_case)
    assert case.status == CaseStatus.merged
    _, into_events = _case(engine, world.triage_case)
    assert into_events[-1][0] == "absorb"


async def test_a_role_without_an_action_is_refused(client, engine, world):
    await login(client, "viewer")
    assert (await _act(client, world.triage_case, "annotate", note="看看")).status == 403
    await login(client, "op")
    assert (await _act(client, world.other_grid_case, "escalate", reason="x")).status == 403  # operators do not
    assert (await _act(client, world.triage_case, "fly", note="x")).status == 403


async def test_review_clears_the_flags(client, engine, world):
    await login(client, "op")
    assert (await _act(client, world.triage_case, "review")).status == 303
    assert _case(engine, world.triage_case)[0].flags is None
    again = await _act(client, world.triage_case, "review")
    # The console's own refusal in the page's language (it was an English sentence on a zh page).
    assert again.status == 422 and "这件诉求没有需要核对的内容了" in await again.text()


async def test_duplicate_suggestions_offer_a_merge(client, engine, world):
    with session_scope(engine) as session:
        first = actions.get_case(session, world.other_grid_case)
        twin, _ = actions.submit_petition(session, actions.Petition(
            channel=Channel.chat,
            description="楼道里又有飞线", category_code="flying_lead"))
        actions.locate(session, twin, actor="t", grid_id=first.grid_id, reason="t")
    await login(client, "op")
    html = await (await client.get(f"/console/cases/{twin.number}")).text()
    assert "可能重复的诉求" in html and f'name="into" value="{world.other_grid_case}"' in html


# Core refusals, each with the words a Chinese and an English reader must see, and the
# English sentence core keeps for its logs (which a Chinese page must not show).
REFUSALS = [
    ("reopen", {"reason": "居民不满意"}, "当前为“已受理”，不能重办", "is received: you cannot reopen it",
     "cannot reopen a case that is received"),
    ("merge", {"into": "SELF"}, "不能把诉求并入它自己", "A case cannot be merged into itself",
     "a case cannot be merged into itself"),
    ("close", {"reason": "", "note": ""}, "请选择或填写结案原因", "Choose or write why the case is closed",
     "say why the case is closed"),
]


async def test_core_refusals_are_said_in_the_readers_language(client, engine, world):
    await login(client, "sup")
    n = world.triage_case
    for action, form, zh, en, core_sentence in REFUSALS:
        data = {k: (n if v == "SELF" else v) for k, v in form.items()}
        refused = await _act(client, n, f"{action}?lang=zh", **data)  # ?lang= is remembered: say which
        page = await refused.text()
        assert refused.status in (409, 422), action
        assert zh in page and core_sentence not in page, action
        refused = await _act(client, n, f"{action}?lang=en", **data)
        page = await refused.text()
        assert en in page and zh not in page, action
    assert _case(engine, n)[0].status == CaseStatus.received  # nothing was written


async def test_a_case_number_that_is_not_there_is_said_too(client, world):
    await login(client, "op")
    resp = await client.get("/console/cases/2699999999")
    assert resp.status == 404 and "没有找到诉求 2699999999" in await resp.text()
    resp = await client.get("/console/cases/2699999999?lang=en")
    assert resp.status == 404 and "There is no case 2699999999" in await resp.text()


async def test_the_case_page_says_why_routing_chose_the_grid_in_the_readers_language(client, engine, world):
    """Routing records codes (case.routing_trace); the page says them in Chinese or English,
    and a reason written before traces as it was written."""
    with session_scope(engine) as session:
        routed, _ = actions.submit_petition(session, actions.Petition(channel=Channel.chat, description="路灯坏了"))
        trace = [{"code": "gazetteer_heard", "params": {"how": "pinyin", "heard": "羊坊新村", "place": "洋坊新村"}},
                 {"code": "partial", "params": {"level": "area", "missing": "building", "needs_building": True}}]
        actions.locate(session, routed, actor="t", grid_id=world.district.grids["micro1"].id, trace=trace)
        old, _ = actions.submit_petition(session, actions.Petition(channel=Channel.chat, description="路灯坏了"))
        actions.locate(session, old, actor="t", grid_id=world.district.grids["micro1"].id,
                       reason="gazetteer exact 洋坊新村 (written before traces)")
    await login(client, "op")
    zh = await (await client.get(f"/console/cases/{routed.number}")).text()
    assert "地名库同音匹配：羊坊新村→洋坊新村；片区确定，楼栋未知" in zh
    en = await (await client.get(f"/console/cases/{routed.number}?lang=en")).text()
    assert "gazetteer sound-alike match: 羊坊新村 → 洋坊新村; area certain, building unknown" in en
    assert "gazetteer exact 洋坊新村 (written before traces)" in await (await client.get(f"/console/cases/{old.number}")).text()


def _forms(html: str) -> set[str]:
    return set(re.findall(r'id="act-([a-z_]+)"', html))


async def test_the_page_offers_only_what_the_status_and_role_allow(client, engine, world):
    """Issue 26: every action was offered in every state. Now a received case offers no
    accept or verify, a dispatched one no dispatch, a closed one only reopen and a note."""
    await login(client, "sup")
    received = _forms(await (await client.get(f"/console/cases/{world.triage_case}")).text())
    assert {"classify", "edit_text", "locate", "dispatch", "close", "merge", "annotate", "review"} <= received
    assert not received & {"accept", "start", "report_done", "verify", "reopen", "return"}
    dispatched = _forms(await (await client.get(f"/console/cases/{world.other_grid_case}")).text())
    assert {"accept", "return", "escalate", "classify", "merge", "annotate"} <= dispatched
    assert not dispatched & {"dispatch", "verify", "close", "reopen", "start", "report_done"}
    assert (await _act(client, world.triage_case, "close", reason="withdrawn", confirmed="yes")).status == 303
    closed_html = await (await client.get(f"/console/cases/{world.triage_case}")).text()
    assert _forms(closed_html) == {"reopen", "annotate"}
    assert "居民撤回" in closed_html  # the close reason in words, not its code
    await login(client, "viewer")
    html = await (await client.get(f"/console/cases/{world.triage_case}")).text()
    assert _forms(html) == set() and 'id="actions"' not in html
    await login(client, "w1")  # another worker's case, seen through no grid of theirs: refused outright
    assert (await client.get(f"/console/cases/{world.other_grid_case}")).status == 403


async def test_dispatch_needs_a_category_and_a_grid_and_says_so(client, engine, world):
    await login(client, "op")
    n = world.triage_case
    with session_scope(engine) as session:
        assert actions.get_case(session, n).category_id is None
    html = await (await client.get(f"/console/cases/{n}")).text()
    assert 'id="dispatch-needs-category"' in html and 'id="dispatch-needs-grid"' in html
    grid = world.district.grids["micro1"].code
    refused = await _act(client, n, "dispatch", grid=grid)
    assert refused.status == 422 and "派遣前请先选择诉求类别" in await refused.text()
    assert _case(engine, n)[0].status == CaseStatus.received
    assert (await _act(client, n, "dispatch", category="streetlight", grid=grid)).status == 303
    case, events = _case(engine, n)
    assert case.status == CaseStatus.dispatched and case.category_id is not None
    assert [a for a, _ in events][-2:] == ["classify", "dispatch"]
    assert "needs_triage" not in (case.flags or ())


async def test_merge_and_close_ask_for_confirmation_on_a_page_of_their_own(client, engine, world):
    """Issue 26: merge was one click. Merge and close lead to a page that says what will
    happen (no script needed); only its button, which sends confirmed=yes, takes the step."""
    await login(client, "op")
    html = await (await client.get(f"/console/cases/{world.triage_case}")).text()
    assert 'name="confirmed"' not in html  # the case page's buttons only ask
    for action, form in (("merge", {"into": world.other_grid_case}), ("close", {"reason": "withdrawn"})):
        asked = await _act(client, world.triage_case, action, **form)
        page = await asked.text()
        assert asked.status == 200 and 'id="confirm-form"' in page, action
        assert 'name="confirmed" value="yes"' in page and f'href="/console/cases/{world.triage_case}"' in page
        assert _case(engine, world.triage_case)[0].status == CaseStatus.received  # nothing written yet
    asked = await (await _act(client, world.triage_case, "merge", into=world.other_grid_case)).text()
    assert "确认并入" in asked and world.other_grid_case in asked and "24 小时内可以在本件页面撤销合并" in asked
    assert "138****8000" in asked or "+8613800138000" in asked  # the callers who will hear of it
    assert (await _act(client, world.triage_case, "merge", into=world.other_grid_case, confirmed="yes")).status == 303
    original = await (await client.get(f"/console/cases/{world.other_grid_case}")).text()
    assert 'id="absorbed"' in original and world.triage_case in original
    assert 'id="callers"' in original
    merged = await (await client.get(f"/console/cases/{world.triage_case}")).text()
    assert f'href="/console/cases/{world.other_grid_case}"' in merged


async def test_a_merge_is_undone_within_the_day_and_refused_after(client, engine, world):
    """The merged case offers 撤销合并 until a day after the merge; undoing gives it back as
    it was (its owner, deadlines and flags) and both timelines say so; after the day the
    button is gone and the step is refused in words."""
    from datetime import timedelta

    from core.platform import clock

    n, into = world.other_grid_case, world.triage_case  # a dispatched case joins the one in triage
    before, _ = _case(engine, n)
    await login(client, "op")
    assert (await _act(client, n, "merge", into=into, confirmed="yes")).status == 303
    merged = await (await client.get(f"/console/cases/{n}")).text()
    assert 'id="act-unmerge"' in merged and 'id="unmerge-until"' in merged
    surviving = await (await client.get(f"/console/cases/{into}")).text()
    callers = re.search(r'id="callers">(.*?)</dd>', surviving, re.S).group(1)
    assert n in callers and into in callers  # both callers, each with the number they were given
    assert re.search(rf'class="ev-absorb".*?href="/console/cases/{n}"', surviving, re.S)
    assert (await _act(client, n, "unmerge", reason="不是同一件事")).status == 303
    after, events = _case(engine, n)
    assert after.status == CaseStatus.dispatched and after.worker_id == before.worker_id
    assert after.response_due == before.response_due and after.merged_into_id is None
    assert [a for a, _ in events][-2:] == ["merge", "unmerge"]
    assert _case(engine, into)[1][-1] == ("unabsorb", "console:op")
    page = await (await client.get(f"/console/cases/{into}")).text()
    assert "撤销并入" in page and 'id="absorbed"' not in page

    assert (await _act(client, n, "merge", into=into, confirmed="yes")).status == 303
    clock.freeze(clock.utcnow() + timedelta(hours=24, minutes=5))
    await login(client, "op")
    late = await (await client.get(f"/console/cases/{n}")).text()
    assert 'id="act-unmerge"' not in late
    refused = await _act(client, n, "unmerge")
    assert refused.status == 409 and "不能再撤销合并" in await refused.text()
    assert _case(engine, n)[0].status == CaseStatus.merged


async def test_only_an_admin_shreds_and_only_after_confirming(client, engine, world):
    n = world.triage_case
    with session_scope(engine) as session:
        recording = world.data_dir / session.get(Attachment, world.recording_id).path
    assert recording.is_file()
    await login(client, "op")
    assert (await _act(client, n, "close", reason="withdrawn", confirmed="yes")).status == 303
    assert 'id="act-shred"' not in await (await client.get(f"/console/cases/{n}")).text()
    assert (await _act(client, n, "shred", confirmed="yes")).status == 403
    await login(client, "admin")
    assert 'id="act-shred"' in await (await client.get(f"/console/cases/{n}")).text()
    asked = await _act(client, n, "shred")
    assert asked.status == 200 and "不能撤销" in await asked.text()
    assert _case(engine, n)[0].shredded_at is None
    assert (await _act(client, n, "shred", confirmed="yes")).status == 303
    case, events = _case(engine, n)
    assert case.shredded_at is not None and case.description == "" and events[-1][0] == "shred"
    assert not recording.exists()  # the resident's recording is gone from the store


async def test_the_same_form_sent_twice_is_taken_once(client, engine, world):
    """A double press, or a request retried by the browser: the form's one-time mark is
    taken once and the second answer is the same success."""
    await login(client, "sup")
    n = world.other_grid_case
    token = await csrf_of(client)
    form = {"_csrf": token, "_once": "press-1", "note": "已电话联系居民"}
    for _ in range(2):
        resp = await client.post(f"/console/cases/{n}/act/annotate", data=form, allow_redirects=False)
        assert resp.status == 303
    resp = await client.post(f"/console/cases/{n}/act/escalate", data={**form, "reason": "久拖"},
                             allow_redirects=False)
    assert resp.status == 303  # another action's mark is its own
    notes = [a for a, _ in _case(engine, n)[1] if a == "note"]
    assert notes == ["note"]
    html = await (await client.get(f"/console/cases/{n}")).text()
    marks = re.findall(r'name="_once" value="([^"]+)"', html)
    assert len(marks) == len(set(marks)) > 3  # every form its own mark


def _callers(html: str) -> str:
    return re.search(r'id="callers">(.*?)</dd>', html, re.S).group(1)


async def test_a_merged_case_names_the_other_case_and_both_callers(client, engine, world):
    """Issue 26: both ways of a merge name the other case and its caller — the surviving case
    lists the duplicate's caller, the duplicate the surviving case's (its own marked) — in zh
    and en, each caller masked as the reader's role and that caller's own case say (a
    confidential duplicate's caller is hidden from a viewer even on an open case's page)."""
    dup, into = world.triage_case, world.other_grid_case  # callers +8613800138000 and +8613911112222
    await login(client, "op")
    assert (await _act(client, dup, "merge", into=into, confirmed="yes")).status == 303
    for number in (dup, into):
        zh = _callers(await (await client.get(f"/console/cases/{number}?lang=zh")).text())
        assert dup in zh and into in zh and "+8613800138000" in zh and "+8613911112222" in zh, number
        assert "陈阿婆" in zh  # the registered resident behind the duplicate's number
        assert re.search(rf"{number}</a> （本件）", zh), number  # its own caller marked
        en = await (await client.get(f"/console/cases/{number}?lang=en")).text()
        assert "Callers" in en and re.search(rf"{number}</a> \(this case\)", _callers(en)), number
    merged = await (await client.get(f"/console/cases/{dup}")).text()
    assert 'id="merged-into"' in merged and 'id="absorbed"' not in merged

    with session_scope(engine) as session:
        actions.set_confidential(session, actions.get_case(session, dup), actor="op", confidential=True)
    await login(client, "viewer")
    seen = _callers(await (await client.get(f"/console/cases/{into}")).text())
    assert "139****2222" in seen and "+8613911112222" not in seen  # masked for a viewer
    assert not re.search(r"(?<!\d)8000(?!\d)", seen) and "陈阿婆" not in seen and "***" in seen  # 保密: not even the tail
