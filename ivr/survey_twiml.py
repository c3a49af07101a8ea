"""TwiML of the follow-up call (回访), built with the twilio library's ``VoiceResponse``.

Pure functions of (the survey call's rules, the prompts, what we know) → TwiML text, like
``ivr.flow`` for the hotline: no database, no I/O. ``ivr/survey_web.py`` decides which
step comes next. Every sentence is said slowly (SSML prosody, ``survey_flow.toml``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlencode, urlsplit

from twilio.twiml.voice_response import Gather, VoiceResponse

from core.platform.merging import deep_merge
from ivr.config import SURVEY_FLOW, load_prompts
from ivr.flow import spoken_s, watch_end


@dataclass(frozen=True)
class SurveyFlowConfig:
    """``ivr/survey_flow.toml`` (``GRIDLINE_SURVEY_FLOW``), with overrides for tests (``load(comment={...})``)."""

    data: dict[str, Any]

    @classmethod
    def load(cls, **overrides: dict[str, Any]) -> SurveyFlowConfig:
        """``ivr/survey_flow.toml`` with ``$GRIDLINE_SURVEY_FLOW`` merged over it, then ``overrides``."""
        return cls(deep_merge(SURVEY_FLOW.load(), overrides))

    def __getitem__(self, key: str) -> Any:
        return self.data[key]

    @property
    def language(self) -> str:
        return self.data["language"]


@dataclass(frozen=True)
class Intro:
    """Who is calling and about which petition: its date and category, never its text."""

    date: datetime  # local time the petition was filed
    category: str | None
    community: str | None


class SurveyTwiml:
    def __init__(self, config: SurveyFlowConfig, base_url: str):
        self.config = config
        self.base_url = base_url.rstrip("/")
        prompts = load_prompts(config.language)
        self.voice = prompts["voice"]
        self.text_of = prompts["survey"]
        # rules.toml [hotline.end_of_speech] when a spoken answer may end on our own end-of-speech
        # detection (set with the hotline's: the account's credentials), else None.
        self.end_of_speech: dict | None = None

    # -- helpers -----------------------------------------------------------------------

    def url(self, survey_id: int, step: str, **query: object) -> str:
        q = {k: v for k, v in query.items() if v is not None}
        return f"{self.base_url}/twilio/survey/{survey_id}/{step}" + (f"?{urlencode(q)}" if q else "")

    @property
    def stream_url(self) -> str:
        scheme, _, rest = self.base_url.partition("://")
        return f"{'wss' if scheme == 'https' else 'ws'}://{rest}/twilio/stream"

    def text(self, key: str, **values: object) -> str:
        return self.text_of[key].format(**values)

    def say(self, parent: VoiceResponse | Gather, text: str) -> None:
        said = parent.say(voice=self.voice["voice"], language=self.voice["language"])
        said.prosody(text, rate=self.config["voice"]["rate"])

    def intro_text(self, intro: Intro) -> list[str]:
        service = (self.text("service_community", community=intro.community) if intro.community
                   else self.text("service"))
        date = self.text("date", month=intro.date.month, day=intro.date.day)
        about = (self.text("about", date=date, category=intro.category) if intro.category
                 else self.text("about_no_category", date=date))
        return [self.text("hello", service=service), about]

    # -- steps ---------------------------------------------------------------------------

    def question(self, survey_id: int, token: str, question: str, *, intro: Intro | None = None,
                 notice: str | None = None, operator: bool = True, segment: str = "", stream_token: str = "",
                 call_sid: str = "", stop: str = "", retry: bool = False) -> str:
        """A question answered with one key; ``intro`` before the first. No key comes back
        to the same URL (``actionOnEmptyResult``), so "no answer" is ours to count.

        With ``segment`` the answer may be spoken too: the caller's audio goes to our Media
        Streams socket as that turn (recognised with the question's phrase list), and the
        keypad's quiet ends it. The first time the question asks for words
        (``ask_<question>_voice``), with the keypad's shorter wait; asked again
        (``retry``), it names the keys as without voice. ``stop`` ends the previous
        answer turn's stream."""
        r = VoiceResponse()
        if stop:
            r.stop().stream(name=stop)
        if segment and intro is not None:
            # Said before the answer turn opens: a "喂，你好" over the greeting is no answer.
            for sentence in self.intro_text(intro):
                self.say(r, sentence)
            r.pause(length=self.config["voice"]["pause_s"])
        by_voice = bool(segment) and not retry
        asked = ([self.text("not_you")] if intro is not None else []) + ([self.text(notice)] if notice else []) + \
            [self.text(f"ask_{question}_voice" if by_voice else f"ask_{question}")] + \
            ([self.text("operator_hint")] if operator else [])
        if segment:
            stream = r.start().stream(name=segment, url=self.stream_url, track="inbound_track")
            stream.parameter(name="token", value=stream_token)
            stream.parameter(name="callSid", value=call_sid)
            stream.parameter(name="segment", value=segment)
            if self.end_of_speech is not None:  # the answer said, then a short quiet: on at once
                end = urlsplit(self.url(survey_id, "key", t=token, q=question, seg=segment, by="eos"))
                watch_end(stream, self.end_of_speech, f"{end.path}?{end.query}",
                          spoken_s(asked, self.end_of_speech, self.config["voice"]["rate"]), answer=True)
        timeout = self.config["answers"]["timeout_s"] if by_voice else self.config["questions"]["timeout_s"]
        g = r.gather(input="dtmf", num_digits=1, timeout=timeout,
                     action=self.url(survey_id, "key", t=token, q=question, seg=segment or None), method="POST",
                     action_on_empty_result=True)
        if intro is not None:
            if not segment:
                for sentence in self.intro_text(intro):
                    self.say(g, sentence)
                g.pause(length=self.config["voice"]["pause_s"])
            self.say(g, self.text("not_you"))
        if notice:
            self.say(g, self.text(notice))
        self.say(g, self.text(f"ask_{question}_voice" if by_voice else f"ask_{question}"))
        if operator:
            self.say(g, self.text("operator_hint"))
        return str(r)

    def comment(self, survey_id: int, token: str, *, segment: str, stream_token: str, call_sid: str,
                stop: str = "") -> str:
        """The optional spoken comment: the audio is forked to our Media Streams socket (the
        hotline's, recorded on disk as it arrives) and ``<Record>`` ends the turn on # or
        silence, as in a petition, unless our own end of speech redirects it first (the
        hotline's ``quiet_s``). ``stop`` ends the last answer turn's stream."""
        r = VoiceResponse()
        if stop:
            r.stop().stream(name=stop)
        stream = r.start().stream(name=segment, url=self.stream_url, track="inbound_track")
        stream.parameter(name="token", value=stream_token)
        stream.parameter(name="callSid", value=call_sid)
        stream.parameter(name="segment", value=segment)
        if self.end_of_speech is not None:  # said, then a turn's quiet (quiet_s): on at once, as a petition
            end = urlsplit(self.url(survey_id, "comment", t=token, seg=segment, by="eos"))
            watch_end(stream, self.end_of_speech, f"{end.path}?{end.query}",
                      spoken_s([self.text("comment")], self.end_of_speech, self.config["voice"]["rate"]), answer=False)
        self.say(r, self.text("comment"))
        cfg = self.config["comment"]
        action = self.url(survey_id, "comment", t=token, seg=segment)
        r.record(action=action, method="POST", timeout=cfg["silence_s"], finish_on_key="#",
                 max_length=cfg["max_seconds"], play_beep=True)
        # Twilio skips the action when nothing was recorded (# at once) and continues here.
        r.redirect(self.url(survey_id, "comment", t=token, seg=segment, empty=1), method="POST")
        return str(r)

    def dial_operator(self, survey_id: int, token: str, number: str, question: str, stop: str = "") -> str:
        r = VoiceResponse()
        if stop:
            r.stop().stream(name=stop)
        self.say(r, self.text("operator_connect"))
        r.dial(number, action=self.url(survey_id, "operator", t=token, q=question), method="POST",
               timeout=self.config["operator"]["dial_timeout_s"])
        return str(r)

    def goodbye(self, key: str, *, stop: str | None = None) -> str:
        r = VoiceResponse()
        if stop:
            r.stop().stream(name=stop)
        self.say(r, self.text(key))
        r.hangup()
        return str(r)

    @staticmethod
    def hangup() -> str:
        """An answering machine: no message is left."""
        r = VoiceResponse()
        r.hangup()
        return str(r)

    @staticmethod
    def empty() -> str:
        return str(VoiceResponse())
