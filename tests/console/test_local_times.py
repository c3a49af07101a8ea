"""Every time the console shows is the district's local time and names its zone: a time of
day stands in a ``<time>`` that carries the instant and the zone, and every page's header
says which zone its times are in — walked over each role's pages on both databases."""

from __future__ import annotations

import re
from html.parser import HTMLParser

from tests.console.conftest import login
from tests.console.test_words_zh import _lived_case, _pages_of

TIME_OF_DAY = re.compile(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}|\b\d{2}-\d{2} \d{2}:\d{2}")


class _Times(HTMLParser):
    """Text outside ``<time>`` elements, and the ``<time>`` elements with their attributes."""

    def __init__(self) -> None:
        super().__init__()
        self.outside: list[str] = []
        self.times: list[tuple[dict, str]] = []
        self._in_time: dict | None = None
        self._hidden = 0

    def handle_starttag(self, tag, attrs):  # noqa: ANN001
        if tag in ("script", "style"):
            self._hidden += 1
        if tag == "time":
            self._in_time = dict(attrs)

    def handle_endtag(self, tag):  # noqa: ANN001
        if tag in ("script", "style") and self._hidden:
            self._hidden -= 1
        if tag == "time":
            self._in_time = None

    def handle_data(self, data):  # noqa: ANN001
        if self._hidden:
            return
        if self._in_time is not None:
            self.times.append((self._in_time, data))
        else:
            self.outside.append(data)


async def test_every_time_shown_is_local_and_labelled(client, engine, world):
    number = _lived_case(engine, world)
    problems: list[str] = []
    labelled = 0
    for account in ("admin", "op", "w1"):
        await login(client, account)
        for path in [*await _pages_of(client), f"/console/cases/{number}", "/console/audit"]:
            resp = await client.get(path)
            html = await resp.text()
            assert "时间均为 UTC+8" in html, (account, path)
            page = _Times()
            page.feed(html)
            for text in page.outside:  # outside a <time>, a time names its zone where it stands
                problems += [f"{account} {path}: {m.group()!r} unlabelled" for m in TIME_OF_DAY.finditer(text)
                             if not text[m.end():].startswith(" UTC+8")]
            for attrs, text in page.times:
                labelled += 1
                assert attrs.get("title") == "UTC+8", (path, attrs)
                # the instant it names is the local time shown, with its offset
                assert attrs["datetime"].endswith("+08:00") and attrs["datetime"][11:16] in text, (attrs, text)
    assert labelled > 10
    assert problems == []


async def test_the_case_page_shows_the_local_hour_not_utc(client, engine, world):
    number = _lived_case(engine, world)
    await login(client, "admin")
    html = await (await client.get(f"/console/cases/{number}")).text()
    stamps = re.findall(r'<time datetime="([^"]+)" title="UTC\+8">([^<]+)</time>', html)
    assert stamps
    for instant, shown in stamps:
        assert instant[:10] + " " + instant[11:16] == shown[:16], (instant, shown)


async def test_english_pages_name_the_zone_too(client, engine, world):
    await login(client, "admin")
    html = await (await client.get("/console/search?lang=en")).text()
    assert "Times in UTC+8" in html
