"""Plays Twilio's part of a hotline call against a running Gridline server.

Signed webhooks (the real ``X-Twilio-Signature`` algorithm), TwiML read with
``xml.etree`` (Say, Play, Pause, Gather, Record, Redirect, Hangup, Dial, Start/Stream,
Stop/Stream), and a Media Streams websocket client that sends audio as 20 ms µ-law
frames, at real-time pace or faster. Used by ``gridline simulate-call``, the tests and
``bench/ivr.py``. What the caller would hear is collected in ``CallResult.heard``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from twilio.request_validator import RequestValidator

from ivr.config import load_prompts
from ivr.loudness import frame_rms
from ivr.signature import effective_token
from speech_models.audio import decode_file, mulaw_encode

FRAME = 160  # bytes of µ-law per 20 ms


def audio_frames(source: str | Path | bytes) -> list[bytes]:
    """A file (any format) or raw µ-law bytes → 20 ms µ-law frames at 8 kHz."""
    if isinstance(source, bytes | bytearray):
        mulaw = bytes(source)
    else:
        mulaw = mulaw_encode(decode_file(source, 8000).pcm)
    return [mulaw[i : i + FRAME] for i in range(0, len(mulaw), FRAME)]


SILENCE_FRAME = b"\xff" * FRAME
SPEECH_RMS = 300  # a frame louder than this is a word (ivr/flow.toml [stream] speech_rms)


class Live:
    """A call in progress as Twilio's REST API may change it ("modify a live call":
    ``calls(sid).update(url=...)``): whoever plays that API calls ``redirect`` from any
    thread; the call abandons the verb it is on and requests ``url`` (signed, POST)."""

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.pending: str | None = None
        self.changed = asyncio.Event()

    def redirect(self, url: str) -> None:
        self.loop.call_soon_threadsafe(self._redirect, url)

    def _redirect(self, url: str) -> None:
        self.pending = url
        self.changed.set()

    def take(self) -> str | None:
        url, self.pending = self.pending, None
        self.changed.clear()
        return url


@dataclass
class Turn:
    """What the caller does during one <Record>: say ``audio``, then press # or go quiet."""

    audio: str | Path | bytes | None
    end: str = "#"  # "#", "silence", "hangup" (close the stream with stop), "drop" (socket dies)
    hangup_after_s: float | None = None  # for hangup/drop: after this much audio
    # The caller does not stop for us: audio a live update cut short (our end of speech in a
    # pause) is still said, over whatever the call does next (the read-back), then into the
    # next <Record>. Off: the rest is dropped, as a caller who stops to listen.
    goes_on: bool = False
    rest_end: str = "silence"  # how the rest said into the next <Record> ends ("silence", "#", "hangup")


@dataclass
class CallScript:
    from_number: str = "+8613800000000"
    to_number: str = "+8657100000000"
    # per <Gather>; None/"" = no key; a Turn = words said (to the open stream) instead of a key
    digits: list[str | Turn | None] = field(default_factory=list)
    turns: list[Turn] = field(default_factory=list)  # per <Record>
    operator_answers: bool = False
    hangup_after_prompts: int | None = None  # hang up after hearing this many prompts
    # Pressed at a one-key question that expects an answer (menu, read-back) once
    # ``digits`` ran out; None = stay silent.
    default_digit: str | None = None
    call_sid: str = ""


@dataclass
class CallResult:
    call_sid: str
    heard: list[str] = field(default_factory=list)
    case_number: str | None = None
    webhook_latencies: list[float] = field(default_factory=list)
    webhook_paths: list[str] = field(default_factory=list)  # path of each latency above
    readback_latencies: list[float] = field(default_factory=list)  # caller's # → read-back
    requests: list[tuple[str, dict]] = field(default_factory=list)
    bodies: list[str] = field(default_factory=list)  # what each of ``requests`` was answered
    status: str = "completed"
    pressed_at: float | None = None  # when the caller last ended a <Record>
    # How each turn ended, in order: (how, the URL requested): "#", "quiet" (<Record>'s
    # timeout), "redirect" (a live update through the REST API), "hangup".
    turn_ends: list[tuple[str, str]] = field(default_factory=list)
    live: Live | None = field(default=None, repr=False)
    last_word_at: float | None = None  # when the caller's last frame of words was sent
    word_to_prompt: list[float] = field(default_factory=list)  # last word → the next TwiML in hand
    still_saying: list[bytes] = field(default_factory=list, repr=False)  # a ``goes_on`` turn's rest
    unsent: list[bytes] = field(default_factory=list, repr=False)  # the frames a live update cut off
    said_over_prompts: int = 0  # prompts the caller spoke over (still saying a turn's rest)
    rest_end: str = "silence"


class _Stream:
    def __init__(self, ws: aiohttp.ClientWebSocketResponse, stream_sid: str):
        self.ws = ws
        self.sid = stream_sid
        self.seq = 1
        self.chunk = 0
        self.ts = 0

    async def send(self, message: dict) -> None:
        self.seq += 1
        message.setdefault("sequenceNumber", str(self.seq))
        await self.ws.send_str(json.dumps(message))

    async def media(self, frame: bytes) -> None:
        self.chunk += 1
        await self.send({"event": "media", "streamSid": self.sid, "media": {
            "track": "inbound", "chunk": str(self.chunk), "timestamp": str(self.ts),
            "payload": base64.b64encode(frame).decode()}})
        self.ts += 20

    async def stop(self, account_sid: str, call_sid: str) -> None:
        if not self.ws.closed:
            await self.send({"event": "stop", "streamSid": self.sid,
                             "stop": {"accountSid": account_sid, "callSid": call_sid}})
            await self.ws.close()


class Simulator:
    """``Simulator(server_url, auth_token).call(script)``.

    ``public_url`` is the base URL the server puts in its TwiML (GRIDLINE_PUBLIC_URL);
    URLs under it are signed as they are and sent to ``server_url``.
    """

    ACCOUNT_SID = "AC" + "0" * 32

    def __init__(self, server_url: str, auth_token: str = "", *, public_url: str | None = None,
                 speed: float = 1.0, pause_scale: float = 0.0, language: str = "zh",
                 echo: Callable[[str], None] | None = None, session: aiohttp.ClientSession | None = None):
        self.server_url = server_url.rstrip("/")
        self.public_url = (public_url or server_url).rstrip("/")
        self.validator = RequestValidator(effective_token(auth_token))
        self.speed = speed  # 1.0 = real time; 0 = as fast as possible
        self.pause_scale = pause_scale  # seconds slept per <Pause> second
        self.digit_names = load_prompts(language)["numbers"]["digits"]
        self.echo = echo
        self._session = session
        # Twilio's REST API, when someone plays it (tests.support.fake_twilio): told of each
        # call (``started(call_sid, params, live)``, ``ended(call_sid)``) so that it can update
        # it live. Then prompts take time on the stream (silence at ``prompt_chars_per_s``, sent
        # at ``speed``) and a caller's quiet after their words passes in real time, as a redirect
        # may cut it short.
        self.carrier: Any = None
        self.prompt_chars_per_s = 4.0
        # Where the Media Streams sockets connect when not to ``server_url`` (instances behind a
        # balancer: the socket stays on one, the webhooks may go to another).
        self.stream_server: str | None = None

    # -- plumbing -------------------------------------------------------------------------

    def _target(self, url: str) -> str:
        if url.startswith(self.public_url):
            return self.server_url + url[len(self.public_url):]
        for scheme, ws in (("http", "ws"), ("https", "wss")):
            pub = self.public_url.replace(f"{scheme}://", f"{ws}://", 1)
            if url.startswith(pub):
                return self.server_url.replace("http", "ws", 1) + url[len(pub):]
        return url

    def _absolute(self, url: str, current: str) -> str:
        if url.startswith(("http://", "https://", "ws://", "wss://")):
            return url
        base = urlsplit(current)
        return f"{base.scheme}://{base.netloc}{url if url.startswith('/') else '/' + url}"

    async def post(self, http: aiohttp.ClientSession, url: str, params: dict, result: CallResult) -> str:
        signature = self.validator.compute_signature(url, params)
        started = time.perf_counter()
        for attempt in (1, 2):
            try:
                async with http.post(self._target(url), data=params,
                                     headers={"X-Twilio-Signature": signature}) as resp:
                    body = await resp.text()
                    break
            except (aiohttp.ClientConnectionResetError, aiohttp.ServerDisconnectedError):
                # A kept-alive connection the balancer had closed (its instance was killed):
                # Twilio asks again on a new connection; our webhooks take a repeat once.
                if attempt == 2:
                    raise
                await asyncio.sleep(0.2)
        if resp.status != 200:
            raise RuntimeError(f"{url} answered {resp.status}: {body[:200]}")
        result.webhook_latencies.append(time.perf_counter() - started)
        result.webhook_paths.append(urlsplit(url).path)
        result.requests.append((url, params))
        result.bodies.append(body)
        return body

    def _say(self, text: str, result: CallResult) -> None:
        result.heard.append(text)
        if result.case_number is None and "编号是" in text:
            result.case_number = self.parse_case_number(text)
        if self.echo:
            self.echo(text)

    def parse_case_number(self, text: str) -> str | None:
        if "：" not in text:
            return None
        tail = text.split("：", 1)[1]
        names = {n: str(i) for i, n in enumerate(self.digit_names)}
        digits = "".join(names[c] for c in tail if c in names)
        return digits if len(digits) >= 6 else None

    # -- the call -------------------------------------------------------------------------

    async def call(self, script: CallScript) -> CallResult:
        if self._session is not None:
            return await self._call(self._session, script)
        async with aiohttp.ClientSession() as http:
            return await self._call(http, script)

    async def _call(self, http: aiohttp.ClientSession, script: CallScript) -> CallResult:
        call_sid = script.call_sid or "CA" + uuid.uuid4().hex
        result = CallResult(call_sid)
        base = {"AccountSid": self.ACCOUNT_SID, "ApiVersion": "2010-04-01", "CallSid": call_sid,
                "Direction": "inbound", "From": script.from_number, "To": script.to_number,
                "Caller": script.from_number, "Called": script.to_number}
        digits = list(script.digits)
        turns = list(script.turns)
        streams: dict[str, _Stream] = {}
        started = time.monotonic()
        url = f"{self.public_url}/twilio/voice"
        params = {**base, "CallStatus": "ringing"}
        if self.carrier is not None:
            result.live = Live()
            self.carrier.started(call_sid, base, result.live)
        try:
            await self._follow(http, url, params, base, digits, turns, streams, script, result)
        finally:
            if self.carrier is not None:
                self.carrier.ended(call_sid)
            for stream in streams.values():
                await stream.stop(self.ACCOUNT_SID, call_sid)
            duration = str(max(1, round(time.monotonic() - started)))
            await self.post(http, f"{self.public_url}/twilio/status",
                            {**base, "CallStatus": "completed", "CallDuration": duration,
                             "CallbackSource": "call-progress-events", "SequenceNumber": "0"}, result)
        return result

    async def _follow(self, http, url, params, base, digits, turns, streams, script, result) -> None:
        """Request ``url``, do what its TwiML says, and go on until the call ends."""
        hung_up = False
        while url and not hung_up:
            body = await self.post(http, url, params, result)
            redirected = self._redirected(base, result)
            if redirected is not None:  # updated while we fetched this: Twilio abandons it
                url, params, hung_up = redirected
                continue
            if result.pressed_at is not None and "<Redirect" not in body:
                result.readback_latencies.append(time.perf_counter() - result.pressed_at)
                result.pressed_at = None
            # a prompt, not 请稍候 (come back) nor the silent TwiML that records the rest of a petition
            if result.last_word_at is not None and "round=" not in body and "<Say" in body:
                result.word_to_prompt.append(time.perf_counter() - result.last_word_at)
                result.last_word_at = None
            url, params, hung_up = await self._run_twiml(http, body, url, base, digits, turns, streams,
                                                         script, result)

    @staticmethod
    def _redirected(base: dict, result: CallResult) -> tuple[str, dict, bool] | None:
        """A live update that came in: where the call goes now."""
        url = result.live.take() if result.live is not None and result.live.pending else None
        if url is None:
            return None
        result.turn_ends.append(("redirect", url))
        return url, dict(base, CallStatus="in-progress"), False

    async def answer(self, url: str, *, call_sid: str, from_number: str, to_number: str, script: CallScript,
                     answered_by: str | None = "human", account_sid: str | None = None) -> CallResult:
        """The callee of an outbound call (a follow-up): Twilio requests the call's ``url``
        when they pick up (``AnsweredBy`` under machine detection) and they follow its TwiML
        (keys, speech). Whoever placed the call sends its status callbacks."""
        account = account_sid or self.ACCOUNT_SID
        base = {"AccountSid": account, "ApiVersion": "2010-04-01", "CallSid": call_sid,
                "Direction": "outbound-api", "From": from_number, "To": to_number,
                "Caller": from_number, "Called": to_number}
        result = CallResult(call_sid)
        params = {**base, "CallStatus": "in-progress"}
        if answered_by:
            params["AnsweredBy"] = answered_by
        streams: dict[str, _Stream] = {}
        if self.carrier is not None:
            result.live = Live()
            self.carrier.started(call_sid, base, result.live)

        async def run(http: aiohttp.ClientSession) -> None:
            try:
                await self._follow(http, url, params, base, list(script.digits), list(script.turns), streams,
                                   script, result)
            finally:
                if self.carrier is not None:
                    self.carrier.ended(call_sid)
                for stream in streams.values():
                    await stream.stop(account, call_sid)

        if self._session is not None:
            await run(self._session)
        else:
            async with aiohttp.ClientSession() as http:
                await run(http)
        return result

    async def play_outbound(self, *, url: str, call_sid: str, from_number: str, to_number: str, answer: str,
                            script: CallScript, machine_detection: bool,
                            progress: Callable[[str, str | None], Awaitable[None]], ring_s: float = 0.0,
                            account_sid: str | None = None) -> CallResult:
        """Twilio's part of an outbound call and the callee's: it is dialled, rings, and is
        ``answer``ed: "busy", "no-answer", "failed", by a "machine" (told by answering-machine
        detection; it hears whatever the TwiML says, here nothing) or a "human" following the
        TwiML with ``script``. ``progress(status, answered_by)`` is awaited as the call moves
        (initiated, ringing, in-progress, its final status): where whoever placed the call
        sends its status callbacks."""
        await progress("initiated", None)
        await progress("ringing", None)
        if ring_s:
            await asyncio.sleep(ring_s)
        if answer in ("busy", "no-answer", "failed"):
            await progress(answer, None)
            return CallResult(call_sid, status=answer)
        answered_by = ("machine_start" if answer == "machine" else "human") if machine_detection else None
        await progress("in-progress", answered_by)
        try:
            return await self.answer(url, call_sid=call_sid, from_number=from_number, to_number=to_number,
                                     script=script if answer != "machine" else CallScript(),
                                     answered_by=answered_by, account_sid=account_sid)
        finally:
            await progress("completed", answered_by)

    async def _pause(self, seconds: float) -> None:
        if self.pause_scale > 0:
            await asyncio.sleep(seconds * self.pause_scale)

    def _heard_enough(self, script: CallScript, result: CallResult) -> bool:
        return script.hangup_after_prompts is not None and len(result.heard) >= script.hangup_after_prompts

    async def _run_twiml(self, http, body, current, base, digits, turns, streams, script, result):
        """Execute one TwiML document; returns the next (url, params, hung_up)."""
        root = ET.fromstring(body)
        if root.tag != "Response":
            raise ValueError(f"not TwiML: {body[:100]}")
        for verb in root:
            redirected = self._redirected(base, result)
            if redirected is not None:
                return redirected
            tag = verb.tag
            if tag == "Say":
                for _ in range(int(verb.get("loop", "1") or 1)):
                    self._say("".join(verb.itertext()), result)
                    await self._saying(verb, streams, result)
                if self._heard_enough(script, result):
                    return None, None, True
            elif tag == "Play":
                self._say(f"[play {verb.text}]", result)
            elif tag == "Pause":
                await self._pause(float(verb.get("length", "1")))
            elif tag == "Hangup":
                return None, None, True
            elif tag == "Redirect":
                return self._absolute((verb.text or "").strip(), current), dict(base, CallStatus="in-progress"), False
            elif tag == "Start":
                for stream in verb.findall("Stream"):
                    if stream.get("name") and stream.get("name") in streams:
                        continue  # Twilio starts no second stream of a name that is running
                    await self._open_stream(http, stream, current, base, streams)
            elif tag == "Stop":
                for stream in verb.findall("Stream"):
                    s = streams.pop(stream.get("name", ""), None)
                    if s is not None:
                        await s.stop(self.ACCOUNT_SID, base["CallSid"])
            elif tag == "Gather":
                for child in verb:
                    if child.tag == "Say":
                        self._say("".join(child.itertext()), result)
                        await self._saying(child, streams, result)
                    elif child.tag == "Pause":
                        await self._pause(float(child.get("length", "1")))
                if self._heard_enough(script, result):
                    return None, None, True
                redirected = self._redirected(base, result)
                if redirected is not None:
                    return redirected
                pressed = digits.pop(0) if digits else None
                if isinstance(pressed, Turn):  # words said instead of a key, heard by the open stream
                    stream = next(reversed(streams.values()), None) if streams else None
                    frames = audio_frames(pressed.audio) if pressed.audio is not None else []
                    live = result.live
                    quiet = [SILENCE_FRAME] * int(float(verb.get("timeout", "5")) * 50)
                    if not await self._send_frames(stream, frames, live=live, result=result) or \
                            not await self._send_frames(stream, quiet, speed=1.0 if live is not None else None,
                                                        live=live):
                        return self._redirected(base, result)  # a live update ended the answer
                    pressed = None
                    if verb.get("actionOnEmptyResult") == "true":
                        action = self._absolute(verb.get("action") or current, current)
                        result.turn_ends.append(("quiet", action))
                        return action, dict(base, CallStatus="in-progress", Digits=""), False
                    continue
                if pressed is None and not digits and script.default_digit and \
                        verb.get("numDigits") == "1" and verb.get("actionOnEmptyResult") == "true":
                    pressed = script.default_digit
                action = self._absolute(verb.get("action") or current, current)
                if pressed:
                    finish = verb.get("finishOnKey", "#")
                    keys = pressed
                    if verb.get("numDigits"):
                        keys = keys[: int(verb.get("numDigits"))]
                    keys = keys.split(finish)[0] if finish and finish in keys else keys
                    return action, dict(base, CallStatus="in-progress", Digits=keys,
                                        FinishedOnKey=finish if finish in pressed else ""), False
                if verb.get("actionOnEmptyResult") == "true":
                    return action, dict(base, CallStatus="in-progress", Digits=""), False
            elif tag == "Record":
                outcome = await self._record(http, verb, current, base, turns, streams, result)
                if outcome is not None:
                    return outcome
            elif tag == "Dial":
                action = verb.get("action")
                self._say(f"[dial {(verb.text or '').strip()}]", result)
                status = "completed" if script.operator_answers else "no-answer"
                if action:
                    return self._absolute(action, current), dict(base, CallStatus="in-progress",
                                                                 DialCallStatus=status), False
                if script.operator_answers:
                    return None, None, True
        return None, None, True  # the document ran out: Twilio hangs up

    async def _open_stream(self, http, el, current, base, streams) -> None:
        url = self._target(el.get("url", ""))
        if self.stream_server:
            url = self.stream_server.replace("http", "ws", 1).rstrip("/") + urlsplit(url).path
        name = el.get("name") or uuid.uuid4().hex
        ws = await http.ws_connect(url)
        stream = _Stream(ws, "MZ" + uuid.uuid4().hex)
        streams[name] = stream
        custom = {p.get("name"): p.get("value") for p in el.findall("Parameter")}
        await ws.send_str(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
        await stream.send({"event": "start", "streamSid": stream.sid, "start": {
            "accountSid": self.ACCOUNT_SID, "streamSid": stream.sid, "callSid": base["CallSid"],
            "tracks": ["inbound"], "customParameters": custom,
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}}})

    async def _saying(self, say: ET.Element, streams: dict[str, _Stream], result: CallResult) -> None:
        """A prompt takes time: on a live call, the stream hears the caller listening to it
        (slower under an SSML ``<prosody rate="85%">``)."""
        if result.live is None or not streams:
            return
        if result.still_saying:  # the caller goes on talking over the prompt
            result.said_over_prompts += 1
            if not await self._say_rest(next(reversed(streams.values())), result):
                return  # a live update stopped the prompt
        prosody = say.find("prosody")
        rate = prosody.get("rate", "100%") if prosody is not None else "100%"
        speed = float(rate.rstrip("%")) / 100 if rate.endswith("%") else 1.0
        chars = sum(1 for c in "".join(say.itertext()) if c.isalnum())
        seconds = chars / self.prompt_chars_per_s / max(speed, 0.1) + 0.3
        # sent as fast as possible: what is timed is the caller's words and quiet, not our prompts
        await self._send_frames(next(reversed(streams.values())), [SILENCE_FRAME] * int(seconds * 50),
                                speed=0, live=result.live)

    async def _say_rest(self, stream: _Stream | None, result: CallResult) -> bool:
        """Send what the caller is still saying, at the caller's pace; False when a live
        update cut it short again (the rest is kept for what comes next)."""
        frames, result.still_saying = result.still_saying, []
        if await self._send_frames(stream, frames, live=result.live, result=result):
            return True
        result.still_saying = result.unsent
        return False

    async def _send_frames(self, stream: _Stream | None, frames: list[bytes], *, speed: float | None = None,
                           live: Live | None = None, result: CallResult | None = None) -> bool:
        """Send the frames at ``speed`` (default: the simulator's); False when a live update
        cut them short. With ``result``: the moment the last word (loud frame) went out is
        ``result.last_word_at``."""
        speed = self.speed if speed is None else speed
        last_loud = -1
        if result is not None and frames:
            loud = (frame_rms(b"".join(frames)) > SPEECH_RMS).nonzero()[0]
            last_loud = int(loud[-1]) if len(loud) else -1
        t0 = time.perf_counter()
        for i, frame in enumerate(frames):
            if live is not None and live.pending:
                if result is not None:
                    result.unsent = frames[i:]
                return False
            if stream is not None and not stream.ws.closed:
                await stream.media(frame)
            if i == last_loud:
                result.last_word_at = time.perf_counter()
            if speed > 0:
                delay = t0 + (i + 1) * 0.02 / speed - time.perf_counter()
                if delay > 0:
                    if live is not None:
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(live.changed.wait(), delay)
                    else:
                        await asyncio.sleep(delay)
            elif i % 50 == 49:
                await asyncio.sleep(0)  # let the server breathe when flooding
        return True

    async def _record(self, http, verb, current, base, turns, streams, result):
        if result.still_saying:  # the rest of a turn the caller went on with, then their quiet
            turn = Turn(None, end=result.rest_end, goes_on=True, rest_end=result.rest_end)
            frames, result.still_saying = result.still_saying, []
        else:
            turn = turns.pop(0) if turns else Turn(None, end="silence")
            frames = audio_frames(turn.audio) if turn.audio is not None else []
        stream = next(reversed(streams.values()), None) if streams else None
        max_frames = int(float(verb.get("maxLength", "3600")) * 50)
        if turn.end in ("hangup", "drop"):
            if turn.hangup_after_s is not None:
                frames = frames[: int(turn.hangup_after_s * 50)]
            await self._send_frames(stream, frames[:max_frames])
            if stream is not None:
                if turn.end == "drop":
                    await stream.ws.close()  # no stop message: the socket just dies
                else:
                    await stream.stop(self.ACCOUNT_SID, base["CallSid"])
                streams.clear()
            action = self._absolute(verb.get("action") or current, current)
            params = dict(base, CallStatus="completed", Digits="hangup", RecordingDuration=str(len(frames) // 50),
                          RecordingSid="RE" + uuid.uuid4().hex, RecordingUrl="https://api.twilio.com/fake")
            result.turn_ends.append(("hangup", action))
            await self.post(http, action, params, result)  # Twilio reports the hang-up to the action
            result.status = "hung_up"
            return None, None, True
        live = result.live
        if not await self._send_frames(stream, frames[:max_frames], live=live, result=result):
            if turn.goes_on:
                result.still_saying, result.rest_end = result.unsent, turn.rest_end
            return self._redirected(base, result)  # moved on while the caller still spoke
        if turn.end == "silence":
            # On a live call the caller's quiet passes in real time: a redirect may end it first.
            quiet = [SILENCE_FRAME] * int(float(verb.get("timeout", "5")) * 50)
            if not await self._send_frames(stream, quiet, speed=1.0 if live is not None else None, live=live):
                return self._redirected(base, result)
        if not frames:
            return None  # Twilio skips the action of an empty recording
        action = self._absolute(verb.get("action") or current, current)
        params = dict(base, CallStatus="in-progress", RecordingDuration=str(len(frames) // 50),
                      RecordingSid="RE" + uuid.uuid4().hex, RecordingUrl="https://api.twilio.com/fake",
                      Digits="#" if turn.end == "#" else "")
        result.pressed_at = time.perf_counter()
        result.turn_ends.append(("#" if turn.end == "#" else "quiet", action))
        return action, params, False
