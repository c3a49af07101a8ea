"""Writers for the recogniser: a case filed with its recording before its words were
recognised (the recogniser was busy or absent) gets its transcript when it is ready."""

from __future__ import annotations

from sqlmodel import Session

from core.actions._base import check, event
from core.cases import limits
from core.cases.models import Case, CaseEvent
from core.platform.rules import load_rules

# Flag of a case whose recording is waiting for recognition (a ``transcribe_recording`` job).
TRANSCRIPT_PENDING = "transcript_pending"
LOW_CONFIDENCE = "low_confidence"


def is_low_confidence(text: str | None, confidence: float | None) -> bool:
    """Whether a transcript needs an operator's review: nothing recognised, or a mean word
    confidence below rules.toml ``[intake] low_confidence``."""
    threshold = float(load_rules()["intake"]["low_confidence"])
    return not (text or "").strip() or confidence is None or float(confidence) < threshold


def set_transcript(
    session: Session,
    case: Case,
    *,
    actor: str,
    text: str,
    segments: list[dict] | None,
    confidence: float | None,
    address_text: str | None = None,
) -> CaseEvent | None:
    """Record the recognised words of a case filed as ``transcript_pending``.

    The description takes the text only if nobody has written one (an operator may have
    listened to the recording meanwhile); likewise the spoken address. The pending flag
    goes, ``low_confidence`` comes when the words need review. A case that is not pending
    (a second run of the same job) is left alone: returns ``None``."""
    check(case, "annotate")
    flags = set(case.flags or [])
    if TRANSCRIPT_PENDING not in flags:
        return None
    text, cut = limits.keep_words((text or "").strip())
    data: dict = {"text": text, "confidence": confidence}
    if cut:  # the recording keeps what did not fit; an operator is told
        flags.add(limits.TEXT_CUT)
        data["text_cut"] = True
    case.transcript = segments or None
    case.transcript_confidence = confidence
    if text and not case.description.strip():
        case.description = text
        data["description"] = True
    if address_text and address_text.strip() and not (case.address_text or "").strip():
        case.address_text = address_text.strip()[:limits.limit_of("address")]
        data["address_text"] = case.address_text
    flags.discard(TRANSCRIPT_PENDING)
    if is_low_confidence(text, confidence):
        flags.add(LOW_CONFIDENCE)
    case.flags = sorted(flags) or None
    return event(session, case, "transcribe", actor, case.status, data=data)
