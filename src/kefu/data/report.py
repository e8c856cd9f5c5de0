"""The prepare report: ``report.json`` (machine-readable, reconciled counts) and ``report.md`` (with text charts).

Both are deterministic (no timestamps or timings), so two runs with the same seed give byte-identical files.
"""

from __future__ import annotations

from typing import Any

from kefu.data.taxonomy import ENTITY_TYPES, INTENTS

BAR_WIDTH = 30


def build_report(counts, config, *, files: list[str], skipped: list[dict[str, str]],
                 outputs: dict[str, str]) -> dict[str, Any]:
    """Assemble the report from the run's counters; ``reconciles`` checks the accounting identity, in total and for
    every file (``by_file``)."""
    filtered = dict(sorted(counts.filtered.items()))
    accounted = counts.kept + counts.rejected + sum(filtered.values()) + counts.duplicates
    by_file = {name: {k: c[k] for k in ("records_in", "kept", "rejected", "filtered", "duplicates")}
               for name, c in sorted(counts.by_file.items())}
    files_reconcile = all(f["records_in"] == f["kept"] + f["rejected"] + f["filtered"] + f["duplicates"]
                          for f in by_file.values())
    totals_match = all(sum(f[k] for f in by_file.values()) == v for k, v in (
        ("records_in", counts.records_in), ("kept", counts.kept), ("rejected", counts.rejected),
        ("filtered", sum(filtered.values())), ("duplicates", counts.duplicates)))
    return {
        "records_in": counts.records_in,
        "kept": counts.kept,
        "rejected": counts.rejected,
        "filtered": filtered,
        "duplicates": counts.duplicates,
        "duplicates_by_kind": {"exact": counts.dup_kinds.get("exact", 0), "near": counts.dup_kinds.get("near", 0)},
        "reconciles": accounted == counts.records_in and files_reconcile and totals_match,
        "lost": {"rejected": counts.rejected, "filtered": sum(filtered.values()),
                 "where": "rejects.jsonl: one line per lost record (file, line, step read|filter, reason, raw)"},
        "generated": {"total": sum(counts.generated.values()), "by_kind": dict(sorted(counts.generated.items()))},
        "tiers": {t: counts.tiers.get(t, 0) for t in ("1", "2", "3")},
        "splits": {s: counts.splits.get(s, 0) for s in ("train", "val", "test")},
        "turns": {"total": counts.turns, "per_dialogue": round(counts.turns / counts.kept, 2) if counts.kept else 0},
        "intents": dict(sorted(counts.intents.items(), key=lambda kv: (-kv[1], kv[0]))),
        "entities": {t: counts.entities.get(t, 0) for t in ENTITY_TYPES},
        "pii": dict(sorted(counts.pii.items(), key=lambda kv: (-kv[1], kv[0]))),
        "rejects_by_file": dict(sorted(counts.rejects_by_file.items())),
        "by_file": by_file,
        "inputs": files,
        "bad_files": list(counts.bad_files),
        "skipped_files": skipped,
        "outputs": outputs,
        "config": config.model_dump(mode="json"),
    }


def bar_chart(data: dict[str, int], labels: dict[str, str] | None = None, width: int = BAR_WIDTH) -> str:
    """A fenced text bar chart (renders in any Markdown viewer)."""
    if not data:
        return "_(none)_\n"
    top = max(data.values()) or 1
    names = {k: (f"{k} {labels[k]}" if labels and k in labels else k) for k in data}
    pad = max(_width(n) for n in names.values())
    total = sum(data.values()) or 1
    lines = []
    for key, value in data.items():
        bar = "█" * max(1 if value else 0, round(width * value / top))
        name = names[key]
        lines.append(f"{name}{' ' * (pad - _width(name))}  {bar} {value} ({100 * value / total:.1f}%)")
    return "```\n" + "\n".join(lines) + "\n```\n"


def _width(text: str) -> int:
    """Display width: CJK characters take two columns."""
    return sum(2 if ord(ch) > 0x2E80 else 1 for ch in text)


def render_markdown(report: dict[str, Any]) -> str:
    r = report
    filtered_total = sum(r["filtered"].values())
    out = [
        "# kefu prepare report\n",
        "| | count |", "|---|---:|",
        f"| records in | {r['records_in']} |",
        f"| kept | {r['kept']} |",
        f"| rejected: could not be read (one line each in rejects.jsonl) | {r['rejected']} |",
        f"| filtered: dropped by a quality filter (one line each in rejects.jsonl) | {filtered_total} |",
        f"| duplicates, not lost: the first copy is kept (exact / near) | {r['duplicates']} "
        f"({r['duplicates_by_kind']['exact']} / {r['duplicates_by_kind']['near']}) |",
        f"| bad files: not read at all (report.json bad_files) | {len(r['bad_files'])} |",
        f"| generated tier-3 samples (train only) | {r['generated']['total']} |",
        f"| turns per kept dialogue | {r['turns']['per_dialogue']} |",
        "",
        f"Accounting: records in = kept + rejected + filtered + duplicates: "
        f"{r['records_in']} = {r['kept']} + {r['rejected']} + {filtered_total} + {r['duplicates']} "
        f"({'reconciles' if r['reconciles'] else 'DOES NOT RECONCILE'}).\n",
        "## Where the records went\n",
        bar_chart({"kept": r["kept"], "rejected": r["rejected"], **{f"filtered: {k}": v for k, v in
                                                                    r["filtered"].items()},
                   "duplicates": r["duplicates"]}),
        "## Splits (dialogues written)\n",
        bar_chart(r["splits"]),
        "## Tiers\n",
        "1 = base dialogue, 2 = with business annotations, 3 = simulated/adversarial (train only).\n",
        bar_chart({f"tier {k}": v for k, v in r["tiers"].items()}),
    ]
    if r["generated"]["by_kind"]:
        out += ["## Generated samples by kind\n", bar_chart(r["generated"]["by_kind"])]
    out += ["## Intents (customer turns of kept dialogues)\n",
            bar_chart(r["intents"], {k: v[0] for k, v in INTENTS.items()}),
            "## Entities\n", bar_chart({k: v for k, v in r["entities"].items() if v}, ENTITY_TYPES),
            "## PII masked\n", bar_chart(r["pii"])]
    if r["by_file"]:
        out += ["## By file\n", "records in = kept + rejected + filtered + duplicates, for each file.\n",
                "| file | records in | kept | rejected | filtered | duplicates |", "|---|---:|---:|---:|---:|---:|",
                *[f"| `{k}` | {v['records_in']} | {v['kept']} | {v['rejected']} | {v['filtered']} | {v['duplicates']} |"
                  for k, v in r["by_file"].items()], ""]
    if r["bad_files"]:
        out += ["## Bad files (could not be read at all; skipped with --skip-bad-files)\n", "| file | why |",
                "|---|---|", *[f"| `{b['path']}` | {b['reason']} |" for b in r["bad_files"]], ""]
    if r["skipped_files"]:
        out += ["## Files skipped (no chat logs found)\n", "| file | why |", "|---|---|",
                *[f"| `{s['path']}` | {s['reason']} |" for s in r["skipped_files"]], ""]
    out += ["## Inputs\n", *[f"- `{p}`" for p in r["inputs"]], ""]
    return "\n".join(out) + "\n"
