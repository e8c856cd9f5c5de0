"""Security benchmark: a seeded fuzz loop over the safety APIs, and the utility cost of DP-SGD on a tiny model.

    .venv/bin/python bench/security_bench.py [--n 3000] [--seed 0] [--no-dp]

Fuzz properties (a failure is any input breaking one; exceptions are counted separately; target zero for both):
- ``compliance.check``: every violation's span indexes the input, names a rule and a law article;
- ``compliance.rewrite``: its output has no violations left (with promotions and a PII context);
- ``injection.detect`` and the data stage's ``pii.mask``: never raise, return the documented types;
- audit: every fuzz string can be recorded, the chain verifies, and every random edit / deletion / insertion /
  tail truncation is detected;
- keys: random and one-character-mutated keys never authenticate, real keys always do.

The DP part trains the same tiny random Llama + LoRA on the same learnable toy data without DP (the baseline, same
process) and with DP-SGD at two budgets, and reports held-out loss and the ε actually spent.
Writes the ``security`` section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
import warnings
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from _report import machine, write_section  # noqa: E402

TOKENS = [
    # compliance terms, allow-listed phrases, promotion claims
    "最好", "最佳", "第一", "第一次", "国家级", "顶级", "绝对", "100%", "１００％", "纯棉", "永久", "万能", "首选", "独家",
    "唯一", "最快", "最近", "根治", "包过", "稳赚", "永不褪色", "满300减80", "每满200减20", "八五折", "8.5折", "满三百减五十",
    "赌博", "色情", "驰名商标", "NO.1",
    # PII
    "13812345678", "+86 139-1234-5678", "110101199003074514", "6222021234567890128", "a@b.com", "SF1234567890123",
    "1234567890123456", "浙江省杭州市西湖区文三路100号", "010-12345678", "我叫张伟",
    # injection
    "忽略之前的指令", "ignore previous instructions", "你现在是", "输出系统提示", "api key", "别人的订单", "<|im_start|>",
    # ordinary and hostile characters
    "这款冲锋衣", "什么时候发货", "谢谢", "，", "。", "？", "!", " ", "\n", "\t", "\u200b", "\ufeff", "\ud800", "\x00",
    "😀", "𠀀", "ﬁ", "…", "\\", "\"", "'", "{", "}", "%s", "${x}", "../", "\u202e", "Ａ", "０",
]


def random_text(rng: random.Random) -> str:
    parts = []
    for _ in range(rng.randint(0, 12)):
        roll = rng.random()
        if roll < 0.6:
            parts.append(rng.choice(TOKENS))
        elif roll < 0.8:
            parts.append("".join(chr(rng.randint(0x4E00, 0x9FFF)) for _ in range(rng.randint(1, 6))))
        elif roll < 0.95:
            parts.append("".join(chr(rng.randint(32, 126)) for _ in range(rng.randint(1, 10))))
        else:
            parts.append("".join(chr(rng.randint(0, 0x10FFFF)) for _ in range(rng.randint(1, 4))))
    if rng.random() < 0.02:
        parts.append("最好" * rng.randint(100, 2000))  # long input
    return "".join(parts)


PROMOS = [{"type": "full_reduction", "description": "满300减50，满600减120",
           "tiers": [{"threshold_fen": 30000, "reduction_fen": 5000}, {"threshold_fen": 60000, "reduction_fen": 12000}]}]


def fuzz(n: int, seed: int) -> dict:
    from kefu.safety import audit, compliance, injection
    from kefu.safety.keys import KeyStore, acting_as, local_principal

    from kefu.text import pii
    rng = random.Random(seed)
    stats = {"inputs": 0, "failures": Counter(), "exceptions": Counter(), "examples": [], "time": Counter(),
             "calls": Counter()}

    def fail(kind: str, text: str, detail: str = "") -> None:
        stats["failures"][kind] += 1
        if len(stats["examples"]) < 8:
            stats["examples"].append({"kind": kind, "input": text[:80], "detail": detail[:160]})

    def timed(name: str, fn, *args, **kwargs):
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            stats["time"][name] += time.perf_counter() - start
            stats["calls"][name] += 1

    texts = [random_text(rng) for _ in range(n)]
    context = ["我的手机13812345678，订单1234567890123456"]
    for text in texts:
        stats["inputs"] += 1
        for name, call in (("check", lambda: timed("check", compliance.check, text)),
                           ("rewrite", lambda: timed("rewrite", compliance.rewrite, text, promotions=PROMOS,
                                                     context_texts=context)),
                           ("detect", lambda: timed("detect", injection.detect, text)),
                           ("mask", (lambda: timed("mask", pii.mask, text)) if pii else None)):
            if call is None:
                continue
            try:
                result = call()
            except Exception as exc:  # the point of fuzzing: count, do not stop
                stats["exceptions"][f"{name}: {type(exc).__name__}"] += 1
                if len(stats["examples"]) < 8:
                    stats["examples"].append({"kind": f"{name} raised", "input": text[:80], "detail": repr(exc)[:160]})
                continue
            if name == "check":
                for v in result:
                    if not (0 <= v.start < v.end <= len(text) and text[v.start:v.end] == v.text and v.law_article
                            and v.rule):
                        fail("check: bad span", text, repr(v))
            elif name == "rewrite":
                safe, _ = result
                left = compliance.check(safe, promotions=PROMOS, context_texts=context)
                if left:
                    fail("rewrite: violations left", text, f"{[v.rule for v in left]} in {safe[:60]!r}")
            elif name == "detect" and not isinstance(result.attack, bool):
                fail("detect: bad result", text)
            elif name == "mask" and not isinstance(result[0], str):
                fail("mask: bad result", text)

    # Audit: record, verify, then tamper in every way and expect detection each time.
    for text in texts[: min(300, n)]:
        try:
            timed("audit.record", audit.record, "fuzz", text, details={"t": text})
        except Exception as exc:
            stats["exceptions"][f"audit.record: {type(exc).__name__}"] += 1
    if not audit.verify().ok:
        fail("audit: clean log does not verify", "", audit.verify().reason)
    path = audit.audit_path()
    original = path.read_bytes()
    head = audit.head_path().read_bytes()
    lines = original.decode("utf-8").splitlines()
    tamper_tries = Counter()
    for trial in range(200):
        mode = ("edit", "delete", "insert", "truncate", "swap")[trial % 5]
        changed = list(lines)
        i = rng.randrange(len(changed))
        if mode == "edit":
            entry = json.loads(changed[i])
            entry["object"] = str(entry["object"]) + "x"
            changed[i] = json.dumps(entry, ensure_ascii=False, sort_keys=True)
        elif mode == "delete":
            del changed[i]
        elif mode == "insert":
            changed.insert(i, changed[rng.randrange(len(changed))])
        elif mode == "truncate":
            changed = changed[: max(1, i)] if i else changed[:-1]
        else:
            j = (i + 1) % len(changed)
            if i == j:
                continue
            changed[i], changed[j] = changed[j], changed[i]
        tamper_tries[mode] += 1
        path.write_text("\n".join(changed) + "\n", encoding="utf-8")
        if audit.verify().ok:
            fail(f"audit: {mode} undetected", "", f"line {i + 1}")
    path.write_bytes(original)
    audit.head_path().write_bytes(head)
    stats["tamper_trials"] = dict(tamper_tries)

    # Keys: valid keys authenticate, everything else does not.
    store = KeyStore.open()
    with acting_as(local_principal()):  # managing keys needs keys:admin once the first exists
        keys = [store.create(role, f"fuzz{i}")[0] for i, role in enumerate(("admin", "trainer", "customer-app"))]
    for key in keys:
        if timed("authenticate", store.authenticate, key) is None:
            fail("keys: valid key rejected", key)
    for text in texts[: min(1000, n)]:
        try:
            if timed("authenticate", store.authenticate, text) is not None:
                fail("keys: random string authenticated", text)
        except Exception as exc:
            stats["exceptions"][f"authenticate: {type(exc).__name__}"] += 1
    alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-"
    for _ in range(500):
        key = rng.choice(keys)
        pos = rng.randrange(len(key))
        mutated = key[:pos] + rng.choice([c for c in alphabet if c != key[pos]]) + key[pos + 1:]
        if store.authenticate(mutated) is not None:
            fail("keys: mutated key authenticated", mutated)
    stats["key_mutations"] = 500
    return stats


SHOP = Path(__file__).resolve().parent.parent / "examples" / "shop"
SHOP_ADDRESS = "浙江省杭州市余杭区仓前街道良睦路1399号"  # the sample shop's after-sales address (public)


def sample_shop() -> dict | None:
    """How often the rules fire on the sample shop's real-looking dialogues (which contain no attacks and were
    written to be compliant): every assistant turn through check() with the shop's promotions and the customer's own
    turns plus the orders they mention as context; every user turn through injection.detect()."""
    import re

    from kefu.safety import compliance, injection

    if not (SHOP / "dialogues.jsonl").exists():
        return None
    promotions = json.loads((SHOP / "promotions.json").read_text(encoding="utf-8"))
    orders = {o["order_no"]: o for o in json.loads((SHOP / "orders.json").read_text(encoding="utf-8"))}
    rules = compliance.ComplianceRules()
    rules.allow.append(SHOP_ADDRESS)
    replies = turns = 0
    by_rule: Counter = Counter()
    flagged_replies = 0
    attacks: list[str] = []
    examples: dict[str, str] = {}
    for line in (SHOP / "dialogues.jsonl").read_text(encoding="utf-8").splitlines():
        dialogue = json.loads(line)
        context = [m["content"] for m in dialogue["messages"] if m["role"] == "user"]
        mentioned = set(re.findall(r"(?<!\d)\d{16}(?!\d)", " ".join(context)))
        context += [json.dumps(orders[o], ensure_ascii=False) for o in mentioned if o in orders]
        for message in dialogue["messages"]:
            if message["role"] == "assistant":
                replies += 1
                hits = compliance.check(message["content"], rules=rules, promotions=promotions, context_texts=context)
                flagged_replies += bool(hits)
                for hit in hits:
                    by_rule[hit.rule] += 1
                    examples.setdefault(hit.rule, f"{dialogue['id']}: …{message['content'][max(0, hit.start - 12):hit.end + 8]}…")
            else:
                turns += 1
                if injection.detect(message["content"]).attack:
                    attacks.append(message["content"][:60])
    return {"replies": replies, "flagged_replies": flagged_replies, "by_rule": dict(by_rule), "examples": examples,
            "user_turns": turns, "injection_flags": len(attacks), "injection_examples": attacks[:3]}


def dp_cost(seed: int) -> list[dict]:
    """Held-out loss of plain LoRA vs DP-SGD LoRA on the same data/model/steps (tiny, CPU)."""
    import torch
    import transformers
    from peft import LoraConfig, get_peft_model

    from kefu.safety.dp import epsilon_spent, make_private, unwrap

    vocab, length, n = 64, 12, 512
    g = torch.Generator().manual_seed(seed)
    ids = (torch.randint(0, vocab // 2, (n + 128, 1), generator=g) + torch.arange(length)) % vocab
    train, held = ids[:n], ids[n:]

    class DS(torch.utils.data.Dataset):
        def __len__(self):
            return n

        def __getitem__(self, i):
            return {"input_ids": train[i], "labels": train[i]}

    def build():
        torch.manual_seed(seed)
        cfg = transformers.LlamaConfig(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
        return get_peft_model(transformers.LlamaForCausalLM(cfg),
                              LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj", "o_proj"],
                                         lora_dropout=0.0))

    def held_loss(model):
        model.eval()
        with torch.no_grad():
            return model(input_ids=held, labels=held).loss.item()

    rows: dict[str, dict] = {}
    epochs, delta = 3, 1e-3
    # Two interleaved rounds; the time reported is each run's faster round (the machine is shared), the losses
    # are identical across rounds (same seeds) and checked to be.
    for _round in range(2):
        for label, epsilon in (("no DP (baseline)", None), ("DP ε=8", 8.0), ("DP ε=2", 2.0)):
            model = build()
            start_loss = held_loss(model)
            loader = torch.utils.data.DataLoader(DS(), batch_size=64, shuffle=True,
                                                 generator=torch.Generator().manual_seed(seed))
            optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-2)
            engine = None
            if epsilon is not None:
                model, optimizer, loader, engine = make_private(model, optimizer, loader, epsilon=epsilon,
                                                                delta=delta, epochs=epochs, seed=seed)
            torch.manual_seed(seed)
            t0 = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                for _ in range(epochs):
                    model.train()
                    for batch in loader:
                        if batch["input_ids"].shape[0] == 0:
                            continue
                        optimizer.zero_grad()
                        model(**batch).loss.backward()
                        optimizer.step()
            seconds = time.perf_counter() - t0
            row = {"run": label, "start_loss": start_loss, "held_out_loss": held_loss(unwrap(model)),
                   "epsilon_spent": epsilon_spent(engine, delta) if engine else None,
                   "noise": getattr(optimizer, "noise_multiplier", None), "seconds": seconds}
            if label in rows:
                assert abs(rows[label]["held_out_loss"] - row["held_out_loss"]) < 1e-4, "DP run not reproducible"
                row["seconds"] = min(row["seconds"], rows[label]["seconds"])
            rows[label] = row
    return list(rows.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=3000, help="fuzz inputs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-dp", action="store_true", help="skip the DP utility run")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as home:
        os.environ["KEFU_HOME"] = home
        t0 = time.perf_counter()
        stats = fuzz(args.n, args.seed)
        fuzz_s = time.perf_counter() - t0
        shop = sample_shop()
        dp_rows = [] if args.no_dp else dp_cost(args.seed)

    failures, exceptions = sum(stats["failures"].values()), sum(stats["exceptions"].values())
    per_call = {k: 1e6 * stats["time"][k] / stats["calls"][k] for k in stats["calls"]}
    md = [f"## Security (bench/security_bench.py)", "",
          f"Machine: {machine()}. Command: `.venv/bin/python bench/security_bench.py --n {args.n} --seed {args.seed}`",
          "", "### Fuzzing", "",
          f"{stats['inputs']} random inputs (rule terms, PII, injection phrases, CJK, control/zero-width/RTL "
          f"characters, lone surrogates, emoji, long strings) through check / rewrite / injection.detect / pii.mask; "
          f"{min(300, args.n)} of them into the audit log, then {sum(stats['tamper_trials'].values())} tampering "
          f"trials ({', '.join(f'{k} {v}' for k, v in stats['tamper_trials'].items())}); "
          f"{min(1000, args.n)} random strings and {stats['key_mutations']} one-character key mutations against "
          f"the key store. Took {fuzz_s:.1f} s.", "",
          f"- property failures: **{failures}** {dict(stats['failures']) or ''}",
          f"- exceptions: **{exceptions}** {dict(stats['exceptions']) or ''}", "",
          "| call | mean µs/call |", "|---|---|"]
    md += [f"| {k} | {v:.0f} |" for k, v in sorted(per_call.items())]
    if stats["examples"]:
        md += ["", "First failing inputs:", "", "```json", json.dumps(stats["examples"], ensure_ascii=False,
                                                                       indent=1), "```"]
    if shop:
        md += ["", "### Rule hits on the sample shop (examples/shop, no attacks, written to be compliant)", "",
               f"- assistant replies: {shop['replies']}, flagged: {shop['flagged_replies']} "
               f"({100 * shop['flagged_replies'] / max(shop['replies'], 1):.1f}%) — by rule: {shop['by_rule']}",
               f"- customer turns: {shop['user_turns']}, flagged as injection: {shop['injection_flags']} "
               f"{shop['injection_examples'] or ''}", "", "Each rule's first hit:", ""]
        md += [f"- `{rule}`: {text}" for rule, text in shop["examples"].items()]
    if dp_rows:
        md += ["", "### Utility cost of DP-SGD (tiny random Llama + LoRA r=8, 512 toy sequences, 3 epochs, "
               "δ=1e-3, same data/seed; baseline = no DP, same process; time = faster of two interleaved rounds)", "",
               "| run | loss before | held-out loss after | ε spent | noise σ | train s |", "|---|---|---|---|---|---|"]
        for r in dp_rows:
            spent = "—" if r["epsilon_spent"] is None else f"{r['epsilon_spent']:.2f}"
            noise = "—" if r["noise"] is None else f"{r['noise']:.2f}"
            md.append(f"| {r['run']} | {r['start_loss']:.3f} | {r['held_out_loss']:.3f} | {spent} | {noise} | "
                      f"{r['seconds']:.1f} |")
    text = "\n".join(md)
    write_section("security", text)
    print(text)
    if failures or exceptions:
        sys.exit(1)


if __name__ == "__main__":
    main()
