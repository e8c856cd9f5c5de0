"""Differentially private LoRA fine-tuning (DP-SGD via Opacus).

Only the trainable parameters (the LoRA adapters) get per-sample gradients, clipping and noise; the frozen base
model is untouched, so memory and time stay close to plain LoRA training. Opacus's default ``hooks`` grad-sample mode
works with PEFT LoRA layers (their ``lora_A``/``lora_B`` are plain ``nn.Linear``), checked on tiny random Llama
models in tests/safety/test_dp.py.

Usage (what ``kefu train --dp --epsilon E --delta D`` does)::

    model, optimizer, loader, engine = make_private(model, optimizer, loader, epsilon=E, delta=D, epochs=N)
    ... train as usual (the loader now uses Poisson sampling; a batch may be empty — skip it) ...
    spent = epsilon_spent(engine, D)    # the ε actually spent, <= E
"""

from __future__ import annotations

import warnings
from typing import Any

import torch

from kefu.types import KefuError


def _check_args(model: torch.nn.Module, optimizer: torch.optim.Optimizer, epsilon: float, delta: float, epochs: int,
                max_grad_norm: float, data_loader: Any, loss_reduction: str = "mean") -> None:
    if not epsilon > 0:
        raise KefuError(f"--epsilon must be > 0 (got {epsilon})")
    if not 0 < delta < 1:
        raise KefuError(f"--delta must be in (0, 1) (got {delta})")
    if epochs < 1:
        raise KefuError(f"epochs must be >= 1 for DP accounting (got {epochs})")
    if loss_reduction not in ("mean", "sum"):
        raise KefuError(f"loss_reduction must be 'mean' or 'sum' (got {loss_reduction!r})")
    if not max_grad_norm > 0:
        raise KefuError(f"max_grad_norm must be > 0 (got {max_grad_norm})")
    try:
        n = len(data_loader.dataset)
    except (AttributeError, TypeError):
        raise KefuError("DP training needs a DataLoader over a map-style dataset (with len()) for privacy "
                        "accounting") from None
    if delta >= 1 / max(n, 1):
        warnings.warn(f"delta={delta} is not below 1/N = {1 / max(n, 1):.2g} (N={n} records); the guarantee is weak",
                      stacklevel=3)
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    if not trainable:
        raise KefuError("DP training: the model has no trainable parameters (apply LoRA first)")
    aliased = _aliased_trainable_modules(model)
    if aliased:
        raise KefuError(f"DP training: trainable module reachable twice ({aliased[0]}; {len(aliased)} in all), which "
                        "would double its per-sample gradients. Keep only one registered path (store aliases with "
                        "object.__setattr__ or as plain attributes, not as sub-modules)")
    for group in optimizer.param_groups:
        for p in group["params"]:
            if id(p) not in trainable:
                raise KefuError("DP training: the optimizer holds a frozen parameter; build it over "
                                "[p for p in model.parameters() if p.requires_grad] only")


def _aliased_trainable_modules(model: torch.nn.Module) -> list[str]:
    """Names of modules with trainable parameters reachable through more than one attribute path.

    Opacus's ``hooks`` mode walks ``children()`` without removing duplicates, so such a module gets its per-sample
    hooks twice and its per-sample gradients come out doubled — silently wrong clipping, hence a wrong guarantee.
    (A wrapper that keeps ``self.model`` and also ``self.body = model.get_decoder()`` does exactly this.)
    """
    seen: dict[int, list[str]] = {}

    def walk(module: torch.nn.Module, name: str) -> None:
        if any(p.requires_grad for p in module.parameters(recurse=False)):
            seen.setdefault(id(module), []).append(name or "<root>")
        for child_name, child in module.named_children():
            walk(child, f"{name}.{child_name}" if name else child_name)

    walk(model, "")
    return [" and ".join(paths[:2]) for paths in seen.values() if len(paths) > 1]


def make_private(model: torch.nn.Module, optimizer: torch.optim.Optimizer, data_loader: torch.utils.data.DataLoader,
                 *, epsilon: float, delta: float, epochs: int, max_grad_norm: float = 1.0,
                 grad_sample_mode: str = "hooks", accountant: str = "rdp", seed: int | None = None,
                 loss_reduction: str = "mean"):
    """Wrap model/optimizer/loader for DP-SGD that spends at most (``epsilon``, ``delta``) over ``epochs`` epochs.

    Returns (model, optimizer, data_loader, privacy_engine). The noise multiplier is calibrated by Opacus
    (``make_private_with_epsilon``) for the loader's sampling rate; per-sample gradients are clipped to
    ``max_grad_norm``. The new loader samples each record independently (Poisson), which the guarantee requires.

    ``loss_reduction``: "mean" when the loss is averaged over the batch's samples, "sum" when summed (kefu's
    ``SupervisedLM`` returns a token-summed loss: use "sum" and do not rescale it per step). One sample = one row of
    the loader's batch; for a per-dialogue guarantee each row must hold one dialogue (no packing).
    """
    from opacus import PrivacyEngine

    _check_args(model, optimizer, epsilon, delta, epochs, max_grad_norm, data_loader, loss_reduction)
    model.train()
    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    with warnings.catch_warnings():
        # Opacus warns about the secure RNG being off; that is a deliberate choice for reproducible research runs
        # and is documented in docs/security.md (pass secure_mode via Opacus directly for production).
        warnings.filterwarnings("ignore", message=".*[Ss]ecure RNG.*")
        warnings.filterwarnings("ignore", message=".*[Ff]ull backward hook.*")
        engine = PrivacyEngine(accountant=accountant)
        try:
            dp_model, dp_optimizer, dp_loader = engine.make_private_with_epsilon(
                module=model, optimizer=optimizer, data_loader=data_loader, target_epsilon=float(epsilon),
                target_delta=float(delta), epochs=int(epochs), max_grad_norm=float(max_grad_norm),
                grad_sample_mode=grad_sample_mode, noise_generator=generator, loss_reduction=loss_reduction)
        except NotImplementedError as exc:
            raise KefuError(f"DP training: a trainable layer is not supported by Opacus ({exc}); train only LoRA "
                            "adapters on Linear layers") from exc
    return dp_model, dp_optimizer, dp_loader, engine


def epsilon_spent(privacy_engine, delta: float) -> float:
    """The ε spent so far at ``delta`` (0.0 before the first step)."""
    try:
        return float(privacy_engine.get_epsilon(delta))
    except ValueError:
        return 0.0


def noise_multiplier(optimizer) -> float:
    """The noise multiplier Opacus chose (for the training report)."""
    return float(getattr(optimizer, "noise_multiplier", float("nan")))


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The original model inside Opacus's GradSampleModule, e.g. to save the LoRA adapter with PEFT."""
    return getattr(model, "_module", model)
