"""Serving benchmark: bounded loopback load against 127.0.0.1 only; writes the ``serve`` section of
docs/benchmarks.md.

Measures, in one run on this machine:
  1. full-model path: time to first token (TTFT) and per-token decode latency of the engine (default model, fp32);
  2. batching: throughput at 8 concurrent clients, up to 8 rows per decode step vs one request at a time (same run);
  3. INT8 dynamic quantisation: per-token latency and greedy-token agreement with fp32;
  4. router: model compute (model calls, generated tokens) and key-fact accuracy vs sending every turn to the model;
  5. HTTP light/cached path latency at 32 concurrent clients (server in its own process, auth on);
  6. a realistic traffic mix (sample-shop questions, repeats included) through HTTP: mean latency and path shares;
  7. a soak (``--soak-seconds``; the issue asks for 600): 5xx count and the server's RSS sampled throughout.

    python bench/serve_bench.py            # default model (gemma3-270m), sample shop
    python bench/serve_bench.py --quick    # fewer requests
    python bench/serve_bench.py --tiny     # tiny random model: a smoke run of the harness, figures not reported
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))
SHOP = REPO / "examples" / "shop"


# ------------------------------------------------------------------------------------------------------ setup
def shop_dir(tmp: Path) -> Path:
    """The sample shop's files; generated into ``tmp`` when the repository copy has not been generated."""
    if (SHOP / "products.csv").exists() and (SHOP / "dialogues.jsonl").exists():
        return SHOP
    out = tmp / "shop"
    out.mkdir(exist_ok=True)
    subprocess.run([sys.executable, str(SHOP / "generate.py"), str(out)], check=True)
    return out


def open_kg(shop: Path, tmp: Path):
    from kefu.kg.store import KnowledgeGraph

    kg = KnowledgeGraph.open(f"sqlite:///{tmp / 'kg.db'}")
    kg.import_path(shop)
    return kg


def traffic(shop: Path) -> list[dict]:
    """First customer turn of each clean sample dialogue, its intent, the asking customer and the gold key facts."""
    orders = {o["order_no"]: o["customer_id"] for o in json.loads((shop / "orders.json").read_text("utf-8"))}
    turns = []
    for line in (shop / "dialogues.jsonl").read_text("utf-8").splitlines():
        row = json.loads(line)
        meta = row.get("meta") or {}
        if meta.get("variant") not in (None, "base", "clean") or meta.get("dirty") or meta.get("duplicate_of"):
            continue
        msgs = row["messages"]
        if len(msgs) < 2 or msgs[0]["role"] != "user" or msgs[1]["role"] != "assistant":
            continue
        refs = meta.get("refs") or {}
        order_no = refs.get("order_no")
        turns.append({"text": msgs[0]["content"], "gold": msgs[1]["content"], "intent": meta.get("intent", "other"),
                      "customer_id": orders.get(order_no) if order_no else None})
    return turns


def key_facts(text: str) -> set[str]:
    """Facts an answer must get right: amounts (fen), order statuses, SKUs, 16-digit order numbers."""
    from kefu.text.numbers import money_mentions
    from kefu.text.status import ORDER_STATUSES

    facts = {f"fen:{fen}" for _s, _e, fen in money_mentions(text)}
    facts |= {f"status:{w}" for w in ORDER_STATUSES if w in text}
    facts |= {f"sku:{s}" for s in re.findall(r"SL-\d{5}", text)}
    facts |= {f"order:{o}" for o in re.findall(r"(?<!\d)\d{16}(?!\d)", text)}
    return facts


def fact_accuracy(reply: str, gold: str) -> float | None:
    want = key_facts(gold)
    if not want:
        return None
    return len(want & key_facts(reply)) / len(want)


def load_weights(args):
    """(model, tokenizer, name): the default model in fp32, or a tiny random one for ``--tiny``."""
    if args.tiny:
        sys.path.insert(0, str(REPO / "tests" / "serve"))
        from serve_support import tiny_model, tiny_tokenizer

        tok = tiny_tokenizer()
        return tiny_model(tok), tok, "tiny"
    import torch

    from kefu.train.models import load_model

    model, tok = load_model(args.model, dtype=torch.float32)
    return model, tok, args.model


def make_engine(weights, args, *, max_batch_size=8, quantize="none", trim=None, draft_tokens=0):
    """An engine over ``weights``; a ``trim`` swaps the shared model's output head in place (``untrim_model``
    puts it back). One token per decode step unless ``draft_tokens`` (the engine figures measure raw decoding;
    speculation has its own row and the HTTP server uses the serving default)."""
    from kefu.serve.engine import LocalEngine

    model, tok, name = weights
    return LocalEngine(model, tok, base_name=name, max_batch_size=max_batch_size, batch_wait_ms=args.batch_wait_ms,
                       max_new_tokens=args.max_new_tokens, quantize=quantize, trim=trim, draft_tokens=draft_tokens)


def build_trim(tokenizer, shop: Path, held_out: list[dict], out: Path):
    """The sample shop's vocabulary trim, from every dialogue whose first question is not a held-out test turn."""
    from kefu.train.vocab import corpus_vocab

    asked = {t["text"] for t in held_out}
    dialogues = [row["messages"] for row in map(json.loads, (shop / "dialogues.jsonl").read_text("utf-8").splitlines())
                 if row["messages"] and row["messages"][0]["content"] not in asked]
    trim = corpus_vocab(tokenizer, [m["content"] for d in dialogues for m in d], chat_messages=dialogues,
                        sources={"sample shop dialogues (held-out questions excluded)": len(dialogues)})
    trim.save(out)
    return trim


def load_engine(args, **kwargs):
    trim = None
    if getattr(args, "trim", None):
        from kefu.train.vocab import VocabTrim

        trim = VocabTrim.load(args.trim)
    return make_engine(load_weights(args), args, trim=trim, **kwargs)


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q / 100 * (len(values) - 1))))]


# --------------------------------------------------------------------------------------- engine-level figures
PROMPTS = ["你好，请问冲锋衣怎么选尺码？", "这款羽绒服保暖吗？", "快递一直没到怎么办？", "帮我推荐一款适合徒步的鞋",
           "退货的运费谁出？", "睡袋适合零下几度？", "帐篷好搭吗？", "登山杖怎么调节长度？"]


async def timed_stream(engine, prompt: str, max_new: int) -> tuple[float, list[float], str]:
    """(TTFT s, inter-piece gaps s, text) of one streamed generation."""
    start = time.perf_counter()
    stamps, pieces = [], []
    async for piece in engine.stream([{"role": "user", "content": prompt}], max_new_tokens=max_new):
        stamps.append(time.perf_counter())
        pieces.append(piece)
    if not stamps:
        return float("nan"), [], ""
    return stamps[0] - start, [b - a for a, b in zip(stamps, stamps[1:])], "".join(pieces)


async def engine_latency(engine, n: int, max_new: int) -> dict:
    ttfts, gaps, texts = [], [], []
    await timed_stream(engine, "你好", 2)  # warm-up
    for prompt in PROMPTS[:n]:
        ttft, g, text = await timed_stream(engine, prompt, max_new)
        ttfts.append(ttft)
        gaps += g
        texts.append(text)
    tokens = [len(engine.tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts]
    first_token = list(engine.ttfts)[-n:]
    return {"ttft_mean_s": statistics.mean(first_token), "first_text_mean_s": statistics.mean(ttfts),
            "per_token_s": statistics.mean(gaps) if gaps else float("nan"),
            "tokens_mean": statistics.mean(tokens), "texts": texts}


async def throughput(engine, clients: int, per_client: int, max_new: int) -> dict:
    """``clients`` concurrent callers, each sending ``per_client`` requests one after another."""
    done_tokens = 0

    async def client(i: int):
        nonlocal done_tokens
        for k in range(per_client):
            prompt = PROMPTS[(i + k) % len(PROMPTS)]
            text = "".join([p async for p in engine.stream([{"role": "user", "content": prompt}],
                                                           max_new_tokens=max_new)])
            done_tokens += len(engine.tokenizer(text, add_special_tokens=False)["input_ids"])

    await timed_stream(engine, "你好", 2)
    start = time.perf_counter()
    await asyncio.gather(*[client(i) for i in range(clients)])
    elapsed = time.perf_counter() - start
    return {"requests_per_s": clients * per_client / elapsed, "tokens_per_s": done_tokens / elapsed,
            "elapsed_s": elapsed, "tokens": done_tokens}


def full_path_prompts(kg, turns: list[dict]) -> list[list[dict]]:
    """The messages the full-model path sends for each turn: system prompt with the shop's facts + the question."""
    from kefu.kg.tools import SQLiteOrderBackend
    from kefu.serve.config import ServeConfig
    from kefu.serve.pipeline import ChatService

    service = ChatService(None, config=ServeConfig(), kg=kg, order_backend=SQLiteOrderBackend(kg), base_model="x")
    out = []
    for t in turns:
        facts = service.retriever(t["text"], t["customer_id"])
        out.append(service.model_messages([{"role": "user", "content": t["text"]}],
                                          getattr(facts, "prompt_block", None)))
    return out


async def speculation(engine, histories: list[list[dict]], max_new: int, draft_tokens: int = 4) -> dict:
    """Answer time one request at a time with prompt-lookup drafts vs without, interleaved rounds on the same
    engine (the faster round of each counts), and whether the answers are the same."""
    times: dict[int, list[float]] = {0: [], draft_tokens: []}
    answers: dict[int, list[str]] = {}
    from kefu.serve.engine import collect, render

    await collect(engine.stream(histories[0], max_new_tokens=2))
    for _ in range(2):
        for k in (0, draft_tokens):
            engine.draft_tokens = k
            engine.drafted = engine.accepted = 0
            start = time.perf_counter()
            answers[k] = [await collect(engine.stream(h, max_new_tokens=max_new)) for h in histories]
            times[k].append((time.perf_counter() - start) / len(histories))
            if k:
                drafted, accepted = engine.drafted, engine.accepted
    engine.draft_tokens = 0
    tokens = sum(len(engine.tokenizer(a, add_special_tokens=False)["input_ids"]) for a in answers[0])
    prompt_tokens = statistics.mean(len(engine.tokenizer(render(engine.tokenizer, h))["input_ids"]) for h in histories)
    return {"draft_tokens": draft_tokens, "answer_s": min(times[draft_tokens]), "answer_s_off": min(times[0]),
            "rounds_s": times, "speedup": min(times[0]) / min(times[draft_tokens]), "drafted": drafted,
            "accepted": accepted, "tokens": tokens, "prompts": len(histories), "prompt_tokens_mean": prompt_tokens,
            "identical": sum(a == b for a, b in zip(answers[0], answers[draft_tokens]))}


async def greedy_ids(engine, prompts: list[str], max_new: int) -> list[list[int]]:
    out = []
    for p in prompts:
        text = "".join([x async for x in engine.stream([{"role": "user", "content": p}], max_new_tokens=max_new)])
        out.append(engine.tokenizer(text, add_special_tokens=False)["input_ids"])
    return out


# ------------------------------------------------------------------------------------------ router experiment
async def router_experiment(engine, kg, turns_fit, turns_test, args) -> dict:
    from kefu.serve.config import ServeConfig
    from kefu.serve.pipeline import ChatService
    from kefu.serve.router import Router, RouterModel

    model = RouterModel.fit([t["text"] for t in turns_fit], [t["intent"] for t in turns_fit],
                            target_full_share=args.target_full_share)
    model.calibrate([t["text"] for t in turns_fit], args.target_full_share)

    results = {}  # all-full: every turn the light path could answer goes to the model (handoffs stay)
    for label, router in (("all-full", Router(None, light_path=False)), ("router", Router(model))):
        config = ServeConfig(cache_max_entries=0, max_new_tokens=args.max_new_tokens)
        from kefu.kg.tools import SQLiteOrderBackend

        service = ChatService(engine, config=config, router=router, kg=kg, order_backend=SQLiteOrderBackend(kg),
                              base_model=engine.base_name)
        sem = asyncio.Semaphore(8)
        accs, paths, tokens = [], [], 0

        async def one(i, t):
            nonlocal tokens
            async with sem:
                reply = await service.answer([{"role": "user", "content": t["text"]}], caller_id="bench",
                                             session_id=f"{label}-{i}", customer_id=t["customer_id"])
            paths.append(reply.path)
            if reply.path == "full" and not reply.fallback:
                tokens += len(engine.tokenizer(reply.text, add_special_tokens=False)["input_ids"])
            acc = fact_accuracy(reply.text, t["gold"])
            if acc is not None:
                accs.append(acc)

        start = time.perf_counter()
        await asyncio.gather(*[one(i, t) for i, t in enumerate(turns_test)])
        results[label] = {"model_calls": paths.count("full"), "tokens": tokens, "turns": len(turns_test),
                          "key_fact_accuracy": statistics.mean(accs) if accs else float("nan"),
                          "scored_turns": len(accs), "elapsed_s": time.perf_counter() - start,
                          "paths": {p: paths.count(p) for p in sorted(set(paths))}}
    base, routed = results["all-full"], results["router"]
    results["compute_cut"] = 1 - routed["model_calls"] / base["model_calls"] if base["model_calls"] else 0.0
    results["accuracy_ratio"] = (routed["key_fact_accuracy"] / base["key_fact_accuracy"]
                                 if base["key_fact_accuracy"] else (1.0 if not routed["key_fact_accuracy"]
                                                                    else float("inf")))
    results["router_model"] = model
    return results


# ------------------------------------------------------------------------------------------------ HTTP load
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(args, tmp: Path, router_path: Path) -> tuple[subprocess.Popen, str, str]:
    """The server in its own process, and a shop-backend key of its key store: the shop's backend asserts which
    customer asks (``customer_id``), so order questions are answered rather than met with a log-in request."""
    from shop_questions import create_key

    port = free_port()
    cmd = [sys.executable, __file__, "--child", "--port", str(port), "--kg-url", f"sqlite:///{tmp / 'kg.db'}",
           "--router", str(router_path), "--model", args.model, "--max-new-tokens", str(args.max_new_tokens),
           "--threads", str(args.threads), "--server-quantize", args.server_quantize,
           "--server-draft-tokens", str(args.server_draft_tokens)]
    if args.trim:
        cmd += ["--trim", args.trim]
    if args.tiny:
        cmd.append("--tiny")
    env = {**os.environ, "KEFU_HOME": str(tmp / "server_home")}
    key = create_key(env, "shop-backend", "serve-bench")
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=open(tmp / "server.log", "w"))
    url = f"http://127.0.0.1:{port}"
    import httpx

    deadline = time.time() + 300
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {(tmp / 'server.log').read_text()[-2000:]}")
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                return proc, url, key
        except httpx.HTTPError:
            time.sleep(0.5)
    proc.kill()
    raise RuntimeError("server did not start in 300 s")


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


async def sample_rss(pid: int, every_s: float, stop: asyncio.Event) -> list[tuple[float, float]]:
    """``(seconds, MB)`` of the server's resident memory every ``every_s`` until ``stop`` is set."""
    samples, start = [], time.perf_counter()
    while True:
        samples.append((round(time.perf_counter() - start, 1), rss_kb(pid) / 1024))
        if stop.is_set():
            return samples
        try:
            await asyncio.wait_for(stop.wait(), every_s)
        except asyncio.TimeoutError:
            pass


def rss_trend(samples: list[tuple[float, float]], warmup_share: float = 0.25) -> dict:
    """Memory after the allocator's warm-up (the first quarter of the soak) vs the end: flat means no leak."""
    end_t = samples[-1][0]
    warm = next((mb for t, mb in samples if t >= warmup_share * end_t), samples[-1][1])
    end = samples[-1][1]
    return {"warm_mb": warm, "end_mb": end, "max_mb": max(mb for _, mb in samples),
            "growth_after_warmup_pct": (end - warm) / warm * 100 if warm else 0.0}


async def http_load(url: str, key: str, requests: list[dict], clients: int, *, duration_s: float | None = None,
                    think_s: float = 0.0) -> dict:
    """Send ``requests`` (cycled when ``duration_s`` is set) from ``clients`` concurrent connections; each client
    waits ``think_s`` (exponential, that mean) before its first message and between its messages, like a customer
    typing. With ``think_s=0`` every client fires at once and back to back: the server's ceiling."""
    think_rng = random.Random(1)
    import httpx

    latencies: dict[str, list[float]] = {}
    statuses: dict[int, int] = {}
    queue: asyncio.Queue = asyncio.Queue()
    for r in requests:
        queue.put_nowait(r)
    stop_at = time.perf_counter() + duration_s if duration_s else None
    cursor = 0

    async def worker(client: httpx.AsyncClient):
        nonlocal cursor
        if think_s:  # independent customers: each starts after its own pause, not all in the same millisecond
            await asyncio.sleep(think_rng.expovariate(1 / think_s))
        while True:
            if stop_at is not None:
                if time.perf_counter() >= stop_at:
                    return
                req = requests[cursor % len(requests)]
                if req.get("session_id") and cursor >= len(requests):
                    # a new customer on each pass: a question repeated in one session means "not helped" and goes
                    # to a human, which would turn a long soak into handoffs only
                    req = {**req, "session_id": f"{req['session_id']}-{cursor // len(requests)}"}
                cursor += 1
            else:
                try:
                    req = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
            # no session id: each request is a new customer, the server starts (and returns) a session for it
            body = {"model": req["model"], "messages": [{"role": "user", "content": req["text"]}],
                    "customer_id": req.get("customer_id")}
            start = time.perf_counter()
            try:
                resp = await client.post("/v1/chat/completions", json=body)
                status, path = resp.status_code, resp.headers.get("x-kefu-path", "error")
            except httpx.HTTPError:
                status, path = 599, "error"
            latencies.setdefault(path, []).append(time.perf_counter() - start)
            statuses[status] = statuses.get(status, 0) + 1
            if think_s:
                await asyncio.sleep(think_rng.expovariate(1 / think_s))

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {key}"}, limits=limits,
                                 timeout=httpx.Timeout(120.0)) as client:
        start = time.perf_counter()
        await asyncio.gather(*[worker(client) for _ in range(clients)])
        elapsed = time.perf_counter() - start
    return {"latencies": latencies, "statuses": statuses, "elapsed_s": elapsed}


# ----------------------------------------------------------------------------------------------- child server
def child(args) -> None:
    """The server process: the same service ``kefu serve`` builds, on 127.0.0.1."""
    import uvicorn

    from kefu.kg.store import KnowledgeGraph
    from kefu.kg.tools import SQLiteOrderBackend
    from kefu.loop.feedback import FeedbackStore
    from kefu.serve.app import create_app
    from kefu.serve.config import ServeConfig
    from kefu.serve.pipeline import ChatService
    from kefu.serve.router import Router, RouterModel

    config = ServeConfig(rate_limit_per_s=1e6, rate_limit_burst=10 ** 6, max_new_tokens=args.max_new_tokens)
    engine = load_engine(args, quantize=args.server_quantize, draft_tokens=args.server_draft_tokens)
    kg = KnowledgeGraph.open(args.kg_url)
    service = ChatService(engine, config=config, router=Router(RouterModel.load(args.router)), kg=kg,
                          order_backend=SQLiteOrderBackend(kg), feedback=FeedbackStore.open(),
                          base_model=engine.base_name)
    import logging

    logging.getLogger("kefu.serve.requests").setLevel(logging.WARNING)
    uvicorn.run(create_app(service), host="127.0.0.1", port=args.port, log_level="warning", access_log=False)


# ------------------------------------------------------------------------------------------------------ main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None)
    parser.add_argument("--tiny", action="store_true", help="tiny random model (harness smoke run; not reported)")
    parser.add_argument("--quick", action="store_true", help="fewer requests")
    parser.add_argument("--soak-seconds", type=float, default=10.0)
    parser.add_argument("--max-new-tokens", type=int, default=24, help="short answers")
    parser.add_argument("--batch-wait-ms", type=float, default=10.0)
    parser.add_argument("--target-full-share", type=float, default=0.3)
    parser.add_argument("--think-ms", type=float, default=1000.0,
                        help="mean pause between a client's messages in the light-path test")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default: 1 when the machine is busier than its cores, else all cores; "
                             "oversubscribed OpenMP threads spin and slow everything down)")
    parser.add_argument("--no-trim", action="store_true",
                        help="serve with the full vocabulary (default: the shop's vocabulary trim, kefu.train.vocab)")
    parser.add_argument("--trim", help=argparse.SUPPRESS)
    parser.add_argument("--server-quantize", default="int8-weight", choices=["none", "int8-weight", "int8"],
                        help="the HTTP server's engine quantisation (default: weight-only INT8, kefu.train.quant)")
    parser.add_argument("--server-draft-tokens", type=int, default=4,
                        help="the HTTP server's prompt-lookup draft tokens per step (serve.draft_tokens; 0: off)")
    parser.add_argument("--no-write", action="store_true", help="print only; do not touch docs/benchmarks.md")
    parser.add_argument("--report-only", metavar="FIGURES_JSON",
                        help="re-render the section from a previous run's figures.json")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--kg-url", help=argparse.SUPPRESS)
    parser.add_argument("--router", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.model is None:
        from kefu.train.models import DEFAULT_MODEL

        args.model = DEFAULT_MODEL
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.threads is None:
        cores = os.cpu_count() or 1
        args.threads = 1 if os.getloadavg()[0] > cores else cores
    import torch

    torch.set_num_threads(args.threads)
    if args.child:
        child(args)
        return
    if args.report_only:
        figures = json.loads(Path(args.report_only).read_text("utf-8"))
        md = report(figures, args)
        print(md)
        if not args.no_write:
            from _report import write_section

            write_section("serve", md)
        return
    asyncio.run(run(args))


async def run(args) -> None:
    import torch

    from kefu.eval.trim import token_agreement

    torch.manual_seed(0)
    rng = random.Random(0)
    tmp = Path(tempfile.mkdtemp(prefix="kefu-serve-bench-"))
    os.environ["KEFU_HOME"] = str(tmp / "home")
    shop = shop_dir(tmp)
    kg = open_kg(shop, tmp)
    turns = traffic(shop)
    rng.shuffle(turns)
    half = len(turns) // 2
    fit, test = turns[:half], turns[half:]
    n_test = 16 if (args.quick or args.tiny) else 48
    figures: dict = {"model": "tiny (random)" if args.tiny else args.model, "max_new_tokens": args.max_new_tokens,
                     "server_quantize": args.server_quantize,
                     "threads": args.threads,
                     "load_start": os.getloadavg()[0]}
    print(f"[serve-bench] shop {shop}, {len(turns)} turns ({len(fit)} fit / {len(test)} test)", flush=True)

    # 1-3: engine figures
    weights = load_weights(args)
    engine1 = make_engine(weights, args, max_batch_size=1)
    lat = await engine_latency(engine1, 3 if args.quick else 6, args.max_new_tokens)
    figures["latency"] = {k: v for k, v in lat.items() if k != "texts"}
    print("[serve-bench] latency", figures["latency"], flush=True)
    per_client = 1 if (args.quick or args.tiny) else 2
    one = await throughput(engine1, 8, per_client, args.max_new_tokens)
    await engine1.close()
    engine8 = make_engine(weights, args, max_batch_size=8)  # same weights, same run
    eight = await throughput(engine8, 8, per_client, args.max_new_tokens)
    figures["batching"] = {"one_at_a_time": one, "batched": eight, "batches": list(engine8.batches)[-20:],
                           "speedup_tokens": eight["tokens_per_s"] / one["tokens_per_s"],
                           "speedup_requests": eight["requests_per_s"] / one["requests_per_s"]}
    print("[serve-bench] batching", figures["batching"]["speedup_tokens"], flush=True)
    fp32_ids = await greedy_ids(engine8, PROMPTS[:4], args.max_new_tokens)
    engine_q = make_engine(weights, args, max_batch_size=1, quantize="int8")  # quantises a copy
    q_lat = await engine_latency(engine_q, 3, args.max_new_tokens)
    q_ids = await greedy_ids(engine_q, PROMPTS[:4], args.max_new_tokens)
    await engine_q.close()
    figures["int8"] = {"per_token_s": q_lat["per_token_s"], "ttft_mean_s": q_lat["ttft_mean_s"],
                       "greedy_agreement": token_agreement(fp32_ids, q_ids)}
    del engine_q
    print("[serve-bench] int8", figures["int8"], flush=True)

    # 3b: the same with the shop's vocabulary trim (the output head over the tokens the shop uses)
    from kefu.train.vocab import untrim_model

    held = [t["text"] for t in test[:8]]
    full_ids = await greedy_ids(engine8, held, args.max_new_tokens)
    trim = None
    if not args.no_trim:
        trim = build_trim(weights[1], shop, test, tmp / "vocab")
        args.trim = str(tmp / "vocab")
        engine1t = make_engine(weights, args, max_batch_size=1, trim=trim)
        lat_t = await engine_latency(engine1t, 3 if args.quick else 6, args.max_new_tokens)
        one_t = await throughput(engine1t, 8, per_client, args.max_new_tokens)
        await engine1t.close()
        engine8t = make_engine(weights, args, max_batch_size=8, trim=trim)
        eight_t = await throughput(engine8t, 8, per_client, args.max_new_tokens)
        trim_ids = await greedy_ids(engine8t, held, args.max_new_tokens)
        await engine8t.close()
        untrim_model(weights[0])
        figures["trim"] = {"kept": len(trim.keep_ids), "vocab": trim.vocab_size,
                           "latency": {k: v for k, v in lat_t.items() if k != "texts"},
                           "one_at_a_time": one_t, "batched": eight_t,
                           "speedup_tokens": eight_t["tokens_per_s"] / one_t["tokens_per_s"],
                           "vs_full_one_at_a_time": one_t["tokens_per_s"] / one["tokens_per_s"],
                           "greedy_agreement": token_agreement(full_ids, trim_ids), "agreement_prompts": len(held),
                           "exact_replies": sum(a == b for a, b in zip(full_ids, trim_ids))}
        print("[serve-bench] trim", {k: v for k, v in figures["trim"].items() if k not in ("one_at_a_time", "batched")},
              flush=True)

    # 4: router vs all-full
    router_res = await router_experiment(engine8, kg, fit, test[:n_test], args)
    model = router_res.pop("router_model")
    figures["router"] = router_res
    router_path = model.save(tmp / "router.pkl")
    print("[serve-bench] router", {k: router_res[k] for k in ("compute_cut", "accuracy_ratio")}, flush=True)
    await engine8.close()
    del engine8, engine1

    # 3c: weight-only INT8 (kefu.train.quant) as the engine applies it (after the trim when there is one), on copies
    import copy

    figures["int8_weight"] = {}
    for label, with_trim in (("full", None), ("trim", trim)):
        if label == "trim" and trim is None:
            continue
        engine_w = make_engine((copy.deepcopy(weights[0]), *weights[1:]), args, max_batch_size=1, trim=with_trim,
                               quantize="int8-weight")
        lat_w = await engine_latency(engine_w, 3 if args.quick else 6, args.max_new_tokens)
        ids_held = await greedy_ids(engine_w, held, args.max_new_tokens)
        ids_probe = await greedy_ids(engine_w, PROMPTS[:4], args.max_new_tokens)
        if label == ("trim" if trim is not None else "full"):  # the HTTP server's engine: its speculation
            figures["speculation"] = await speculation(engine_w, full_path_prompts(kg, test[:16]),
                                                       args.max_new_tokens, args.server_draft_tokens or 4)
            print("[serve-bench] speculation", figures["speculation"], flush=True)
        await engine_w.close()
        del engine_w
        figures["int8_weight"][label] = {
            "per_token_s": lat_w["per_token_s"], "ttft_mean_s": lat_w["ttft_mean_s"],
            "greedy_agreement": token_agreement(full_ids, ids_held), "agreement_prompts": len(held),
            "exact_replies": sum(a == b for a, b in zip(full_ids, ids_held)),
            "probe_agreement": token_agreement(fp32_ids, ids_probe)}
    print("[serve-bench] int8-weight", figures["int8_weight"], flush=True)

    # 5-7: HTTP
    model_name = "tiny" if args.tiny else args.model
    proc, url, key = start_server(args, tmp, router_path)
    try:
        rss_start = rss_kb(proc.pid)
        # questions the server answers without the model (light path): found in-process with no engine at all
        from kefu.kg.tools import SQLiteOrderBackend
        from kefu.serve.config import ServeConfig
        from kefu.serve.pipeline import ChatService
        from kefu.serve.router import Router

        probe = ChatService(None, config=ServeConfig(cache_max_entries=0), router=Router(model), kg=kg,
                            order_backend=SQLiteOrderBackend(kg), base_model=model_name)
        light_turns = []
        for t in test:
            reply = await probe.answer([{"role": "user", "content": t["text"]}], customer_id=t["customer_id"])
            if reply.path == "light" and not reply.fallback:
                light_turns.append(t)
        n_light = 320 if (args.quick or args.tiny) else 1200
        # every question is then asked by many customers in new sessions, 32 at a time
        light_reqs = [{"model": model_name, "text": light_turns[i % len(light_turns)]["text"],
                       "customer_id": light_turns[i % len(light_turns)]["customer_id"], "session_id": f"l{i}"}
                      for i in range(n_light)]
        warm = await http_load(url, key, light_reqs[:64], 8)
        light = await http_load(url, key, light_reqs, 32, think_s=args.think_ms / 1000)
        saturated = await http_load(url, key, light_reqs, 32)  # no think time: the server's ceiling
        lat_light = [x for p in ("light", "cache") for x in light["latencies"].get(p, [])]
        lat_sat = [x for p in ("light", "cache") for x in saturated["latencies"].get(p, [])]
        figures["light_http"] = {"n": len(lat_light), "p50_ms": pct(lat_light, 50) * 1000,
                                 "p95_ms": pct(lat_light, 95) * 1000, "p99_ms": pct(lat_light, 99) * 1000,
                                 "paths": {p: len(v) for p, v in light["latencies"].items()},
                                 "statuses": light["statuses"], "warm_statuses": warm["statuses"],
                                 "throughput_rps": sum(light["statuses"].values()) / light["elapsed_s"],
                                 "saturated_rps": sum(saturated["statuses"].values()) / saturated["elapsed_s"],
                                 "saturated_p50_ms": pct(lat_sat, 50) * 1000,
                                 "saturated_p95_ms": pct(lat_sat, 95) * 1000, "distinct_questions": len(light_turns)}
        print("[serve-bench] light http", figures["light_http"], flush=True)
        # 6: realistic mix: test questions, popular ones repeated (Zipf-like), 4 concurrent customers; first with no
        # pause between a customer's messages (the server saturated), then, on other questions (a cold cache), with
        # customers reading the answer and typing (--think-ms mean pause)
        n_mix = 40 if args.tiny else 120  # the headline mean: enough requests for a stable figure even with --quick
        half_pool = min(60, len(test) // 2)
        mix_reqs = []
        for key, pool, think in (("mix_saturated", test[:half_pool], 0.0),
                                 ("mix", test[half_pool:2 * half_pool], args.think_ms / 1000)):
            zipf = [1 / (i + 1) for i in range(len(pool))]
            reqs = []
            for i in range(n_mix):
                t = rng.choices(pool, zipf)[0]
                reqs.append({"model": model_name, "text": t["text"], "customer_id": t["customer_id"],
                             "session_id": f"{key}{i}"})
            mix_reqs += reqs
            mix = await http_load(url, key, reqs, 4, think_s=think)
            all_lat = [x for v in mix["latencies"].values() for x in v]
            figures[key] = {"n": len(all_lat), "mean_ms": statistics.mean(all_lat) * 1000,
                            "p50_ms": pct(all_lat, 50) * 1000, "p95_ms": pct(all_lat, 95) * 1000,
                            "think_ms": think * 1000, "paths": {p: len(v) for p, v in mix["latencies"].items()},
                            "mean_ms_by_path": {p: statistics.mean(v) * 1000 for p, v in mix["latencies"].items()},
                            "statuses": mix["statuses"]}
            print(f"[serve-bench] {key}", figures[key], flush=True)
        # 7: soak
        stop = asyncio.Event()
        sampler = asyncio.create_task(sample_rss(proc.pid, max(1.0, args.soak_seconds / 60), stop))
        soak = await http_load(url, key, mix_reqs + light_reqs[:200], 8, duration_s=args.soak_seconds)
        stop.set()
        samples = await sampler
        figures["soak"] = {"seconds": args.soak_seconds, "requests": sum(soak["statuses"].values()),
                           "statuses": soak["statuses"], "paths": {p: len(v) for p, v in soak["latencies"].items()},
                           "5xx": sum(v for k, v in soak["statuses"].items() if k >= 500),
                           "rss_start_mb": rss_start / 1024, "rss_end_mb": samples[-1][1], "rss_samples": samples,
                           **rss_trend(samples)}
        print("[serve-bench] soak", figures["soak"], flush=True)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    figures["load_end"] = os.getloadavg()[0]
    (tmp / "figures.json").write_text(json.dumps(figures, ensure_ascii=False, indent=1, default=str), "utf-8")
    md = report(figures, args)
    print(md)
    if not args.tiny and not args.no_write:
        from _report import write_section

        write_section("serve", md)


def soak_rss(soak: dict) -> str:
    if "warm_mb" not in soak:  # figures from before RSS sampling
        return f"server RSS {soak['rss_start_mb']:.0f} → {soak['rss_end_mb']:.0f} MB"
    return (f"server RSS {soak['rss_start_mb']:.0f} MB before, {soak['warm_mb']:.0f} MB after the first quarter "
            f"(allocator warm-up), {soak['end_mb']:.0f} MB at the end (max {soak['max_mb']:.0f}): "
            f"**{soak['growth_after_warmup_pct']:+.1f}%** after warm-up")


def soak_flat(soak: dict) -> str:
    if "growth_after_warmup_pct" not in soak:
        return ""
    return f", flat (< 5% after warm-up) {'✅' if soak['growth_after_warmup_pct'] < 5 else '❌'}"


def report(f: dict, args) -> str:
    from _report import machine

    b, r, lh, mix, soak, lat, q = f["batching"], f["router"], f["light_http"], f["mix"], f["soak"], f["latency"], \
        f["int8"]
    ok = lambda cond: "✅" if cond else "❌"  # noqa: E731
    acc_ratio = (f"**{r['accuracy_ratio']:.0%}** of all-full" if r["all-full"]["key_fact_accuracy"]
                 else "all-full scores 0, the router is not worse")
    mode = "--quick" if args.quick else "full"
    t = f.get("trim")
    sat = f["mix_saturated"]
    by_path = lambda m: ", ".join(f"{p} {v:.0f} ms" for p, v in m.get("mean_ms_by_path", {}).items())  # noqa: E731
    served = (f"the shop's vocabulary trim ({t['kept']:,} of {t['vocab']:,} tokens)" if t else "the full vocabulary")
    served += {"int8-weight": " and weight-only INT8", "int8": " and dynamic INT8"}.get(f.get("server_quantize"), "")
    def int8_weight_row(kind: str, v: dict) -> str:
        base = t["latency"]["per_token_s"] if kind == "trim" else lat["per_token_s"]
        what = " + vocabulary trim" if kind == "trim" else ", output projection included"
        return (f"\n| weight-only INT8 (`--quantize int8-weight`: int8 weights, bf16 activations){what}: per-token decode "
                f"latency | **{v['per_token_s'] * 1000:.0f} ms/token** vs fp32 {base * 1000:.0f}"
                f"{' trimmed' if kind == 'trim' else ''} (**{base / v['per_token_s']:.2f}×**); time to first token "
                f"{v['ttft_mean_s'] * 1000:.0f} ms; greedy agreement with fp32 full vocabulary {v['greedy_agreement']:.0%} "
                f"of tokens on {v['agreement_prompts']} held-out questions ({v['exact_replies']}/{v['agreement_prompts']} "
                f"identical), {v['probe_agreement']:.0%} on the INT8 row's 4 probes | measured |")

    w_rows = "".join(int8_weight_row(kind, v) for kind, v in f.get("int8_weight", {}).items())
    sp = f.get("speculation")
    spec_row = "" if not sp else (
        f"\n| prompt-lookup speculation (`serve.draft_tokens` {sp['draft_tokens']}, the server's setting) on the "
        f"server's engine ({served.replace('the shop', 'shop')}): {sp['prompts']} held-out questions as the full "
        f"path sends them (system prompt + the shop's facts, {sp['prompt_tokens_mean']:.0f} prompt tokens), one at a "
        f"time, faster of 2 interleaved rounds | answer {sp['answer_s'] * 1000:.0f} ms vs {sp['answer_s_off'] * 1000:.0f}"
        f" ms without (**{sp['speedup']:.2f}×**); {sp['accepted']} of {sp['drafted']} draft tokens accepted "
        f"({sp['tokens']} answer tokens); {sp['identical']}/{sp['prompts']} answers identical to one token per step "
        f"| measured |")
    trim_rows = "" if not t else f"""
| full-model path with the vocabulary trim ({t['kept']:,} of {t['vocab']:,} tokens kept; built from the dialogues whose question is not held out): per-token decode latency | **{t['latency']['per_token_s'] * 1000:.0f} ms/token** vs {lat['per_token_s'] * 1000:.0f} full (**{lat['per_token_s'] / t['latency']['per_token_s']:.2f}×**); time to first token {t['latency']['ttft_mean_s'] * 1000:.0f} ms | measured |
| … one request at a time | {t['one_at_a_time']['tokens_per_s']:.1f} tokens/s = {t['vs_full_one_at_a_time']:.2f}× the full vocabulary | measured |
| … batching, 8 concurrent clients: batch 8 vs one at a time | {t['batched']['tokens_per_s']:.1f} vs {t['one_at_a_time']['tokens_per_s']:.1f} tokens/s = **{t['speedup_tokens']:.2f}×** | ≥ 3× {ok(t['speedup_tokens'] >= 3)} |
| … greedy agreement with the full vocabulary on {t['agreement_prompts']} held-out questions | {t['greedy_agreement']:.0%} of tokens, {t['exact_replies']}/{t['agreement_prompts']} replies identical | quality check |"""
    return f"""## Serving (`bench/serve_bench.py`{' --quick' if args.quick else ''})

Machine: {machine()}. Model: {f['model']} (fp32 unless a row says otherwise, CPU), answers capped at {f['max_new_tokens']} new tokens; the
server runs in its own process on 127.0.0.1 with API-key auth on; load comes from one asyncio client process.
Mode: {mode}. The machine is shared: 1-minute load average {f['load_start']:.1f} at the start and
{f['load_end']:.1f} at the end of the run (on {os.cpu_count()} cores), so absolute latencies are inflated by other
jobs; torch used {f['threads']} thread(s) per process.

| Figure | Measured | Target |
|---|---|---|
| light/cached path over HTTP, 32 concurrent clients, {args.think_ms:.0f} ms mean think time (n={lh['n']}, {lh['distinct_questions']} distinct questions, paths {lh['paths']}) | p50 {lh['p50_ms']:.1f} ms, p95 {lh['p95_ms']:.1f} ms, p99 {lh['p99_ms']:.1f} ms at {lh['throughput_rps']:.0f} req/s | p50 ≤ 20 ms {ok(lh['p50_ms'] <= 20)}, p95 ≤ 50 ms {ok(lh['p95_ms'] <= 50)} |
| same, 32 clients with no think time (server saturated) | {lh['saturated_rps']:.0f} req/s, p50 {lh['saturated_p50_ms']:.0f} ms, p95 {lh['saturated_p95_ms']:.0f} ms | ceiling |
| full-model path: time to first token (engine, one request: queue + prefill) | {lat['ttft_mean_s'] * 1000:.0f} ms (first visible text {lat['first_text_mean_s'] * 1000:.0f} ms) | — |
| full-model path: per-token decode latency | {lat['per_token_s'] * 1000:.0f} ms/token ({lat['tokens_mean']:.0f} tokens/answer) | brief: ~180 ms |
| realistic mix over HTTP, server with {served} (n={mix['n']}, 4 customers reading and typing: {mix['think_ms']:.0f} ms mean pause between messages; paths {mix['paths']}; mean by path {by_path(mix)}) | mean {mix['mean_ms']:.0f} ms, p50 {mix['p50_ms']:.0f} ms, p95 {mix['p95_ms']:.0f} ms | mean ≤ 800 ms {ok(mix['mean_ms'] <= 800)} |
| same mix, other questions, 4 clients with no pause (the server saturated; n={sat['n']}, paths {sat['paths']}; mean by path {by_path(sat)}) | mean {sat['mean_ms']:.0f} ms, p50 {sat['p50_ms']:.0f} ms, p95 {sat['p95_ms']:.0f} ms | ceiling |
| continuous batching, 8 concurrent clients, full vocabulary: batch 8 vs one at a time | {b['batched']['tokens_per_s']:.1f} vs {b['one_at_a_time']['tokens_per_s']:.1f} tokens/s = **{b['speedup_tokens']:.2f}×** ({b['speedup_requests']:.2f}× requests/s) | ≥ 3× {ok(b['speedup_tokens'] >= 3)} |
| router vs every turn to the model (n={r['router']['turns']}) | model calls {r['router']['model_calls']} vs {r['all-full']['model_calls']} (**{r['compute_cut']:.0%} less**); key-fact accuracy {r['router']['key_fact_accuracy']:.3f} vs {r['all-full']['key_fact_accuracy']:.3f} over {r['router']['scored_turns']} turns with key facts ({acc_ratio}) | ≥ 30% less {ok(r['compute_cut'] >= 0.3)}, ≥ 98% accuracy {ok(r['accuracy_ratio'] >= 0.98)} |{trim_rows}
| INT8 dynamic quantisation (CPU) | {q['per_token_s'] * 1000:.0f} ms/token vs fp32 {lat['per_token_s'] * 1000:.0f}; greedy agreement with fp32 {q['greedy_agreement']:.0%} | measured |{w_rows}{spec_row}
| soak {soak['seconds']:.0f} s, 8 clients, mixed questions, no pauses (paths {soak.get('paths', {})}) | {soak['requests']} requests, **{soak['5xx']} 5xx**; {soak_rss(soak)} | 0 5xx {ok(soak['5xx'] == 0)}{soak_flat(soak)} |

Notes: key facts are the amounts, order statuses, SKUs and order numbers in the sample shop's reference answer to
each question (first customer turn of held-out dialogues); the router was fitted on the other half with
`target_full_share={args.target_full_share}`. The mix repeats popular questions (Zipf weights) so the cache sees
realistic repeats; its mean is dominated by how many turns need the full model (each full answer costs TTFT +
tokens × per-token latency). Batching speed-up is measured on the same weights in the same process. The engine rows
decode one token per step; the HTTP server also verifies prompt-lookup drafts (the speculation row). The base model
copies its prompt more than a tuned adapter does, so its drafts are accepted more often.
"""


if __name__ == "__main__":
    main()
