"""Replicas benchmark: the light/cached path through real ``kefu serve`` processes on 127.0.0.1, one replica on the
embedded default (SQLite + in-process state) against 1, 2 and 3 replicas on the shared state (PostgreSQL + Redis);
writes the ``replicas`` section of docs/benchmarks.md.

Each configuration: the sample shop's KG imported into its state, a ``shop-backend`` key made with ``kefu keys
create`` (the key store is read per request, as in production), the replicas started with rate limits out of the way
(the limiter still runs), a warm-up, then ``--clients`` concurrent clients asking with no pause for ``--seconds``,
round-robin over the replicas as a balancer would; the embedded default is measured first and again last (the
machine's other load moves the figures). Every request opens a new session (the server makes it) and asks
one of the shop's product questions (price, colours, sizes of each SKU; the first asking of each is answered from
the KG, the rest from the cache). No model is loaded.

    python bench/replicas_bench.py                 # 15 s per configuration, 16 clients
    python bench/replicas_bench.py --seconds 5     # shorter
    python bench/replicas_bench.py --no-write      # print only

Needs PostgreSQL (``--postgres``, an admin URL: a database is created and dropped) and Redis (``--redis``).
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Callable

import httpx
import redis

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))
sys.path.insert(0, str(REPO / "tests" / "serve"))

from replica_support import KEY_PEPPER, SHOP, kefu, replica_env, replicas  # noqa: E402

SERVE_YAML = "serve:\n  rate_limit_per_s: 1000000\n  rate_limit_burst: 1000000\n"
SHARED_COUNTS = (1, 2, 3)


def questions() -> list[str]:
    """The shop's product questions: price, colours and sizes of every SKU (light answers from the KG)."""
    with open(SHOP / "products.csv", encoding="utf-8") as handle:
        skus = [row["sku"] for row in csv.DictReader(handle)]
    return [f"{sku}{ask}" for sku in skus for ask in ("多少钱", "有什么颜色", "有哪些尺码")]


async def load(urls: list[str], key: str, model: str, asked: list[str], clients: int, seconds: float,
               seed: int = 0) -> dict:
    """``clients`` concurrent askers, no pause, round-robin over ``urls`` for ``seconds``: latencies and paths."""
    rng = random.Random(seed)
    latencies: list[float] = []
    by_path: dict[str, list[float]] = {}
    errors: dict[str, int] = {}
    turn = 0
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {key}"}, timeout=30, limits=limits) as http:
        deadline = time.perf_counter() + seconds

        async def client() -> None:
            nonlocal turn
            while time.perf_counter() < deadline:
                url = urls[turn % len(urls)]
                turn += 1
                body = {"model": model, "messages": [{"role": "user", "content": rng.choice(asked)}]}
                started = time.perf_counter()
                try:
                    response = await http.post(url + "/v1/chat/completions", json=body)
                except httpx.HTTPError as exc:
                    errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
                    continue
                if response.status_code != 200:
                    errors[str(response.status_code)] = errors.get(str(response.status_code), 0) + 1
                    continue
                latencies.append(time.perf_counter() - started)
                by_path.setdefault(response.headers.get("x-kefu-path", "?"), []).append(latencies[-1])

        started = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(clients)))
        elapsed = time.perf_counter() - started
    return {"n": len(latencies), "throughput": len(latencies) / elapsed, "elapsed_s": elapsed, **percentiles(latencies),
            "paths": {path: len(values) for path, values in by_path.items()},
            "by_path": {path: percentiles(values) for path, values in by_path.items()}, "errors": errors}


def percentiles(latencies: list[float]) -> dict[str, float]:
    """p50 and p95 in ms (nan when there are none)."""
    ordered = sorted(latencies)
    if not ordered:
        return {"p50_ms": float("nan"), "p95_ms": float("nan")}
    return {"p50_ms": 1000 * statistics.median(ordered), "p95_ms": 1000 * ordered[int(0.95 * (len(ordered) - 1))]}


def prepare(root: Path, state_env: dict[str, str], home: str) -> str:
    """The sample shop's KG imported into the state and a ``shop-backend`` key (the first of its key store)."""
    env = replica_env(root, state_env, home)
    kefu(["kg", "import", str(SHOP)], env)
    out = kefu(["keys", "create", "--role", "shop-backend", "--name", "replicas-bench"], env)
    return next(word for word in out.split() if word.startswith("kefu_"))


def measure(name: str, count: int, root: Path, state_env: dict[str, str], key: str, asked: list[str], args) -> dict:
    """Start ``count`` replicas on ``state_env``, warm them up, load them; their figures."""
    config = root / f"kefu-{count}.yaml"
    config.write_text(SERVE_YAML, encoding="utf-8")
    with replicas(count, root, state_env, ["--config", str(config)]) as fleet:
        urls = [r.url for r in fleet]
        model = httpx.get(urls[0] + "/v1/models", headers={"Authorization": f"Bearer {key}"},
                          timeout=10).json()["data"][0]["id"]
        asyncio.run(load(urls, key, model, asked, args.clients, args.warmup, seed=1))
        figures = asyncio.run(load(urls, key, model, asked, args.clients, args.seconds))
    figures.update(name=name, replicas=count)
    print(f"{name} x{count}: {figures['throughput']:.0f} req/s, p50 {figures['p50_ms']:.1f} ms, "
          f"p95 {figures['p95_ms']:.1f} ms, n={figures['n']}, paths {figures['paths']}, errors {figures['errors']}",
          flush=True)
    return figures


def one_at_a_time(state_env: dict[str, str], home: Path, key: str, asked: list[str], n: int) -> dict:
    """Per-request time through the app in this process (ASGI: no sockets, no other request at the same time), with
    the service ``kefu serve`` builds on ``state_env``: what the state costs a request when nothing waits for a core.
    Every question is asked once first, so the ``n`` timed requests are cache hits."""
    from kefu import state
    from kefu.serve.app import create_app
    from kefu.serve.build import build_service
    from kefu.serve.config import ServeConfig
    from kefu.serve.gateway import Authenticator

    saved = dict(os.environ)
    os.environ.update({**state_env, "KEFU_HOME": str(home), "KEFU_KEY_PEPPER": KEY_PEPPER})
    state.configure(None)
    try:
        service = build_service(ServeConfig(rate_limit_per_s=1e6, rate_limit_burst=10 ** 6))
        app = create_app(service, auth=Authenticator(enabled=True))

        async def ask() -> list[float]:
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://kefu",
                                         headers={"Authorization": f"Bearer {key}"}) as http:
                model = (await http.get("/v1/models")).json()["data"][0]["id"]
                for question in asked:
                    await http.post("/v1/chat/completions", json={"model": model, "messages": [
                        {"role": "user", "content": question}]})
                times, rng = [], random.Random(2)
                for _ in range(n):
                    started = time.perf_counter()
                    response = await http.post("/v1/chat/completions", json={"model": model, "messages": [
                        {"role": "user", "content": rng.choice(asked)}]})
                    times.append(time.perf_counter() - started)
                    assert response.status_code == 200, response.text
                return times

        times = asyncio.run(ask())
    finally:
        os.environ.clear()
        os.environ.update(saved)
        state.configure(None)
    figures = {"n": n, "mean_ms": 1000 * statistics.mean(times), **percentiles(times)}
    print(f"one at a time, in process, {state_env.get('KEFU_STATE_BACKEND')}: {figures}", flush=True)
    return figures


def shared_database(admin_url: str) -> tuple[str, Callable[[], None]]:
    """A fresh PostgreSQL database (its URL) and the function that drops it."""
    from sqlalchemy import create_engine, text

    name = f"kefu_bench_{uuid.uuid4().hex[:12]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))

    def drop() -> None:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

    return admin_url.rsplit("/", 1)[0] + f"/{name}", drop


def report(rows: list[dict], alone: dict[str, dict], args, load_before: float, load_after: float) -> str:
    from _report import machine

    base = rows[0]
    lines = [
        "## Replicas on the shared state (`bench/replicas_bench.py`)",
        "",
        f"Machine: {machine()}. All replicas, PostgreSQL, Redis and the load generator share these "
        f"{os.cpu_count()} cores, so more replicas cannot add throughput here; the figures are the cost of the "
        f"shared state per request and show it holds under load. 1-minute load average {load_before:.1f} at the "
        f"start and {load_after:.1f} at the end (other jobs run on this machine too).",
        "",
        f"Light/cached path through real `kefu serve` processes (no model), {args.clients} concurrent clients with no "
        f"pause for {args.seconds:g} s per row after a {args.warmup:g} s warm-up, round-robin over the replicas; each "
        f"request opens a new server-made session and asks one of the sample shop's {len(questions())} product "
        "questions (price, colours, sizes per SKU); the key is read from the key store per request.",
        "",
        "| configuration | replicas | requests | throughput | p50 | p95 | cached: n, p50 / p95 | light: n, p50 / p95 "
        "| errors |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        relative = row["throughput"] / base["throughput"] if base["throughput"] else float("nan")
        paths = []
        for path in ("cache", "light"):
            figures = row["by_path"].get(path)
            paths.append(f"{row['paths'][path]}, {figures['p50_ms']:.0f} / {figures['p95_ms']:.0f} ms" if figures
                         else "0")
        others = {p: n for p, n in row["paths"].items() if p not in ("cache", "light")}
        lines.append(f"| {row['name']} | {row['replicas']} | {row['n']}{f' ({others})' if others else ''} | "
                     f"{row['throughput']:.0f} req/s ({relative:.2f}×) | {row['p50_ms']:.1f} ms | "
                     f"{row['p95_ms']:.1f} ms | {paths[0]} | {paths[1]} | {sum(row['errors'].values())} |")
    lines += ["", f"One request at a time through the same app in one process (ASGI, no sockets to the client, "
              f"nothing else asking; {args.alone} cached requests after each question was asked once): what the "
              "state costs a request when nothing waits for a core.", "",
              "| state | mean | p50 | p95 |", "|---|---|---|---|"]
    for name, figures in alone.items():
        lines.append(f"| {name} | {figures['mean_ms']:.2f} ms | {figures['p50_ms']:.2f} ms | "
                     f"{figures['p95_ms']:.2f} ms |")
    lines += ["", "Command: `.venv/bin/python bench/replicas_bench.py "
              + f"--seconds {args.seconds:g} --warmup {args.warmup:g} --clients {args.clients} --alone {args.alone}`. "
              "Embedded: SQLite "
              "stores under `$KEFU_HOME`, sessions/cache/rate limits in the process. Shared: PostgreSQL (keys, KG, "
              "feedback, audit) and Redis (sessions, cache, single flight, rate limits) on loopback "
              "(docs/deploy.md).",
              "",
              "Where the shared state's cost per request comes from: about eight Redis round trips (the rate limit, "
              "the session made, found again by the pipeline, its entity, intent and two turns written through, the "
              "cache read) and the key's PostgreSQL lookup, each synchronous on the replica's event loop, so they "
              "add to every request's time and cap one replica's throughput; a light answer (not cached) also reads "
              "the KG's version from PostgreSQL on each of its catalogue lookups (`KnowledgeGraph.snapshot`, over "
              "ten per turn), which dominates the light column. The in-process default makes none of these."]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=15.0, help="measured load per configuration")
    parser.add_argument("--warmup", type=float, default=5.0, help="unmeasured load before it (fresh processes are "
                                                                   "slow at first: lazy loads, cold caches)")
    parser.add_argument("--clients", type=int, default=16, help="concurrent clients (the bound on load)")
    parser.add_argument("--alone", type=int, default=300, help="cached requests timed one at a time in process")
    parser.add_argument("--postgres", default=os.environ.get("KEFU_TEST_POSTGRES",
                                                             "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"))
    parser.add_argument("--redis", default=os.environ.get("KEFU_TEST_REDIS", "redis://127.0.0.1:6379/0"))
    parser.add_argument("--no-write", action="store_true", help="print only; do not touch docs/benchmarks.md")
    args = parser.parse_args()
    asked = questions()
    tmp = Path(tempfile.mkdtemp(prefix="kefu-replicas-bench-"))
    load_before = os.getloadavg()[0]
    embedded = {"KEFU_STATE_BACKEND": "sqlite"}
    root = tmp / "embedded"
    embedded_key = prepare(root, embedded, "replica0")  # the one replica's own KEFU_HOME holds the KG and the key
    rows = [measure("embedded default (SQLite, in process)", 1, root, embedded, embedded_key, asked, args)]
    alone = {"embedded": one_at_a_time(embedded, root / "replica0", embedded_key, asked, args.alone)}
    database, drop = shared_database(args.postgres)
    prefix = f"kefu-bench-{uuid.uuid4().hex[:12]}"
    shared = {"KEFU_STATE_BACKEND": "postgres", "KEFU_DATABASE_URL": database, "KEFU_REDIS_URL": args.redis,
              "KEFU_REDIS_PREFIX": prefix}
    client = redis.Redis.from_url(args.redis)
    try:
        root = tmp / "shared"
        key = prepare(root, shared, "admin")
        alone["shared"] = one_at_a_time(shared, root / "admin", key, asked, args.alone)
        for count in SHARED_COUNTS:
            for stale in client.scan_iter(f"{prefix}:*"):  # each row starts from an empty cache, as the first did
                client.delete(stale)
            rows.append(measure("shared state (PostgreSQL + Redis)", count, root, shared, key, asked, args))
    finally:
        drop()
        for stale in client.scan_iter(f"{prefix}:*"):
            client.delete(stale)
        client.close()
    # the embedded default once more at the end: how much the machine's other load moved the figures meanwhile
    rows.append(measure("embedded default, again", 1, tmp / "embedded", embedded, embedded_key, asked, args))
    md = report(rows, alone, args, load_before, os.getloadavg()[0])
    print(md)
    if not args.no_write:
        from _report import write_section

        write_section("replicas", md)


if __name__ == "__main__":
    main()
