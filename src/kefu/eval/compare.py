"""``kefu eval compare EVAL_A EVAL_B``: two evaluation folders side by side (metrics, per intent, worst examples)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from kefu.eval.report import fmt, group_by_intent
from kefu.types import KefuError

# metrics where lower is better (the delta is coloured accordingly)
LOWER_IS_BETTER = {"key_fact_error_rate", "handoff_rate", "latency_mean_ms", "latency_p50_ms", "latency_p95_ms",
                   "compliance_violation_rate", "compliance_hits", "pii_echo_rate", "perplexity", "repeat_4gram_rate",
                   "empty_rate"}
HEADLINE = ("n_samples", "bleu4", "rouge1", "rouge2", "rougeL", "sacrebleu", "chrf", "human_pct_bleu4",
            "human_pct_chrf", "key_fact_accuracy", "key_fact_error_rate", "intent_accuracy", "resolution_rate",
            "handoff_rate", "latency_mean_ms", "latency_p50_ms", "latency_p95_ms", "compliance_violation_rate",
            "pii_echo_rate", "perplexity", "distinct_1", "distinct_2", "repeat_4gram_rate", "len_mean",
            "judge_satisfaction")


def load_eval(folder: str | Path) -> tuple[dict, list[dict]]:
    """``metrics.json`` and ``predictions.jsonl`` of an EVAL folder."""
    folder = Path(folder)
    metrics_file = folder / "metrics.json"
    if not metrics_file.is_file():
        raise KefuError(f"{metrics_file}: not found (is {folder} an eval output folder?)")
    try:
        metrics = json.loads(metrics_file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise KefuError(f"{metrics_file}: not valid JSON: {exc}") from exc
    rows: list[dict] = []
    pred_file = folder / "predictions.jsonl"
    if pred_file.is_file():
        with open(pred_file, encoding="utf-8") as handle:
            for lineno, line in enumerate(handle, 1):
                if line.strip():
                    try:
                        rows.append(json.loads(line))
                    except json.JSONDecodeError as exc:
                        raise KefuError(f"{pred_file}:{lineno}: not valid JSON: {exc.msg}") from exc
    return metrics, rows


def _delta(key: str, a: Any, b: Any) -> str:
    if not isinstance(a, (int, float)) or not isinstance(b, (int, float)) or isinstance(a, bool):
        return ""
    d = b - a
    if abs(d) < 1e-12:
        return "0"
    better = (d < 0) if key in LOWER_IS_BETTER else (d > 0)
    colour = "green" if better else "red"
    return f"[{colour}]{d:+.4g}[/]"


def compare(a: str | Path, b: str | Path, console: Console | None = None, worst_k: int = 5) -> dict:
    """Print the comparison; return ``{"metrics": {key: (a, b)}, "intents": {...}, "worst": [...]}``."""
    console = console or Console()
    ma, ra = load_eval(a)
    mb, rb = load_eval(b)
    keys = [k for k in HEADLINE if k in ma or k in mb]
    table = Table(title="kefu eval compare", show_lines=False)
    table.add_column("metric")
    table.add_column(f"A: {Path(a).name}", justify="right")
    table.add_column(f"B: {Path(b).name}", justify="right")
    table.add_column("B − A", justify="right")
    for key in keys:
        table.add_row(key, fmt(ma.get(key)), fmt(mb.get(key)), _delta(key, ma.get(key), mb.get(key)))
    console.print(table)

    ga, gb = group_by_intent(ra), group_by_intent(rb)
    intents = sorted(set(ga) | set(gb), key=lambda i: -((ga.get(i) or {}).get("n", 0) + (gb.get(i) or {}).get("n", 0)))
    itable = Table(title="per intent (BLEU-4 / resolution proxy)")
    for col in ("intent", "n", "A bleu4", "B bleu4", "Δ", "A resolved", "B resolved"):
        itable.add_column(col, justify="left" if col == "intent" else "right")
    for intent in intents:
        x, y = ga.get(intent, {}), gb.get(intent, {})
        itable.add_row(intent, str(y.get("n", x.get("n", 0))), fmt(x.get("bleu4")), fmt(y.get("bleu4")),
                       _delta("bleu4", x.get("bleu4"), y.get("bleu4")), fmt(x.get("resolution")),
                       fmt(y.get("resolution")))
    console.print(itable)

    by_id = {str(r.get("id")): r for r in ra}
    paired = [(by_id[str(r.get("id"))], r) for r in rb if str(r.get("id")) in by_id]
    worst_rows = []
    if paired:
        paired.sort(key=lambda p: (p[1].get("bleu4", 0.0) - p[0].get("bleu4", 0.0), str(p[1].get("id"))))
        wtable = Table(title=f"largest BLEU-4 drops from A to B (of {len(paired)} shared samples)", show_lines=True)
        for col in ("id", "A prediction", "B prediction", "reference", "Δ"):
            wtable.add_column(col, overflow="fold")
        for x, y in paired[:worst_k]:
            d = y.get("bleu4", 0.0) - x.get("bleu4", 0.0)
            worst_rows.append({"id": y.get("id"), "delta_bleu4": d})
            wtable.add_row(str(y.get("id")), x.get("prediction", ""), y.get("prediction", ""),
                           (y.get("references") or [""])[0], f"{d:+.2f}")
        console.print(wtable)
    else:
        console.print("[yellow]no sample ids shared by A and B: worst-example pairing skipped[/]")
    return {"metrics": {k: (ma.get(k), mb.get(k)) for k in keys},
            "intents": {i: (ga.get(i), gb.get(i)) for i in intents}, "worst": worst_rows}
