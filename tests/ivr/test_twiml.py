"""The TwiML of each step: keypad-only Gathers, the Mandarin voice, digits read one by one."""

from __future__ import annotations

import asyncio
import xml.etree.ElementTree as ET
from datetime import datetime, time

from typer.testing import CliRunner

from ivr.config import FlowConfig, load_prompts, parse_service_hours
from ivr.flow import Flow, read_digits

from .conftest import KNOWN_PHONE, TOKEN, tone


def flow() -> Flow:
    return Flow(FlowConfig.load(), "https://hotline.example.org/")


def test_case_number_is_read_digit_by_digit_with_yao_for_one():
    assert read_digits("2611220001", load_prompts("zh")) == "二 六 幺 幺 二 二 零 零 零 幺"


def test_every_gather_takes_keys_only_and_every_say_is_mandarin():
    f = flow()
    docs = [f.menu(greet=True, community="幸福社区"), f.readback(segment="petition-1", text="路灯坏了"),
            f.status_ask(), f.status_result(number="2611220001", status="已派遣", due=datetime(2026, 11, 30),
                                            closed=None),
            f.record(kind="petition", segment="petition-1", token="t", call_sid="CA1"), f.filed("2611220001")]
    for doc in docs:
        root = ET.fromstring(doc)
        for gather in root.iter("Gather"):
            assert gather.get("input") == "dtmf"  # no cloud speech recognition
        for say in root.iter("Say"):
            assert say.get("voice") == "Polly.Zhiyu" and say.get("language") == "cmn-CN"
    filed = ET.fromstring(f.filed("2611220001"))
    spoken = [s.text for s in filed.iter("Say")]
    assert sum("二 六 幺 幺 二 二 零 零 零 幺" in s for s in spoken) == 2
    assert filed[-1].tag == "Hangup"


def test_record_forks_audio_to_our_socket_with_the_call_token():
    root = ET.fromstring(flow().record(kind="petition", segment="petition-2", token="tok", call_sid="CA9"))
    stream = root.find("Start/Stream")
    assert stream.get("url") == "wss://hotline.example.org/twilio/stream"
    assert stream.get("track") == "inbound_track" and stream.get("name") == "petition-2"
    assert {p.get("name"): p.get("value") for p in stream} == {"token": "tok", "callSid": "CA9",
                                                               "segment": "petition-2"}
    record = root.find("Record")
    assert record.get("finishOnKey") == "#" and record.get("maxLength") == "120" and record.get("timeout") == "5"
    assert record.get("transcribe") is None
    assert root[-1].tag == "Redirect"  # Twilio skips the action of an empty recording


def test_a_choice_streams_the_answer_and_takes_one_key():
    f = flow()
    root = ET.fromstring(f.choice(names=["洋坊新村7幢", "洋坊新村12幢"], segment="address-choice-1", token="tok",
                                  call_sid="CA9", stop="address-1"))
    assert root.find("Stop/Stream").get("name") == "address-1"
    stream = root.find("Start/Stream")
    assert stream.get("name") == "address-choice-1"
    assert {p.get("name"): p.get("value") for p in stream}["segment"] == "address-choice-1"
    gather = root.find("Gather")
    assert (gather.get("input"), gather.get("numDigits"), gather.get("actionOnEmptyResult")) == ("dtmf", "1", "true")
    assert gather.get("action") == "https://hotline.example.org/twilio/address/choice?seg=address-choice-1"
    assert gather.find("Say").text == "是洋坊新村七幢，还是十二幢？七幢请按1，十二幢请按2，或者直接说出来。"
    # Names that differ in more than a number are said in full, three of them as a list.
    three = ET.fromstring(f.choice(names=["金桥新村", "金湖新村", "金河新村"], segment="address-choice-1",
                                   token="tok", call_sid="CA9", stop=None))
    assert three.find("Gather/Say").text == ("是金桥新村、金湖新村，还是金河新村？金桥新村请按1，金湖新村请按2，"
                                             "金河新村请按3，或者直接说出来。")


def test_service_hours_override_is_parsed():
    assert parse_service_hours("08:30-12:00, 13:30-17:30") == [(time(8, 30), time(12)), (time(13, 30), time(17, 30))]
    assert parse_service_hours("") == []


async def test_cli_simulate_call(rig, fake_speech, tmp_path, monkeypatch):
    from core.platform.settings import get_settings
    from gridline.cli import app
    from speech_models.audio import mulaw_decode, write_wav

    wav = tmp_path / "petition.wav"
    write_wav(wav, mulaw_decode(tone(2.5)), 8000)
    fake_speech.say("路灯 坏 了")
    monkeypatch.setenv("GRIDLINE_TWILIO_AUTH_TOKEN", TOKEN)
    monkeypatch.setenv("GRIDLINE_PUBLIC_URL", rig.url)
    get_settings.cache_clear()
    try:
        result = await asyncio.to_thread(CliRunner().invoke, app, [
            "simulate-call", "--from", KNOWN_PHONE, "--digits", "1", "--say", str(wav), "--speed", "0",
            "--server", rig.url])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    (case,) = rig.cases()
    assert f"case number: {case.number}" in result.output
    assert "您反映的是：路灯坏了" in result.output


async def test_the_composed_app_serves_the_hotline(engine, tmp_path, fake_speech):
    from aiohttp.test_utils import TestClient, TestServer

    from core.platform.settings import Settings
    from gridline.app import build_app
    from tests.support.console_admin import add_admin, admin_json

    add_admin(engine)
    app = build_app(Settings(data_dir=tmp_path, public_url="http://127.0.0.1"), engine=engine,
                    speech=fake_speech, channels=("ivr", "console"), run_jobs=False)
    async with TestClient(TestServer(app)) as client:
        resp = await client.post("/twilio/voice", data={"CallSid": "CA1"})
        assert resp.status == 403
        health = await client.get("/healthz")
        assert health.status == 200 and "hotline" not in await health.json()
        report = (await admin_json(client))["hotline"]
        assert report["speech_model"] is True and report["live_recognitions"] == 0
        assert report["live_capacity"] == 4  # twice the two speech workers by default
        assert report["transcriptions_queued"] == 0
