"""The unknown caller's address: what was said → the gazetteer's grid, as deep as it is sure.

Two passes. The turn is recognised freely first (the live recogniser, or the transcribe
job), and the words go to ``core.places.routing.Gazetteer``. Only when that does not settle the
micro grid (nothing matched, or only an ancestor: the estate, not the building) is the
turn's WAV recognised once more with the gazetteer's phrase list
(``Gazetteer.phrases``: names as said, measure words, numerals, fillers), which makes the
recogniser prefer the names that exist. The phrase pass can only go deeper under what the
free pass was sure of, never sideways: a wrong grid is worse than a coarse one. The list
is rebuilt with the gazetteer (``core.places.indexes``), so a new estate is in it at once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from core.places.models import GridLevel
from core.places.routing import Gazetteer, RouteResult

if TYPE_CHECKING:
    from speech_models.pool import SpeechPool

log = logging.getLogger(__name__)

LEVEL_DEPTH = {level.value: i for i, level in enumerate(GridLevel)}  # district 0 … micro 4
PhrasePass = Callable[[Sequence[str]], Awaitable[str | None]]


@dataclass(frozen=True)
class HeardAddress:
    text: str  # the words the route came from
    route: RouteResult | None
    phrase_pass: bool = False  # the words came from the phrase-list pass

    @property
    def settled(self) -> bool:
        return self.route is not None and not self.route.ancestor_only

    def rank(self) -> tuple:
        r = self.route
        if r is None:
            return (0, 0, 0.0)
        return (1, LEVEL_DEPTH.get(r.level or GridLevel.micro.value, 0), r.confidence)

    def as_match(self) -> dict | None:
        """What the call keeps (``AddressTurn``) and reads back."""
        r = self.route
        if r is None:
            return None
        return {"name": r.place or self.text, "grid_id": r.grid_id, "confidence": r.confidence,
                "level": r.level, "scope": r.scope, "needs_building": r.needs_building,
                "reason": r.reason, "phrase_pass": self.phrase_pass,
                "choices": [[grid_id, name] for grid_id, name in r.choices]}


async def hear_address(gazetteer: Gazetteer, free_text: str, phrase_pass: PhrasePass | None) -> HeardAddress:
    """The best reading of an address turn (see the module's doc)."""
    free_text = (free_text or "").strip()
    first = HeardAddress(free_text, gazetteer.match(free_text) if free_text else None)
    if first.settled or phrase_pass is None:
        return first
    phrases = gazetteer.phrases().phrases
    if not phrases:
        return first
    try:
        text = ((await phrase_pass(phrases)) or "").strip()
    except Exception as exc:  # a model without these words, a busy pool: the free pass stands
        log.info("address phrase pass skipped: %s", exc)
        return first
    if not text or text == free_text:
        return first
    second = HeardAddress(text, gazetteer.match(text), phrase_pass=True)
    if second.route is None:
        return first
    if first.route is not None and not gazetteer.within(second.route.grid_id, first.route.grid_id):
        log.info("address phrase pass %r left %s (free pass %r): kept the free pass", text,
                 first.route.grid_id, free_text)
        return first
    return second if second.rank() > first.rank() else first


def file_phrase_pass(pool: SpeechPool | None, path: Path | None, timeout_s: float) -> PhrasePass | None:
    """A phrase pass that recognises the turn's WAV at ``path`` through the speech pool."""
    if pool is None or path is None or timeout_s <= 0:
        return None

    async def run(phrases: Sequence[str]) -> str | None:
        if not path.is_file() or path.stat().st_size <= 44:
            return None
        if not await pool.accepts_phrases(phrases):
            return None  # the model knows none of these words: the free words stand
        transcript = await asyncio.wait_for(pool.transcribe_file(path, list(phrases)), timeout_s)
        return transcript.text

    return run
