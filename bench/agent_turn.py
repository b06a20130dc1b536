"""Per-turn wall time of the worker's handlers against an instant fake model (SPEC §21).

    .venv/bin/python -m bench.agent_turn [--turns 20]

With the fake OpenAI-compatible server of the tests on loopback (no delay), in one run:
``echo``; ``llm`` — here one direct chat-completions request, which is all the ``llm``
handler does (labelled ``llm (direct request)``: the handler itself lives on another branch);
``openclaw`` embedded (``agent --local`` per turn; its first turn, in a fresh state dir, is
the cold turn); ``openclaw`` through the warm gateway (the worker's first turn runs embedded
while the gateway boots behind it; that boot is reported apart). Each figure is the median
of ``--turns`` turns after one warm-up turn. The gap to the fake model's own round trip is
the handler's overhead. Target: the chosen mode's (gateway) warm turn ≤ 25 % of the
embedded cold turn measured in the same run. Needs OpenClaw
(``scripts/install_openclaw.sh``).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.fakes.openai_server import FakeOpenAI  # noqa: E402
from workers.runtime import openclaw as oc  # noqa: E402
from workers.runtime.handlers import JobContext, echo  # noqa: E402

TARGET_RATIO = 0.25


def timed(call) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def context(data_dir: Path, runtime: dict, text: str) -> JobContext:
    job = {"message_id": 1, "conversation_id": "bench-conv", "agent_key": "bench",
           "payload": {"message_text": text}}  # fmt: skip
    return JobContext(job=job, bundle={"runtime": runtime}, data_dir=data_dir)


def series(call, turns: int) -> list[float]:
    call(0)  # warm-up
    return [timed(lambda i=i: call(i + 1)) for i in range(turns)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--turns", type=int, default=20)
    turns = parser.parse_args().turns
    root = Path(tempfile.mkdtemp(prefix="agent-turn-bench-"))
    results: dict[str, float] = {}
    with FakeOpenAI(reply="ok", delay=0) as fake:
        runtime = {"model": "fake-model", "base_url": fake.base_url, "api_key": "sk-bench",
                   "timeout_seconds": 120, "system_prompt": "You are terse."}  # fmt: skip
        body = {"model": "fake-model", "messages": [{"role": "user", "content": "hi"}]}
        with requests.Session() as session:
            model_times = series(
                lambda i: session.post(f"{fake.base_url}/chat/completions", json=body,
                                       timeout=10).raise_for_status(), turns)  # fmt: skip
        results["fake model round trip"] = statistics.median(model_times)
        results["llm (direct request)"] = results["fake model round trip"]
        results["echo"] = statistics.median(
            series(lambda i: echo(context(root / "echo", runtime, f"m{i}")), turns)
        )

        os.environ[oc.MODE_ENV] = "embedded"
        embedded_dir = root / "embedded"
        cold = timed(lambda: oc.openclaw(context(embedded_dir, runtime, "cold")))
        results["openclaw embedded, cold turn"] = cold
        calls_before = len(fake.completions)
        results["openclaw embedded"] = statistics.median(
            series(lambda i: oc.openclaw(context(embedded_dir, runtime, f"m{i}")), turns)
        )
        calls_per_turn = (len(fake.completions) - calls_before) / (turns + 1)

        os.environ[oc.MODE_ENV] = "gateway"
        gateway_dir = root / "gateway"
        try:
            results["openclaw gateway mode, first turn (embedded)"] = timed(
                lambda: oc.openclaw(context(gateway_dir, runtime, "start"))
            )
            booted = [False]
            results["openclaw gateway boot (in the background)"] = timed(
                lambda: booted.__setitem__(0, oc.KEEPER.wait_ready())
            )
            if not booted[0]:
                print("the gateway did not start", file=sys.stderr)
                return 2
            results["openclaw gateway (warm)"] = statistics.median(
                series(lambda i: oc.openclaw(context(gateway_dir, runtime, f"m{i}")), turns)
            )
        finally:
            oc.KEEPER.stop()

    model = results["fake model round trip"]
    print(f"agent_turn: median of {turns} warm turns each (seconds), fake model at 0 s delay")
    for name, value in results.items():
        calls = calls_per_turn if name.startswith("openclaw") else 0 if name == "echo" else 1
        gap = value - model * calls
        note = "" if name == "fake model round trip" else f"  (overhead vs the model {gap:+.3f})"
        print(f"  {name:<46} {value:8.3f}{note}")
    ratio = results["openclaw gateway (warm)"] / cold
    verdict = "met" if ratio <= TARGET_RATIO else "MISSED"
    print(f"  model calls per openclaw turn: {calls_per_turn:.1f}")
    print(f"AGENT-TURN chosen=gateway warm/embedded-cold = {ratio:.1%} "
          f"(target <= {TARGET_RATIO:.0%}: {verdict})")  # fmt: skip
    return 0 if ratio <= TARGET_RATIO else 1


if __name__ == "__main__":
    sys.exit(main())
