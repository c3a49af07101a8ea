"""Hotline you just talk to (issue 25): intent accuracy, time to speak, time to the next prompt.

    python bench/hotline_voice.py [--calls N] [--chars-per-s 4.0]

1. Intent accuracy: ``core.cases.intents.IntentMatcher`` on phrasings written as a
   recogniser writes them (no punctuation, spaces between words, homophones, fillers 嗯 /
   那个, a character missing), per intent; petitions that mention an intent word must stay
   petitions. Pure: no server.
2. Call start → "the caller may speak" (p95 target < 10 s): the /twilio/voice webhook's
   time plus the spoken length of what is said before the turn that records the caller
   (``--chars-per-s``: Mandarin TTS speaks about 4 characters a second), for the new
   open question and, as the baseline in the same run, the old menu path (greeting and the
   menu said twice, a key, the petition prompt).
3. Caller's last word → next prompt (p95 target < 1 s): the webhook that ends the turn
   (open question → read-back) measured on an in-process server (signed webhooks, the
   Media Streams socket, the fake recogniser), against the keypad path's petition →
   read-back in the same run. The quiet Twilio's <Record> waits before it ends a turn
   (``[open] silence_s``; 0 when the caller presses #) is printed beside it.
4. The same, end to end, as the caller lives it (``--turn-calls`` calls per path): real
   Mandarin speech (the AISHELL clips of ../shared/speech_samples/zh, else espeak-ng) and a
   spoken 对, streamed at real-time pace; from the moment the caller's last word went out to
   the moment the next prompt's TwiML is in the simulator's hand. Our end-of-speech path
   (rules.toml ``[hotline.end_of_speech]``: the quiet window, the REST redirect to the fake
   Twilio server through the real ``twilio`` client, the signed webhook) beside Twilio's own
   quiet (the same server without REST credentials, ``--twilio-baseline``) in the same run.
   Two kinds of caller: one who says the petition in one go, and one who hesitates 0.8 s
   inside it and goes on speaking (over the read-back when it has begun: barge-in stops it,
   and the whole is read back), each beside "before" (the same server with barge-in off:
   open turns end after the longer quiet_s, as before barge-in), alternating.

Figures, never assertions: the lead runs this on a quiet machine.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# (what the recogniser wrote, the intent it means) — spoken-style, as Vosk writes Mandarin.
PHRASINGS: list[tuple[str, str]] = [
    # status
    ("查询", "status"), ("嗯 我 想 查询 一下", "status"), ("茶询 进度", "status"), ("查 进度", "status"),
    ("那个 我 的 编号 是", "status"), ("我 想 问 一下 办 得 怎么样 了", "status"),
    ("查询 二 六 幺 二 零 七 零 零 零 幺", "status"), ("二六幺二 零七零零 零幺", "status"),
    ("我 的 那个 问题 进度", "status"), ("有 没有 结果", "status"),
    # operator
    ("人工", "operator"), ("转 人工", "operator"), ("我 要 转 人 工", "operator"), ("接线员", "operator"),
    ("听 不 懂", "operator"), ("嗯 人 工 服务", "operator"), ("真人", "operator"), ("人 公", "operator"),
    # repeat
    ("再 说 一 遍", "repeat"), ("在 说 一遍", "repeat"), ("再说遍", "repeat"), ("没 听 清", "repeat"),
    ("嗯 重复 一遍", "repeat"), ("再 讲 一遍", "repeat"),
    # slower
    ("慢 一点", "slower"), ("说 慢 点", "slower"), ("慢点 说", "slower"), ("嗯 慢 一 点", "slower"),
    ("你 说 慢 一点", "slower"), ("满 一点", "slower"),
    # confidential (said alone)
    ("保密", "confidential"), ("不要 透露 我 的 信息", "confidential"), ("替 我 保密", "confidential"),
    ("嗯 匿名", "confidential"), ("宝 密", "confidential"),
    # petitions, some mentioning an intent word
    ("小区 门口 的 路灯 坏 了 好 几 天 了", "petition"), ("楼道 灯 不亮", "petition"),
    ("我 查询 过 好 几 次 了 楼下 的 路灯 还是 不亮", "petition"), ("垃圾 没人 清理", "petition"),
    ("隔壁 装修 噪音 太 大 了 晚上 十点 还在 干", "petition"), ("井盖 丢 了 很 危险", "petition"),
    ("楼上 漏水 物业 不管", "petition"), ("施工 进度 太慢 路 一直 封着 出不去", "petition"),
    ("路灯 坏 了", "petition"), ("车 开 得 太快 了 小区 里 要 装 减速带", "petition"),
]
ANSWERS: list[tuple[str, str]] = [
    ("对", "yes"), ("对 的", "yes"), ("是的", "yes"), ("没错", "yes"), ("可以", "yes"), ("嗯 对", "yes"),
    ("队", "yes"), ("好 的", "yes"), ("不对", "no"), ("不是", "no"), ("重新 说", "no"), ("说 错 了", "no"),
    ("不 对 不 对", "no"), ("布 对", "no"), ("保密", "confidential"), ("再 说 一 遍", "repeat"),
    ("慢 一点", "slower"),
]


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(p / 100 * (len(s) - 1))))]


def line(label: str, value: str, ok: bool | None, target: str) -> None:
    mark = "" if ok is None else ("ok" if ok else "MISSED")
    print(f"  {label:<52} {value:>14}  {target:<14} {mark}")


def accuracy() -> None:
    from core.cases.intents import IntentMatcher

    matcher = IntentMatcher.load()
    print("1. intent accuracy (spoken-style phrasings as a recogniser writes them)")
    for kind, cases in (("open", PHRASINGS), ("answer", ANSWERS)):
        by_intent: dict[str, list[bool]] = {}
        misses = []
        for words, meant in cases:
            got = matcher.hear(words, kind)
            heard = got.intent if not (meant == "confidential" and got.confidential and kind == "answer") else meant
            ok = heard == meant
            by_intent.setdefault(meant, []).append(ok)
            if not ok:
                misses.append(f"{words!r} → {heard or '(none)'} (meant {meant})")
        for intent, oks in by_intent.items():
            line(f"{kind}: {intent}", f"{sum(oks)}/{len(oks)}", None, "")
        total = [ok for oks in by_intent.values() for ok in oks]
        line(f"{kind}: all", f"{100 * sum(total) / len(total):.0f} %", None, "")
        for miss in misses:
            print(f"     missed: {miss}")


def spoken_s(texts: list[str], chars_per_s: float) -> float:
    """Seconds to say ``texts``: characters spoken (punctuation is a pause, counted as none)."""
    return sum(len([c for c in t if c.isalnum()]) for t in texts) / chars_per_s


async def calls(n: int, chars_per_s: float) -> None:
    from core.platform.db import make_engine
    from core.platform.migrations import upgrade
    from gridline.wiring import wire
    from ivr.config import FlowConfig
    from ivr.simulator import CallScript, Turn
    from tests.ivr.conftest import KNOWN_PHONE, start_rig, tone
    from tests.support.fake_transcriber import FakeTranscriber

    wire()  # the case events' subscribers, as gridline serve wires them
    with tempfile.TemporaryDirectory() as tmp:
        engine = make_engine(f"sqlite:///{tmp}/bench.sqlite3")
        await asyncio.to_thread(upgrade, engine)
        speech = FakeTranscriber(confidence=0.9)
        flow = FlowConfig.load(stream={"hangup_grace_s": 0.3})
        rig = await start_rig(engine, Path(tmp), speech, flow=flow)
        voice_start, voice_turn, keypad_turn = [], [], []
        greeting_s: list[float] = []
        try:
            prompts = rig.hotline.flow
            for i in range(n):
                speech.reset()
                speech.say(f"小区 门口 的 路灯 坏 了 第 {i} 次")
                sim = rig.simulator()
                result = await sim.call(CallScript(from_number=KNOWN_PHONE, digits=[None, "1"],
                                                   turns=[Turn(tone(2.0), end="#")]))
                voice_start.append(result.webhook_latencies[0])
                voice_turn.extend(lat for path, lat in zip(result.webhook_paths, result.webhook_latencies, strict=True)
                                  if path == "/twilio/open/done")
                greeting_s.append(spoken_s([result.heard[0]], chars_per_s))
                speech.reset()
                speech.say(f"楼道 灯 不亮 第 {i} 次")
                keyed = await rig.simulator().call(CallScript(from_number=KNOWN_PHONE, digits=["1", "1"],
                                                              turns=[Turn(tone(2.0), end="#")]))
                keypad_turn.extend(lat for path, lat in zip(keyed.webhook_paths, keyed.webhook_latencies, strict=True)
                                   if path == "/twilio/petition/done")
            old = [prompts.text("greeting_known", community="幸福社区")] + [prompts.text("menu")] * 2
            old_s = spoken_s(old, chars_per_s) + float(prompts.config["prompts"]["pause_s"]) + 1.0 + \
                spoken_s([prompts.text("petition_intro")], chars_per_s)
            silence_s = float(prompts.config["open"]["silence_s"])
        finally:
            await rig.stop()
            engine.dispose()

    print(f"\n2. call start → the caller may speak ({n} calls, TTS at {chars_per_s:g} characters/s)")
    new = [w + g for w, g in zip(voice_start, greeting_s, strict=True)]
    line("open question: webhook + greeting, p95", f"{pct(new, 95):.2f} s", pct(new, 95) < 10, "< 10 s")
    line("  of which the greeting spoken", f"{pct(greeting_s, 95):.2f} s", pct(greeting_s, 95) <= 8, "≤ 8 s")
    line("  the stream opens before the greeting (barge-in kept)", "0.00 s", None, "")
    base = [w + old_s for w in voice_start]
    line("baseline, old menu: greeting, menu ×2, key, prompt, p95", f"{pct(base, 95):.2f} s", None, "")
    print("\n3. caller's last word → next prompt (the turn's webhook)")
    line("open question → read-back, p95", f"{1000 * pct(voice_turn, 95):.0f} ms", pct(voice_turn, 95) < 1, "< 1 s")
    line("baseline, keypad petition → read-back, p95", f"{1000 * pct(keypad_turn, 95):.0f} ms", None, "")
    line("+ Twilio's end-of-speech quiet ([open] silence_s; # ends at once)", f"{silence_s:.0f} s", None, "")


SAMPLES = ROOT.parent / "shared" / "speech_samples" / "zh"
CLIPS = ["wenet_aishell_BAC009S0724W0121.wav", "firered_BAC009S0764W0121.wav", "s3tok_BAC009S0764W0122.wav"]


def said(tmp: Path) -> tuple[list[bytes], bytes]:
    """Petitions (real Mandarin clips, else espeak-ng) and a spoken 对, µ-law from the first
    word to the last (what surrounds them in a file is not the caller's quiet)."""
    import shutil
    import subprocess

    from ivr.loudness import frame_rms
    from ivr.simulator import audio_frames

    def trimmed(path: Path) -> bytes:
        mulaw = b"".join(audio_frames(path))
        loud = (frame_rms(mulaw) > 300).nonzero()[0]
        return mulaw[loud[0] * 160:(loud[-1] + 1) * 160]

    def espeak(pinyin: str, name: str) -> bytes:
        path = tmp / name
        subprocess.run(["espeak-ng", "-v", "cmn-latn-pinyin", "-a", "150", "-w", str(path), pinyin], check=True,
                       capture_output=True)
        return trimmed(path)

    clips = [trimmed(SAMPLES / c) for c in CLIPS if (SAMPLES / c).is_file()]
    if not clips and shutil.which("espeak-ng"):
        clips = [espeak("xiao3 qu1 men2 kou3 de5 lu4 deng1 huai4 le5 hao3 ji3 tian1 le5", "p.wav")]
    if not shutil.which("espeak-ng"):
        from tests.ivr.conftest import tone
        return clips or [tone(3.0)], tone(0.4)
    return clips, espeak("dui4", "dui.wav")


def pausing(clip: bytes, pause_s: float = 0.8) -> bytes:
    """The clip with a hesitation of ``pause_s`` inside: at the quietest frame of its middle third."""
    from ivr.loudness import frame_rms
    from tests.ivr.conftest import silence

    rms = frame_rms(clip)
    third = len(rms) // 3
    cut = third + int(rms[third:2 * third].argmin())
    return clip[:cut * 160] + silence(pause_s) + clip[cut * 160:]


async def turn_ends(n: int, twilio_baseline: bool) -> None:
    """Each caller once per path, the paths alternating: ``barge`` (this branch: open turns end
    after barge_quiet_s, the read-back listens on), ``before`` (the same server with barge_in
    off: open turns end after quiet_s, as on main before barge-in), and with
    ``twilio_baseline`` Twilio's own quiet (no REST credentials). Two kinds of caller: one who
    says the petition in one go, one who hesitates 0.8 s inside it and goes on (over the
    read-back, if it has begun)."""
    from core.platform.db import make_engine
    from core.platform.migrations import upgrade
    from gridline.wiring import wire
    from ivr.config import FlowConfig
    from ivr.simulator import CallScript, Turn
    from tests.ivr.conftest import KNOWN_PHONE, TOKEN, start_rig
    from tests.support.fake_transcriber import FakeTranscriber
    from tests.support.fake_twilio import FakeTwilio

    wire()
    paths = ["barge", "before"] + (["twilio"] if twilio_baseline else [])
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        petitions, yes = said(root)
        engine = make_engine(f"sqlite:///{tmp}/bench-eos.sqlite3")
        await asyncio.to_thread(upgrade, engine)
        speech = FakeTranscriber(confidence=0.9)
        flow = FlowConfig.load(stream={"hangup_grace_s": 0.3})
        times = {p: {"open": [], "pause": [], "answer": []} for p in paths}
        whole = {p: 0 for p in paths}  # pausing callers whose read-back (and case) had every word
        barged = {p: 0 for p in paths}
        ended_by: dict[str, list[str]] = {p: [] for p in paths}
        async with FakeTwilio(auth_token=TOKEN) as fake:
            rigs = {}
            for name in paths:
                (root / name).mkdir()
                live = {"twilio_account_sid": fake.account_sid, "twilio_api_url": fake.base_url} \
                    if name != "twilio" else {}
                rigs[name] = await start_rig(engine, root / name, speech, flow=flow,
                                             district=next(iter(rigs.values())).district if rigs else None, **live)
            # "before": the same rules with barge-in off (rules.toml [hotline.end_of_speech] barge_in)
            before = rigs["before"].hotline
            before.flow.end_of_speech = before.registry.end_of_speech = dict(before.flow.end_of_speech,
                                                                             barge_in=False)
            before.registry.on_barge_in = None
            eos = rigs["barge"].hotline.flow.end_of_speech
            try:
                for i in range(n):
                    clip = petitions[i % len(petitions)]
                    for kind in ("open", "pause"):
                        for name in paths:
                            rig = rigs[name]
                            speech.reset()
                            # one text per stream opened: the petition's, the read-back's a caller goes
                            # on over (barge-in opens a recogniser there) and the rest's
                            words = ["小区 门口 的", "路灯 坏 了", f"第 {i} 次"]
                            barging = kind == "pause" and name == "barge"
                            speech.say(*(words if barging else [" ".join(words)]))
                            speech.say_in_grammar("对")
                            sim = rig.simulator(speed=1.0)
                            if name != "twilio":
                                fake.carry(sim)
                            said_first = pausing(clip) if kind == "pause" else clip
                            ins = rig.hotline.registry.stats["barge_ins"]
                            result = await sim.call(CallScript(from_number=KNOWN_PHONE, turns=[
                                Turn(said_first, end="silence", goes_on=True), Turn(yes, end="silence")]))
                            if len(result.word_to_prompt) >= 2 and result.case_number:
                                times[name][kind].append(result.word_to_prompt[0])
                                times[name]["answer"].append(result.word_to_prompt[1])
                            ended_by[name].extend(by for by, _ in result.turn_ends)
                            if kind == "pause":
                                barged[name] += rig.hotline.registry.stats["barge_ins"] - ins
                                full = f"您反映的是：小区门口的路灯坏了第{i}次"
                                whole[name] += sum(full in h for h in result.heard) == 1
            finally:
                for rig in rigs.values():
                    await rig.stop()
                engine.dispose()
    print(f"\n4. caller's last word → next prompt, end to end ({n} calls per path and kind of caller, alternating; "
          f"real-time speech; quiet windows: open/petition {eos.get('barge_quiet_s')} s with barge-in, "
          f"{eos.get('quiet_s')} s before; answers {eos.get('answer_quiet_s')} s)")
    labels = {"barge": "barge-in (this branch)", "before": "before (barge-in off, main's rules)",
              "twilio": "Twilio's own quiet"}
    for turn, label in (("open", "said in one go: open question → read-back"),
                        ("pause", "0.8 s pause inside: → the read-back of the whole"),
                        ("answer", "对 → case number")):
        print(f"  {label}")
        for name in paths:
            got = times[name][turn]
            line(f"    {labels[name]}, p95 (median)", f"{1000 * pct(got, 95):.0f} ({1000 * pct(got, 50):.0f}) ms",
                 pct(got, 95) < 1 if name == "barge" else None, "< 1 s" if name == "barge" else "")
    for name in paths:
        print(f"  pausing callers who heard one read-back with every word, {labels[name]}: {whole[name]}/{n}"
              f" (barge-ins {barged[name]})")
    counts = {name: {by: ended_by[name].count(by) for by in sorted(set(ended_by[name]))} for name in ended_by}
    print(f"  turns ended by: {counts}")
    import os
    print(f"  load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())} (a shared 2-core machine)")


def espeak_words(tmp: Path, *pinyin_groups: str, pause_s: float = 0.4) -> bytes:
    """espeak-ng saying each group (pinyin), from its first word to its last, with ``pause_s``
    of quiet between the groups (a caller reading a number off a slip), as µ-law."""
    import subprocess

    from ivr.loudness import frame_rms
    from ivr.simulator import audio_frames
    from tests.ivr.conftest import silence

    said = []
    for i, pinyin in enumerate(pinyin_groups):
        path = tmp / f"group-{i}.wav"
        subprocess.run(["espeak-ng", "-v", "cmn-latn-pinyin", "-a", "150", "-w", str(path), pinyin], check=True,
                       capture_output=True)
        mulaw = b"".join(audio_frames(path))
        loud = (frame_rms(mulaw) > 300).nonzero()[0]
        said.append(mulaw[loud[0] * 160:(loud[-1] + 1) * 160])
    return silence(pause_s).join(said)


async def gather_turns(n: int) -> None:
    """The two turns asked in a keypad <Gather> and answered by voice: the case number of a
    status query (said in three groups, 0.4 s apart) and "是A，还是B？" (九幢). Each call once
    on this branch (our end of speech: REST redirect after number_quiet_s / answer_quiet_s)
    and once as before (the same server without REST credentials: the turn ends when the
    keypad times out, [status] voice_timeout_s / [address] choice_timeout_s, as on main for
    these turns), alternating; real-time speech."""
    import os
    import shutil

    from sqlmodel import select

    from core.places.address import spoken
    from core.places.models import GazetteerEntry
    from core.platform.db import make_engine, session_scope
    from core.platform.migrations import upgrade
    from core.reference.demo import load_demo
    from gridline.wiring import wire
    from ivr.config import FlowConfig
    from ivr.simulator import CallScript, Turn
    from tests.ivr.conftest import TOKEN, UNKNOWN_PHONE, start_rig
    from tests.ivr.test_address import CALLER
    from tests.support.fake_transcriber import FakeTranscriber
    from tests.support.fake_twilio import FakeTwilio

    if not shutil.which("espeak-ng"):
        print("\n5. the number and the choice: skipped (espeak-ng not installed)")
        return
    wire()
    paths = ["after", "before"]
    times = {p: {"number": [], "choice": []} for p in paths}
    ended_by: dict[str, list[str]] = {p: [] for p in paths}
    missed: list[str] = []  # calls not measured, and why
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        petition = said(root)[0][0]
        address = espeak_words(root, "yang2 fang1 xin1 cun1 yi1 zhuang4 he2 jiu3 zhuang4")
        choice = espeak_words(root, "jiu3 zhuang4")
        query = espeak_words(root, "cha2 xun2")
        engine = make_engine(f"sqlite:///{tmp}/bench-gather.sqlite3")
        await asyncio.to_thread(upgrade, engine)
        with session_scope(engine) as session:
            load_demo(session)
            district = {"estate": session.exec(select(GazetteerEntry).where(GazetteerEntry.name == "洋坊新村"))
                        .one().grid_id}
        speech = FakeTranscriber(confidence=0.9)
        flow = FlowConfig.load(stream={"hangup_grace_s": 0.3})
        async with FakeTwilio(auth_token=TOKEN) as fake:
            rigs = {}
            for name in paths:
                (root / name).mkdir()
                live = {"twilio_account_sid": fake.account_sid, "twilio_api_url": fake.base_url} \
                    if name == "after" else {}
                rigs[name] = await start_rig(engine, root / name, speech, flow=flow, district=district, **live)
            eos = rigs["after"].hotline.flow.end_of_speech
            try:
                for i in range(n):
                    for name in paths:
                        rig = rigs[name]
                        # the choice: key 1 at the greeting, the petition, 1 at its read-back, an address
                        # naming two buildings, then 九幢 said
                        speech.reset()
                        words = [f"楼道 灯 不亮 第 {i} 次", "洋坊 新村 一 幢 和 九 幢", "九 幢"]
                        # carried by the fake Twilio, the greeting's quiet reaches the open stream
                        speech.say(*([""] + words if name == "after" else words))
                        sim = rig.simulator(speed=1.0)
                        if name == "after":
                            fake.carry(sim)
                        result = await sim.call(CallScript(from_number=CALLER, digits=["1", "1", Turn(choice)], turns=[
                            Turn(petition, end="silence"), Turn(address, end="silence")]))
                        if result.case_number and result.word_to_prompt:
                            times[name]["choice"].append(result.word_to_prompt[-1])
                        else:
                            missed.append(f"{name} choice: heard {result.heard[-2:]}, ended {result.turn_ends[-2:]}")
                        ended_by[name].extend(f"{by} {url.split('?')[0].rsplit('/twilio/', 1)[-1]}"
                                              for by, url in result.turn_ends)
                        number = result.case_number
                        if not number:
                            continue
                        # the status query: 查询, then the number asked for and said in three groups
                        speech.reset()
                        speech.say("查询", spoken(number))
                        groups = [" ".join(f"{d}" for d in number[:4]), " ".join(number[4:8]), " ".join(number[8:])]
                        digit_pinyin = ["ling2", "yao1", "er4", "san1", "si4", "wu3", "liu4", "qi1", "ba1", "jiu3"]
                        said_number = espeak_words(root, *(" ".join(digit_pinyin[int(d)] for d in g.split())
                                                           for g in groups))
                        sim = rig.simulator(speed=1.0)
                        if name == "after":
                            fake.carry(sim)
                        result = await sim.call(CallScript(from_number=UNKNOWN_PHONE, digits=[None, Turn(said_number)],
                                                           turns=[Turn(query, end="silence")]))
                        if any("的诉求，目前" in h for h in result.heard) and result.word_to_prompt:
                            times[name]["number"].append(result.word_to_prompt[-1])
                        else:
                            missed.append(f"{name} number: heard {result.heard[-2:]}, ended {result.turn_ends[-2:]}")
                        ended_by[name].extend(f"{by} {url.split('?')[0].rsplit('/twilio/', 1)[-1]}"
                                              for by, url in result.turn_ends)
            finally:
                for rig in rigs.values():
                    await rig.stop()
                engine.dispose()
    cfg = flow
    print(f"\n5. caller's last word → next prompt, the turns asked in a keypad question ({n} calls per path, "
          f"alternating; real-time speech; quiet windows: number {eos.get('number_quiet_s')} s, choice "
          f"{eos.get('answer_quiet_s')} s; keypad timeouts: number {cfg['status']['voice_timeout_s']} s, choice "
          f"{cfg['address']['choice_timeout_s']} s)")
    labels = {"after": "our end of speech (this branch)", "before": "keypad timeout (before, as on main)"}
    for turn, label in (("number", "case number said in groups → the status read"),
                        ("choice", "是A，还是B？ answered 九幢 → case number")):
        print(f"  {label}")
        for name in paths:
            got = times[name][turn]
            line(f"    {labels[name]}, p95 (median)", f"{1000 * pct(got, 95):.0f} ({1000 * pct(got, 50):.0f}) ms",
                 pct(got, 95) < 1 if name == "after" else None, "< 1 s" if name == "after" else "")
            print(f"      calls measured: {len(got)}/{n}")
    counts = {name: {by: ended_by[name].count(by) for by in sorted(set(ended_by[name]))
                     if by.split()[-1] in ("case-status", "address/choice")} for name in ended_by}
    print(f"  these turns ended by: {counts}")
    for why in missed:
        print(f"  not measured: {why}")
    print(f"  load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())} (a shared 2-core machine)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=20, help="calls per path for the timings (default 20)")
    parser.add_argument("--chars-per-s", type=float, default=4.0, help="Mandarin TTS speed (default 4.0)")
    parser.add_argument("--turn-calls", type=int, default=10,
                        help="calls per path for the end-to-end turn ends, each in real time (default 10)")
    parser.add_argument("--gather-calls", type=int, default=5,
                        help="calls per path for the number and choice turns, each in real time (default 5)")
    parser.add_argument("--gather-only", action="store_true", help="only the number and choice turns (5.)")
    parser.add_argument("--intents-only", action="store_true", help="only the intent accuracy")
    parser.add_argument("--twilio-baseline", action="store_true",
                        help="also the end-to-end turns ended by Twilio's own quiet (no REST credentials)")
    args = parser.parse_args()
    if args.gather_only:
        asyncio.run(gather_turns(args.gather_calls))
        return
    accuracy()
    if not args.intents_only:
        asyncio.run(calls(args.calls, args.chars_per_s))
        if args.turn_calls:
            asyncio.run(turn_ends(args.turn_calls, args.twilio_baseline))
        if args.gather_calls:
            asyncio.run(gather_turns(args.gather_calls))


if __name__ == "__main__":
    main()
