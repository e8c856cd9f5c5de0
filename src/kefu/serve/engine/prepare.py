"""Readying a loaded model for serving: vocabulary trim, quantisation, LoRA adapters, stop tokens, sampling filters.

CPU options: weight-only INT8 (``int8-weight``, kefu.train.quant: int8 weights, bf16 activations) or torch.ao dynamic
INT8 (``int8``, also quantises activations). The vocabulary trim (kefu.train.vocab) decodes over the shop's tokens
only; it is applied before INT8 and stays fp32.
"""

from __future__ import annotations

from kefu.train.template import stop_token_ids


def prepare_model(model, tokenizer, *, quantize: str = "none", trim=None):
    """``model`` trimmed and quantised for serving, and the trimmed vocabulary's size (None: not trimmed)."""
    import torch

    trimmed_vocab: int | None = None
    if trim is not None:  # decode over the shop's tokens only; before INT8, stays fp32
        # deferred: heavy (torch)
        from kefu.train.vocab import VocabTrim, trim_model

        if isinstance(trim, VocabTrim):
            trim.check(tokenizer, "serve.trim_vocab")
        model = trim_model(model, trim)
        trimmed_vocab = len(trim.keep_ids if isinstance(trim, VocabTrim) else trim)
    if quantize == "int8":
        model = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
    elif quantize == "int8-weight":  # adapters loaded later wrap the int8 layers and stay floating point
        # deferred: heavy (torch)
        from kefu.train.quant import quantize_int8_weights

        # int8 kernel per decode step, bf16 GEMM for prefill; the output projection too (an untied int8 copy)
        # unless the vocabulary trim replaced it
        quantize_int8_weights(model, head=True, prefill_copy=True)
    elif quantize != "none":
        raise ValueError(f"quantize must be none, int8 or int8-weight, not {quantize!r}")
    return model.eval(), trimmed_vocab


def attach_adapter(model, name: str, path: str):
    """``model`` with the LoRA adapter at ``path`` loaded as ``name`` (replacing one of that name): the model
    itself when it is already a PEFT model, else a new PEFT wrapper."""
    from peft import PeftModel

    if isinstance(model, PeftModel):
        if name in model.peft_config:
            model.delete_adapter(name)
        model.load_adapter(path, adapter_name=name)
        return model
    return PeftModel.from_pretrained(model, path, adapter_name=name).eval()


def stop_ids(model, tokenizer) -> set[int]:
    """Token ids that end an answer: the tokenizer's and the generation config's EOS, and the template's stops."""
    eos = set()
    for source in (getattr(tokenizer, "eos_token_id", None), getattr(model.generation_config, "eos_token_id", None)):
        if isinstance(source, int):
            eos.add(source)
        elif source:
            eos.update(int(x) for x in source)
    eos.update(stop_token_ids(tokenizer))
    return eos


def top_filters(generation_config):
    """The model's top-k / top-p sampling filters (what ``generate`` would apply), built once per engine."""
    from transformers import LogitsProcessorList, TopKLogitsWarper, TopPLogitsWarper

    filters = LogitsProcessorList()
    if getattr(generation_config, "top_k", None):
        filters.append(TopKLogitsWarper(generation_config.top_k))
    if getattr(generation_config, "top_p", None) and generation_config.top_p < 1.0:
        filters.append(TopPLogitsWarper(generation_config.top_p))
    return filters
