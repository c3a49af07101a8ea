"""The real twilio REST client against the fake; the signing helper against RequestValidator."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from aiohttp import web
from twilio.base.exceptions import TwilioRestException
from twilio.request_validator import RequestValidator

from ivr.twilio_http import BaseUrlHttpClient, http_client_from_settings, rewrite_twilio_url
from tests.support.fake_twilio import (
    FakeTwilio,
    make_async_twilio_client,
    make_twilio_client,
)
from tests.support.twilio_signing import (
    SIGNATURE_HEADER,
    sign_twilio_json_request,
    sign_twilio_request,
)

IVR_FIXTURES = Path(__file__).resolve().parent.parent / "ivr" / "fixtures"
RESIDENT = "+8613912345678"


@pytest.fixture(scope="module")
def fake():
    with FakeTwilio() as server:
        yield server


def test_create_fetch_update_list(fake: FakeTwilio):
    client = make_twilio_client(fake)
    call = client.calls.create(
        to=RESIDENT,
        from_=fake.phone_number,
        url="https://gl.example/ivr/survey?case=20240612-0031",
        status_callback="https://gl.example/ivr/status",
        status_callback_event=["initiated", "answered", "completed"],
        status_callback_method="POST",
        timeout=25,
        machine_detection="Enable",
    )
    assert call.sid.startswith("CA") and len(call.sid) == 34
    assert call.status == "queued"
    assert call.direction == "outbound-api"
    assert call.to == RESIDENT and call.from_formatted == "(415) 555-0143"
    assert call.date_created is not None  # RFC 2822 parsed by the client
    assert call.uri == f"/2010-04-01/Accounts/{fake.account_sid}/Calls/{call.sid}.json"

    sent = fake.requests[-1]
    assert sent.operation == "create" and sent.authorized and sent.status == 201
    assert sent.params["StatusCallbackEvent"] == ["initiated", "answered", "completed"]
    assert sent.params["Timeout"] == "25" and sent.params["MachineDetection"] == "Enable"

    fake.set_call_status(call.sid, "in-progress")
    fetched = client.calls(call.sid).fetch()
    assert fetched.status == "in-progress" and fetched.start_time is not None

    updated = client.calls(call.sid).update(status="completed")
    assert updated.status == "completed" and updated.end_time is not None
    with pytest.raises(TwilioRestException) as caught:
        client.calls(call.sid).update(url="https://gl.example/ivr/other")
    assert caught.value.status == 400 and caught.value.code == 21220

    listed = client.calls.list(to=RESIDENT, limit=20)
    assert call.sid in [c.sid for c in listed]


def test_pagination_walks_next_page_uri(fake: FakeTwilio):
    client = make_twilio_client(fake)
    for _ in range(3):
        client.calls.create(to="+8613800000000", from_=fake.phone_number, twiml="<Response/>")
    calls = client.calls.list(to="+8613800000000", page_size=2)
    assert len(calls) == 3
    assert [r.params.get("Page") for r in fake.requests if r.operation == "list"][-2:] == [
        None,
        "1",
    ]


def test_validation_errors_and_injected_failures(fake: FakeTwilio):
    client = make_twilio_client(fake)
    with pytest.raises(TwilioRestException) as caught:
        client.calls.create(to=RESIDENT, from_=fake.phone_number)
    assert (caught.value.status, caught.value.code) == (400, 21205)
    with pytest.raises(TwilioRestException) as caught:
        client.calls.create(to="", from_=fake.phone_number, url="https://gl.example/x")
    assert caught.value.code == 21201

    fake.fail_next_create(503)
    with pytest.raises(TwilioRestException) as caught:
        client.calls.create(to=RESIDENT, from_=fake.phone_number, url="https://gl.example/x")
    assert caught.value.status == 503 and caught.value.code == 20503
    # the retry goes through
    call = client.calls.create(to=RESIDENT, from_=fake.phone_number, url="https://gl.example/x")
    assert call.status == "queued"

    with pytest.raises(TwilioRestException) as caught:
        client.calls("CA" + "0" * 32).fetch()
    assert caught.value.status == 404 and caught.value.code == 20404


def test_bad_credentials_raise_401(fake: FakeTwilio):
    client = make_twilio_client(fake, auth_token="not-the-token")
    with pytest.raises(TwilioRestException) as caught:
        client.calls.create(to=RESIDENT, from_=fake.phone_number, url="https://gl.example/x")
    assert caught.value.status == 401
    assert caught.value.code == 20003
    assert fake.requests[-1].authorized is False


async def test_async_client(fake: FakeTwilio):
    client = make_async_twilio_client(fake)
    try:
        call = await client.calls.create_async(
            to=RESIDENT, from_=fake.phone_number, url="https://gl.example/ivr/survey"
        )
        fetched = await client.calls(call.sid).fetch_async()
        assert fetched.sid == call.sid and fetched.status == "queued"
    finally:
        await client.http_client.close()


async def test_status_callback_and_answer_are_signed():
    received: list[tuple[str, dict, str]] = []

    async def hook(request: web.Request) -> web.Response:
        form = await request.post()
        received.append((str(request.url), dict(form), request.headers[SIGNATURE_HEADER]))
        if request.path == "/ivr/survey":
            return web.Response(
                text="<Response><Say>您好</Say></Response>", content_type="text/xml"
            )
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/ivr/status", hook)
    app.router.add_post("/ivr/survey", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    base = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"
    try:
        async with FakeTwilio() as fake:
            client = make_twilio_client(fake)
            call = client.calls.create(
                to=RESIDENT,
                from_=fake.phone_number,
                url=f"{base}/ivr/survey",
                status_callback=f"{base}/ivr/status",
                machine_detection="Enable",
            )
            status, twiml = await fake.deliver_answer(call.sid)
            assert status == 200 and "您好" in twiml
            assert await fake.deliver_status_callback(call.sid, "completed") == 204
    finally:
        await runner.cleanup()

    validator = RequestValidator(fake.auth_token)
    (answer_url, answer, answer_sig), (status_url, cb, cb_sig) = received
    assert validator.validate(answer_url, answer, answer_sig)
    assert validator.validate(status_url, cb, cb_sig)
    assert answer["CallStatus"] == "in-progress" and answer["AnsweredBy"] == "human"
    assert cb["CallStatus"] == "completed" and cb["CallbackSource"] == "call-progress-events"
    assert cb["SequenceNumber"] == "0" and "CallDuration" in cb
    # With answering-machine detection the status callback says who answered, too.
    shape = json.loads((IVR_FIXTURES / "status_completed_amd.json").read_text())
    assert set(cb) <= set(shape) and cb["AnsweredBy"] == "human"


def test_signing_round_trip():
    token = "12345678901234567890123456789012"
    url = "https://gridline.example/ivr/voice?lang=zh"
    params = json.loads((IVR_FIXTURES / "voice_incoming.json").read_text())
    signature = sign_twilio_request(token, url, params)
    validator = RequestValidator(token)
    assert validator.validate(url, params, signature)
    assert not validator.validate(url, {**params, "Digits": "9"}, signature)
    assert not validator.validate(url, params, signature[:-2] + "AA")
    assert not validator.validate(url.replace("zh", "en"), params, signature)
    assert not RequestValidator("another-token").validate(url, params, signature)

    # GET: parameters live in the query string
    get_url = url + "&CallSid=CA123"
    assert validator.validate(get_url, {}, sign_twilio_request(token, get_url))
    # JSON body: bodySHA256 in the URL
    body = '{"event":"x"}'
    signed_url, json_sig = sign_twilio_json_request(token, url, body)
    assert validator.validate(signed_url, body, json_sig)
    assert not validator.validate(signed_url, body + " ", json_sig)


def test_known_signature_vector():
    # Worked example from Twilio's webhook security documentation.
    token = "12345"
    url = "https://mycompany.com/myapp.php?foo=1&bar=2"
    params = {
        "CallSid": "CA1234567890ABCDE",
        "Caller": "+12349013030",
        "Digits": "1234",
        "From": "+12349013030",
        "To": "+18005551212",
    }
    assert sign_twilio_request(token, url, params) == "0/KCTR6DLpKmkAf8muzZqo1nDgQ="


def test_base_url_rewriting():
    base = "http://127.0.0.1:9/proxy/"
    assert (
        rewrite_twilio_url("https://api.twilio.com/2010-04-01/Accounts/AC1/Calls.json?x=1", base)
        == "http://127.0.0.1:9/proxy/2010-04-01/Accounts/AC1/Calls.json?x=1"
    )
    assert rewrite_twilio_url("https://api.dublin.ie1.twilio.com/v1/x", base).startswith(
        "http://127.0.0.1:9/proxy/v1/x"
    )
    assert rewrite_twilio_url("https://example.com/x", base) == "https://example.com/x"
    assert rewrite_twilio_url("https://eviltwilio.com/x", base) == "https://eviltwilio.com/x"
    with pytest.raises(ValueError):
        BaseUrlHttpClient("127.0.0.1:9")
    client = http_client_from_settings("http://127.0.0.1:9", timeout=3)
    assert isinstance(client, BaseUrlHttpClient) and client.timeout == 3
    assert not isinstance(http_client_from_settings(""), BaseUrlHttpClient)
