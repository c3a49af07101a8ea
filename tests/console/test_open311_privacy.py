"""Open311 publishes no personal data, free text included: the thirty petitions of
tests/core/fixtures/pii_corpus.json filed as cases of registered residents (with their
households), read back through the real app one by one, as a list and in XML; none of the
planted data leaks. A rule turns descriptions off altogether."""

from __future__ import annotations

import json
from urllib.parse import quote

import pytest
from aiohttp.test_utils import TestClient, TestServer

from core import actions
from core.cases.models import Channel
from core.people.models import Resident
from core.places.models import Household
from core.platform import rules
from core.platform.db import session_scope
from core.platform.rules import reload_rules
from core.platform.settings import Settings
from gridline.app import build_app
from tests.core.district import build_district
from tests.core.people.test_redaction import CORPUS, digits_of, leaks


@pytest.fixture
def filed(engine) -> dict[str, dict]:
    """Each corpus item as a case of its resident, whose household holds the other names."""
    numbers: dict[str, dict] = {}
    with session_scope(engine) as session:
        district = build_district(session)
        for n, item in enumerate(CORPUS):
            household = Household(code=f"PII{n:02d}", address=f"翠竹园{n}幢", grid_id=district.grids["micro1"].id)
            session.add(household)
            session.flush()
            resident = Resident(name=item["resident"]["name"], phone=item["resident"]["phone"],
                                household_id=household.id)
            session.add(resident)
            for member in item["household"]:
                session.add(Resident(name=member, household_id=household.id))
            session.flush()
            case, _ = actions.submit_petition(session, actions.Petition(
                channel=Channel.chat, description=item["text"], resident_id=resident.id,
                contact_phone=item["resident"]["phone"], category_code="streetlight",
                idempotency_key=f"pii|{item['id']}"), actor="resident:chat")
            numbers[case.number] = item
    return numbers


@pytest.fixture
async def api(engine, filed, tmp_path):
    app = build_app(Settings(data_dir=tmp_path), engine=engine, channels=("open311",), run_jobs=False)
    async with TestClient(TestServer(app)) as client:
        yield client


async def fetch(api, path: str) -> str:  # noqa: ANN001
    resp = await api.get(path)
    assert resp.status == 200, await resp.text()
    return await resp.text()


async def test_no_planted_data_leaks_from_one_request_or_the_list(api, filed):
    for number, item in filed.items():
        body = await fetch(api, f"/open311/v2/requests/{number}.json")
        (row,) = json.loads(body)
        assert row["description"] and leaks(body, item) == [], (item["id"], row["description"])
        assert [k for k in item["keep"] if k not in row["description"]] == [], (item["id"], row["description"])
        xml = await fetch(api, f"/open311/v2/requests/{number}.xml")
        assert leaks(xml, item) == [], item["id"]
    listed = await fetch(api, "/open311/v2/requests.json")
    rows = json.loads(listed)
    assert {r["service_request_id"] for r in rows} == set(filed)
    by_id = await fetch(api, "/open311/v2/requests.json?service_request_id=" + quote(",".join(filed)))
    for body in (listed, by_id):
        for row in json.loads(body):
            item = filed[row["service_request_id"]]
            assert leaks(json.dumps(row, ensure_ascii=False), item) == [], (item["id"], row["description"])
    every_planted_number = [digits_of(p) for i in CORPUS for p in i["planted"] if len(digits_of(p)) >= 7]
    assert not any(d in digits_of(listed) for d in every_planted_number)


@pytest.fixture
def descriptions_off(tmp_path, monkeypatch):
    path = tmp_path / "rules.toml"
    path.write_text("[open311]\npublish_descriptions = false\n", "utf-8")
    monkeypatch.setenv(rules.RULES_ENV, str(path))
    reload_rules()
    yield
    monkeypatch.delenv(rules.RULES_ENV)
    reload_rules()


async def test_a_district_that_does_not_publish_descriptions_serves_the_category_alone(api, filed,
                                                                                        descriptions_off):
    rows = json.loads(await fetch(api, "/open311/v2/requests.json"))
    assert len(rows) == 30 and {r["description"] for r in rows} == {"路灯"}
    assert {r["service_code"] for r in rows} == {"streetlight"}
