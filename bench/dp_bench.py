"""Utility cost of differential privacy on the sample shop: the same LoRA run with and without DP-SGD.

    .venv/bin/python bench/dp_bench.py --steps 8          # gemma3-270m, a few minutes on 2 CPU cores

Baseline: kefu's ordinary trainer (no DP) with the same model, data, seed, batch and number of steps, in the same
process. Both adapters are scored on the same held-out turns of the prepared sample shop.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _report import machine, write_section  # noqa: E402

SHOP = Path(__file__).resolve().parent.parent / "examples" / "shop"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="gemma3-270m")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--epsilon", type=float, default=8.0)
    parser.add_argument("--delta", type=float, default=1e-5)
    parser.add_argument("--eval-samples", type=int, default=24)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()

    from kefu.config import load_config
    from kefu.data.pipeline import prepare
    from kefu.eval.runner import evaluate
    from kefu.train.dp import train_dp
    from kefu.train.trainer import train

    config = load_config(None, {"prepare.augment": False})
    train_config = config.train.model_copy(update={
        "model": args.model, "max_steps": args.steps, "batch_size": 8, "max_len": 256, "learning_rate": 5e-4,
        "warmup_ratio": 0.1, "save_steps": 0, "tensorboard": False})
    eval_config = config.eval.model_copy(update={"max_samples": args.eval_samples, "max_new_tokens": 32,
                                                 "perplexity": False})
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        prepare([SHOP / "dialogues.jsonl"], tmp / "prep", config.prepare, catalogue=SHOP / "products.csv")
        test = tmp / "prep" / "test.jsonl"
        for name, run in (("no DP (baseline)", "plain"), (f"DP-SGD ε={args.epsilon:g}, δ={args.delta:g}", "dp")):
            started = time.time()
            if run == "plain":
                report = train(train_config, tmp / "prep", tmp / run, progress=False, consent_override="benchmark: the bundled synthetic sample shop")
            else:
                report = train_dp(train_config, tmp / "prep", tmp / run, epsilon=args.epsilon, delta=args.delta,
                                  progress=False, consent_override="benchmark: the bundled synthetic sample shop")
            seconds = time.time() - started
            scores = evaluate(test, tmp / f"eval_{run}", run=tmp / run, config=eval_config, progress=False)
            rows.append((name, report, scores, seconds))
    lines = [f"| {name} | {r['final_loss']:.3f} | {s['rougeL']:.2f} | {s['bleu4']:.2f} | "
             f"{s.get('key_fact_accuracy') if s.get('key_fact_accuracy') is not None else '—'} | "
             f"{r.get('epsilon_spent', '—') if isinstance(r.get('epsilon_spent'), str) else format(r.get('epsilon_spent', 0), '.2f') if 'epsilon_spent' in r else '—'} | "
             f"{seconds:.0f} |" for name, r, s, seconds in rows]
    text = f"""## Differential privacy on the sample shop (`bench/dp_bench.py`)

Command: `.venv/bin/python bench/dp_bench.py --steps {args.steps} --epsilon {args.epsilon:g}`; model `{args.model}`,
the prepared sample shop, {args.steps} optimizer steps of 8 dialogues, LoRA r=16 on all linear layers, fp32;
scored on {args.eval_samples} held-out agent turns (greedy, 32 new tokens). DP-SGD: one dialogue per row, Poisson
sampling, per-dialogue clipping at 1.0, noise calibrated by Opacus for (ε, δ) over one epoch; the ε actually
spent by the steps taken is reported. Machine: {machine()}.

| run | final train loss | rougeL | bleu4 | key-fact accuracy | ε spent | train s |
|---|---:|---:|---:|---:|---:|---:|
{chr(10).join(lines)}
"""
    print(text)
    print(json.dumps([{"name": n, "report": r} for n, r, _, _ in rows], default=str)[:2000])
    if not args.no_write:
        write_section("dp", text)


if __name__ == "__main__":
    main()
