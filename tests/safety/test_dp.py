"""DP-SGD on LoRA adapters of tiny random models: trains, and spends no more than the target ε."""

import warnings

import pytest
import torch

from kefu.safety.dp import epsilon_spent, make_private, noise_multiplier, unwrap
from kefu.types import KefuError

peft = pytest.importorskip("peft")
transformers = pytest.importorskip("transformers")

N, L, V = 256, 12, 64


def _data():
    g = torch.Generator().manual_seed(1)
    starts = torch.randint(0, V // 2, (N, 1), generator=g)
    return (starts + torch.arange(L)) % V  # learnable: each sequence counts upwards


class _DS(torch.utils.data.Dataset):
    def __init__(self, ids):
        self.ids = ids

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, i):
        return {"input_ids": self.ids[i], "attention_mask": torch.ones(L, dtype=torch.long), "labels": self.ids[i]}


def _model(kind):
    torch.manual_seed(0)
    if kind == "llama":
        cfg = transformers.LlamaConfig(vocab_size=V, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
        base = transformers.LlamaForCausalLM(cfg)
    else:
        cfg = transformers.Gemma3TextConfig(vocab_size=V, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                            num_attention_heads=2, num_key_value_heads=1, head_dim=16,
                                            max_position_embeddings=64, sliding_window=16)
        base = transformers.Gemma3ForCausalLM(cfg)
    lora = peft.LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj", "o_proj"], lora_dropout=0.0)
    return peft.get_peft_model(base, lora)


def _loss(model, ids):
    model.eval()
    with torch.no_grad():
        return model(input_ids=ids[:64], labels=ids[:64]).loss.item()


@pytest.mark.parametrize("kind", ["llama", "gemma3"])
def test_dp_lora_trains_within_budget(kind):
    ids = _data()
    model = _model(kind)
    frozen_before = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    before = _loss(model, ids)
    loader = torch.utils.data.DataLoader(_DS(ids), batch_size=32)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-2)
    epsilon, delta, epochs = 8.0, 1e-3, 3
    torch.manual_seed(0)
    dp_model, dp_opt, dp_loader, engine = make_private(model, optimizer, loader, epsilon=epsilon, delta=delta,
                                                       epochs=epochs, seed=0)
    assert noise_multiplier(dp_opt) > 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(epochs):
            dp_model.train()
            for batch in dp_loader:
                if batch["input_ids"].shape[0] == 0:
                    continue
                dp_opt.zero_grad()
                dp_model(**batch).loss.backward()
                dp_opt.step()
    after = _loss(unwrap(dp_model), ids)
    spent = epsilon_spent(engine, delta)
    assert 0 < spent <= epsilon + 1e-6
    assert after < before - 0.05, (before, after)
    # Only the adapters moved.
    for name, p in unwrap(dp_model).named_parameters():
        if name in frozen_before:
            assert torch.equal(p, frozen_before[name]), name


def test_argument_checks():
    model = _model("llama")
    loader = torch.utils.data.DataLoader(_DS(_data()), batch_size=32)
    adapters = [p for p in model.parameters() if p.requires_grad]
    with pytest.raises(KefuError, match="epsilon"):
        make_private(model, torch.optim.SGD(adapters, lr=0.1), loader, epsilon=0, delta=1e-5, epochs=1)
    with pytest.raises(KefuError, match="delta"):
        make_private(model, torch.optim.SGD(adapters, lr=0.1), loader, epsilon=1, delta=1.5, epochs=1)
    with pytest.raises(KefuError, match="frozen parameter"):
        make_private(model, torch.optim.SGD(model.parameters(), lr=0.1), loader, epsilon=1, delta=1e-5, epochs=1)
