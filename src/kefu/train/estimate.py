"""How long a training run will take, said before its first step (and corrected once a step has been timed).

The work of a run is counted in floating-point operations from the data loader's counts (``DataStats``: examples,
tokens and supervised tokens per epoch) and the model's shapes: every token goes forward and backward through the
transformer body (``4·N`` FLOPs for ``N`` body parameters, LoRA: no weight gradients of the frozen base, but
gradients through it; ``6·N`` with gradient checkpointing, which runs the forward twice), and every supervised token
also through the output projection (``4·V·H``; kefu computes it only there). Attention's length-dependent part is
left out (rows are at most ``max_len`` tokens).

The first estimate divides that work by a prior throughput for the device class (``PRIOR_FLOPS``); after the first
optimiser steps the trainer divides it by the throughput it measured, prints the corrected figure, and records both
with the actual time in ``train_report.json`` (``time_estimate``). A prior is a guess about hardware kefu has not
seen: it is calibrated on docs/benchmarks.md's CPU training run (2 AMD EPYC cores, Gemma 3 270M, bf16 autocast:
about 150 supervised tokens/s) and deliberately conservative on GPUs (small models use a GPU's peak poorly).

When the estimate is over ``warn_after_s`` (default ``WARN_AFTER_S``: an hour on CPU, eight on a GPU) the trainer
prints a warning with settings that would fit in about half that, each with its own estimate; training still goes on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

from kefu.progress import duration
from kefu.train.template import IGNORE_INDEX

# effective FLOP/s of kefu's training step; CPU per thread (torch.get_num_threads()), GPU per device
PRIOR_FLOPS = {
    ("cpu", "bf16"): 90e9,   # docs/benchmarks.md "Training speed" (2 EPYC cores, native bf16): ~105e9 at best
    ("cpu", "fp16"): 45e9,
    ("cpu", "fp32"): 45e9,   # the same run with --precision fp32 took twice as long
    ("cuda", "bf16"): 50e12,  # H100: 160-400 TFLOP/s on 0.5B-7B shapes (docs/benchmarks.md); small models far less
    ("cuda", "fp16"): 50e12,
    ("cuda", "fp32"): 10e12,
}
WARN_AFTER_S = {"cpu": 3600.0}
WARN_AFTER_S_OTHER = 8 * 3600.0
CPU_BATCH, CPU_MAX_LEN = 8, 512  # the smaller settings the warning offers


def warn_after_default(device_type: str) -> float:
    return WARN_AFTER_S.get(device_type, WARN_AFTER_S_OTHER)


@dataclass(frozen=True)
class Cost:
    """FLOPs per token through the body and per supervised token through the output projection."""

    per_token: float
    per_supervised: float

    @classmethod
    def of_shapes(cls, body_params: int, vocab_hidden: int, checkpointing: bool = False) -> "Cost":
        return cls((6.0 if checkpointing else 4.0) * body_params, 4.0 * vocab_hidden)

    def flops(self, tokens: float, supervised: float) -> float:
        return self.per_token * tokens + self.per_supervised * supervised


@dataclass(frozen=True)
class Workload:
    """One epoch's counts (from ``DataStats``) and the steps a run takes of them."""

    examples: int
    tokens: int
    supervised_tokens: int
    steps: int
    batch_size: int

    @property
    def epochs(self) -> float:
        return self.steps * self.batch_size / self.examples if self.examples else 0.0

    @property
    def run_tokens(self) -> float:
        return self.tokens * self.epochs

    @property
    def run_supervised(self) -> float:
        return self.supervised_tokens * self.epochs

    def with_steps(self, steps: int, batch_size: int | None = None) -> "Workload":
        return Workload(self.examples, self.tokens, self.supervised_tokens, steps, batch_size or self.batch_size)

    def steps_within(self, seconds: float, cost: Cost, rate: float, batch_size: int | None = None) -> int:
        """The most steps (at least 1) of ``batch_size`` examples that take about ``seconds``."""
        per_step = self.with_steps(1, batch_size).seconds(cost, rate)
        return max(1, int(seconds // per_step)) if per_step > 0 else 1

    def seconds(self, cost: Cost, rate: float) -> float:
        return cost.flops(self.run_tokens, self.run_supervised) / rate


def prior_rate(device_type: str, precision: str, threads: int = 1) -> float:
    """The prior FLOP/s of this device class (CPU: scaled by the threads torch uses)."""
    rate = PRIOR_FLOPS.get((device_type, precision), PRIOR_FLOPS.get((device_type, "fp32"), 35e9))
    return rate * max(1, threads) if device_type == "cpu" else rate


def last_turn_workload(examples: Sequence[Any], steps_like: Workload) -> Workload:
    """About what ``--last-turn-only`` would train: per source dialogue its last example, supervised on its last
    agent turn (the last run of supervised labels); an epoch of it in steps of the same batch size."""
    last: dict[str, Any] = {}
    for example in examples:
        last[example.source] = example
    tokens = supervised = 0
    for example in last.values():
        tokens += len(example.input_ids)
        run = 0
        for label in reversed(example.labels):
            if label != IGNORE_INDEX:
                run += 1
            elif run:
                break
        supervised += run
    n = len(last)
    return Workload(n, tokens, supervised, max(1, math.ceil(n / steps_like.batch_size)), steps_like.batch_size)


def estimate(work: Workload, cost: Cost, rate: float, source: str) -> dict[str, Any]:
    """The record of one estimate (what ``train_report.json`` keeps under ``time_estimate``)."""
    seconds = work.seconds(cost, rate)
    return {
        "examples_per_epoch": work.examples, "tokens_per_epoch": work.tokens,
        "supervised_tokens_per_epoch": work.supervised_tokens, "steps": work.steps, "batch_size": work.batch_size,
        "epochs": round(work.epochs, 4), "tokens": round(work.run_tokens),
        "supervised_tokens": round(work.run_supervised),
        "flops": float(f"{cost.flops(work.run_tokens, work.run_supervised):.4g}"), "flops_per_s": float(f"{rate:.4g}"),
        "throughput": source, "seconds": round(seconds, 1),
        "tokens_per_s": round(work.run_tokens / seconds, 1) if seconds else None,
        "supervised_tokens_per_s": round(work.run_supervised / seconds, 1) if seconds else None,
    }


def estimate_lines(est: dict[str, Any]) -> list[str]:
    """The estimate as printed before the first step."""
    return [
        f"kefu train: estimate ({est['throughput']})",
        f"  per epoch: {est['examples_per_epoch']:,} examples, {est['tokens_per_epoch']:,} tokens, "
        f"{est['supervised_tokens_per_epoch']:,} supervised tokens",
        f"  this run: {est['steps']:,} steps of {est['batch_size']} examples ({est['epochs']:.2f} epochs), "
        f"~{est['tokens']:,} tokens, ~{est['supervised_tokens']:,} supervised",
        f"  expected time: {duration(est['seconds'])} (~{est['tokens_per_s'] or 0:,.0f} tokens/s, "
        f"~{est['supervised_tokens_per_s'] or 0:,.0f} supervised tokens/s)",
    ]


def suggestions(work: Workload, cost: Cost, rate: float, target_s: float, *, max_len: int,
                last_turn: Workload | None = None, train_on_last: bool = False) -> list[dict[str, Any]]:
    """Settings that would take about ``target_s`` or less, each with its estimate (``flags``, ``seconds``,
    ``note``)."""
    out = []
    steps = work.steps_within(target_s, cost, rate)
    if steps < work.steps:
        out.append({"flags": f"--max-steps {steps}", "seconds": work.with_steps(steps).seconds(cost, rate),
                    "note": f"{steps * work.batch_size / work.examples:.2f} epochs of batch {work.batch_size}"})
    if work.batch_size > CPU_BATCH or max_len > CPU_MAX_LEN:
        batch = min(work.batch_size, CPU_BATCH)
        small = work.steps_within(target_s, cost, rate, batch)
        if small * batch < work.steps * work.batch_size:
            flags = (f"--batch-size {batch} " if batch != work.batch_size else "") + \
                    (f"--max-len {CPU_MAX_LEN} " if max_len > CPU_MAX_LEN else "") + f"--max-steps {small}"
            out.append({"flags": flags, "seconds": work.with_steps(small, batch).seconds(cost, rate),
                        "note": f"more, smaller steps: {small * batch / work.examples:.2f} epochs"})
    if last_turn is not None and not train_on_last:
        seconds = last_turn.seconds(cost, rate)
        note = f"one epoch of {last_turn.examples:,} last turns"
        flags = "--last-turn-only"
        if seconds > target_s:
            steps = last_turn.steps_within(target_s, cost, rate)
            flags += f" --max-steps {steps}"
            seconds = last_turn.with_steps(steps).seconds(cost, rate)
            note = f"{steps * last_turn.batch_size / last_turn.examples:.2f} epochs of last turns"
        out.append({"flags": flags, "seconds": seconds, "note": note})
    epoch_steps = max(1, math.ceil(work.examples / work.batch_size))
    if work.steps > epoch_steps:
        one = work.with_steps(epoch_steps)
        out.append({"flags": "--epochs 1", "seconds": one.seconds(cost, rate), "note": "one pass over the data"})
    for item in out:
        item["seconds"] = round(item["seconds"], 1)
    return out


def warning_lines(est: dict[str, Any], warn_after_s: float, device_type: str,
                  offers: list[dict[str, Any]]) -> list[str]:
    """The warning printed when ``est`` is over ``warn_after_s`` (it never stops the run)."""
    lines = [f"kefu train: WARNING: this run is expected to take {duration(est['seconds'])} on {device_type}, "
             f"over {duration(warn_after_s)}. It goes on; to make it shorter, stop it (Ctrl-C) and rerun with one of:"]
    width = max((len(o["flags"]) for o in offers), default=0)
    for offer in offers:
        lines.append(f"  {offer['flags']:<{width}}  ~{duration(offer['seconds'])}  ({offer['note']})")
    if device_type == "cpu":
        lines.append("  or train on a GPU (docs/models.md); --warn-after-hours sets this threshold.")
    else:
        lines.append("  --warn-after-hours sets this threshold.")
    return lines


def measured_line(est: dict[str, Any], prior: dict[str, Any] | None) -> str:
    said = f" (the first estimate said {duration(prior['seconds'])})" if prior else ""
    return (f"kefu train: {est['throughput']}: expected time {duration(est['seconds'])}{said}, "
            f"~{est['tokens_per_s'] or 0:,.0f} tokens/s, ~{est['supervised_tokens_per_s'] or 0:,.0f} supervised "
            "tokens/s")


__all__ = ["Cost", "Workload", "PRIOR_FLOPS", "WARN_AFTER_S", "estimate", "estimate_lines", "last_turn_workload",
           "measured_line", "prior_rate", "suggestions", "warn_after_default", "warning_lines"]
