"""``kefu prepare``: chat logs in, clean/annotated/augmented train/val/test JSONL out, with a reconciled report.

Flow: the parent process streams records from the readers (in input order) and sends chunks of dialogues to worker
processes, which clean, mask PII, filter, annotate, fingerprint, split and augment them; results come back in
submission order (a bounded window of chunks in flight, so memory stays flat). The parent keeps the duplicate
index and writes the outputs, so outputs are byte-identical for a seed whatever the number of workers.

Accounting (checked on every run, in total and per file): ``records_in == kept + rejected + sum(filtered) +
duplicates``, where a record is one dialogue as read, or one unusable line/row (a reject). Every record lost —
rejected (could not be read) or filtered (a quality filter dropped it) — has one line in ``rejects.jsonl`` with its
file, line, step, reason and raw text; a duplicate is not lost (its first copy is kept) and is counted per file and
kind. A wholly unreadable input file (empty, binary, wrong encoding, unknown format, not one usable record) is not a
record: the run fails naming every such file before anything is written, or, with ``skip_bad_files``, reads the
others and lists it under ``bad_files`` in the report.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import multiprocessing
import os
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from kefu.artifacts.dialogues import dialogue_line, json_line
from kefu.data import augment as aug
from kefu.data.annotate import Annotator, Catalogue, RuleAnnotator
from kefu.data.config import PrepareConfig
from kefu.data.dedup import Deduplicator, MinHasher, exact_key, shingle_text
from kefu.data.normalize import clean_turns, garbled_ratio, quality_reason
from kefu.data.readers import FileReject, expand_inputs, file_problem, read_logs
from kefu.data.readers.common import raw_text
from kefu.data.readers.dataset_info import dataset_info_files
from kefu.data.report import build_report, render_markdown
from kefu.data.split import assign_split
from kefu.safety import audit, consent
from kefu.safety.audit import sha256_file
from kefu.safety.keys import authorized
from kefu.text.pii import mask_many
from kefu.types import Dialogue, Entity, KefuError, Reject, Turn

OUTPUTS = ("train.jsonl", "val.jsonl", "test.jsonl", "rejects.jsonl")
CHUNK = 256  # dialogues per task sent to a worker
Progress = Callable[[int, int, int], None]  # (bytes just read, total bytes, dialogues processed so far)


# ----------------------------------------------------------------------------------------------------------------
# per-dialogue work (runs in worker processes)


@dataclass(slots=True)
class Record:
    """One dialogue on its way through ``kefu prepare``, from reader to writer.

    The parent fills ``id``/``turns``/``meta`` from the reader; a worker cleans, masks and annotates it and fills
    the results, writing the prepared JSONL ``line`` (and tier-3 ``variants``) and then dropping ``turns``/``meta``,
    which the line now holds, so only results travel back; the parent deduplicates on ``key``/``signature`` and
    writes ``line`` to its ``split``.
    """

    id: str
    turns: list[Turn]
    meta: dict[str, Any]
    filtered: str | None = None  # the quality filter that dropped it (then nothing below is set)
    line: str = ""
    key: bytes = b""  # exact-duplicate digest of the cleaned turns
    signature: bytes | None = None  # MinHash signature as bytes (pickles back cheaper than an ndarray)
    split: str = ""
    tier: int = 0
    intents: list[str] = field(default_factory=list)  # one per user turn
    entity_types: list[str] = field(default_factory=list)
    pii: dict[str, int] = field(default_factory=dict)  # placeholder -> count
    n_turns: int = 0
    variants: list[tuple[str, str]] = field(default_factory=list)  # tier-3 (kind, line), all in train
    source: str = ""  # the file it was read from, and its line there: for rejects.jsonl and the per-file counts
    source_line: int | None = None
    lost: dict[str, Any] | None = None  # its rejects.jsonl line when it is lost (read rejects pass workers untouched)

    @classmethod
    def from_dialogue(cls, dialogue: Dialogue) -> "Record":
        return cls(dialogue.id, dialogue.messages, dialogue.meta, source=str(dialogue.meta.get("source", "")),
                   source_line=dialogue.meta.get("line"))

    @classmethod
    def from_reject(cls, reject: Reject) -> "Record":
        """A record the reader could not use; it travels in input order so rejects.jsonl is the same for any
        number of workers."""
        return cls("", [], {}, source=reject.file, source_line=reject.line,
                   lost={"file": reject.file, "line": reject.line, "step": "read", "reason": reject.reason,
                         "raw": reject.raw})

    def __getstate__(self) -> tuple:
        # turns as (role, content) tuples: a chunk of records pickles several times faster than with Turn objects
        return (self.id, [(t.role, t.content) for t in self.turns], self.meta, self.filtered, self.line, self.key,
                self.signature, self.split, self.tier, self.intents, self.entity_types, self.pii, self.n_turns,
                self.variants, self.source, self.source_line, self.lost)

    def __setstate__(self, state: tuple) -> None:
        (self.id, turns, self.meta, self.filtered, self.line, self.key, self.signature, self.split, self.tier,
         self.intents, self.entity_types, self.pii, self.n_turns, self.variants, self.source, self.source_line,
         self.lost) = state
        self.turns = [Turn(role, content) for role, content in turns]


class _Worker:
    """Everything done to one dialogue after reading; pure, so results do not depend on the worker."""

    def __init__(self, config: PrepareConfig, catalogue: str | None):
        self.cfg = config
        self.catalogue = Catalogue.from_csv(catalogue) if catalogue else None
        self.annotator = load_annotator(config.annotator, self.catalogue) if config.annotate else None
        self.hasher = MinHasher(config.dedup.num_perm, config.dedup.shingle) if config.dedup.near else None
        self._mask_cache: dict[str, tuple[str, dict[str, int]]] = {}

    def process(self, record: Record) -> Record:
        """Clean, mask, filter, fingerprint, split, annotate and augment ``record``; returns it with its results."""
        cfg = self.cfg
        if record.lost is not None:  # a read reject: nothing to do
            return record
        turns = clean_turns(record.turns, cfg.normalize)
        pii: dict[str, int] = {}
        if cfg.mask_pii:
            cache = self._mask_cache
            if len(cache) >= 100_000:
                cache.clear()
            # templated replies repeat: mask each distinct text once, the dialogue's new ones as one batch
            todo = [turn.content for turn in turns if turn.content not in cache]
            if todo:
                cache.update(zip(todo, mask_many(todo)))
            for turn in turns:
                masked, counts = cache[turn.content]
                if counts:
                    turn.content = masked
                    for key, n in counts.items():
                        pii[key] = pii.get(key, 0) + n
        meta, record.turns, record.meta = record.meta, [], {}
        reason = quality_reason(turns, cfg.filters)
        if reason is not None:
            record.filtered = reason
            record.lost = {"file": record.source, "line": record.source_line, "step": "filter", "reason": reason,
                           "detail": filter_detail(reason, turns, cfg.filters),
                           "raw": raw_text(json.dumps([{"role": t.role, "content": t.content} for t in turns],
                                                      ensure_ascii=False))}  # cleaned and masked: no PII here
            return record
        key = exact_key(turns)
        sig = self.hasher.signature(shingle_text(turns)).tobytes() if self.hasher is not None else None
        split = assign_split(key, cfg.seed, cfg.val_ratio, cfg.test_ratio)
        intents, entities = self.annotator.annotate(turns) if self.annotator is not None else ([], [])
        tier = 2 if entities or any(i != "other" for i in intents) else 1
        out_meta = {k: v for k, v in meta.items() if k not in ("source", "line")}
        out_meta.update(source=meta.get("source"), line=meta.get("line"), tier=tier, split=split, intents=intents,
                        entities=[_entity_dict(e) for e in entities], pii_counts=pii)
        record.line = dialogue_line(Dialogue(record.id, turns, out_meta))
        if cfg.augment and split == "train" and cfg.augment_ratio > 0:
            for kind, new_turns in aug.augment(turns, key, cfg.seed, cfg.augment_ratio, list(cfg.augment_kinds),
                                               entities, self.catalogue):
                a_intents, a_entities = self._annotate_variant(turns, intents, entities, new_turns)
                a_meta = {"source": meta.get("source"), "line": meta.get("line"), "tier": 3, "split": "train",
                          "augment": kind, "parent": record.id, "intents": a_intents,
                          "entities": [_entity_dict(e) for e in a_entities], "pii_counts": pii}
                record.variants.append((kind, dialogue_line(Dialogue(f"{record.id}#{kind}", new_turns, a_meta))))
        record.key, record.signature, record.split, record.tier = key, sig, split, tier
        record.intents, record.entity_types, record.pii, record.n_turns = \
            intents, [e.type for e in entities], pii, len(turns)
        return record

    def _annotate_variant(self, turns: list[Turn], intents: list[str], entities: list, new_turns: list[Turn]
                          ) -> tuple[list[str], list]:
        """Annotations of a tier-3 variant. The rule annotator labels each turn on its own, so turns the variant
        left unchanged reuse the parent's labels (only reworded or inserted turns are annotated again)."""
        if self.annotator is None:
            return [], []
        if not isinstance(self.annotator, RuleAnnotator):
            return self.annotator.annotate(new_turns)
        known: dict[tuple[str, str], tuple[str | None, list]] = {}
        user_intents = iter(intents)
        by_turn: dict[int, list] = {}
        for e in entities:
            by_turn.setdefault(e.turn, []).append(e)
        for i, t in enumerate(turns):
            known[(t.role, t.content)] = (next(user_intents, "other") if t.role == "user" else None, by_turn.get(i, []))
        out_intents: list[str] = []
        out_entities: list = []
        for i, t in enumerate(new_turns):
            if t.role == "system":
                continue
            hit = known.get((t.role, t.content))
            if hit is None:
                found = self.annotator.entities(t.content, i)
                intent = self.annotator.intent(t.content, {e.type for e in found}) if t.role == "user" else None
            else:
                intent, found = hit[0], [Entity(e.type, e.text, i, e.start, e.end, e.value) for e in hit[1]]
            out_entities.extend(found)
            if t.role == "user":
                out_intents.append(intent)
        return out_intents, out_entities


def filter_detail(reason: str, turns: list[Turn], limits) -> str:
    """Why the quality filter ``reason`` dropped a dialogue, with the numbers and the limits it failed."""
    text = "".join(t.content for t in turns)
    n = sum(1 for t in turns if t.role in ("user", "assistant"))
    if reason == "garbled":
        return f"{garbled_ratio(text):.0%} of its characters are garbled (max_garbled_ratio {limits.max_garbled_ratio})"
    if reason == "too_short":
        return f"{n} turns, {len(text)} characters (min_turns {limits.min_turns}, min_chars {limits.min_chars})"
    if reason == "too_long":
        return f"{n} turns, {len(text)} characters (max_turns {limits.max_turns}, max_chars {limits.max_chars})"
    return {"empty": "no message left after cleaning", "no_agent_reply": "no agent reply",
            "no_customer_turn": "no customer turn"}.get(reason, reason)


def load_annotator(spec: str, catalogue: Catalogue | None) -> Annotator:
    """Build the annotator named ``"module:Class"`` (see :class:`kefu.data.annotate.Annotator`).

    ``prepare.annotator`` is a user setting (a learned tagger can replace the rules), hence the import by name.
    """
    module_name, _, class_name = spec.partition(":")
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError, ValueError) as exc:
        raise KefuError(f"prepare.annotator: cannot load {spec!r} ({exc}); expected 'module:Class'") from None
    annotator = cls(catalogue=catalogue)
    if not callable(getattr(annotator, "annotate", None)):
        raise KefuError(f"prepare.annotator: {spec!r} has no annotate(turns) method")
    return annotator


def _entity_dict(e) -> dict[str, Any]:
    return {"type": e.type, "text": e.text, "turn": e.turn, "start": e.start, "end": e.end, "value": e.value}


_WORKER: _Worker | None = None


def _init_worker(config_json: str, catalogue: str | None) -> None:
    global _WORKER
    _WORKER = _Worker(PrepareConfig.model_validate_json(config_json), catalogue)


def _process_chunk(chunk: list[Record]) -> list[Record]:
    assert _WORKER is not None
    return [_WORKER.process(item) for item in chunk]


# ----------------------------------------------------------------------------------------------------------------
# the run


class _Counts:
    def __init__(self) -> None:
        self.records_in = self.kept = self.rejected = self.duplicates = self.turns = 0
        self.filtered: Counter[str] = Counter()
        self.dup_kinds: Counter[str] = Counter()
        self.tiers: Counter[str] = Counter()
        self.splits: Counter[str] = Counter()
        self.generated: Counter[str] = Counter()
        self.intents: Counter[str] = Counter()
        self.entities: Counter[str] = Counter()
        self.pii: Counter[str] = Counter()
        self.rejects_by_file: Counter[str] = Counter()
        self.by_file: dict[str, Counter[str]] = {}  # file -> records_in/kept/rejected/filtered/duplicates
        self.bad_files: list[dict[str, str]] = []

    def file(self, source: str) -> Counter[str]:
        counter = self.by_file.get(source)
        if counter is None:
            counter = self.by_file[source] = Counter(records_in=0, kept=0, rejected=0, filtered=0, duplicates=0)
        return counter


def _workers(config: PrepareConfig, total_bytes: int) -> int:
    if config.workers:
        return config.workers
    if total_bytes < (2 << 20):  # small inputs: a pool costs more than it saves
        return 1
    try:
        cores = len(os.sched_getaffinity(0))  # the cores this process may use (containers, taskset)
    except AttributeError:
        cores = os.cpu_count() or 1
    return max(1, min(cores, 4))


@authorized("data:write")
def prepare(inputs: list[Path], out_dir: Path, config: PrepareConfig, catalogue: Path | None = None, *,
            progress: Progress | None = None, skip_bad_files: bool = False) -> dict[str, Any]:
    """Read ``inputs`` (files or folders), write ``out_dir``/{train,val,test,rejects}.jsonl and report.{json,md}.

    Returns the report (``records_in``, ``kept``, ``rejected``, ``filtered``, ``duplicates``, ``by_file``,
    ``bad_files``, tier/split/intent/entity/PII counts ...). Raises :class:`KefuError` on unusable input under
    ``on_error="fail"``, and when an input file cannot be read at all (naming every such file) unless
    ``skip_bad_files``; outputs are written to temporary files and only replace earlier ones when the run succeeds.

    Needs ``data:write`` (``kefu.safety.keys.authorize``); audited as that key. When every input has a valid
    consent/provenance record, the splits inherit it (``consent.carry``), so training accepts them.
    """
    started = time.monotonic()
    out_dir = Path(out_dir)
    catalogue = Path(catalogue) if catalogue else (Path(config.catalogue) if config.catalogue else None)
    if catalogue is not None and not catalogue.is_file():
        raise KefuError(f"{catalogue}: catalogue file not found")
    if config.annotate:
        load_annotator(config.annotator, None)  # fail early, in the parent, on a bad annotator setting
    files = expand_inputs([Path(p) for p in inputs], out_dir, catalogue)
    if not files:
        raise KefuError(f"no input files found in {', '.join(str(p) for p in inputs)}")
    bad = {p: why for p, explicit in files if (why := file_problem(p, config.format, explicit=explicit)) is not None}
    if bad and not skip_bad_files:
        raise bad_files_error([{"path": str(p), "reason": why} for p, why in bad.items()])
    counts = _Counts()
    counts.bad_files = [{"path": str(p), "reason": why} for p, why in bad.items()]
    read = [(p, explicit) for p, explicit in files if p not in bad]
    total_bytes = sum(p.stat().st_size for p, _ in read)
    for p, _ in read:  # a dataset_info.json reads the files it points to
        if p.name == "dataset_info.json":
            total_bytes += sum(f.stat().st_size for f in dataset_info_files(p) if f.is_file())
    out_dir.mkdir(parents=True, exist_ok=True)
    skipped: list[dict[str, str]] = []
    dedup = Deduplicator(config.dedup.exact, config.dedup.near, config.dedup.threshold, config.dedup.num_perm)
    n_workers = _workers(config, total_bytes)
    catalogue_arg = str(catalogue) if catalogue else None

    tmp = {name: out_dir / f".{name}.tmp" for name in OUTPUTS}
    handles = {name: open(path, "w", encoding="utf-8", newline="\n") for name, path in tmp.items()}
    pool = None
    ok = False
    processed = 0

    def on_bytes(n: int) -> None:
        if progress is not None:
            progress(n, total_bytes, processed)

    def records() -> Iterator[Record]:
        for path, explicit in read:
            unrecognised = None if explicit else (lambda p, why: skipped.append({"path": str(p), "reason": why}))
            for item in read_logs(path, config.format, config.on_error, progress=on_bytes, unrecognised=unrecognised):
                if isinstance(item, FileReject):  # a file a dataset_info.json points to, or one failing mid-read
                    problem = {"path": item.file, "reason": item.reason}
                    if not skip_bad_files:
                        raise bad_files_error([problem])
                    counts.bad_files.append(problem)
                    continue
                yield Record.from_reject(item) if isinstance(item, Reject) else Record.from_dialogue(item)

    def consume(results: list[Record]) -> None:
        nonlocal processed
        for record in results:
            processed += 1
            counts.records_in += 1
            per_file = counts.file(record.source)
            per_file["records_in"] += 1
            if record.lost is not None:
                handles["rejects.jsonl"].write(json_line(record.lost) + "\n")
                if record.filtered is not None:
                    counts.filtered[record.filtered] += 1
                    per_file["filtered"] += 1
                else:
                    counts.rejected += 1
                    counts.rejects_by_file[record.source] += 1
                    per_file["rejected"] += 1
                continue
            sig = record.signature
            dup = dedup.check(record.key, None if sig is None else np.frombuffer(sig, dtype=np.uint32))
            if dup is not None:
                counts.duplicates += 1
                counts.dup_kinds[dup] += 1
                per_file["duplicates"] += 1
                continue
            counts.kept += 1
            per_file["kept"] += 1
            counts.turns += record.n_turns
            handles[f"{record.split}.jsonl"].write(record.line + "\n")
            counts.splits[record.split] += 1
            counts.tiers[str(record.tier)] += 1
            counts.intents.update(record.intents)
            counts.entities.update(record.entity_types)
            counts.pii.update(record.pii)
            for kind, line in record.variants:
                handles["train.jsonl"].write(line + "\n")
                counts.splits["train"] += 1
                counts.tiers["3"] += 1
                counts.generated[kind] += 1

    try:
        if n_workers > 1:
            ctx = multiprocessing.get_context("forkserver")
            pool = ctx.Pool(n_workers, initializer=_init_worker, initargs=(config.model_dump_json(), catalogue_arg))
            pending: deque = deque()
            chunk: list = []
            for item in records():
                chunk.append(item)
                if len(chunk) >= CHUNK:
                    pending.append(pool.apply_async(_process_chunk, (chunk,)))
                    chunk = []
                    while len(pending) > 3 * n_workers:
                        consume(pending.popleft().get())
            if chunk:
                pending.append(pool.apply_async(_process_chunk, (chunk,)))
            while pending:
                consume(pending.popleft().get())
        else:
            worker = _Worker(config, catalogue_arg)
            for item in records():
                consume([worker.process(item)])
        ok = True
    finally:
        if pool is not None:
            if ok:
                pool.close()
            else:
                pool.terminate()
            pool.join()
        for handle in handles.values():
            handle.close()
        if not ok:
            for path in tmp.values():
                path.unlink(missing_ok=True)
    for name, path in tmp.items():
        os.replace(path, out_dir / name)

    outputs = {name: str(out_dir / name) for name in (*OUTPUTS, "report.json", "report.md")}
    report = build_report(counts, config, files=[str(p) for p, _ in files], skipped=skipped, outputs=outputs)
    (out_dir / "report.json").write_text(json.dumps(report, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    (out_dir / "report.md").write_text(render_markdown(report), encoding="utf-8")
    _audit(files, out_dir, report)
    consent.carry(inputs, [out_dir / f"{split}.jsonl" for split in ("train", "val", "test")])
    report = dict(report)
    report["elapsed_s"] = round(time.monotonic() - started, 3)
    report["workers"] = n_workers
    return report


def bad_files_error(bad: list[dict[str, str]]) -> KefuError:
    """The error for input files that cannot be read at all, naming each with its reason."""
    lines = "\n".join(f"  {b['path']}: {b['reason']}" for b in bad)
    n = len(bad)
    return KefuError(f"{n} input file{'s' if n > 1 else ''} cannot be read at all, so nothing was written:\n{lines}\n"
                     f"Fix or remove {'them' if n > 1 else 'it'}, or pass --skip-bad-files to prepare the rest "
                     f"(they are then listed under bad_files in report.json).")


def _audit(files: list[tuple[Path, bool]], out_dir: Path, report: dict[str, Any]) -> None:
    paths = [p for p, _ in files]
    for p, _ in files:  # the files a dataset_info.json points to are inputs too
        if p.name == "dataset_info.json":
            paths += sorted(f for f in dataset_info_files(p) if f.is_file())
    inputs = [{"path": str(p), "sha256": sha256_file(p), "bytes": p.stat().st_size} for p in paths]
    outputs = {name: sha256_file(out_dir / name) for name in (*OUTPUTS, "report.json")}
    combined = hashlib.sha256("".join(outputs[n] for n in sorted(outputs)).encode()).hexdigest()
    audit.record("prepare", str(out_dir), digest=combined, details={
        "inputs": inputs, "outputs": outputs,
        "counts": {k: report[k] for k in ("records_in", "kept", "rejected", "filtered", "duplicates", "tiers",
                                          "splits")},
    })
