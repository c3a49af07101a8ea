"""The web chat's rate limits hold across instances: two Gridline apps on one database (SQLite
file or PostgreSQL) count a device's and an address's posts in the same buckets
(``core.platform.buckets``), so a resident switched between instances by the load balancer
gets no more posts a minute than from one."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from chat.resident_web import web_rules
from chat.web_store import forget_buckets
from tests.chat.webchat_support import Resident as Phone
from tests.chat.webchat_support import WebServer


def _rules(**limits: float) -> dict:
    return {**web_rules(), **limits}


@pytest.fixture
async def two_servers(engine, tmp_path):
    rules = _rules(device_per_minute=6, address_per_minute=600)
    servers = [WebServer(engine, tmp_path / name, options={"rules": rules}) for name in ("a", "b")]
    for server in servers:
        await server.start()
    yield servers
    for server in servers:
        await server.stop()


async def _post(phone: Phone, url: str, i: int) -> int:
    """One post of the phone to the instance at ``url``; its status."""
    body = {"kind": "text", "text": f"第{i}条", "key": f"limit-post-{i:04d}"}
    async with phone.http.post(f"{url}/chat/api/step", json=body, headers={"X-CSRF-Token": phone.csrf}) as r:
        await r.read()
        return r.status


async def test_a_device_is_limited_across_two_instances(two_servers, engine):
    a, b = two_servers
    phone = Phone(a.url)
    try:
        await phone.open()
        # the same cookie, alternately at each instance: six posts in all, not six at each
        statuses = [await _post(phone, (a, b)[i % 2].url, i) for i in range(12)]
        assert statuses[:6] == [200] * 6, statuses
        assert statuses[6:] == [429] * 6, statuses
        # another device is not held up, at either instance
        other = Phone(b.url)
        try:
            await other.open()
            assert await _post(other, a.url, 100) == 200
            assert await _post(other, b.url, 101) == 200
        finally:
            await other.close()
    finally:
        await phone.close()


async def test_an_address_is_limited_across_two_instances(engine, tmp_path):
    rules = _rules(device_per_minute=100, address_per_minute=5)
    servers = [WebServer(engine, tmp_path / name, options={"rules": rules}) for name in ("a", "b")]
    phones: list[Phone] = []
    try:
        for server in servers:
            await server.start()
        for i in range(4):  # four phones behind one address (127.0.0.1), at both instances
            phone = Phone(servers[i % 2].url)
            await phone.open()
            phones.append(phone)
        statuses = [await _post(phones[i % 4], servers[i % 2].url, i) for i in range(8)]
        assert statuses == [200] * 5 + [429] * 3, statuses
    finally:
        for phone in phones:
            await phone.close()
        for server in servers:
            await server.stop()


async def test_a_throttled_post_says_how_long_to_wait_and_old_buckets_are_forgotten(two_servers, engine):
    a, b = two_servers
    phone = Phone(a.url)
    try:
        await phone.open()
        for i in range(6):
            assert await _post(phone, b.url, i) == 200
        body = {"kind": "text", "text": "再来一条", "key": "limit-post-late"}
        async with phone.http.post(f"{a.url}/chat/api/step", json=body, headers={"X-CSRF-Token": phone.csrf}) as r:
            assert r.status == 429
            refused = await r.json()
            wait = int(r.headers["Retry-After"])
        assert 1 <= wait <= 11  # a token every 10 s at 6 a minute
        assert str(wait) in refused["text"]
    finally:
        await phone.close()
    with engine.begin() as conn:
        rows = conn.execute(text("SELECT count(*) FROM send_bucket WHERE key LIKE 'webchat:%'")).scalar_one()
        assert rows == 2  # the device's and the address's
        conn.execute(text("UPDATE send_bucket SET stamp = stamp - 7200"))
    assert forget_buckets(engine) == 2
