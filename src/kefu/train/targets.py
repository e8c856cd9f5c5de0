"""Which layers of a base model get LoRA, for dense models (Gemma, Llama, Qwen2) and mixture-of-experts ones
(DeepSeek V3: multi-head latent attention, a dense first layer, then routed plus shared experts).

kefu resolves ``target_modules: all-linear`` itself, to leaf names of the decoder's ``nn.Linear`` layers, instead of
handing the keyword to PEFT: on transformers 5's mixture-of-experts models PEFT reads ``all-linear`` and the MLP
names ``gate_proj``/``up_proj``/``down_proj``/``gate`` as transformers 4 names of the routed experts and the router,
and retargets them onto the fused expert parameters and the router's weight (PEFT 0.21,
``peft.utils.transformers_weight_conversion``). Here:

- attention: every projection (``q_proj``/``k_proj``/``v_proj``/``o_proj``; DeepSeek's MLA ``q_a_proj``,
  ``q_b_proj``, ``kv_a_proj_with_mqa``, ``kv_b_proj``, ``o_proj``);
- MLPs: ``gate_proj``/``up_proj``/``down_proj`` of dense models. In a model with fused routed experts these leaf
  names are left out (PEFT would move them onto the experts), so there the dense and shared-expert MLPs stay
  frozen;
- never a router (a layer beside an ``experts`` module): tuning it moves routing, and LoRA servers do not load it;
- the routed experts only with ``lora_experts``: PEFT ``target_parameters`` on ``<block>.experts.gate_up_proj`` and
  ``<block>.experts.down_proj``. Merged exports carry them; serving such an adapter unmerged needs a server that
  loads PEFT's parameter-level LoRA.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from kefu.train.config import TrainConfig
from kefu.types import KefuError

if TYPE_CHECKING:  # torch/peft are heavy imports
    from torch import nn

EXPERTS = "experts"  # the module name transformers gives a mixture-of-experts block's routed experts


@dataclass(frozen=True)
class LoraTargets:
    """PEFT's ``target_modules`` (leaf names of ``nn.Linear`` layers) and ``target_parameters`` (fused experts)."""

    modules: list[str]
    parameters: list[str]


def _is_router(name: str, module_names: set[str]) -> bool:
    """A layer whose parent also holds routed experts is that block's router (DeepSeek ``mlp.gate``)."""
    parent = name.rsplit(".", 1)[0] if "." in name else ""
    return f"{parent}.{EXPERTS}" in module_names


def _in_expert_block(name: str, module_names: set[str]) -> bool:
    """Whether the layer ``name`` sits in a mixture-of-experts block (next to, or under a sibling of, ``experts``)."""
    parts = name.split(".")
    return any(".".join(parts[:i] + [EXPERTS]) in module_names for i in range(len(parts)))


def linear_layers(model: "nn.Module") -> list[str]:
    """Leaf names of the ``nn.Linear`` layers LoRA can adapt by name: all but the output projection, routers, and
    in a model with routed experts the names used inside its expert blocks (PEFT maps those onto the experts)."""
    from torch import nn

    output = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    names = {name for name, _ in model.named_modules()}
    linear = [name for name, module in model.named_modules()
              if isinstance(module, nn.Linear) and module is not output and not _is_router(name, names)]
    ambiguous = {name.rsplit(".", 1)[-1] for name in linear if _in_expert_block(name, names)}
    return sorted({name.rsplit(".", 1)[-1] for name in linear} - ambiguous)


def fused_expert_parameters(model: "nn.Module") -> list[str]:
    """``<block>.experts.<weight>`` for every 3-D weight of a fused routed-experts module (PEFT's
    ``target_parameters`` suffixes, e.g. ``mlp.experts.gate_up_proj``)."""
    found = set()
    for name, module in model.named_modules():
        if name.rsplit(".", 1)[-1] != EXPERTS:
            continue
        block = name.rsplit(".", 2)[-2] if name.count(".") >= 1 else ""
        for param_name, param in module.named_parameters(recurse=False):
            if param.dim() == 3:
                found.add(f"{block}.{EXPERTS}.{param_name}" if block else f"{EXPERTS}.{param_name}")
    return sorted(found)


def lora_targets(model: "nn.Module", config: TrainConfig) -> LoraTargets:
    """The layers ``config`` asks LoRA on in ``model``; KefuError when a named layer does not exist or routed
    experts are asked of a model without fused experts."""
    if config.target_modules == "all-linear":
        modules = linear_layers(model)
    else:
        present = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
        missing = sorted(set(config.target_modules) - present)
        if missing:
            raise KefuError(f"train.target_modules {missing} are not layers of {type(model).__name__} (it has "
                            f"{', '.join(linear_layers(model))})")
        modules = sorted(set(config.target_modules))
    parameters: list[str] = []
    if config.lora_experts:
        parameters = fused_expert_parameters(model)
        if not parameters:
            raise KefuError(f"train.lora_experts: {type(model).__name__} has no fused routed experts")
        if config.lora_dropout:
            raise KefuError("train.lora_experts needs lora_dropout 0 (PEFT applies no dropout to parameter-level "
                            "LoRA): pass --lora-dropout 0")
    return LoraTargets(modules=modules, parameters=parameters)
