"""JDDC held-out quality: the tuned system and the tuned model against the shop's own past replies (retrieval).

Real JD.com customer-service logs (the JDDC 2019 sample in ``../shared/data/jddc2019``; skipped with a message when
absent), through kefu's own commands, the way a user would run them:

1. ``kefu prepare chat_0.1per.txt --test-ratio 0.2 --val-ratio 0.05 --no-augment`` (split by session; JDDC's
   placeholders ``[订单x]``, ``[金额x]`` ... kept as slots);
2. ``kefu train --kg EMPTY --exemplars N`` on Gemma 3 270M: train as you serve — each agent turn rendered as serving
   renders it (system prompt, the last messages and ``N`` of the shop's past replies to the most alike questions,
   from other dialogues), loss on that reply only. The knowledge graph is an empty one: JDDC has no catalogue, so
   the prompt holds no facts and slots stay slots. ``--exemplars 0`` trains the same rendering without exemplars;
   ``--plain`` trains on whole dialogues as the earlier measurement did;
3. ``kefu eval system --run RUN --kg EMPTY --last-turn-only``: the system — each held-out dialogue's last turn through
   the serving pipeline as ``kefu serve --run`` answers it (where the shop's data says nothing about a turn, the reply
   the shop's agents agree on; else the model, verified) — and ``kefu eval --run RUN --last-turn-only --train-data
   DATA``: the model alone. Each held-out dialogue's last agent reply, scored
   single-reference (JDDC's human agreement is measured that way: BLEU-4 24.92, ROUGE-L 38.26, first human reply
   against the second), with the retrieval baseline (``kefu.kg.replies``, BM25 over the train split) and the stock
   reply scored on the same samples in the same run, and the consensus of past replies (no model) beside them.

    .venv/bin/python bench/jddc_quality.py --work /tmp/jddc --max-steps 120 --max-samples 48 [--write-docs]

It writes ``WORK/summary.json`` and, with ``--write-docs``, the section in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from _report import machine, write_section  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
JDDC = REPO.parent / "shared" / "data" / "jddc2019" / "chat_0.1per.txt"
HUMAN = {"bleu4": 24.92, "rougeL": 38.26}  # JDDC's human-vs-human agreement (kefu.eval.metrics)


def kefu(*args: str, log: Path) -> float:
    """Run one kefu command (its output appended to ``log``); returns its wall time; exits on failure."""
    started = time.perf_counter()
    with open(log, "a", encoding="utf-8") as out:
        out.write(f"\n$ kefu {' '.join(args)}\n")
        out.flush()
        done = subprocess.run([sys.executable, "-m", "kefu.cli", *args], stdout=out, stderr=subprocess.STDOUT,
                              env={**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})
    if done.returncode != 0:
        sys.exit(f"kefu {args[0]} failed (exit {done.returncode}); see {log}")
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jddc", type=Path, default=JDDC)
    parser.add_argument("--work", type=Path, required=True, help="folder for data, run and eval (reused: a run "
                                                                 "already trained there is not trained again)")
    parser.add_argument("--model", default="gemma3-270m")
    parser.add_argument("--exemplars", type=int, default=2)
    parser.add_argument("--plain", action="store_true", help="train on whole dialogues (no per-turn rendering)")
    parser.add_argument("--max-steps", type=int, default=0, help="cap the training steps (0: one epoch)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-len", type=int, default=512)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--max-samples", type=int, default=48, help="held-out dialogues scored (their last turn)")
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--write-docs", action="store_true")
    args = parser.parse_args()
    if not args.jddc.is_file():
        print(f"skipped: {args.jddc} not found (the JDDC sample lives in ../shared/data)")
        return
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    log = work / "commands.log"
    data, run, evaluated = work / "data", work / "run", work / "eval"
    times: dict[str, float] = {}
    if not (data / "train.jsonl").is_file():
        times["prepare"] = kefu("prepare", str(args.jddc), "--out", str(data), "--test-ratio", "0.2",
                                "--val-ratio", "0.05", "--no-augment", log=log)
        kefu("consent", "register", str(data / "train.jsonl"), "--source",
             "JDDC 2019 sample (../shared/data; public, PII replaced by the organiser; testing only)",
             "--legal-basis", "legitimate-interest", "--no-consent", log=log)
    from kefu.kg.store import KnowledgeGraph

    empty = work / "empty_kg.db"
    KnowledgeGraph.open(f"sqlite:///{empty}").close()  # JDDC has no catalogue: no facts, slots stay slots
    grounding = [] if args.plain else ["--kg", f"sqlite:///{empty}", "--exemplars", str(args.exemplars)]
    if not (run / "train_report.json").is_file():
        times["train"] = kefu("train", "--data", str(data), "--out", str(run), "--model", args.model,
                              "--epochs", "1", "--batch-size", str(args.batch_size), "--max-len", str(args.max_len),
                              "--lr", str(args.lr), *grounding, "--save-steps", "0",
                              *(["--max-steps", str(args.max_steps)] if args.max_steps else []), log=log)
    times["eval"] = kefu("eval", "--run", str(run), "--data", str(data / "test.jsonl"), "--out", str(evaluated),
                         "--last-turn-only", "--max-samples", str(args.max_samples), "--max-new-tokens",
                         str(args.max_new_tokens), "--train-data", str(data), log=log)
    times["eval_system"] = kefu("eval", "system", "--run", str(run), "--kg", f"sqlite:///{empty}", "--data",
                                str(data / "test.jsonl"), "--out", str(work / "eval_system"), "--last-turn-only",
                                "--max-samples", str(args.max_samples), "--train-data", str(data), "--no-progress",
                                log=log)
    metrics = json.loads((evaluated / "metrics.json").read_text("utf-8"))
    system = json.loads((work / "eval_system" / "metrics.json").read_text("utf-8"))
    report = json.loads((run / "train_report.json").read_text("utf-8"))
    summary = {"settings": vars(args) | {"jddc": str(args.jddc), "work": str(work)}, "times_s": times,
               "train": {k: report.get(k) for k in ("steps", "tokens", "supervised_tokens", "final_loss",
                                                    "val_loss", "train_seconds", "wall_seconds", "examples")},
               "metrics": {k: metrics.get(k) for k in (
                   "n_samples", "bleu4", "rougeL", "bleu4_single_ref", "rougeL_single_ref", "retrieval_bleu4",
                   "retrieval_rougeL", "consensus_bleu4", "consensus_rougeL", "stock_bleu4", "stock_rougeL",
                   "vs_retrieval_bleu4", "vs_retrieval_rougeL", "repeat_4gram_rate", "exemplars",
                   "unfilled_slot_rate")},
               "system": {k: system.get(k) for k in (
                   "n_samples", "bleu4_single_ref", "rougeL_single_ref", "retrieval_bleu4", "retrieval_rougeL",
                   "consensus_bleu4", "consensus_rougeL", "vs_retrieval_bleu4", "vs_retrieval_rougeL",
                   "vs_consensus_bleu4", "vs_consensus_rougeL", "path_mix", "reasons", "replacements",
                   "invented_fact_rate", "latency_p50_ms", "latency_p95_ms")}}
    (work / "summary.json").write_text(json.dumps(summary, ensure_ascii=False, indent=1), encoding="utf-8")
    print(json.dumps(summary, ensure_ascii=False, indent=1))
    if args.write_docs:
        write_section("jddc-quality", markdown(summary, args))


def markdown(summary: dict, args: argparse.Namespace) -> str:
    m, t, sy = summary["metrics"], summary["train"], summary["system"]

    def row(name: str, bleu: float | None, rouge: float | None) -> str:
        pct = (f"{bleu / HUMAN['bleu4']:.0%} / {rouge / HUMAN['rougeL']:.0%}"
               if bleu is not None and rouge is not None else "—")
        shown = [f"{x:.2f}" if x is not None else "—" for x in (bleu, rouge)]
        return f"| {name} | {shown[0]} | {shown[1]} | {pct} |"

    def times(a: float | None, b: float | None) -> str:
        return f"{a / b:.2f}×" if a is not None and b else "—"

    how = ("whole dialogues (plain)" if args.plain else
           f"each agent turn rendered as serving renders it, with {args.exemplars} exemplars (an empty KG: no facts)")
    reasons = ", ".join(f"{k} {v}" for k, v in (sy.get("reasons") or {}).items())
    return "\n".join([
        "## JDDC held-out quality (`bench/jddc_quality.py`)",
        "",
        f"Command: `python bench/jddc_quality.py --work WORK --max-steps {args.max_steps} --max-samples "
        f"{args.max_samples}{' --plain' if args.plain else f' --exemplars {args.exemplars}'} --write-docs`. "
        f"Machine: {machine()}.",
        f"Data: the JDDC 2019 sample (994 sessions) split by session (727 train, 56 val, 211 test). Training: "
        f"{args.model}, {how}; {t.get('steps')} steps of {args.batch_size} rows × {args.max_len} tokens, "
        f"{t.get('tokens') or 0:,} tokens ({t.get('supervised_tokens') or 0:,} supervised), "
        f"{(t.get('wall_seconds') or t.get('train_seconds') or 0) / 60:.0f} min wall; val loss "
        f"{t.get('val_loss') or float('nan'):.3f}. "
        f"Scored: the last agent reply of the first {sy.get('n_samples')} held-out dialogues, single reference. "
        "The system is `kefu eval system --run`: each turn through the serving pipeline as `kefu serve --run` "
        "answers it; the model alone is `kefu eval --run` (its greedy draft, unverified). All rows are scored on "
        "the same turns in the same run.",
        "",
        "| answers | BLEU-4 | ROUGE-L | % of human agreement (BLEU-4 24.92 / ROUGE-L 38.26) |",
        "|---|---:|---:|---|",
        row("**the tuned system** (what a customer receives)", sy.get("bleu4_single_ref"), sy.get("rougeL_single_ref")),
        row("the tuned model alone", m.get("bleu4"), m.get("rougeL")),
        row("consensus of the shop's past replies (no model)", sy.get("consensus_bleu4"), sy.get("consensus_rougeL")),
        row("retrieval: the best past reply (BM25) — the baseline", sy.get("retrieval_bleu4"),
            sy.get("retrieval_rougeL")),
        row("stock reply", m.get("stock_bleu4"), m.get("stock_rougeL")),
        f"| **system ÷ retrieval** | **{times(sy.get('bleu4_single_ref'), sy.get('retrieval_bleu4'))}** | "
        f"**{times(sy.get('rougeL_single_ref'), sy.get('retrieval_rougeL'))}** | target 1.5× |",
        f"| model alone ÷ retrieval | {times(m.get('bleu4'), m.get('retrieval_bleu4'))} | "
        f"{times(m.get('rougeL'), m.get('retrieval_rougeL'))} | |",
        "",
        f"The system's answers by reason: {reasons or '—'}; replacements {sy.get('replacements') or {}}; "
        f"invented-fact rate {sy.get('invented_fact_rate')}; latency p50 {sy.get('latency_p50_ms')} ms, p95 "
        f"{sy.get('latency_p95_ms')} ms. The model alone: repeat_4gram_rate {m.get('repeat_4gram_rate')}, "
        f"exemplars shown per prompt {m.get('exemplars')}.",
    ])


if __name__ == "__main__":
    main()
