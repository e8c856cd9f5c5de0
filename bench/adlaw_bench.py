"""Advertising-law filter: recall and false flags on a held-out list.

    .venv/bin/python bench/adlaw_bench.py [--eval tests/safety/data/adlaw_eval.yaml] [--show] [--write-docs]

``positives``: words and phrases from the public 广告法 极限词 lists, each in a realistic shop reply; a positive counts
as caught when ``compliance.check`` flags an advertising-law rule whose span overlaps the listed word. ``negatives``:
innocent replies (the words negated or refused, or in a harmless sense); one counts as a false flag when any
advertising-law rule fires. The eval list was written before, and apart from, ``adlaw_terms.yaml`` (see its header).
Targets (issue 19): recall >= 90%, false flags <= 5%. ``--write-docs`` replaces the ``## Advertising-law filter``
section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))

from kefu.safety.compliance import check  # noqa: E402
from kefu.safety.compliance.lexicon import lexicon  # noqa: E402

EVAL = ROOT / "tests" / "safety" / "data" / "adlaw_eval.yaml"
JDDC = ROOT.parent / "shared" / "data" / "jddc2019" / "chat_0.1per.txt"
AD_CATEGORIES = {"advertising"}
# The same list, measured once with the filter as it was before the lexicon file and the negation rule (commit
# f13ad20's src/kefu/safety/compliance, run on this list): a fixed record, not recomputed.
BEFORE = {"recall": "31/80 (38.8%)", "false_flags": "20/65 (30.8%)"}


def jddc_flags() -> tuple[int, int, list[str]] | None:
    """Agent replies of the real JDDC sample (../shared/data) that any advertising-law rule flags: a false-flag
    proxy on real service text (no agent there makes ad claims on purpose)."""
    if not JDDC.exists():
        return None
    replies = [parts[6] for parts in (line.rstrip("\n").split("\t") for line in JDDC.open(encoding="utf-8"))
               if len(parts) >= 7 and parts[2] == "1"]
    flagged = []
    for text in replies:
        hits = [h for h in check(text) if h.category in AD_CATEGORIES]
        if hits:
            flagged.append(f"{text[max(0, hits[0].start - 10):hits[0].end + 6]} ({hits[0].rule})")
    return len(replies), len(flagged), flagged


def caught(text: str, word: str) -> bool:
    start = text.find(word)
    end = start + len(word)
    return any(h.category in AD_CATEGORIES and h.start < end and start < h.end for h in check(text))


def measure(path: Path) -> dict:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    positives, negatives = data["positives"], data["negatives"]
    for p in positives:
        assert p["word"] in p["text"], p
    missed = [p for p in positives if not caught(p["text"], p["word"])]
    flagged = [(n, [h.rule for h in check(n["text"]) if h.category in AD_CATEGORIES]) for n in negatives]
    flagged = [(n, rules) for n, rules in flagged if rules]
    by_list = Counter(p["list"] for p in positives)
    missed_by_list = Counter(p["list"] for p in missed)
    started = time.perf_counter()
    texts = [p["text"] for p in positives] + [n["text"] for n in negatives]
    for _ in range(20):
        for text in texts:
            check(text)
    per_reply_us = (time.perf_counter() - started) / (20 * len(texts)) * 1e6
    return {"jddc": jddc_flags(), "positives": len(positives), "negatives": len(negatives), "missed": missed, "flagged": flagged,
            "recall": 1 - len(missed) / len(positives), "false_flag_rate": len(flagged) / len(negatives),
            "by_list": by_list, "missed_by_list": missed_by_list, "per_reply_us": per_reply_us}


def markdown(result: dict, path: Path, machine_line: str) -> str:
    lex = lexicon()
    n_terms = sum(len(g.terms) + len(g.patterns) for g in lex.groups)
    lines = [
        "## Advertising-law filter",
        "",
        f"`.venv/bin/python bench/adlaw_bench.py --write-docs` — `kefu.safety.compliance.check` on the held-out list "
        f"`{path.relative_to(ROOT)}`. Machine: {machine_line}.",
        "",
        "| set | replies | result | target |",
        "|---|---|---|---|",
        f"| public-list words in shop replies | {result['positives']} | recall **{result['recall']:.1%}** "
        f"({result['positives'] - len(result['missed'])} caught) | ≥ 90% |",
        f"| innocent replies (negated, refused, harmless senses) | {result['negatives']} | false flags "
        f"**{result['false_flag_rate']:.1%}** ({len(result['flagged'])} flagged) | ≤ 5% |",
        "",
        f"Before this filter (the previous word list, no negation rule) the same list gave recall {BEFORE['recall']} "
        f"and false flags {BEFORE['false_flags']}. Check time: {result['per_reply_us']:.0f} µs per reply (one core).",
        "",
        "Recall by section of the public list: " + ", ".join(
            f"{name} {count - result['missed_by_list'][name]}/{count}" for name, count in result["by_list"].items())
        + ".",
        "",
        "How the lists were built. The lexicon (`src/kefu/safety/compliance/adlaw_terms.yaml`, "
        f"{len(lex.groups)} groups, {n_terms} terms and patterns) was written from the articles of 《广告法》 "
        "(第九条第（二）/（三）项, 第十六、十七、二十四、二十五、二十八条), SAMR guidance and the publicly circulated 淘宝/天猫 and "
        "京东 极限词/违禁词 lists; each group records its article and source. The evaluation list was written first, "
        "before the lexicon and committed separately, by sampling entries of the same public lists and embedding each "
        "in a reply an agent could write; the lexicon was not built from it and was not tuned on its misses. Both "
        "were written by the same author from the same public lists, so this is a held-out test of the wording and "
        "the negation rule, not an independent audit: a list of terms nobody has seen would score lower.",
    ]
    if result["jddc"]:
        total, n, examples = result["jddc"]
        lines += ["", f"Real service text: of {total} agent replies in the JDDC sample (`../shared/data/jddc2019`), "
                      f"{n} ({n / total:.2%}) are flagged: " + "; ".join(examples[:5]) + "."]
    if result["missed"]:
        lines += ["", "Missed: " + "、".join(f"{p['word']}（{p['text']}）" for p in result["missed"]) + "."]
    if result["flagged"]:
        lines += ["", "False flags: " + "、".join(f"{n['text']} → {', '.join(r)}" for n, r in result["flagged"])
                  + ". Left as they are: fixing a word because the held-out list caught it would make the list a "
                  "training set."]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--eval", type=Path, default=EVAL)
    parser.add_argument("--show", action="store_true", help="print every miss and false flag")
    parser.add_argument("--write-docs", action="store_true", help="write the section of docs/benchmarks.md")
    args = parser.parse_args()
    result = measure(args.eval)
    print(f"recall {result['recall']:.1%} ({result['positives'] - len(result['missed'])}/{result['positives']}), "
          f"false flags {result['false_flag_rate']:.1%} ({len(result['flagged'])}/{result['negatives']}), "
          f"{result['per_reply_us']:.0f} us/reply")
    if result["jddc"]:
        total, n, _ = result["jddc"]
        print(f"JDDC agent replies flagged: {n}/{total} ({n / total:.2%})")
    if args.show or result["missed"] or result["flagged"]:
        for p in result["missed"]:
            print(f"  missed  {p['word']:<10} {p['text']}")
        for n, rules in result["flagged"]:
            print(f"  flagged {n['text']}  {rules}")
    if args.write_docs:
        from _report import machine, write_section
        write_section("adlaw", markdown(result, args.eval.resolve(), machine()))
        print("wrote docs/benchmarks.md (Advertising-law filter)")


if __name__ == "__main__":
    main()
