"""The state of one hotline call, typed, and the named transitions that change it.

``CallState`` is what the flow knows of a call; it is stored as JSON in
``CallSession.state`` (rows written in the older string-keyed shape read into the same
model). ``Call`` pairs it with the row's columns (status, outcome, case) and is the only
thing ``ivr/web.py`` changes, one named transition at a time, through
``ivr.calls.apply``, which locks the row, runs the transition and writes both back.
The diagram of stages and transitions is ``ivr/flow.md``.

What the caller said travels one way: the stream's segment ends → the webhook (or the
hang-up) takes its ``Recording`` and stores it with ``Call.turn_heard`` → the filing
builds the petition from the stored recordings (``ivr.calls.file_case``).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from core.cases.models import CallSession
from core.platform.clock import local_date, utcnow

TERMINAL_STATUSES = frozenset({"completed", "busy", "no-answer", "failed", "canceled"})
RECORDINGS_DIR = "recordings"  # under the data directory

KEEP_REPLIES = 3  # the TwiML of the last turns ended, for a second end of one of them
# "answer": a short reply (对 / 不对 / 保密, a case number) said instead of a key; never the petition.
TurnKind = Literal["petition", "address", "answer"]
MORE_PREFIX = "more-"  # the rest of a petition the caller went on with over its read-back (barge-in)


class Stage(enum.StrEnum):
    menu = "menu"  # keypad menu (after a status was read; calls begun by an older flow)
    open = "open"  # the greeting's open question: the caller speaks at once (recorded as a petition)
    petition = "petition"  # the caller describes the problem (recording)
    readback = "readback"  # "您反映的是……" 1 confirm / 2 again
    address = "address"  # an unknown caller says where (recording)
    address_confirm = "address_confirm"  # "是洋坊新村9幢吗？" 1 / 2
    address_building = "address_building"  # only the estate is sure: the building number by keypad
    address_choice = "address_choice"  # two or more close places: "是A，还是B？" by key 1..n or by voice
    status = "status"  # keying a case number
    operator = "operator"  # <Dial> to the operator
    filed = "filed"  # a case exists; its number was read out
    ended = "ended"  # over without a case (status query, operator, nothing said, hung up)


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore")


class Caller(_Model):
    """From the household registry, looked up once when the call comes in."""

    known: bool = False
    grid_id: int | None = None
    community: str | None = None
    resident_id: int | None = None


class Recording(_Model):
    """One turn of the caller on the stream (a segment): its WAV and what was recognised.

    Planned (``audio_path`` only) when the turn begins, so a crash before the first audio
    frame still leaves the path on record; complete once the turn ended (``ended_by``)."""

    kind: TurnKind = "petition"
    audio_path: str | None = None  # relative to the data directory (core.platform.storage)
    speech_s: float = 0.0
    duration: float = 0.0
    text: str = ""
    confidence: float | None = None
    segments: list[dict] = Field(default_factory=list)  # recogniser output, with word timings
    final: bool = False  # the transcript is complete
    deferred: bool = False  # recognised afterwards by a transcribe_recording job
    ended_by: str | None = None  # webhook, dtmf, stop, dropped, hangup, recovered
    # Where the turn's WAV was kept (``ivr.spool``): its size and sha256 once known without
    # the spool file (uploaded, or held in the database until the store takes it).
    size: int | None = None
    sha256: str | None = None
    held: bool = False  # waits in the database (audio_part) for the media store
    waiting_in: str | None = None  # the spool it waits in for the media store (core.platform.uploads.spool_name)
    heard_s: float | None = None  # seconds of audio received
    kept_s: float | None = None  # seconds kept: less than heard when the spool and every fallback failed
    # What the words of an open turn meant (core.cases.intents): None or "petition" = the
    # petition; "status", "operator", "repeat", "slower", "confidential" = not a petition.
    intent: str | None = None

    @property
    def ended(self) -> bool:
        return self.ended_by is not None

    @property
    def incomplete(self) -> bool:
        return self.kept_s is not None and self.heard_s is not None and self.kept_s + 0.02 < self.heard_s

    @property
    def transcript_pending(self) -> bool:
        return not self.final


class Turn(_Model):
    segment: str = ""  # the current attempt's segment name, e.g. "petition-2"
    attempt: int = 0
    confirmed: bool = False
    unconfirmed: bool = False  # accepted without the caller pressing 1
    # The turns this attempt continues, in order, before ``segment``: the caller paused, heard
    # the read-back begin and went on speaking over it (the read-back's answer stream, then a
    # ``more-N`` turn). Their words and audio are one petition (``CallState.petition_heard``).
    parts: list[str] = Field(default_factory=list)


class AddressTurn(Turn):
    heard: str | None = None
    name: str | None = None  # gazetteer name read back
    grid_id: int | None = None
    confidence: float | None = None
    level: str | None = None  # the matched grid's level
    scope: str | None = None  # the estate whose buildings a keyed number picks from
    needs_building: bool = False  # sure of the estate only; a building number would settle it
    building_asked: bool = False
    building_keyed: str | None = None  # the digits the caller keyed, found or not
    # Close candidates the matcher could not choose between ([grid id, name]); the caller is asked.
    choices: list[tuple[int, str]] = Field(default_factory=list)
    choice_segment: str | None = None  # the stream that hears a spoken answer
    chosen: int | None = None  # 1-based, the candidate the caller chose
    chosen_by: str | None = None  # "key" or "voice"
    choice_heard: str | None = None  # the words of a spoken answer, chosen or not


class CallState(_Model):
    stage: Stage = Stage.menu
    caller: Caller = Field(default_factory=Caller)
    petition: Turn = Field(default_factory=Turn)
    address: AddressTurn = Field(default_factory=AddressTurn)
    segments: dict[str, Recording] = Field(default_factory=dict)
    menu_tries: int = 0
    confirm_tries: int = 0
    status_tries: int = 0
    queried: list[str] = Field(default_factory=list)  # case numbers asked about
    open_turns: int = 0  # open questions asked (greeting, again after silence, repeat, slower)
    answer_turns: int = 0  # short-answer turns taken (their segments answer-N, number-N)
    more_turns: int = 0  # petitions gone on with over their read-back (segments more-N)
    slow: bool = False  # the caller said 慢一点: every prompt slower for the rest of the call
    keys_named: bool = False  # the sentence naming the keys was said (once, after silence)
    confidential: bool = False  # the caller asked for 保密处理 (said or keyed)
    # The TwiML each of the last turns was ended with, by segment ("" while being worked out):
    # a turn may be ended twice (our end-of-speech redirect racing Twilio's own quiet, a #), and
    # the second end is answered with what the first one answered (``Call.claim_end``).
    replies: dict[str, str] = Field(default_factory=dict)

    @classmethod
    def load(cls, data: dict | None) -> CallState:
        return cls.model_validate(data or {})

    def dump(self) -> dict:
        return self.model_dump(mode="json")

    def turn(self, kind: TurnKind) -> Turn:
        return self.petition if kind == "petition" else self.address

    def recordings(self, kind: TurnKind | None = None) -> list[tuple[str, Recording]]:
        """(segment, recording) in the order the turns were taken."""
        return [(n, r) for n, r in self.segments.items() if kind is None or r.kind == kind]

    def petition_heard(self) -> Recording | None:
        """The current petition attempt as the caller said it: its segment's recording, joined
        with the turns it continues (``Turn.parts``): the words in order, the speech summed.
        Final only when every part that heard speech has its words."""
        current = self.segments.get(self.petition.segment)
        if current is None or not self.petition.parts:
            return current
        parts = [self.segments[n] for n in self.petition.parts if n in self.segments] + [current]
        spoken = [r for r in parts if r.speech_s > 0 or r.text.strip()] or [current]
        confs = [r.confidence for r in parts if r.final and r.confidence is not None]
        return current.model_copy(update={
            "speech_s": round(sum(r.speech_s for r in parts), 2),
            "duration": round(sum(r.duration for r in parts), 2),
            "text": "".join(r.text.strip() for r in parts if r.final),
            "segments": [seg for r in parts if r.final for seg in r.segments],
            "confidence": round(sum(confs) / len(confs), 4) if confs else None,
            "final": all(r.final for r in spoken),
            "deferred": any(r.deferred for r in spoken),
        })


def recording_path(call_sid: str, segment: str) -> str:
    """Where a turn's WAV goes, relative to the data directory."""
    safe = "".join(c for c in f"{call_sid}-{segment}" if c.isalnum() or c in "-_")
    return f"{RECORDINGS_DIR}/{local_date():%Y%m%d}/{safe}.wav"


@dataclass
class Call:
    """A call session as the flow changes it: the row's columns and the typed state.
    Every method is a named transition (see ivr/flow.md)."""

    row: CallSession
    state: CallState

    @classmethod
    def of(cls, row: CallSession) -> Call:
        return cls(row, CallState.load(row.state))

    @property
    def call_sid(self) -> str:
        return self.row.call_sid

    @property
    def settled(self) -> bool:
        """A case was filed, or the call ended without one: nothing more to file."""
        return self.row.case_id is not None or bool(self.row.outcome)

    # -- menu ---------------------------------------------------------------------------

    def count_menu_try(self) -> int:
        self.state.menu_tries += 1
        return self.state.menu_tries

    def ask_status(self) -> None:
        self.state.stage = Stage.status
        self.state.status_tries = 0

    def answered(self) -> None:
        """The greeting, the call's first prompt, is handed to Twilio: the call is answered
        (core.reporting.hotline). The first time counts; a retried webhook leaves it."""
        self.row.answered_at = self.row.answered_at or utcnow()

    def to_operator(self) -> None:
        self.state.stage = Stage.operator
        self.row.transferred_at = self.row.transferred_at or utcnow()

    def transfer_ended(self, dial_status: str | None) -> None:
        """The <Dial> to a person ended: Twilio's DialCallStatus (completed: answered)."""
        self.row.transfer_status = (dial_status or "unknown")[:16]

    # -- the caller's turns (petition, address) -------------------------------------------

    def begin_open(self) -> tuple[str, str | None]:
        """The open question ("请直接说您要反映的问题"): a petition recording begins before
        the greeting is said, so whatever the caller says from the first moment is kept."""
        segment, token = self.begin_turn("petition")
        self.state.stage = Stage.open
        self.state.open_turns += 1
        return segment, token

    def heard_intent(self, segment: str, intent: str, confidential: bool = False) -> None:
        """What an open turn's words meant. A turn that is not a petition (a status query, a
        request for a person, 再说一遍…) is kept but never filed as one."""
        rec = self.state.segments.get(segment)
        if rec is not None:
            rec.intent = intent
        self.state.confidential = self.state.confidential or confidential

    def name_keys(self) -> None:
        self.state.keys_named = True

    def go_slow(self) -> None:
        self.state.slow = True

    def keep_confidential(self) -> None:
        self.state.confidential = True

    def petition_attempts(self) -> int:
        """Petition recordings that were attempts at the petition: not an open question
        skipped with a key or met with silence, nor one whose words asked for something else."""
        return sum(1 for n, r in self.state.recordings("petition")
                   if r.intent in (None, "petition") and not n.startswith(MORE_PREFIX))

    def begin_answer(self, what: str = "answer") -> tuple[str, str | None]:
        """A short reply said instead of a key, on a stream of its own: "answer" (to a
        read-back; its WAV is recognised with the answers' phrase list) or "number" (a case
        number, recognised freely)."""
        self.state.answer_turns += 1
        segment = f"{what}-{self.state.answer_turns}"
        self.state.segments[segment] = Recording(kind="answer", audio_path=recording_path(self.call_sid, segment))
        return segment, self.row.stream_token

    def begin_turn(self, kind: TurnKind) -> tuple[str, str | None]:
        """A new recording: the next attempt's segment and its WAV path go on record now,
        before Twilio opens the stream. Returns (segment, stream token)."""
        turn = self.state.turn(kind)
        turn.attempt += 1
        turn.segment = f"{kind}-{turn.attempt}"
        turn.confirmed = False
        turn.parts = []
        path = recording_path(self.call_sid, turn.segment)
        self.state.segments[turn.segment] = Recording(kind=kind, audio_path=path)
        self.state.stage = Stage(kind)
        self.state.confirm_tries = 0
        if kind == "petition":
            self.row.audio_path = path
        return turn.segment, self.row.stream_token

    def begin_more(self, answer: str) -> tuple[str, str | None]:
        """The caller went on speaking over the read-back of their petition: the read-back's
        answer stream (``answer``) and a new turn ``more-N`` are the rest of the same attempt.
        Returns (segment, stream token)."""
        turn = self.state.petition
        turn.parts = [*turn.parts, turn.segment, answer]
        self.state.more_turns += 1
        turn.segment = f"{MORE_PREFIX}{self.state.more_turns}"
        turn.confirmed = False
        self.state.segments[turn.segment] = Recording(kind="petition",
                                                      audio_path=recording_path(self.call_sid, turn.segment))
        self.state.stage = Stage.petition
        self.state.confirm_tries = 0
        return turn.segment, self.row.stream_token

    def turn_heard(self, segment: str, recording: Recording) -> Recording:
        """A turn ended: keep what the stream recorded and recognised."""
        planned = self.state.segments.get(segment)
        if planned is not None and planned.audio_path and not recording.audio_path:
            recording.audio_path = planned.audio_path
        if planned is not None and planned.intent and not recording.intent:
            recording.intent = planned.intent
        self.state.segments[segment] = recording
        if recording.kind == "petition":
            spoken = [r.speech_s for _, r in self.state.recordings("petition")]
            self.row.speech_seconds = max(spoken, default=0.0)
            if segment == self.state.petition.segment:
                self.row.audio_path = recording.audio_path or self.row.audio_path
                self.row.transcript = (self.state.petition_heard() or recording).segments or None
        return recording

    def claim_end(self, segment: str, heard: Recording | None = None, retaking: bool = False) -> bool:
        """This request ends the turn ``segment``: True for the first to ask, False for a
        second end of the same turn (it answers with the first one's TwiML). ``heard``: what
        the turn recorded, kept with the claim (``turn_heard``) by the first only.
        ``retaking``: the step is taken again after a hold (the database did not answer), so
        a claim with no answer yet is its own first try's."""
        if segment in self.state.replies and not (retaking and self.state.replies[segment] == ""):
            return False
        self.state.replies[segment] = ""
        while len(self.state.replies) > KEEP_REPLIES:
            del self.state.replies[next(iter(self.state.replies))]
        if heard is not None:
            self.turn_heard(segment, heard)
        return True

    def replied(self, segment: str, twiml: str, instead_of: str | None = None) -> None:
        """What the first end of ``segment`` answered (kept for a second end of it).
        ``instead_of``: an answer stored for it earlier in the same request, replaced."""
        if self.state.replies.get(segment) in ("", instead_of or ""):
            self.state.replies[segment] = twiml

    def turns_heard(self, recordings: dict[str, Recording]) -> None:
        """Several turns ended at once (the caller hung up)."""
        for segment, recording in recordings.items():
            self.turn_heard(segment, recording)

    def ask_confirm(self, kind: TurnKind) -> None:
        self.state.stage = Stage.readback if kind == "petition" else Stage.address_confirm
        self.state.confirm_tries = 0

    def ask_readback(self, kind: TurnKind, again: bool = False,
                     intent: tuple[str, str, bool] | None = None) -> tuple[str, str | None]:
        """The read-back of what was heard, answered on a stream of its own: ``ask_confirm``
        (not when asked ``again``: its tries go on counting) and ``begin_answer``, after
        ``heard_intent(*intent)`` when the words of an open turn decided it. Returns the
        answer's (segment, stream token)."""
        if intent is not None:
            self.heard_intent(*intent)
        if not again:
            self.ask_confirm(kind)
        return self.begin_answer()

    def count_confirm_try(self) -> int:
        self.state.confirm_tries += 1
        return self.state.confirm_tries

    def confirm(self, kind: TurnKind, keyed: bool) -> None:
        """The read-back was accepted: by pressing 1, or by saying nothing twice (flagged)."""
        turn = self.state.turn(kind)
        turn.confirmed = True
        turn.unconfirmed = turn.unconfirmed or not keyed

    def accept_unrecognised(self) -> None:
        """Every attempt was heard as speech but nothing was recognised: the recordings are
        the petition (flagged for the operator)."""
        self.state.petition.confirmed = True
        self.state.petition.unconfirmed = True

    def address_heard(self, heard: str, match: dict | None) -> int:
        """What the unknown caller said as their address, and the gazetteer's match (or
        none). Returns the attempt number."""
        a = self.state.address
        a.heard = heard or a.heard
        a.name = a.grid_id = a.confidence = a.level = a.scope = None
        a.needs_building = False
        a.choices = []
        if match:
            a.name, a.grid_id, a.confidence = match["name"], match["grid_id"], match["confidence"]
            a.level, a.scope = match.get("level"), match.get("scope")
            a.needs_building = bool(match.get("needs_building"))
            a.choices = [(int(g), str(n)) for g, n in match.get("choices") or ()]
            if len(a.choices) < 2:
                a.choices = []
                self.ask_confirm("address")
        return a.attempt

    def ask_choice(self) -> tuple[str, str | None]:
        """Two or more close candidates: the caller chooses by key or says which. A stream
        of its own hears the spoken answer. Returns (segment, stream token)."""
        a = self.state.address
        a.choice_segment = f"address-choice-{a.attempt}"
        a.chosen = a.chosen_by = a.choice_heard = None
        self.state.segments[a.choice_segment] = Recording(kind="address",
                                                          audio_path=recording_path(self.call_sid, a.choice_segment))
        self.state.stage = Stage.address_choice
        return a.choice_segment, self.row.stream_token

    def address_chosen(self, number: int, by: str, heard: str | None, match: dict) -> None:
        """The caller chose candidate ``number`` (1-based): the address is that place,
        confirmed by the choice itself."""
        a = self.state.address
        a.chosen, a.chosen_by, a.choice_heard = number, by, heard
        a.name, a.grid_id, a.confidence = match["name"], match["grid_id"], match["confidence"]
        a.level, a.scope = match.get("level"), match.get("scope")
        a.needs_building = bool(match.get("needs_building"))
        self.confirm("address", keyed=True)

    def address_not_chosen(self, heard: str | None) -> None:
        """No key, no words, neither, or words naming none of them: the address stays what
        the matcher was sure of (the candidates' common grid) or triage, unconfirmed."""
        a = self.state.address
        a.chosen, a.chosen_by, a.choice_heard = None, None, heard

    def ask_building(self) -> None:
        """Asked once, by keypad, for the building number of an estate matched only in part."""
        self.state.address.building_asked = True
        self.state.stage = Stage.address_building

    def building_keyed(self, digits: str, match: dict | None) -> None:
        """The building number keyed in, and the building it names (``None``: no building of
        that number in the estate; the case stays at the estate's grid)."""
        a = self.state.address
        a.building_keyed = digits
        if match:
            a.name, a.grid_id, a.confidence = match["name"], match["grid_id"], match["confidence"]
            a.level, a.needs_building = match.get("level"), False

    # -- case status ----------------------------------------------------------------------

    def status_found(self, number: str) -> None:
        self.state.status_tries = 0
        self.state.queried.append(number)

    def count_status_try(self) -> int:
        self.state.status_tries += 1
        return self.state.status_tries

    # -- the end --------------------------------------------------------------------------

    def callback(self, status: str, duration: str | None) -> None:
        """Twilio's call status callback."""
        if status:
            self.row.status = status[:24]
        if duration and duration.isdigit():
            self.row.duration_s = int(duration)
        if status in TERMINAL_STATUSES and self.row.ended_at is None:
            self.row.ended_at = utcnow()

    def end(self, outcome: str | None = None) -> str:
        """Over without a case; the first outcome recorded stays."""
        if self.row.case_id is None and not self.row.outcome:
            self.row.outcome = outcome or self.outcome_without_case()
            self.state.stage = Stage.ended
        return self.row.outcome or ""

    def outcome_without_case(self) -> str:
        if self.state.stage == Stage.status or self.state.queried:
            return "status_query"
        if self.state.stage == Stage.operator:
            return "operator"
        return "hung_up"

    def filed(self, case_id: int, outcome: str) -> None:
        self.row.case_id = case_id
        self.row.outcome = outcome
        self.state.stage = Stage.filed
