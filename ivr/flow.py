"""TwiML for each step of the call, built with the twilio library's ``VoiceResponse``.

Pure functions of (config, prompts, what we know) → TwiML text: no database, no I/O, so
each step can be tested by reading the XML. ``ivr/web.py`` decides which step comes next.
"""

from __future__ import annotations

import copy
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import urlencode

from twilio.twiml.voice_response import Gather, VoiceResponse

from core.places.address import canonical, spoken
from core.places.routing import shared_ends
from ivr.config import PROMPTS, FlowConfig, load_prompts

ALL_KEYS = "0123456789*#"  # any key ends a turn said by voice: keys work at any moment


def read_digits(number: str, prompts: dict) -> str:
    """``"2611220001"`` → ``"二 六 幺 幺 二 二 零 零 零 幺"`` (digits named one by one)."""
    names = prompts["numbers"]["digits"]
    sep = prompts["numbers"].get("separator", " ")
    return sep.join(names[int(c)] if c.isdigit() else c for c in number)


def choice_names(names: list[str]) -> list[str]:
    """The candidates as said in a question: the first in full, the others by their own
    part when they differ only in a number (洋坊新村七幢，还是九幢), else in full."""
    said = [spoken(n) for n in names]
    short = short_names(said)
    return [said[0], *short[1:]]


def short_names(said: list[str]) -> list[str]:
    """Each candidate by what sets it apart, when that is a number and what follows it
    (七幢, 九幢); in full otherwise (金桥新村, 金湖新村)."""
    prefix, _ = shared_ends([canonical(n) for n in said])
    if len(prefix) < 2:
        return list(said)
    own = [canonical(n)[len(prefix):] for n in said]
    if not all(o and o[0].isdigit() for o in own):
        return list(said)
    return [spoken(o) for o in own]


def spoken_s(sentences: Sequence[str], eos: dict, rate: str | None = None) -> float:
    """About how long the sentences take to say: their characters at rules.toml
    ``[hotline.end_of_speech] prompt_chars_per_s``, slower at an SSML ``rate`` ("75%")."""
    chars = sum(1 for s in sentences for c in s if c.isalnum())
    speed = float(rate.rstrip("%")) / 100 if rate else 1.0
    return chars / float(eos["prompt_chars_per_s"]) / max(speed, 0.1)


def watch_end(stream, eos: dict, end: str, prompt_s: float, *, answer: bool, quiet: str | None = None,
              barge: str | None = None) -> None:
    """Tell the turn's stream to end the turn on our end-of-speech detection: the webhook to
    redirect the call to (path and query, with the turn's identity), which quiet window (a
    short answer's, a long turn's, ``quiet`` "barge" for a petition whose read-back listens on,
    "more" for the rest of one, "number" for a case number said in groups), and how long the prompt takes (speech counts after it).
    ``barge``: where to move the call if the caller speaks over the prompt (a read-back)."""
    stream.parameter(name="end", value=end)
    stream.parameter(name="quiet", value=quiet or ("answer" if answer else "turn"))
    stream.parameter(name="arm", value=f"{prompt_s:.2f}")
    if barge:
        stream.parameter(name="barge", value=barge)


@dataclass
class Flow:
    config: FlowConfig
    base_url: str  # what Twilio sees, e.g. https://gridline.example.org

    def __post_init__(self) -> None:
        self.base_url = self.base_url.rstrip("/")
        self.prompts = load_prompts(self.config.language)
        self.voice = self.prompts["voice"]
        self.rate: str | None = None  # SSML prosody rate, set by ``slowed``
        # rules.toml [hotline.end_of_speech] when our own end-of-speech detection may end the
        # caller's turns (a live redirect through Twilio's REST API); None: Twilio's quiet only.
        self.end_of_speech: dict | None = None

    # -- helpers ------------------------------------------------------------------------

    def url(self, path: str, **query: object) -> str:
        q = {k: v for k, v in query.items() if v is not None}
        return f"{self.base_url}{path}" + (f"?{urlencode(q)}" if q else "")

    @property
    def stream_url(self) -> str:
        scheme, _, rest = self.base_url.partition("://")
        return f"{'wss' if scheme == 'https' else 'ws'}://{rest}/twilio/stream"

    def text(self, key: str, **values: object) -> str:
        return PROMPTS.t(self.config.language, f"prompts.{key}", **values)

    def say(self, parent: VoiceResponse | Gather, text: str, repeat: int = 1) -> None:
        for i in range(repeat):
            if i:
                parent.pause(length=self.config["prompts"]["pause_s"])
            if self.rate:  # SSML: the same words, slower (the caller said 慢一点)
                parent.say(voice=self.voice["voice"], language=self.voice["language"]).prosody(text, rate=self.rate)
            else:
                parent.say(text, voice=self.voice["voice"], language=self.voice["language"])

    def slowed(self, slow: bool = True) -> Flow:
        """This flow for a caller who asked for slower prompts: every sentence said at
        ``[open] slow_rate`` (SSML prosody) for the rest of the call."""
        if not slow:
            return self
        slower = copy.copy(self)
        slower.rate = str(self.config["open"]["slow_rate"])
        return slower

    @property
    def repeat(self) -> int:
        return int(self.config["prompts"]["repeat"])

    def digits(self, number: str) -> str:
        return read_digits(number, self.prompts)

    def date(self, when: datetime) -> str:
        return self.text("date", month=when.month, day=when.day)

    # -- steps --------------------------------------------------------------------------

    def menu(self, *, community: str | None = None, greet: bool = False, notice: str | None = None) -> str:
        r = VoiceResponse()
        cfg = self.config["menu"]
        g = r.gather(input="dtmf", num_digits=1, timeout=cfg["timeout_s"], action=self.url("/twilio/menu"),
                     method="POST", action_on_empty_result=True)
        if notice:
            self.say(g, self.text(notice))
        if greet:
            self.say(g, self.text("greeting_known", community=community) if community else self.text("greeting"))
        self.say(g, self.text("menu"), self.repeat)
        return str(r)

    def record(self, *, kind: str, segment: str, token: str, call_sid: str, notice: str | None = None,
               intro: str | None = None, stop: str | None = None) -> str:
        """Fork the caller's audio to our socket and let Twilio's <Record> end the turn on
        # or silence (or our end-of-speech detection, sooner). <Record> only detects the end:
        recognition is ours, on the stream. ``stop`` names the previous turn's stream, still
        open when a turn is said again."""
        r = VoiceResponse()
        if stop:
            r.stop().stream(name=stop)
        cfg = self.config["petition"]
        said = ([self.text(notice)] if notice else []) + \
            [self.text(intro or ("petition_intro" if kind == "petition" else "address_intro"))]
        self.listen(r, segment, token, call_sid, end=f"/twilio/{kind}/done", prompt=said, beep=True,
                    quiet="barge" if kind == "petition" else None)
        for sentence in said:
            self.say(r, sentence)
        action = self.url(f"/twilio/{kind}/done", seg=segment)
        r.record(action=action, method="POST", timeout=cfg["silence_s"], finish_on_key="#",
                 max_length=cfg["max_seconds"], play_beep=True)
        # Twilio skips the action when nothing was recorded and continues here.
        r.redirect(self.url(f"/twilio/{kind}/done", seg=segment, empty=1), method="POST")
        return str(r)

    @property
    def barge_in(self) -> bool:
        """A petition's read-back listens for the caller going on (rules.toml
        ``[hotline.end_of_speech] barge_in``), so a petition may end on the shorter quiet."""
        return bool(self.end_of_speech and self.end_of_speech.get("barge_in"))

    def listen(self, r: VoiceResponse, segment: str, token: str | None, call_sid: str, *, end: str | None = None,
               prompt: Sequence[str] = (), answer: bool = False, beep: bool = False, quiet: str | None = None,
               barge: str | None = None, arm_s: float | None = None) -> None:
        """Fork the caller's audio to our socket for this turn (``segment``). ``end``: the
        webhook that ends the turn; with end-of-speech detection on, the stream is told it
        (with the turn's identity, ``seg``), which quiet to wait for (``answer``: a short
        one) and how long the ``prompt`` takes to say (``arm_s``: that long, whatever is said):
        the instance holding the socket redirects the call there once the caller has spoken
        and gone quiet."""
        stream = r.start().stream(name=segment, url=self.stream_url, track="inbound_track")
        stream.parameter(name="token", value=token)
        stream.parameter(name="callSid", value=call_sid)
        stream.parameter(name="segment", value=segment)
        if self.end_of_speech is not None and end is not None:
            barging = self.barge_in and (quiet is not None or barge is not None)
            if arm_s is None:
                arm_s = spoken_s(prompt, self.end_of_speech, self.rate) + (0.5 if beep else 0.0)
            watch_end(stream, self.end_of_speech, f"{end}?{urlencode({'seg': segment, 'by': 'eos'})}", arm_s,
                      answer=answer,
                      quiet=quiet if barging or quiet not in ("barge", "more") else None,
                      barge=f"{barge}?{urlencode({'seg': segment, 'by': 'barge'})}" if barging and barge else None)

    def open_question(self, *, segment: str, token: str | None, call_sid: str, sentences: list[str],
                      stop: str | None = None) -> str:  # sentences: said as they are
        """The open question: the stream opens before a word is said, so the caller may
        speak at once (over the prompt too). Keys work at any moment: pressed during the
        prompt (the short <Gather>), or after it (they end the <Record>). <Record> ends the
        turn on ``[open] silence_s`` of quiet; no beep."""
        r = VoiceResponse()
        if stop:
            r.stop().stream(name=stop)
        self.listen(r, segment, token, call_sid, end="/twilio/open/done", prompt=sentences, quiet="barge")
        action = self.url("/twilio/open/done", seg=segment)
        g = r.gather(input="dtmf", num_digits=1, timeout=1, action=action, method="POST")
        for sentence in sentences:
            self.say(g, sentence)
        cfg = self.config["open"]
        r.record(action=action, method="POST", timeout=cfg["silence_s"], finish_on_key=ALL_KEYS,
                 max_length=self.config["petition"]["max_seconds"], play_beep=False)
        r.redirect(self.url("/twilio/open/done", seg=segment, empty=1), method="POST")
        return str(r)

    def ask_answer(self, *, action_path: str, segment: str, token: str | None, call_sid: str, sentence: str,
                   stop: str | None = None, barge: str | None = None) -> str:
        """A question answered by voice or by a key: the question in a short <Gather> (a key
        pressed while it is said answers at once), then a short <Record> for the spoken
        answer (``[confirm] silence_s`` of quiet ends it), on a stream of its own."""
        r = VoiceResponse()
        if stop:
            r.stop().stream(name=stop)
        self.listen(r, segment, token, call_sid, end=action_path, prompt=[sentence], answer=True, barge=barge)
        action = self.url(action_path, seg=segment)
        g = r.gather(input="dtmf", num_digits=1, timeout=1, action=action, method="POST")
        self.say(g, sentence)
        cfg = self.config["confirm"]
        r.record(action=action, method="POST", timeout=cfg["silence_s"], finish_on_key=ALL_KEYS,
                 max_length=cfg["max_answer_s"], play_beep=False)
        r.redirect(self.url(action_path, seg=segment, empty=1), method="POST")
        return str(r)

    def readback_spoken(self, *, stop: str | None, segment: str, token: str | None, call_sid: str, text: str,
                        kind: str = "petition", notice: str | None = None, confidential: bool = False) -> str:
        """"您反映的是：……。对吗？" answered 对 / 不对 (or 1 / 2); the petition's read-back
        also offers 保密 (or 3) unless the caller asked for it already."""
        if kind == "petition":
            tail = "readback_ask_confidential" if confidential else "readback_ask"
            sentence = self.text("readback_spoken", text=text) + self.text(tail)
        else:
            sentence = self.text("address_readback_spoken", address=text)
        if notice:
            sentence = self.text(notice) + sentence
        return self.ask_answer(action_path=f"/twilio/{kind}/confirm", segment=segment, token=token,
                               call_sid=call_sid, sentence=sentence, stop=stop,
                               barge="/twilio/petition/more" if kind == "petition" else None)

    def record_more(self, *, segment: str, token: str | None, call_sid: str, stop: str) -> str:
        """The caller went on speaking over the read-back: no prompt, the rest of their
        petition on a stream of its own (opened as the read-back's stops, so no word falls
        between the two), ended by their quiet ([hotline.end_of_speech] barge_quiet_s, from
        the first frame: they are mid-sentence), #, or <Record>'s own quiet."""
        r = VoiceResponse()
        r.stop().stream(name=stop)
        self.listen(r, segment, token, call_sid, end="/twilio/petition/done", quiet="more")
        cfg = self.config["petition"]
        action = self.url("/twilio/petition/done", seg=segment)
        r.record(action=action, method="POST", timeout=cfg["silence_s"], finish_on_key="#",
                 max_length=cfg["max_seconds"], play_beep=False)
        r.redirect(self.url("/twilio/petition/done", seg=segment, empty=1), method="POST")
        return str(r)

    def status_ask_spoken(self, *, segment: str, token: str | None, call_sid: str, notice: str | None = None,
                          digits: str | None = None, stop: str | None = None) -> str:
        """The case number, said (幺两…, in groups) or keyed with # at the end. Said, it ends
        on the caller's quiet after it (``number_quiet_s``: longer than the pauses between
        the groups), or when the keypad times out; keys work until then."""
        r = VoiceResponse()
        if stop:
            r.stop().stream(name=stop)
        said = ([self.text(notice, digits=self.digits(digits or ""))] if notice else []) + \
            [self.text("status_ask_spoken")]
        self.listen(r, segment, token, call_sid, end="/twilio/case-status", prompt=said, quiet="number")
        g = r.gather(input="dtmf", finish_on_key="#", timeout=self.config["status"]["voice_timeout_s"],
                     action=self.url("/twilio/case-status", seg=segment), method="POST", action_on_empty_result=True)
        for sentence in said:
            self.say(g, sentence)
        return str(r)

    def wait(self, path: str, *, listen: tuple[str, str | None, str] | None = None, **query: object) -> str:
        """"请稍候", a pause, and back to ``path`` (the words are still being recognised).
        ``listen`` (segment, token, call sid): the wait of a petition opens a stream of its own
        for as long as it lasts (later rounds find it running), watched for the caller going on
        over it (barge-in, as at the read-back): their words are the petition's rest."""
        r = VoiceResponse()
        if listen is not None:
            segment, token, call_sid = listen
            more = "/twilio/petition/more"
            # the whole wait is "the prompt": speech over any of it is the caller going on
            self.listen(r, segment, token, call_sid, end=more, barge=more,
                        arm_s=float(self.config["petition"]["max_seconds"]))
        self.say(r, self.text("please_wait"))
        r.pause(length=1)
        r.redirect(self.url(path, **query), method="POST")
        return str(r)

    def hold(self, path: str, **query: object) -> str:
        """"请稍候", a pause, and the same step again (``path`` with ``query``): the database
        did not answer in time, and the caller is kept on the line rather than let go."""
        r = VoiceResponse()
        self.say(r, self.text("please_wait"))
        r.pause(length=int(self.config["hold"]["pause_s"]))
        r.redirect(self.url(path, **query), method="POST")
        return str(r)

    @staticmethod
    def stopping(twiml: str, *names: str) -> str:
        """``twiml`` that first stops the streams ``names`` too (a wait's stream, or the turn's
        own still running when the call goes on from a wait)."""
        root = ET.fromstring(twiml)
        stopped = {s.get("name") for stop in root.iter("Stop") for s in stop.iter("Stream")}
        for i, name in enumerate(dict.fromkeys(n for n in names if n and n not in stopped)):
            stop = ET.Element("Stop")
            ET.SubElement(stop, "Stream", name=name)
            root.insert(i, stop)
        return '<?xml version="1.0" encoding="UTF-8"?>' + ET.tostring(root, encoding="unicode")

    def readback(self, *, segment: str, text: str, kind: str = "petition", notice: str | None = None) -> str:
        r = VoiceResponse()
        r.stop().stream(name=segment)
        g = r.gather(input="dtmf", num_digits=1, timeout=self.config["confirm"]["timeout_s"],
                     action=self.url(f"/twilio/{kind}/confirm"), method="POST", action_on_empty_result=True)
        if notice:
            self.say(g, self.text(notice))
        key = "readback" if kind == "petition" else "address_readback"
        self.say(g, self.text(key, text=text, address=text), self.repeat)
        return str(r)

    def choice(self, *, names: list[str], segment: str, token: str | None, call_sid: str, stop: str | None) -> str:
        """"是洋坊新村七幢，还是九幢？七幢请按1，九幢请按2，或者直接说。" A key 1..n answers at
        once; words said instead go to a stream of their own (``segment``), read once the
        caller goes quiet after them (a short answer's quiet) or the keypad times out; keys
        work until then. ``stop`` ends the address turn's stream."""
        r = VoiceResponse()
        if stop:
            r.stop().stream(name=stop)
        said = choice_names(names)
        sep, last = self.text("address_choice_sep"), self.text("address_choice_or")
        question = self.text("address_choice", names=self.text("address_choice_list_sep").join(said[:-1]) + last
                             + said[-1])
        keys = sep.join(self.text("address_choice_key", name=name, digit=i)
                        for i, name in enumerate(short_names([spoken(n) for n in names]), 1))
        sentence = question + keys + self.text("address_choice_tail")
        self.listen(r, segment, token, call_sid, end="/twilio/address/choice", prompt=[sentence], answer=True)
        g = r.gather(input="dtmf", num_digits=1, timeout=self.config["address"]["choice_timeout_s"],
                     action=self.url("/twilio/address/choice", seg=segment), method="POST",
                     action_on_empty_result=True)
        self.say(g, sentence)
        return str(r)

    def building_ask(self, stop: str | None = None) -> str:
        """The building number by keypad, for an estate the caller's words named only."""
        r = VoiceResponse()
        if stop:
            r.stop().stream(name=stop)
        g = r.gather(input="dtmf", finish_on_key="#", timeout=self.config["address"]["building_timeout_s"],
                     action=self.url("/twilio/address/building"), method="POST", action_on_empty_result=True)
        self.say(g, self.text("address_building"), self.repeat)
        return str(r)

    def filed(self, number: str, *, stop: str | None = None, notice: str | None = None) -> str:
        """The case number, digit by digit, twice. ``stop`` ends a stream still open (the
        case was filed straight after the caller's # because recognition was busy)."""
        r = VoiceResponse()
        if stop:
            r.stop().stream(name=stop)
        if notice:
            self.say(r, self.text(notice))
        digits = self.digits(number)
        self.say(r, self.text("filed", digits=digits))
        r.pause(length=self.config["prompts"]["pause_s"])
        self.say(r, self.text("filed_repeat", digits=digits))
        self.say(r, self.text("goodbye"))
        r.hangup()
        return str(r)

    def status_ask(self, notice: str | None = None, digits: str | None = None) -> str:
        r = VoiceResponse()
        g = r.gather(input="dtmf", finish_on_key="#", timeout=self.config["status"]["timeout_s"],
                     action=self.url("/twilio/case-status"), method="POST", action_on_empty_result=True)
        if notice:
            self.say(g, self.text(notice, digits=self.digits(digits or "")))
        self.say(g, self.text("status_ask"), self.repeat)
        return str(r)

    def status_result(self, *, number: str, status: str, due: datetime | None, closed: datetime | None,
                      stop: str | None = None) -> str:
        r = VoiceResponse()
        if stop:
            r.stop().stream(name=stop)
        sentence = self.text("status_read", digits=self.digits(number), status=status)
        if closed is not None:
            sentence += self.text("status_closed", date=self.date(closed))
        elif due is not None:
            sentence += self.text("status_due", date=self.date(due))
        else:
            sentence += self.text("status_no_due")
        self.say(r, sentence, self.repeat)
        # No actionOnEmptyResult: silence here falls through to goodbye.
        g = r.gather(input="dtmf", num_digits=1, timeout=self.config["menu"]["timeout_s"],
                     action=self.url("/twilio/menu", after="status"), method="POST")
        self.say(g, self.text("status_more"))
        self.say(r, self.text("bye"))
        r.hangup()
        return str(r)

    def dial_operator(self, number: str, stop: str | None = None) -> str:
        r = VoiceResponse()
        if stop:
            r.stop().stream(name=stop)
        self.say(r, self.text("operator_connect"))
        r.dial(number, action=self.url("/twilio/operator/after"), method="POST",
               timeout=self.config["operator"]["dial_timeout_s"])
        return str(r)

    def goodbye(self, key: str = "goodbye") -> str:
        r = VoiceResponse()
        self.say(r, self.text(key))
        r.hangup()
        return str(r)

    def error(self) -> str:
        r = VoiceResponse()
        self.say(r, self.text("error"))
        r.hangup()
        return str(r)

    @staticmethod
    def empty() -> str:
        return str(VoiceResponse())
