"""The project config: one YAML file (``kefu.yaml``) validated by Pydantic; CLI flags override it.

Each stage owns its section's model in ``kefu/<stage>/config.py``; this module only assembles them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from kefu.data.config import PrepareConfig
from kefu.eval.config import EvalConfig
from kefu.files import read_yaml_mapping
from kefu.kg.config import KGConfig
from kefu.loop.config import LoopConfig
from kefu.safety.config import SafetyConfig
from kefu.serve.config import ServeConfig
from kefu.state import StateConfig, configure
from kefu.train.config import TrainConfig
from kefu.types import KefuError

DEFAULT_CONFIG_FILE = "kefu.yaml"


class KefuConfig(BaseModel):
    """Every stage's settings. Unknown keys are errors, so a typo never goes unnoticed."""

    model_config = ConfigDict(extra="forbid")

    prepare: PrepareConfig = PrepareConfig()
    train: TrainConfig = TrainConfig()
    eval: EvalConfig = EvalConfig()
    kg: KGConfig = KGConfig()
    serve: ServeConfig = ServeConfig()
    safety: SafetyConfig = SafetyConfig()
    loop: LoopConfig = LoopConfig()
    state: StateConfig = StateConfig()


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> KefuConfig:
    """Read ``path`` (or ``./kefu.yaml`` when present), apply ``overrides`` (``{"prepare.seed": 7}`` style), validate.

    Errors name the file and the field. The ``state:`` section becomes this process's state backend
    (``kefu.state.configure``), so every store opened after loading the config uses it.
    """
    data: dict[str, Any] = {}
    source = Path(path) if path else Path(DEFAULT_CONFIG_FILE)
    if path and not source.exists():
        raise KefuError(f"{source}: config file not found")
    if source.exists():
        data = read_yaml_mapping(source, holds="stage names to settings")
    for dotted, value in (overrides or {}).items():
        if value is None:
            continue
        node = data
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    try:
        config = KefuConfig.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise KefuError(f"{source}: invalid config: {problems}") from exc
    configure(config.state)
    return config
