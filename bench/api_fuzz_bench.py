"""API fuzz benchmark: schemathesis against the real HTTP app (tiny random model), every operation, with a larger
budget than the unit test, in positive (schema-valid) and negative (schema-violating) generation modes.

    .venv/bin/python bench/api_fuzz_bench.py [--examples 200] [--negative 100] [--seed 0]

Each generated request is sent in-process over ASGI with a valid ``chat``/``feedback:write`` key and checked with
all of schemathesis' checks (no 5xx, declared status codes / content types / bodies, invalid data rejected, valid
data accepted, auth enforced). Failures are collected, not raised, so the run reports every distinct one.

Baseline (same process): the same budget against FastAPI's own OpenAPI document, which declares no request bodies
(the handlers read the raw request), to show how much of the API a schema-driven fuzzer reaches without the
documented schema of tests/serve/test_api_fuzz.py. Writes the ``api_fuzz`` section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "serve"))
sys.path.insert(0, str(ROOT / "bench"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _header(response, name: str) -> str:
    """One header of a schemathesis response (its headers map names to lists of values)."""
    value = response.headers.get(name) or ""
    return value[0] if isinstance(value, list) else value


def _sent(case, method: str) -> str:
    """What was sent, short: the path for GETs and body-less requests, else the body."""
    body = getattr(case, "body", None)
    if method == "get" or type(body).__name__ == "NotSet":
        return case.formatted_path
    if isinstance(body, dict):  # the fields that matter, not the random extra keys the schema allows
        body = {k: v for k, v in body.items() if k in SHOWN} or body
    return f"{body!r}"[:160]


SHOWN = ("model", "session_id", "customer_id", "user", "temperature", "max_tokens", "max_completion_tokens", "stream",
         "kind", "rating", "outcome", "name", "path")


def fuzz(schema, operations, *, examples: int, mode, seed: int, service=None) -> dict:
    """Send ``examples`` generated requests per operation; collect status codes, 5xx and distinct check failures."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import seed as hseed

    from serve_support import API_KEY

    stats = {"inputs": 0, "status": Counter(), "5xx": 0, "failures": Counter(), "examples": {}, "per_op": {},
             "engine_fallbacks": 0}
    for path, method in operations:
        sent_before = stats["inputs"]
        ok_before = stats["status"]["200"]

        @hseed(seed)
        @settings(max_examples=examples, deadline=None, database=None, suppress_health_check=list(HealthCheck),
                  print_blob=False)
        @given(case=schema[path][method.upper()].as_strategy(generation_mode=mode))
        def run(case):
            stats["inputs"] += 1
            try:
                response = case.call(headers={"Authorization": f"Bearer {API_KEY}"})
            except Exception as exc:  # the in-process transport re-raises the app's unhandled error: a 500
                stats["status"]["500"] += 1
                stats["5xx"] += 1
                title = f"{method.upper()} {path}: server error {type(exc).__name__}"
                stats["failures"][title] += 1
                stats["examples"].setdefault(title, _sent(case, method) + f" -> {exc}"[:120])
                return
            stats["status"][str(response.status_code)] += 1
            if response.status_code >= 500:
                stats["5xx"] += 1
            elif response.status_code == 200 and path == "/v1/chat/completions" and \
                    _header(response, "content-type").startswith("application/json"):
                meta = response.json().get("kefu") or {}
                if meta.get("fallback"):  # the engine failed on a valid request (customer handed to a human)
                    stats["engine_fallbacks"] += 1
                    log = service.request_log[-1] if service is not None and service.request_log else {}
                    why = str(log.get("error") or "?")[:70]
                    title = f"{method.upper()} {path}: engine failure on a valid request (fallback: {why})"
                    stats["failures"][title] += 1
                    stats["examples"].setdefault(title, _sent(case, method))
            try:
                case.validate_response(response, headers={"Authorization": f"Bearer {API_KEY}"})
            except (Exception, BaseExceptionGroup) as exc:  # a failed check: one line per distinct kind
                failures = getattr(exc, "exceptions", None) or [exc]
                for failure in failures:
                    title = f"{method.upper()} {path}: {getattr(failure, 'title', type(failure).__name__)}"
                    stats["failures"][title] += 1
                    stats["examples"].setdefault(title, f"{_sent(case, method)} -> {response.status_code}")

        try:
            run()
        except Exception as exc:  # generation itself failed (e.g. an unsatisfiable schema): count it, go on
            title = f"{method.upper()} {path}: generation error {type(exc).__name__}"
            stats["failures"][title] += 1
            stats["examples"].setdefault(title, str(exc)[:160])
        stats["per_op"][f"{method.upper()} {path}"] = (stats["inputs"] - sent_before,
                                                       stats["status"]["200"] - ok_before)
    return stats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--examples", type=int, default=200, help="positive examples per operation")
    parser.add_argument("--negative", type=int, default=100, help="negative examples per operation")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-report", action="store_true", help="print only; do not write docs/benchmarks.md")
    args = parser.parse_args()

    import tempfile

    os.environ["KEFU_HOME"] = tempfile.mkdtemp(prefix="kefu-api-fuzz-")
    warnings.filterwarnings("ignore")
    import logging

    logging.getLogger("kefu").setLevel(logging.CRITICAL)  # engine failures are counted, not printed
    logging.getLogger("transformers").setLevel(logging.ERROR)
    import schemathesis
    from schemathesis import GenerationMode

    from _report import machine, write_section
    from serve_support import tiny_model, tiny_tokenizer
    from test_api_fuzz import OPERATIONS, fuzz_app, load_schema

    tok = tiny_tokenizer()
    tiny = (tiny_model(tok), tok)
    operations = sorted(OPERATIONS)
    # negative mode needs something to break: a body or a path parameter
    negatable = [op for op in operations if OPERATIONS[op][0] or "{" in op[0]]
    runs = {}
    for label, documented, mode, n, ops in (
            ("baseline: FastAPI schema, positive", False, GenerationMode.POSITIVE, args.examples, operations),
            ("documented schema, positive", True, GenerationMode.POSITIVE, args.examples, operations),
            ("documented schema, negative", True, GenerationMode.NEGATIVE, args.negative, negatable)):
        started = time.perf_counter()
        # negative mode must see the app's real max_tokens bound, else values above the test cap count as accepted
        app = fuzz_app(tiny, documented=documented, skip_known_bugs=False,
                       max_tokens_cap=None if mode == GenerationMode.NEGATIVE else 32)
        stats = fuzz(load_schema(app), ops, examples=n, mode=mode, service=app.state.service,
                     seed=args.seed)
        stats["seconds"] = time.perf_counter() - started
        runs[label] = stats
        print(f"{label}: {stats['inputs']} inputs, {stats['5xx']} 5xx, {stats['engine_fallbacks']} engine fallbacks, "
              f"{sum(stats['failures'].values())} failed "
              f"checks ({len(stats['failures'])} distinct), status {dict(stats['status'])}, "
              f"{stats['seconds']:.1f}s", flush=True)
        for title, count in stats["failures"].most_common():
            print(f"  {count:5d}  {title}  e.g. {stats['examples'][title]}")

    command = (f".venv/bin/python bench/api_fuzz_bench.py --examples {args.examples} --negative {args.negative} "
               f"--seed {args.seed}")
    lines = [
        "## API fuzzing (schemathesis)", "",
        f"Command: `{command}` — schemathesis {schemathesis.__version__}, tiny random Llama (8 new tokens), "
        "in-process ASGI, valid `chat`+`feedback:write` key, rate limit lifted. Machine: " + machine() + ".", "",
        "Positive runs cap generated `max_tokens` at 32 (the tiny model has 512 positions); negative runs use the "
        "app's bound. All schemathesis checks per response (no 5xx, declared status/content type/body, valid data "
        "accepted, invalid data rejected, auth enforced). Baseline: FastAPI's own schema, which declares no request "
        "bodies. Engine fallbacks: valid chat requests the model failed on (the customer was handed to a human).", "",
        "| run | inputs | 5xx | engine fallbacks | failed checks (distinct) | chat requests answered 200 "
        "| status codes | seconds |",
        "|---|---:|---:|---:|---:|---:|---|---:|",
    ]
    for label, s in runs.items():
        chat = s["per_op"].get("POST /v1/chat/completions", (0, 0))
        codes = ", ".join(f"{k}: {v}" for k, v in sorted(s["status"].items()))
        lines.append(f"| {label} | {s['inputs']} | {s['5xx']} | {s['engine_fallbacks']} "
                     f"| {sum(s['failures'].values())} ({len(s['failures'])}) | {chat[1]} of {chat[0]} | {codes} "
                     f"| {s['seconds']:.1f} |")
    distinct = [(label, t, c, s["examples"][t]) for label, s in runs.items() for t, c in s["failures"].items()]
    lines += ["", "Distinct failures: " + ("none." if not distinct else "")]
    for label, title, count, example in distinct:
        lines.append(f"- ({label}) {title} ×{count}, e.g. `{example}`")
    report = "\n".join(lines)
    print(report)
    if not args.no_report:
        write_section("api_fuzz", report)


if __name__ == "__main__":
    main()
