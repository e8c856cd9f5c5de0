"""``kefu prepare``: chat logs in, clean/annotated/augmented train/val/test JSONL out, with a reconciled report.

Flow: the parent process streams records from the readers (in input order) and sends chunks of dialogues to worker
processes, which clean, mask PII, filter, annotate, fingerprint, split and augment them; results come back in
submission order (a bounded window of chunks in flight, so memory stays flat). The parent keeps the duplicate
index and writes the outputs, so outputs are byte-identical for a seed whatever the number of workers.

Accounting (checked on every run): ``records_in == kept + rejected + sum(filtered) + duplicates``, where a record is
one dialogue as read (or one unusable line/row/file, which becomes a reject).
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import time
from collections import Counter, deque
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from kefu.data import augment as aug
from kefu.data.annotate import Annotator, Catalogue, RuleAnnotator
from kefu.data.config import PrepareConfig
from kefu.data.dedup import Deduplicator, MinHasher, exact_key, shingle_text
from kefu.data.normalize import clean_turns, quality_reason
from kefu.data.readers import DATA_SUFFIXES, dataset_info_files, read_dialogues
from kefu.data.report import build_report, render_markdown
from kefu.data.split import SPLITS, assign_split
from kefu.safety.audit import sha256_file
from kefu.types import Dialogue, Entity, KefuError, Reject, Turn

OUTPUTS = ("train.jsonl", "val.jsonl", "test.jsonl", "rejects.jsonl")
CHUNK = 256  # dialogues per task sent to a worker
Progress = Callable[[int, int, int], None]  # (bytes just read, total bytes, dialogues processed so far)


# ----------------------------------------------------------------------------------------------------------------
# inputs


def expand_inputs(inputs: list[Path], out_dir: Path | None = None, catalogue: Path | None = None
                  ) -> list[tuple[Path, bool]]:
    """Files to read, in a stable order, each with ``explicit`` (named by the user, not found in a folder).

    Folders are walked recursively (hidden files, the output folder and the catalogue are left out); files that a
    ``dataset_info.json`` in the walk points to are read through it, with its column mapping, and not twice.
    """
    skip = {p.resolve() for p in [catalogue] if p}
    out_resolved = out_dir.resolve() if out_dir else None
    files: list[tuple[Path, bool]] = []
    seen: set[Path] = set()
    for raw in inputs:
        path = Path(raw)
        if not path.exists():
            raise KefuError(f"{path}: no such file or folder")
        if path.is_file():
            if path.resolve() not in seen:
                seen.add(path.resolve())
                files.append((path, True))
            continue
        found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in DATA_SUFFIXES
                       and not any(part.startswith(".") for part in p.relative_to(path).parts))
        referenced: set[Path] = set()
        for p in found:
            if p.name == "dataset_info.json":
                referenced |= dataset_info_files(p)
        for p in found:
            resolved = p.resolve()
            if resolved in skip or resolved in referenced or resolved in seen:
                continue
            if out_resolved and (resolved == out_resolved or out_resolved in resolved.parents):
                continue
            seen.add(resolved)
            files.append((p, False))
    return files


# ----------------------------------------------------------------------------------------------------------------
# per-dialogue work (runs in worker processes)


class _Worker:
    """Everything done to one dialogue after reading; pure, so results do not depend on the worker."""

    def __init__(self, config: PrepareConfig, catalogue: str | None):
        self.cfg = config
        self.catalogue = Catalogue.from_csv(catalogue) if catalogue else None
        self.annotator = load_annotator(config.annotator, self.catalogue) if config.annotate else None
        self.hasher = MinHasher(config.dedup.num_perm, config.dedup.shingle) if config.dedup.near else None
        self.mask_many = None
        self._mask_cache: dict[str, tuple[str, dict[str, int]]] = {}
        if config.mask_pii:
            from kefu.text.pii import mask_many

            self.mask_many = mask_many

    def process(self, item: tuple[str, list[tuple[str, str]], dict[str, Any]]) -> tuple:
        record_id, raw_turns, meta = item
        cfg = self.cfg
        turns = clean_turns([Turn(role, content) for role, content in raw_turns], cfg.normalize)
        pii: dict[str, int] = {}
        if self.mask_many is not None:
            cache = self._mask_cache
            if len(cache) >= 100_000:
                cache.clear()
            # templated replies repeat: mask each distinct text once, the dialogue's new ones as one batch
            todo = [turn.content for turn in turns if turn.content not in cache]
            if todo:
                cache.update(zip(todo, self.mask_many(todo)))
            for turn in turns:
                masked, counts = cache[turn.content]
                if counts:
                    turn.content = masked
                    for key, n in counts.items():
                        pii[key] = pii.get(key, 0) + n
        reason = quality_reason(turns, cfg.filters)
        if reason is not None:
            return ("filtered", reason)
        key = exact_key(turns)
        # bytes, not an ndarray: pickling small arrays back to the parent costs more than the hashing saves
        sig = self.hasher.signature(shingle_text(turns)).tobytes() if self.hasher is not None else None
        split = assign_split(key, cfg.seed, cfg.val_ratio, cfg.test_ratio)
        intents, entities = self.annotator.annotate(turns) if self.annotator is not None else ([], [])
        tier = 2 if entities or any(i != "other" for i in intents) else 1
        out_meta = {k: v for k, v in meta.items() if k not in ("source", "line")}
        out_meta.update(source=meta.get("source"), line=meta.get("line"), tier=tier, split=split, intents=intents,
                        entities=[_entity_dict(e) for e in entities], pii_counts=pii)
        line = _dumps(Dialogue(record_id, turns, out_meta))
        generated: list[tuple[str, str, list[str], list[str]]] = []
        if cfg.augment and split == "train" and cfg.augment_ratio > 0:
            for kind, new_turns in aug.augment(turns, key, cfg.seed, cfg.augment_ratio, list(cfg.augment_kinds),
                                               entities, self.catalogue):
                a_intents, a_entities = self._annotate_variant(turns, intents, entities, new_turns)
                a_meta = {"source": meta.get("source"), "line": meta.get("line"), "tier": 3, "split": "train",
                          "augment": kind, "parent": record_id, "intents": a_intents,
                          "entities": [_entity_dict(e) for e in a_entities], "pii_counts": pii}
                generated.append((kind, _dumps(Dialogue(f"{record_id}#{kind}", new_turns, a_meta)), a_intents,
                                  [e.type for e in a_entities]))
        return ("ok", line, key, sig, split, tier, intents, [e.type for e in entities], pii, len(turns), generated)


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


def load_annotator(spec: str, catalogue: Catalogue | None) -> Annotator:
    """Build the annotator named ``"module:Class"`` (see :class:`kefu.data.annotate.Annotator`)."""
    import importlib

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


def _dumps(dialogue: Dialogue) -> str:
    return json.dumps(dialogue.to_dict(), ensure_ascii=False, separators=(",", ":"))


_WORKER: _Worker | None = None


def _init_worker(config_json: str, catalogue: str | None) -> None:
    global _WORKER
    _WORKER = _Worker(PrepareConfig.model_validate_json(config_json), catalogue)


def _process_chunk(chunk: list) -> list[tuple]:
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


def prepare(inputs: list[Path], out_dir: Path, config: PrepareConfig, catalogue: Path | None = None, *,
            progress: Progress | None = None) -> dict[str, Any]:
    """Read ``inputs`` (files or folders), write ``out_dir``/{train,val,test,rejects}.jsonl and report.{json,md}.

    Returns the report (``records_in``, ``kept``, ``rejected``, ``filtered``, ``duplicates``, tier/split/intent/
    entity/PII counts ...). Raises :class:`KefuError` on unusable input under ``on_error="fail"``; outputs are
    written to temporary files and only replace earlier ones when the run succeeds.
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
    total_bytes = sum(p.stat().st_size for p, _ in files)
    for p, _ in files:  # a dataset_info.json reads the files it points to
        if p.name == "dataset_info.json":
            total_bytes += sum(f.stat().st_size for f in dataset_info_files(p) if f.is_file())
    out_dir.mkdir(parents=True, exist_ok=True)
    counts = _Counts()
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

    def records() -> Iterator[tuple[str, list[tuple[str, str]], dict[str, Any]]]:
        for path, explicit in files:
            unrecognised = None if explicit else (lambda p, why: skipped.append({"path": str(p), "reason": why}))
            for record in read_dialogues(path, config.format, config.on_error, progress=on_bytes,
                                         unrecognised=unrecognised):
                counts.records_in += 1
                if isinstance(record, Reject):
                    counts.rejected += 1
                    counts.rejects_by_file[record.file] += 1
                    handles["rejects.jsonl"].write(json.dumps(record.to_dict(), ensure_ascii=False) + "\n")
                    continue
                yield record.id, [(t.role, t.content) for t in record.messages], record.meta

    def consume(results: list[tuple]) -> None:
        nonlocal processed
        for result in results:
            processed += 1
            if result[0] == "filtered":
                counts.filtered[result[1]] += 1
                continue
            _, line, key, sig, split, tier, intents, entity_types, pii, n_turns, generated = result
            dup = dedup.check(key, None if sig is None else np.frombuffer(sig, dtype=np.uint32))
            if dup is not None:
                counts.duplicates += 1
                counts.dup_kinds[dup] += 1
                continue
            counts.kept += 1
            counts.turns += n_turns
            handles[f"{split}.jsonl"].write(line + "\n")
            counts.splits[split] += 1
            counts.tiers[str(tier)] += 1
            counts.intents.update(intents)
            counts.entities.update(entity_types)
            counts.pii.update(pii)
            for kind, g_line, _g_intents, _g_types in generated:
                handles["train.jsonl"].write(g_line + "\n")
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
    report = dict(report)
    report["elapsed_s"] = round(time.monotonic() - started, 3)
    report["workers"] = n_workers
    return report


def _audit(files: list[tuple[Path, bool]], out_dir: Path, report: dict[str, Any]) -> None:
    from kefu.safety import audit

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
