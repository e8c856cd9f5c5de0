"""The training run folder (``kefu train --out RUN``): its one layout, writer and reader.

``kefu train`` writes it; eval, export, serve and the adapter registry read it, all through :class:`TrainRun`, so
each asks for the base model, the adapter and its settings the same way and gets the same error naming the path.

Layout::

    RUN/config.yaml          run record: {"train": TrainConfig (its ``model`` is the base model), "data": ..., ...}
    RUN/metrics.jsonl        one line per logged optimiser step ({"step", "loss", "lr", ...})
    RUN/train_report.json    the final report (written last with the adapter)
    RUN/adapter/             the PEFT adapter (adapter_config.json, adapter_model.safetensors, kefu_adapter.json)
    RUN/checkpoints/step-N/  adapter/ + trainer_state.pt, the newest ``keep`` kept
    RUN/tensorboard/         optional event files

A run is *finished* when ``RUN/adapter/adapter_config.json`` exists: the adapter is written last and atomically.
"""

from __future__ import annotations

import json
import shutil
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import yaml

from kefu.files import read_yaml_mapping
from kefu.paths import kefu_home
from kefu.types import KefuError

RUN_RECORD = "config.yaml"
METRICS = "metrics.jsonl"
REPORT = "train_report.json"
REPLIES = "replies.npz"  # the shop's past replies of the training data (kefu.kg.replies.ReplyIndex)
ADAPTER_DIR = "adapter"
CHECKPOINTS = "checkpoints"
TENSORBOARD = "tensorboard"
STATE_FILE = "trainer_state.pt"
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_INFO = "kefu_adapter.json"


def is_adapter(folder: str | Path) -> bool:
    """Whether ``folder`` is a PEFT adapter folder (has ``adapter_config.json``)."""
    return (Path(folder) / ADAPTER_CONFIG).is_file()


@dataclass(frozen=True)
class AdapterConfig:
    """The parts of a PEFT ``adapter_config.json`` kefu uses (rank, targets, DoRA, base), plus the whole of it."""

    folder: Path
    rank: int | None
    alpha: float | None
    target_modules: list[str] | str | None
    dora: bool
    base_model_path: str | None
    raw: dict[str, Any] = field(repr=False)

    @classmethod
    def read(cls, folder: str | Path) -> AdapterConfig:
        """Read ``folder/adapter_config.json``; KefuError naming the file when it is missing or not a JSON object."""
        folder = Path(folder)
        path = folder / ADAPTER_CONFIG
        if not path.is_file():
            raise KefuError(f"{folder}: not a PEFT adapter folder ({ADAPTER_CONFIG} missing)")
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise KefuError(f"{path}: not valid JSON ({exc})") from exc
        if not isinstance(raw, dict):
            raise KefuError(f"{path}: expected a JSON object")
        return cls(folder=folder, rank=raw.get("r"), alpha=raw.get("lora_alpha"),
                   target_modules=raw.get("target_modules"), dora=bool(raw.get("use_dora")),
                   base_model_path=raw.get("base_model_name_or_path"), raw=raw)


def _sorted_steps(folder: Path) -> list[tuple[int, Path]]:
    return sorted((int(p.name.split("-")[1]), p) for p in folder.glob("step-*") if p.name.split("-")[1].isdigit())


@contextmanager
def _replacing(folder: Path) -> Iterator[Path]:
    """A fresh staging folder beside ``folder`` that replaces it only when the block ends without error."""
    tmp = folder.with_name(f".tmp-{folder.name}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    yield tmp
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)


class TrainRun:
    """One training run folder: paths of its parts, what the trainer writes there, and what the stages read."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"TrainRun({str(self.path)!r})"

    @classmethod
    def named(cls, run: str | Path) -> TrainRun:
        """A run given as a folder or as a name under ``$KEFU_HOME/runs``; KefuError naming both places if neither."""
        path = Path(run).expanduser()
        if path.is_dir():
            return cls(path)
        named = kefu_home() / "runs" / str(run)
        if named.is_dir():
            return cls(named)
        raise KefuError(f"--run {run}: no such run folder (looked at {path} and {named})")

    # ------------------------------------------------------------------------------------------------ layout
    @property
    def record_file(self) -> Path:
        return self.path / RUN_RECORD

    @property
    def metrics_file(self) -> Path:
        return self.path / METRICS

    @property
    def report_file(self) -> Path:
        return self.path / REPORT

    @property
    def adapter_dir(self) -> Path:
        return self.path / ADAPTER_DIR

    @property
    def replies_file(self) -> Path:
        return self.path / REPLIES

    @property
    def checkpoints_dir(self) -> Path:
        return self.path / CHECKPOINTS

    @property
    def tensorboard_dir(self) -> Path:
        return self.path / TENSORBOARD

    # ------------------------------------------------------------------------------------------------ reading
    def is_finished(self) -> bool:
        """Whether training wrote the final adapter (it is written last, atomically)."""
        return is_adapter(self.adapter_dir)

    def require_finished(self, hint: str = "run `kefu train` first") -> TrainRun:
        """This run, or a KefuError naming the folder when it is missing or holds no trained adapter."""
        if not self.path.is_dir():
            raise KefuError(f"{self.path}: run folder not found")
        if not self.is_finished():
            raise KefuError(f"{self.path}: no trained adapter at {self.adapter_dir} (no {ADAPTER_CONFIG}; {hint})")
        return self

    def record(self) -> dict[str, Any]:
        """The run record ``config.yaml``; KefuError naming the file when it is missing or malformed."""
        return read_yaml_mapping(self.record_file, holds="run settings",
                                 missing="missing (the run record `kefu train` writes; it names the base model)")

    def exemplars(self) -> int:
        """Past replies per turn the run was trained to see in its prompt (``train.exemplars`` of a run grounded in a
        knowledge graph); 0 for plain-dialogue runs and runs recorded before exemplars existed."""
        train = self.record().get("train") if self.record_file.is_file() else None
        if not isinstance(train, dict) or not train.get("kg_url"):
            return 0
        value = train.get("exemplars", 0)
        return value if isinstance(value, int) and value > 0 else 0

    def base_model(self) -> str:
        """The base model the adapter was trained on, as given to ``kefu train --model`` (``train.model``)."""
        train = self.record().get("train")
        model = train.get("model") if isinstance(train, dict) else None
        if not isinstance(model, str) or not model:
            raise KefuError(f"{self.record_file}: no train.model naming the base model")
        return model

    def adapter_config(self) -> AdapterConfig:
        """The trained adapter's settings (rank, target modules, DoRA, ...)."""
        return AdapterConfig.read(self.adapter_dir)

    def report(self) -> dict[str, Any] | None:
        """``train_report.json`` (None before training finished)."""
        if not self.report_file.is_file():
            return None
        try:
            return json.loads(self.report_file.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise KefuError(f"{self.report_file}: not valid JSON: {exc}") from exc

    def metrics(self) -> list[dict[str, Any]]:
        """Every logged step of ``metrics.jsonl``, in order."""
        if not self.metrics_file.is_file():
            return []
        rows = []
        for number, line in enumerate(self.metrics_file.read_text(encoding="utf-8").splitlines(), 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise KefuError(f"{self.metrics_file}:{number}: not valid JSON: {exc.msg}") from exc
        return rows

    def latest_checkpoint(self) -> Path | None:
        """The newest complete checkpoint folder (one with its trainer state), or None."""
        if not self.checkpoints_dir.is_dir():
            return None
        steps = [(step, path) for step, path in _sorted_steps(self.checkpoints_dir) if (path / STATE_FILE).is_file()]
        return steps[-1][1] if steps else None

    # ------------------------------------------------------------------------------------------------ writing
    def write_record(self, record: dict[str, Any]) -> None:
        """Write the run record ``config.yaml`` (creates the folder)."""
        self.path.mkdir(parents=True, exist_ok=True)
        self.record_file.write_text(yaml.safe_dump(record, allow_unicode=True, sort_keys=False), encoding="utf-8")

    def start_metrics(self, resumed_step: int | None = None) -> None:
        """Start ``metrics.jsonl``: empty, or on resume only the lines up to the checkpoint's step."""
        kept = []
        if resumed_step is not None and self.metrics_file.is_file():  # drop steps logged after the checkpoint
            kept = [line for line in self.metrics_file.read_text(encoding="utf-8").splitlines()
                    if line.strip() and json.loads(line)["step"] <= resumed_step]
        self.metrics_file.write_text("".join(line + "\n" for line in kept), encoding="utf-8")

    def append_metrics(self, metrics: dict[str, Any]) -> None:
        with open(self.metrics_file, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(metrics) + "\n")

    def write_report(self, report: dict[str, Any]) -> None:
        self.report_file.write_text(json.dumps(report, ensure_ascii=False, indent=2), encoding="utf-8")

    @contextmanager
    def writing_adapter(self) -> Iterator[Path]:
        """A staging folder that becomes ``adapter/`` when the block ends: a crash never leaves half an adapter."""
        with _replacing(self.adapter_dir) as staged:
            yield staged

    @contextmanager
    def writing_checkpoint(self, step: int, keep: int) -> Iterator[Path]:
        """A staging folder that becomes ``checkpoints/step-<step>`` when the block ends; then only the newest
        ``keep`` checkpoints stay."""
        self.checkpoints_dir.mkdir(parents=True, exist_ok=True)
        final = self.checkpoints_dir / f"step-{step}"
        with _replacing(final) as staged:
            yield staged
        for _, path in _sorted_steps(self.checkpoints_dir)[:-keep]:
            shutil.rmtree(path, ignore_errors=True)
