"""Training data: read the prepare stage's ``train.jsonl``, tokenise with the shared template, pack into rows.

With a knowledge graph (``train.kg_url``, ``kefu train --kg``) each agent turn is its own example, rendered as
serving renders it (``kefu.train.grounded``: system prompt, the turn's facts, the last messages; the reply's facts as
slots; loss on that reply only). Plain dialogues and grounded examples go through the same tokenisation: a sequence
is messages plus which assistant message is supervised (all of them, the last, or one by index).

Packing puts several dialogues in one row of at most ``max_len`` tokens with ``position_ids`` restarting at 0 for
each dialogue. transformers (5.x) turns restarting position ids into a block-diagonal causal mask when no 2D
attention mask is given (SDPA/eager build it from the positions; flash-attention uses them as varlen boundaries),
so attention never crosses dialogues and no token is spent on padding.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from kefu.artifacts.dialogues import prepared_file, read_dialogues
from kefu.kg.replies import ReplyIndex
from kefu.train.grounded import GroundingStats, grounded_examples, open_kg
from kefu.train.template import IGNORE_INDEX, encode_dialogue
from kefu.types import KefuError

if TYPE_CHECKING:
    import torch

    from kefu.train.config import TrainConfig


@dataclass
class Example:
    """One tokenised training sequence (a dialogue, or a part of a split one)."""

    input_ids: list[int]
    labels: list[int]
    source: str  # "file:line"

    @property
    def supervised(self) -> int:
        return sum(1 for label in self.labels if label != IGNORE_INDEX)


@dataclass
class DataStats:
    dialogues: int = 0
    examples: int = 0
    split: int = 0  # dialogues split at customer turns because they were over max_len
    truncated: int = 0  # sequences cut at max_len
    skipped_no_agent: int = 0
    tokens: int = 0
    supervised_tokens: int = 0
    sha256: str = ""
    files: list[str] = field(default_factory=list)
    grounding: dict[str, Any] | None = None  # with a KG: what grounding did, and the plain rendering's counts


def find_data(data: str | Path) -> tuple[Path, Path | None]:
    """``(train.jsonl, val.jsonl or None)`` from a folder (the prepare stage's output) or a file."""
    path = Path(data)
    if path.is_dir():
        val = path / "val.jsonl"
        return prepared_file(path), val if val.is_file() else None
    if not path.is_file():
        raise KefuError(f"{path}: training data not found")
    val = path.with_name("val.jsonl")
    return path, val if val.is_file() and val != path else None


def check_data(data: str | Path) -> tuple[Path, Path | None]:
    """Fast pass before any model is loaded: files exist, every line parses, some dialogue has an agent turn."""
    train_file, val_file = find_data(data)
    dialogues = with_agent = 0
    for prepared in read_dialogues(train_file):
        dialogues += 1
        with_agent += any(t.role == "assistant" and t.content.strip() for t in prepared.dialogue.messages)
    if dialogues == 0:
        raise KefuError(f"{train_file}: no dialogues (the file is empty)")
    if with_agent == 0:
        raise KefuError(f"{train_file}: none of its {dialogues} dialogues has an agent (assistant) turn to learn from")
    if val_file is not None:
        for _ in read_dialogues(val_file):
            pass
    return train_file, val_file


def with_system(record: dict, config: "TrainConfig") -> list[dict]:
    """The dialogue's messages with the configured system prompt (and its shop facts) when it has none."""
    messages = [dict(role=m["role"], content=m["content"]) for m in record["messages"]]
    if any(m["role"] == "system" for m in messages):
        return messages
    parts = [config.system_prompt] if config.system_prompt else []
    facts = (record.get("meta") or {}).get("facts") if config.facts_in_system else None
    if facts:
        lines = [f if isinstance(f, str) else json.dumps(f, ensure_ascii=False, sort_keys=True) for f in facts]
        parts.append("店铺信息：\n" + "\n".join(lines))
    if parts:
        messages.insert(0, {"role": "system", "content": "\n\n".join(parts)})
    return messages


def _split_at_customer_turns(tokenizer, messages: list[dict], config: "TrainConfig") -> list[list[dict]]:
    """Greedy windows of whole exchanges (each starting at a customer turn, keeping the system prompt) that fit."""
    system = [m for m in messages if m["role"] == "system"]
    turns = [m for m in messages if m["role"] != "system"]
    exchanges: list[list[dict]] = []
    for message in turns:
        if message["role"] == "user" and exchanges and any(m["role"] == "assistant" for m in exchanges[-1]):
            exchanges.append([message])
        elif exchanges:
            exchanges[-1].append(message)
        else:
            exchanges.append([message])
    windows: list[list[dict]] = []
    current: list[dict] = []
    for exchange in exchanges:
        candidate = current + exchange
        ids, _ = encode_dialogue(tokenizer, system + candidate, train_on=config.train_on)
        if current and len(ids) > config.max_len:
            windows.append(system + current)
            current = list(exchange)
        else:
            current = candidate
    if current:
        windows.append(system + current)
    return windows


def _sequences(path: Path, config: "TrainConfig", stats: DataStats, kg: Any = None,
               grounding: GroundingStats | None = None,
               replies: ReplyIndex | None = None) -> Iterator[tuple[list[dict], int | None, str]]:
    """``(messages, supervised assistant index or None for train_on's choice, source)`` for each training sequence
    of ``path``: a dialogue (plain), or each agent turn rendered with its facts (``kg`` given) and
    ``config.exemplars`` of the shop's other past ``replies``."""
    for prepared in read_dialogues(path):
        stats.dialogues += 1
        if kg is not None:
            examples = grounded_examples(kg, prepared.dialogue, shop=config.shop_name, train_on=config.train_on,
                                         source=prepared.where, stats=grounding, replies=replies,
                                         exemplars=config.exemplars)
            if not examples:
                stats.skipped_no_agent += 1
            for example in examples:
                yield example.messages, example.supervise, example.source
            continue
        messages = with_system(prepared.dialogue.to_dict(), config)
        if not any(m["role"] == "assistant" and m["content"].strip() for m in messages):
            stats.skipped_no_agent += 1
            continue
        yield messages, None, prepared.where


def _fit(tokenizer, messages: list[dict], supervise: int, config: "TrainConfig") -> tuple[list[int], list[int]]:
    """A grounded example over ``max_len``: its oldest history messages go first (system prompt and reply stay)."""
    ids, labels = encode_dialogue(tokenizer, messages, supervise=supervise)
    while len(ids) > config.max_len and supervise > 2:
        messages = messages[:1] + messages[2:]
        supervise -= 1
        ids, labels = encode_dialogue(tokenizer, messages, supervise=supervise)
    return ids, labels


def encode_file(path: Path, tokenizer, config: "TrainConfig", stats: DataStats | None = None, *, kg: Any = None,
                grounding: GroundingStats | None = None, replies: ReplyIndex | None = None) -> list[Example]:
    """Tokenise every dialogue of ``path`` (every agent turn, grounded in ``kg``, when given); over-long ones are
    split or truncated and counted in ``stats``."""
    stats = stats if stats is not None else DataStats()
    examples: list[Example] = []
    for messages, supervise, source in _sequences(path, config, stats, kg, grounding, replies):
        if supervise is not None:
            pieces = [_fit(tokenizer, messages, supervise, config)]
        else:
            ids, labels = encode_dialogue(tokenizer, messages, train_on=config.train_on)
            pieces = [(ids, labels)]
            if len(ids) > config.max_len and config.overlong == "split" and config.train_on == "all_assistant":
                windows = _split_at_customer_turns(tokenizer, messages, config)
                if len(windows) > 1:
                    stats.split += 1
                pieces = [encode_dialogue(tokenizer, w, train_on=config.train_on) for w in windows]
        for piece_ids, piece_labels in pieces:
            if len(piece_ids) > config.max_len:
                stats.truncated += 1
                piece_ids, piece_labels = piece_ids[:config.max_len], piece_labels[:config.max_len]
            example = Example(piece_ids, piece_labels, source)
            if example.supervised == 0:
                stats.skipped_no_agent += 1
                continue
            examples.append(example)
            stats.examples += 1
            stats.tokens += len(piece_ids)
            stats.supervised_tokens += example.supervised
    return examples


def grounding_summary(stats: DataStats) -> str:
    """One paragraph: what grounding produced against the plain rendering, and how many stated facts the KG backs."""
    g = stats.grounding or {}
    plain, facts = g.get("plain") or {}, g.get("facts") or {}
    share = facts.get("kg_backed_share")
    return (f"grounded in {g.get('kg')}: {stats.examples:,} examples (one per agent turn), {stats.tokens:,} tokens "
            f"({stats.supervised_tokens:,} supervised) — plain: {plain.get('examples', 0):,} examples, "
            f"{plain.get('tokens', 0):,} tokens ({plain.get('supervised_tokens', 0):,} supervised); "
            f"{facts.get('turns_with_facts', 0):,} of {facts.get('turns', 0):,} agent turns have facts; of the "
            f"facts agent replies state, {facts.get('slots', 0):,} became slots, {facts.get('backed_text', 0):,} "
            f"the facts back as text, {facts.get('unbacked', 0):,} the KG does not back (kept as text)"
            + (f" — {share:.0%} KG-backed" if share is not None else ""))


def load_examples(data: str | Path, tokenizer, config: "TrainConfig") -> tuple[list[Example], list[Example], DataStats]:
    """Train and validation examples plus statistics; KefuError before any training when nothing is usable.

    With ``config.kg_url`` the examples are grounded (``kefu.train.grounded``); ``stats.grounding`` then holds what
    grounding did and the plain rendering's counts, and a summary goes to stderr before training starts."""
    train_file, val_file = find_data(data)
    stats = DataStats(files=[str(train_file)])
    digest = hashlib.sha256(train_file.read_bytes())
    if config.kg_url:
        # exemplars come from the training split (as serving's come from the run's replies.npz of it)
        replies = ReplyIndex.from_data(train_file) if config.exemplars else None
        with open_kg(config.kg_url) as kg:
            digest.update(b"\0kg:" + kg.version.encode() + f"\0exemplars:{config.exemplars}".encode())
            grounding = GroundingStats()
            train = encode_file(train_file, tokenizer, config, stats, kg=kg, grounding=grounding, replies=replies)
            val = (encode_file(val_file, tokenizer, config, DataStats(), kg=kg, replies=replies)
                   if val_file is not None else [])
        plain = DataStats()
        encode_file(train_file, tokenizer, config, plain)
        stats.grounding = {"kg": str(config.kg_url), "facts": grounding.to_dict(),
                           "plain": {"examples": plain.examples, "tokens": plain.tokens,
                                     "supervised_tokens": plain.supervised_tokens}}
        if os.environ.get("RANK", "0") == "0":
            print(grounding_summary(stats), file=sys.stderr, flush=True)
    else:
        train = encode_file(train_file, tokenizer, config, stats)
        val = []
        if val_file is not None and stats.dialogues and train:
            val = encode_file(val_file, tokenizer, config, DataStats())
    stats.sha256 = digest.hexdigest()
    if stats.dialogues == 0:
        raise KefuError(f"{train_file}: no dialogues (the file is empty)")
    if not train:
        raise KefuError(f"{train_file}: none of its {stats.dialogues} dialogues has an agent (assistant) turn to "
                        "learn from")
    if val_file is not None:
        stats.files.append(str(val_file))
    return train, val, stats


def step_indices(n_examples: int, batch_size: int, step: int, seed: int) -> list[int]:
    """The example indices of optimizer step ``step``: consecutive slices of per-epoch shuffles (resumable)."""
    start, end = step * batch_size, (step + 1) * batch_size
    out: list[int] = []
    epoch = start // n_examples
    while len(out) < end - start:
        order = list(range(n_examples))
        random.Random(seed * 1_000_003 + epoch).shuffle(order)
        lo = max(start - epoch * n_examples, 0)
        hi = min(end - epoch * n_examples, n_examples)
        out.extend(order[lo:hi])
        epoch += 1
    return out


def pack(examples: list[Example], max_len: int) -> list[list[Example]]:
    """First-fit-decreasing bins of total length <= ``max_len`` (every example already fits)."""
    bins: list[list[Example]] = []
    room: list[int] = []
    for example in sorted(examples, key=lambda e: len(e.input_ids), reverse=True):
        size = len(example.input_ids)
        for index, free in enumerate(room):
            if size <= free:
                bins[index].append(example)
                room[index] -= size
                break
        else:
            bins.append([example])
            room.append(max_len - size)
    return bins


def collate(rows: list[list[Example]], pad_id: int, width: int | None = None) -> dict[str, "torch.Tensor"]:
    """Tensors for packed rows: ``input_ids``, ``labels``, ``position_ids`` (restarting per dialogue).

    Rows shorter than the longest (or than ``width``, for fixed shapes) get a padding tail whose positions restart
    at 0 too (a separate "sequence" of its own, labels -100), so no real token ever attends to padding.
    """
    import torch

    width = max([width or 0] + [sum(len(e.input_ids) for e in row) for row in rows])
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
    positions = torch.zeros((len(rows), width), dtype=torch.long)
    for r, row in enumerate(rows):
        at = 0
        for example in row:
            n = len(example.input_ids)
            ids[r, at:at + n] = torch.tensor(example.input_ids)
            labels[r, at:at + n] = torch.tensor(example.labels)
            positions[r, at:at + n] = torch.arange(n)
            at += n
        if at < width:
            positions[r, at:] = torch.arange(width - at)
    return {"input_ids": ids, "labels": labels, "position_ids": positions}
