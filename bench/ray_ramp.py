"""Autoscaling of ``kefu serve --ray`` under a load ramp: the engine deployment's replicas over time.

Starts a local Ray instance (``--cpus``, no dashboard), deploys the gateway and the engine (a tiny random model: the
test of the policy, not of answers; ``--model`` for a real one), then runs phases of closed-loop customers on
loopback, each sending its next question (a new text each time, so neither the cache nor single flight absorbs it)
as soon as its last is answered. Every ``--sample-s`` it records the time, the customers' requests in flight and
the engine's target and running replicas (Serve's status). The offered load is in flight / (running replicas x
capacity): an upper bound of the load the policy sees, which counts only the requests at the engine deployment
(routing, knowledge graph and verification happen on the gateway).

Writes the trace (JSON), draws it (``docs/ray_ramp.png``; matplotlib, a bench-only dependency: ``pip install
matplotlib``) and, with ``--write-docs``, the section "Ray Serve autoscaling" of docs/benchmarks.md.

    .venv/bin/python bench/ray_ramp.py --out /tmp/ray_ramp.json --write-docs
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
PNG = REPO / "docs" / "ray_ramp.png"
KEY = "ray-ramp-key-0123456789abcdef"


@dataclass
class Phase:
    """``clients`` customers for at most ``max_s`` seconds; with ``until``, the phase ends ``hold_s`` after the first
    sample for which ``until(sample)`` holds."""

    clients: int
    max_s: float
    until: Callable[[dict[str, Any]], bool] | None = None
    hold_s: float = 0.0


async def _customer(client, url: str, model: str, number: int, stop: asyncio.Event, in_flight: list[int],
                    answers: list[int]) -> None:
    asked = 0
    while not stop.is_set():
        asked += 1
        in_flight[0] += 1
        try:
            resp = await client.post(url + "/v1/chat/completions", headers={"Authorization": f"Bearer {KEY}"},
                                     json={"model": model, "messages": [
                                         {"role": "user", "content": f"冲锋衣怎么洗比较好呢（顾客{number}第{asked}问）"}]})
            answers[resp.status_code == 200] += 1
        except Exception:  # a refused connection while replicas move: counted, and the customer asks again
            answers[0] += 1
            await asyncio.sleep(0.1)
        finally:
            in_flight[0] -= 1


async def _ramp(url: str, model: str | None, phases: list[Phase], sample_s: float, capacity: int, deployment: str,
                replicas: Callable[[], dict[str, dict[str, int]]]) -> dict[str, Any]:
    import httpx

    trace: list[dict[str, Any]] = []
    in_flight, answers = [0], [0, 0]  # answers: [failed, ok]
    started = time.monotonic()
    async with httpx.AsyncClient(timeout=60) as client:
        if model is None:  # the first model the app serves
            listed = await client.get(url + "/v1/models", headers={"Authorization": f"Bearer {KEY}"})
            model = listed.raise_for_status().json()["data"][0]["id"]
        customers: list[tuple[asyncio.Event, asyncio.Task]] = []
        for index, phase in enumerate(phases):
            while len(customers) < phase.clients:
                stop = asyncio.Event()
                customers.append((stop, asyncio.create_task(
                    _customer(client, url, model, len(customers), stop, in_flight, answers))))
            while len(customers) > phase.clients:  # the customer finishes its question, then leaves
                customers.pop()[0].set()
            phase_start, met_at = time.monotonic(), None
            while time.monotonic() - phase_start < phase.max_s:
                watched = (await asyncio.to_thread(replicas))[deployment]
                sample = {"t": round(time.monotonic() - started, 2), "phase": index, "clients": phase.clients,
                          "in_flight": in_flight[0], "target": watched["target"], "running": watched["running"],
                          "offered_load": round(in_flight[0] / (max(watched["running"], 1) * capacity), 3)}
                trace.append(sample)
                if phase.until is not None and met_at is None and phase.until(sample):
                    met_at = time.monotonic()
                if met_at is not None and time.monotonic() - met_at >= phase.hold_s:
                    break
                await asyncio.sleep(sample_s)
        for stop, _ in customers:
            stop.set()
        await asyncio.gather(*(task for _, task in customers), return_exceptions=True)
    return {"trace": trace, "answered": answers[1], "failed": answers[0]}


def ramp(url: str, model: str | None, phases: list[Phase], *, capacity: int, deployment: str = "engine",
         sample_s: float = 0.25) -> dict[str, Any]:
    """Run ``phases`` against the app at ``url`` (asking ``model``, else the first it serves); the trace of (time,
    customers in flight, the replicas of ``deployment``)."""
    from kefu.serve.ray_app import replicas

    return asyncio.run(_ramp(url, model, phases, sample_s, capacity, deployment, replicas))


def steps(trace: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The watched deployment's target changes: when, from, to, the offered load just before, and how long until as
    many replicas ran (None: not within the trace)."""
    out = []
    for i, (before, after) in enumerate(zip(trace, trace[1:]), start=1):
        if after["target"] != before["target"]:
            running = next((s["t"] for s in trace[i:] if s["running"] == after["target"]), None)
            out.append({"t": after["t"], "from": before["target"], "to": after["target"],
                        "offered_load": before["offered_load"], "phase": after["phase"],
                        "running_after_s": None if running is None else round(running - after["t"], 2)})
    return out


def draw(result: dict[str, Any], path: Path, rule: dict[str, Any]) -> None:
    """Two panels over time: offered load with the thresholds, and target/running replicas."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    trace = result["trace"]
    t = [s["t"] for s in trace]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 5), sharex=True, height_ratios=[1, 1.2])
    top.plot(t, [s["offered_load"] for s in trace], color="tab:blue", label="offered load (in flight / capacity)")
    top.step(t, [s["clients"] for s in trace], where="post", color="tab:gray", linestyle=":", label="customers")
    top.axhline(rule["up_at"], color="tab:red", linestyle="--", linewidth=0.8, label=f"+{rule['up_step']} above")
    top.axhline(rule["down_at"], color="tab:green", linestyle="--", linewidth=0.8, label=f"-{rule['down_step']} below")
    top.set_ylabel("load / customers")
    top.legend(loc="upper right", fontsize=7)
    bottom.step(t, [s["target"] for s in trace], where="post", color="tab:orange", label="target replicas")
    bottom.step(t, [s["running"] for s in trace], where="post", color="tab:purple", linestyle="--",
                label="running replicas")
    bottom.set_ylim(0, rule["max_replicas"] + 1)
    bottom.set_ylabel("engine replicas")
    bottom.set_xlabel("seconds")
    bottom.legend(loc="upper right", fontsize=7)
    fig.suptitle("kefu serve --ray: engine replicas under a load ramp (LoadStepPolicy)", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def tiny_model_folder(folder: Path) -> str:
    """A tiny random causal LM with a character tokenizer (the serve tests' model), saved as a model folder."""
    sys.path.insert(0, str(REPO / "tests" / "serve"))
    from serve_support import tiny_model, tiny_tokenizer

    tokenizer = tiny_tokenizer()
    tiny_model(tokenizer).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


def ramp_config(model: str, port: int, *, capacity: int, max_replicas: int, upscale_delay_s: float,
                downscale_delay_s: float):
    """The serve config of a ramp: the engine scaled by the policy from 1 to ``max_replicas`` replicas of
    ``capacity``, one gateway replica with room for every customer, short metric windows."""
    from kefu.serve.config import ServeConfig

    return ServeConfig(model=model, allow_base_model=True, torch_threads=1, port=port, max_new_tokens=64,
                       rate_limit_per_s=1000, rate_limit_burst=1000,
                       ray={"engine": {"min_replicas": 1, "max_replicas": max_replicas, "capacity": capacity,
                                       "num_cpus": 0, "upscale_delay_s": upscale_delay_s,
                                       "downscale_delay_s": downscale_delay_s},
                            "gateway": {"min_replicas": 1, "max_replicas": 1, "capacity": 1000, "num_cpus": 0},
                            "metrics_interval_s": 0.25, "look_back_period_s": 1.0})


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="the trace (JSON)")
    parser.add_argument("--model", help="a model folder (default: a tiny random model)")
    parser.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray instance")
    parser.add_argument("--customers", type=int, default=6, help="customers at the peak")
    parser.add_argument("--capacity", type=int, default=1, help="ongoing requests per engine replica")
    parser.add_argument("--max-replicas", type=int, default=4)
    parser.add_argument("--upscale-delay", type=float, default=2.0)
    parser.add_argument("--downscale-delay", type=float, default=4.0)
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--png", type=Path, default=PNG)
    parser.add_argument("--write-docs", action="store_true", help="write the section in docs/benchmarks.md")
    args = parser.parse_args()

    import ray

    from kefu.serve import ray_app
    from kefu.serve.autoscale import ScaleRule

    home = Path(tempfile.mkdtemp(prefix="kefu-ray-ramp-"))
    os.environ.update(KEFU_HOME=str(home / "home"), KEFU_API_KEY=KEY, HF_HUB_OFFLINE="1")
    model = args.model or tiny_model_folder(home / "tiny")
    config = ramp_config(model, args.port, capacity=args.capacity, max_replicas=args.max_replicas,
                         upscale_delay_s=args.upscale_delay, downscale_delay_s=args.downscale_delay)
    rule = ScaleRule.of(config.ray, config.ray.engine)
    peak, half = args.customers, max(1, args.customers // 3)
    phases = [Phase(0, 3), Phase(peak, 120, until=lambda s: s["running"] == args.max_replicas, hold_s=6),
              Phase(half, 20), Phase(0, 60, until=lambda s: s["target"] == 1 and s["running"] == 1, hold_s=4)]
    ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False, object_store_memory=100 * 1024 ** 2)
    try:
        began = time.monotonic()
        url = ray_app.start(config)
        print(f"deployed in {time.monotonic() - began:.1f} s: {ray_app.replicas()}", flush=True)
        result = ramp(url, model, phases, capacity=args.capacity)
    finally:
        ray_app.shutdown()
    result.update(rule=rule.kwargs(), steps=steps(result["trace"]),
                  delays={"upscale_s": args.upscale_delay, "downscale_s": args.downscale_delay},
                  phases=[{"clients": p.clients, "max_s": p.max_s, "hold_s": p.hold_s} for p in phases],
                  command="python bench/ray_ramp.py " + " ".join(sys.argv[1:]))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1), encoding="utf-8")
    for step in result["steps"]:
        print(f"  t={step['t']:6.2f}s  {step['from']} -> {step['to']}  (offered load {step['offered_load']:.2f})")
    print(f"answered {result['answered']}, failed {result['failed']}; trace: {args.out}")
    draw(result, args.png, rule.kwargs())
    print(f"figure: {args.png}")
    if args.write_docs:
        sys.path.insert(0, str(BENCH))
        from _report import machine, write_section

        rows = "\n".join(f"| {s['t']:.1f} | {s['from']} → {s['to']} | {s['offered_load']:.2f} | "
                         f"{'-' if s['running_after_s'] is None else format(s['running_after_s'], '.1f')} |"
                         for s in result["steps"])
        write_section("ray-ramp", f"""## Ray Serve autoscaling (`bench/ray_ramp.py`)

Command: `{result['command']}`. Machine: {machine()}, Ray {ray.__version__}.
`kefu serve --ray` (kefu.serve.ray_app) on a local Ray instance ({args.cpus} CPUs): one gateway replica, the engine
(a tiny random model: this measures the policy, not answers) scaled by `kefu.serve.autoscale.LoadStepPolicy`:
load = ongoing requests / (running replicas × capacity {args.capacity}); above {rule.up_at} +{rule.up_step}
replicas, below {rule.down_at} −{rule.down_step}, within [{rule.min_replicas}, {rule.max_replicas}]; Ray holds a
decision {args.upscale_delay:g} s before scaling up and {args.downscale_delay:g} s before scaling down.
Customers: 0, then {peak} (closed loop) until {args.max_replicas} replicas run, {half}, then 0.
{result['answered']} answers, {result['failed']} failed requests.

![engine replicas under a load ramp](ray_ramp.png)

| t (s) | engine target | offered load before | as many running after (s) |
|---|---|---|---|
{rows}

The offered load is the customers' requests in flight over the running replicas' capacity: an upper bound of the
policy's load, which counts only the requests at the engine (routing, KG and verification run on the gateway).
A step up comes once the load has held above {rule.up_at} for the upscale delay (plus Ray's
{config.ray.look_back_period_s:g} s look-back), the next one only once the last is running: a new engine replica
imports torch and loads the model on cores the running ones are decoding on, which is what the "running after"
column measures. With {half} customers on {args.max_replicas} replicas the load sits between the thresholds and the
replicas stay; with none they go one by one, {args.downscale_delay:g} s apart.
""")
        print("docs/benchmarks.md: section 'Ray Serve autoscaling' written")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
