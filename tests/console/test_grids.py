"""Grids in the console (issue 26, and issue 24's QR on the grid pages): the tree and the search by
name, placing a case from them with only the grid's staff offered, a grid's page with its QR code
(a PNG that decodes, an A4 poster whose link is signed with the web chat's key), the queue's and
search's filters in the URL, and a survey comment that plays beside its words."""

from __future__ import annotations

import io
import re
import subprocess
from urllib.parse import parse_qs, urlsplit

import pytest
from aiohttp.test_utils import TestClient, TestServer
from PIL import Image
from sqlmodel import select

from chat.resident_web import Signer
from chat.web_store import signing_secret
from core import actions
from core.cases.models import Case
from core.followup.models import Survey
from core.platform.db import session_scope
from core.platform.settings import Settings
from gridline.app import build_app
from tests.console.conftest import csrf_of, login, write_wav

MICRO1, MICRO2 = "3504990010010101", "3504990010010102"


def options_of(html: str, select_id: str) -> list[str]:
    block = html.split(f'id="{select_id}"', 1)[1].split("</select>", 1)[0]
    return re.findall(r'<option value="([^"]*)"', block)


@pytest.fixture
async def chat_client(engine, world):
    """The console with the web chat mounted beside it, as `gridline serve` runs them."""
    app = build_app(Settings(data_dir=world.data_dir, public_url="https://hotline.example.org"), engine=engine,
                    channels=("console", "chat"), run_jobs=False)
    async with TestClient(TestServer(app)) as c:
        yield c


async def test_the_tree_opens_level_by_level_and_the_search_finds_by_name(client, world):
    await login(client, "op")
    html = await (await client.get("/console/grids")).text()
    assert "清溪区" in html and "洋坊片区" not in html  # only the top, closed
    html = await (await client.get("/console/grids?open=35049900100101")).text()
    for name in ("清溪区", "城关街道", "罗布社区", "洋坊片区", "洋坊新村1号微网格", "洋坊新村2号微网格"):
        assert name in html, name
    html = await (await client.get("/console/grids", params={"q": "新村1"})).text()
    found = html.split('id="grid-found"', 1)[1].split("</section>", 1)[0]
    assert "找到 1 个网格" in found and f'data-code="{MICRO1}"' in found and MICRO2 not in found
    assert "罗布社区 › 洋坊片区" in found  # its chain tells two grids of one name apart
    html = await (await client.get("/console/grids", params={"q": "没有这个"})).text()
    assert "没有名称含“没有这个”的网格" in html


async def test_a_case_is_placed_from_the_search_and_dispatched_to_the_grids_own_staff(client, engine, world):
    await login(client, "op")
    number = world.triage_case
    case_page = await (await client.get(f"/console/cases/{number}")).text()
    assert f'href="/console/cases/{number}/place"' in case_page
    html = await (await client.get(f"/console/cases/{number}/place", params={"q": "洋坊新村1"})).text()
    assert f'href="/console/cases/{number}/place?grid={MICRO1}"' in html
    html = await (await client.get(f"/console/cases/{number}/place", params={"grid": MICRO1})).text()
    chosen = html.split('id="chosen"', 1)[1]
    assert "洋坊新村1号微网格" in chosen.split("</h2>", 1)[0]
    assert 'class="here"' in chosen.split('id="chosen-map"', 1)[1].split("</svg>", 1)[0]  # on its map
    # Who may own a case there: the micro grid's worker, then each grid's above it; not the neighbour's.
    assert options_of(html, "place-worker") == ["", "W-M1", "W-A", "W-C", "W-S", "W-D"]
    token = await csrf_of(client, f"/console/cases/{number}/place?grid={MICRO1}")
    resp = await client.post(f"/console/cases/{number}/act/locate", data={"_csrf": token, "grid": MICRO1},
                             allow_redirects=False)
    assert resp.status == 303
    case_page = await (await client.get(f"/console/cases/{number}")).text()
    assert "洋坊新村1号微网格" in case_page.split('id="grid-path"', 1)[1].split("</dd>", 1)[0]
    assert "W-M2" not in options_of(case_page, "dispatch-worker") and "W-M1" in options_of(case_page, "dispatch-worker")
    resp = await client.post(f"/console/cases/{number}/act/dispatch", allow_redirects=False, data={
        "_csrf": token, "grid": MICRO1, "worker": "W-A", "category": "streetlight"})
    assert resp.status == 303, await resp.text()
    with session_scope(engine) as session:
        case = session.exec(select(Case).where(Case.number == number)).one()
        assert case.status.value == "dispatched"
        assert case.grid_id == world.district.grids["micro1"].id
        assert case.worker_id == world.district.workers["W-A"].id


async def test_a_grid_typed_by_its_name_places_the_case_and_an_unknown_one_is_said(client, engine, world):
    await login(client, "op")
    number = world.triage_case
    token = await csrf_of(client, f"/console/cases/{number}")
    resp = await client.post(f"/console/cases/{number}/act/locate", data={"_csrf": token, "grid": "洋坊新村2号微网格"},
                             allow_redirects=False)
    assert resp.status == 303
    with session_scope(engine) as session:
        assert session.exec(select(Case).where(Case.number == number)).one().grid_id == \
            world.district.grids["micro2"].id
    resp = await client.post(f"/console/cases/{number}/act/locate", data={"_csrf": token, "grid": "不存在的网格"})
    assert resp.status == 404
    assert "不存在的网格" in await resp.text()


async def test_placing_is_for_those_who_may_place(client, world):
    await login(client, "w2")  # a worker sees the case in its grid but places nothing
    assert (await client.get(f"/console/cases/{world.other_grid_case}/place")).status == 403
    await login(client, "viewer")
    assert (await client.get(f"/console/cases/{world.triage_case}/place")).status == 403


async def test_a_grid_page_shows_its_chain_staff_cases_and_qr(chat_client, engine, world, tmp_path):
    client = chat_client
    await login(client, "op")
    html = await (await client.get(f"/console/grids/{MICRO2}")).text()
    assert "罗布社区" in html.split('id="grid-path"', 1)[1].split("</p>", 1)[0]
    assert "1 件" in html.split('id="open-cases"', 1)[1].split("</dd>", 1)[0]  # the dispatched chat case
    staff = html.split('id="grid-staff"', 1)[1].split("</ul>", 1)[0]
    assert "林秀英" in staff and "陈炳光" not in staff
    assert f'href="/console/triage?grid={MICRO2}"' in html
    assert f'href="/console/queues/worker/W-M2?grid={MICRO2}"' in html

    png = await client.get(f"/console/grids/{MICRO2}/qr.png?download=1")
    assert png.status == 200 and png.headers["Content-Type"] == "image/png"
    assert "attachment" in png.headers["Content-Disposition"]
    with Image.open(io.BytesIO(await png.read())) as image:
        assert image.format == "PNG" and image.size[0] == image.size[1] >= 300

    pdf = await client.get(f"/console/grids/{MICRO2}/poster.pdf")
    assert pdf.status == 200 and pdf.headers["Content-Type"] == "application/pdf"
    path = tmp_path / "poster.pdf"
    path.write_bytes(await pdf.read())
    info = subprocess.run(["pdfinfo", str(path)], capture_output=True, text=True, check=True).stdout
    assert re.search(r"Page size:\s+595\.\d+ x 841\.\d+ pts \(A4\)", info), info
    assert re.search(r"Pages:\s+1\b", info)
    text = subprocess.run(["pdftotext", "-layout", str(path), "-"], capture_output=True, text=True,
                          check=True).stdout
    assert "洋坊新村2号微网格" in text
    url = next(w for w in text.split() if w.startswith("https://hotline.example.org/chat/?g="))
    assert Signer(signing_secret(engine)).grid_of(parse_qs(urlsplit(url).query)["g"][0]) == MICRO2


async def test_without_the_web_chat_the_grid_page_says_there_is_no_qr(client, world):
    await login(client, "op")
    html = await (await client.get(f"/console/grids/{MICRO2}")).text()
    assert "网上诉求未开通" in html and "qr.png" not in html
    assert (await client.get(f"/console/grids/{MICRO2}/qr.png")).status == 404


async def test_a_worker_opens_only_its_own_grids(client, world):
    await login(client, "w2")
    assert (await client.get(f"/console/grids/{MICRO2}")).status == 200
    assert (await client.get(f"/console/grids/{MICRO1}")).status == 403
    html = await (await client.get("/console/grids")).text()
    assert "洋坊新村2号微网格" in html and "清溪区" not in html


async def test_a_queue_is_filtered_and_sorted_in_its_url(client, world):
    await login(client, "op")
    base = "/console/queues/worker/W-M2"
    html = await (await client.get(base)).text()
    assert 'id="queue-filters"' in html and "共 1 件" in html
    html = await (await client.get(base, params={"channel": "chat", "sort": "newest"})).text()
    assert "共 1 件" in html and world.other_grid_case in html
    assert '<option value="newest" selected' in html
    html = await (await client.get(base, params={"channel": "hotline"})).text()
    assert "共 0 件" in html and world.other_grid_case not in html
    html = await (await client.get(base, params={"grid": MICRO1})).text()
    assert "共 0 件" in html
    resp = await client.get(base, params={"status": "closed"})  # a queue holds no closed case
    assert resp.status == 422 and "筛选条件“状态”不能取“closed”" in await resp.text()


async def test_search_takes_flags_and_overdue_and_says_how_many(client, world):
    await login(client, "op")
    html = await (await client.get("/console/search", params={"flag": "low_confidence"})).text()
    assert "共 1 件" in html and world.triage_case in html and world.other_grid_case not in html
    html = await (await client.get("/console/search", params={"flag": "no_grid", "overdue": "no"})).text()
    assert world.triage_case in html
    resp = await client.get("/console/search", params={"flag": "made_up"})
    assert resp.status == 422 and "made_up" in await resp.text()


async def test_a_survey_comment_plays_beside_its_words(client, engine, world):
    rel = "recordings/20261120/CA-test-comment.wav"
    size = write_wav(world.data_dir / rel, seconds=2.0)
    with session_scope(engine) as session:
        case = actions.get_case(session, world.other_grid_case)
        survey = Survey(case_id=case.id, channel="phone")
        session.add(survey)
        session.flush()
        actions.survey_comment(session, survey, actor="resident", text="路灯修好了，谢谢",
                               file=actions.FileRef("survey_comment", rel, "audio/wav", size))
    await login(client, "op")
    html = await (await client.get(f"/console/cases/{world.other_grid_case}")).text()
    block = html.split('class="recording comment"', 1)[1].split("</div>", 1)[0]
    file_id = re.search(r'/files/(\d+)"></audio>', block).group(1)
    assert 'class="w" data-start="0.00">路灯修好了，谢谢</button>' in block
    audio = await client.get(f"/console/cases/{world.other_grid_case}/files/{file_id}", headers={"Range": "bytes=0-9"})
    assert audio.status == 206 and audio.headers["Content-Type"] == "audio/wav"


async def test_search_sorts_as_asked_and_keeps_the_sort_in_its_links(client, world):
    await login(client, "op")
    html = await (await client.get("/console/search", params={"date_from": "2000-01-01"})).text()
    assert html.index(world.other_grid_case) < html.index(world.triage_case)  # newest first unless asked
    html = await (await client.get("/console/search", params={"date_from": "2000-01-01", "sort": "oldest"})).text()
    assert html.index(world.triage_case) < html.index(world.other_grid_case)
    assert '<option value="oldest" selected' in html and "共 2 件" in html
    resp = await client.get("/console/search", params={"date_from": "2000-01-01", "sort": "sideways"})
    assert resp.status == 422 and "sideways" in await resp.text()


async def test_an_account_without_grids_is_told_so(client, world):
    await login(client, "dept")  # a department answers for no grid of its own
    html = await (await client.get("/console/grids")).text()
    assert "您的账号没有负责的网格" in html and "清溪区" not in html
