"""``EVAL/report.html``: one self-contained page (inline CSS and SVG, no script, no CDN) readable offline."""

from __future__ import annotations

import html
import math
from pathlib import Path
from typing import Any, Sequence

SECTIONS = {
    "Similarity (LLaMA-Factory definitions)": ("bleu4", "rouge1", "rouge2", "rougeL"),
    "Similarity (corpus, multi-reference)": ("sacrebleu", "chrf"),
    "Against people": ("human_n_turns", "human_bleu4", "model_loo_bleu4", "human_pct_bleu4", "human_sacrebleu",
                       "model_loo_sacrebleu", "human_pct_sacrebleu", "human_chrf", "model_loo_chrf", "human_pct_chrf",
                       "human_bar_met"),
    "Business": ("key_fact_accuracy", "key_fact_error_rate", "key_fact_samples", "intent_accuracy", "intent_source",
                 "resolution_rate", "handoff_rate", "reference_handoff_rate", "latency_mean_ms", "latency_p50_ms",
                 "latency_p95_ms", "compliance_violation_rate", "compliance_hits", "pii_echo_rate"),
    "Experience": ("perplexity", "distinct_1", "distinct_2", "repeat_4gram_rate", "len_mean", "len_p50", "len_p95",
                   "ref_len_mean", "len_ratio", "empty_rate", "judge_satisfaction", "judge_n"),
}


SYSTEM_KEYS = ("bleu4_single_ref", "rouge1_single_ref", "rouge2_single_ref", "rougeL_single_ref", "bleu4_multi_ref",
               "rougeL_multi_ref", "bleu4", "rougeL", "retrieval_bleu4", "retrieval_rougeL", "vs_retrieval_bleu4",
               "vs_retrieval_rougeL", "consensus_bleu4", "consensus_rougeL", "vs_consensus_bleu4",
               "vs_consensus_rougeL", "stock_bleu4", "stock_rougeL", "retrieval_matched_rate", "retrieval_data",
               "invented_fact_rate", "invented_facts_per_reply", "invented_fact_total", "invented_catalogue_rate",
               "handoff_rate", "handoff_text_rate", "replacement_rate", "verification_failure_rate", "fallback_rate",
               "router", "kg", "run")


def _counts_table(title: str, counts: dict, total: int | None = None) -> str:
    """A two- or three-column table of ``{label: count}`` (share of ``total`` when given)."""
    e = html.escape
    if not counts:
        return f"<h3>{e(title)}</h3><p>none</p>"
    head = "<tr><th>reason</th><th>count</th>" + ("<th>share</th>" if total else "") + "</tr>"
    body = "".join(f"<tr><td>{e(str(k))}</td><td>{e(fmt(v))}</td>"
                   + (f"<td>{100 * v / total:.1f}%</td>" if total else "") + "</tr>"
                   for k, v in sorted(counts.items(), key=lambda kv: (-kv[1], str(kv[0]))))
    return f"<h3>{e(title)}</h3><table>{head}{body}</table>"


def system_section(metrics: dict, rows: Sequence[dict], examples: int = 10) -> str:
    """The system eval's part of the page (``kefu eval system``): path mix, replacements and verification failures,
    invented facts with examples."""
    e = html.escape
    n = int(metrics.get("n_samples") or len(rows) or 0)
    out = ["<h2>System (through the serving pipeline)</h2><table>"]
    out.extend(f"<tr><th>{e(k)}</th><td>{e(fmt(metrics[k]))}</td></tr>" for k in SYSTEM_KEYS if k in metrics)
    out.append("</table>")
    mix = metrics.get("path_mix") or {}
    if mix:
        out.append(bar_chart(list(mix), [100 * v for v in mix.values()], "Path mix (share of replies)", unit="%"))
    out.append(_counts_table("Replacements by reason (model replies replaced after verification)",
                             metrics.get("replacements") or {}, n))
    out.append(_counts_table("Verification failures by reason (per attempt)",
                             metrics.get("verification_failures") or {}))
    out.append(_counts_table("Invented facts by kind (claims the turn's shop facts do not back)",
                             metrics.get("invented_fact_kinds") or {}))
    flagged = [r for r in rows if r.get("invented") or r.get("invented_catalogue")][:examples]
    if flagged:
        out.append("<h3>Replies with invented facts</h3><table><tr><th>id</th><th>path</th><th>question</th>"
                   "<th>reply</th><th>unbacked</th></tr>")
        for r in flagged:
            items = list(r.get("invented") or []) + list(r.get("invented_catalogue") or [])
            out.append(f"<tr><td>{e(str(r.get('id')))}</td><td>{e(str(r.get('path')))}</td>"
                       f"<td>{e(str(r.get('question') or ''))}</td><td>{e(str(r.get('prediction', '')))}</td>"
                       f"<td>{e('; '.join(items))}</td></tr>")
        out.append("</table>")
    return "\n".join(out)


def group_by_intent(rows: Sequence[dict]) -> dict[str, dict[str, float]]:
    """Per-intent sample count and means of bleu4, rougeL, resolution and fact accuracy (``-`` = no intent)."""
    groups: dict[str, list[dict]] = {}
    for row in rows:
        groups.setdefault(str(row.get("intent") or "-"), []).append(row)
    out = {}
    for intent, items in sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0])):
        facts = [r["fact_accuracy"] for r in items if r.get("fact_accuracy") is not None]
        out[intent] = {"n": len(items), "bleu4": sum(r.get("bleu4", 0.0) for r in items) / len(items),
                       "rougeL": sum(r.get("rougeL", 0.0) for r in items) / len(items),
                       "resolution": sum(bool(r.get("resolved")) for r in items) / len(items),
                       "fact_accuracy": sum(facts) / len(facts) if facts else None}
    return out


def fmt(value: Any) -> str:
    """A metric value for display."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if math.isnan(value):
            return "—"
        return f"{value:.4f}" if abs(value) < 1 else f"{value:.2f}"
    return str(value)


def bar_chart(labels: Sequence[str], values: Sequence[float], title: str, width: int = 640, unit: str = "") -> str:
    """Horizontal bar chart as inline SVG."""
    row_h, left, pad = 22, 170, 10
    height = pad * 2 + 24 + row_h * max(len(labels), 1)
    top = max([v for v in values if v is not None] + [1e-9])
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
             f'aria-label="{html.escape(title)}">',
             f'<text x="{pad}" y="{pad + 12}" font-size="14" font-weight="bold">{html.escape(title)}</text>']
    span = width - left - 80
    for i, (label, value) in enumerate(zip(labels, values)):
        y = pad + 24 + i * row_h
        v = value or 0.0
        w = max(0.0, span * v / top)
        parts.append(f'<text x="{left - 6}" y="{y + 14}" font-size="12" text-anchor="end">{html.escape(label)}</text>')
        parts.append(f'<rect x="{left}" y="{y + 3}" width="{w:.1f}" height="{row_h - 6}" fill="#4a7bd0"/>')
        parts.append(f'<text x="{left + w + 4:.1f}" y="{y + 14}" font-size="11">{fmt(value)}{unit}</text>')
    parts.append("</svg>")
    return "".join(parts)


def histogram(values: Sequence[float], title: str, bins: int = 20, width: int = 640, height: int = 220) -> str:
    """Vertical-bar histogram as inline SVG (empty chart with a note when there are no values)."""
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
             f'aria-label="{html.escape(title)}">',
             f'<text x="10" y="18" font-size="14" font-weight="bold">{html.escape(title)}</text>']
    if not values:
        parts.append('<text x="10" y="50" font-size="12">no latency recorded</text></svg>')
        return "".join(parts)
    lo, hi = min(values), max(values)
    step = (hi - lo) / bins or 1.0
    counts = [0] * bins
    for v in values:
        counts[min(int((v - lo) / step), bins - 1)] += 1
    plot_w, plot_h, x0, y0 = width - 60, height - 70, 40, height - 40
    bar_w = plot_w / bins
    peak = max(counts)
    for i, c in enumerate(counts):
        h = plot_h * c / peak
        parts.append(f'<rect x="{x0 + i * bar_w:.1f}" y="{y0 - h:.1f}" width="{bar_w - 1:.1f}" height="{h:.1f}" '
                     f'fill="#d0804a"><title>{lo + i * step:.0f}–{lo + (i + 1) * step:.0f} ms: {c}</title></rect>')
    parts.append(f'<line x1="{x0}" y1="{y0}" x2="{x0 + plot_w}" y2="{y0}" stroke="#333"/>')
    parts.append(f'<text x="{x0}" y="{y0 + 16}" font-size="11">{lo:.0f} ms</text>')
    parts.append(f'<text x="{x0 + plot_w}" y="{y0 + 16}" font-size="11" text-anchor="end">{hi:.0f} ms</text>')
    parts.append(f'<text x="{x0 - 4}" y="{y0 - plot_h + 10}" font-size="11" text-anchor="end">{peak}</text>')
    parts.append("</svg>")
    return "".join(parts)


def worst(rows: Sequence[dict], k: int = 10, key: str = "bleu4") -> list[dict]:
    """The ``k`` samples with the lowest ``key`` score."""
    return sorted(rows, key=lambda r: (r.get(key) or 0.0, str(r.get("id"))))[:k]


def render_report(metrics: dict, rows: Sequence[dict], title: str = "kefu evaluation", worst_k: int = 10) -> str:
    """The whole HTML page."""
    e = html.escape
    out = [f"<!doctype html><html lang='zh'><head><meta charset='utf-8'><title>{e(title)}</title><style>"
           "body{font-family:system-ui,'PingFang SC','Microsoft YaHei',sans-serif;margin:24px;max-width:1000px}"
           "table{border-collapse:collapse;margin:8px 0 20px}td,th{border:1px solid #ccc;padding:4px 8px;"
           "font-size:13px;vertical-align:top}th{background:#f3f3f3;text-align:left}.warn{color:#b00}"
           "</style></head><body>", f"<h1>{e(title)}</h1>",
           f"<p>{e(str(metrics.get('n_samples')))} samples · source {e(str(metrics.get('source', 'predictions')))}"
           f" · model {e(str(metrics.get('model', '—')))} · {e(str(metrics.get('evaluated_at', '')))}</p>"]
    if metrics.get("human_n_turns"):
        pct = [metrics.get(f"human_pct_{k}") for k in ("bleu4", "sacrebleu", "chrf")]
        cls = "" if metrics.get("human_bar_met") else " class='warn'"
        out.append(f"<p{cls}>Model vs human agreement: "
                   + ", ".join(f"{k} {fmt(v)}%" for k, v in zip(("BLEU-4", "sacreBLEU", "chrF"), pct))
                   + f" (bar {fmt(100 * metrics.get('human_bar', 0.85))}%: "
                   + ("met" if metrics.get("human_bar_met") else "NOT met") + ")</p>")
    for section, keys in SECTIONS.items():
        present = [k for k in keys if k in metrics]
        if not present:
            continue
        out.append(f"<h2>{e(section)}</h2><table>")
        out.extend(f"<tr><th>{e(k)}</th><td>{e(fmt(metrics[k]))}</td></tr>" for k in present)
        out.append("</table>")
    if metrics.get("source") == "system" or "path_mix" in metrics:
        out.append(system_section(metrics, rows, worst_k))
    decoding = {k: v for k, v in metrics.items() if k.startswith("decoding_")}
    if decoding:
        out.append("<h2>Decoding</h2><table>")
        out.extend(f"<tr><th>{e(k)}</th><td>{e(fmt(v))}</td></tr>" for k, v in decoding.items())
        out.append("</table>")
    groups = group_by_intent(rows)
    out.append("<h2>Per intent</h2>")
    labels = [f"{i} ({g['n']})" for i, g in groups.items()]
    out.append(bar_chart(labels, [g["bleu4"] for g in groups.values()], "BLEU-4 by intent"))
    out.append(bar_chart(labels, [100 * g["resolution"] for g in groups.values()], "Resolution proxy by intent", unit="%"))
    latencies = [float(r["latency_ms"]) for r in rows if isinstance(r.get("latency_ms"), (int, float))]
    out.append("<h2>Latency</h2>")
    out.append(histogram(latencies, "Per-sample latency (ms)"))
    out.append("<h2>Worst examples (lowest BLEU-4)</h2><table><tr><th>id</th><th>intent</th><th>prediction</th>"
               "<th>reference</th><th>BLEU-4</th></tr>")
    for row in worst(rows, worst_k):
        refs = row.get("references") or [""]
        out.append(f"<tr><td>{e(str(row.get('id')))}</td><td>{e(str(row.get('intent') or '—'))}</td>"
                   f"<td>{e(row.get('prediction', ''))}</td><td>{e(refs[0])}</td><td>{fmt(row.get('bleu4'))}</td></tr>")
    out.append("</table></body></html>")
    return "\n".join(out)


def write_report(out: Path, metrics: dict, rows: Sequence[dict], worst_k: int = 10) -> Path:
    """Write ``out/report.html``; returns its path."""
    path = Path(out) / "report.html"
    path.write_text(render_report(metrics, rows, worst_k=worst_k), encoding="utf-8")
    return path
