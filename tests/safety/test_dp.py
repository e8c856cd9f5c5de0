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


class _SumLoss(torch.nn.Module):
    """Token-summed next-token loss, like kefu's SupervisedLM (loss_reduction='sum')."""

    def __init__(self, model, alias: bool = False):
        super().__init__()
        self.model = model
        if alias:  # registers the decoder a second time, as a naive wrapper would
            self.body = model.get_base_model().model

    def forward(self, input_ids):
        logits = self.model(input_ids=input_ids).logits[:, :-1]
        return torch.nn.functional.cross_entropy(logits.reshape(-1, V), input_ids[:, 1:].reshape(-1), reduction="sum")


def _nonzero_lora_model():
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(vocab_size=V, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    return peft.get_peft_model(transformers.LlamaForCausalLM(cfg),
                               peft.LoraConfig(r=4, target_modules=["q_proj", "v_proj"], lora_dropout=0.0,
                                               init_lora_weights=False))


def test_per_sample_gradients_are_exact():
    """What DP clips must be each example's own gradient (checked against autograd one example at a time)."""
    import copy

    model = _nonzero_lora_model()
    reference = _SumLoss(copy.deepcopy(model))
    wrapper = _SumLoss(model)
    ids = _data()[:16]
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(ids), batch_size=8)
    optimizer = torch.optim.SGD([p for p in wrapper.parameters() if p.requires_grad], lr=0.1)
    dp_model, *_ = make_private(wrapper, optimizer, loader, epsilon=8, delta=1e-3, epochs=1, loss_reduction="sum")
    dp_model(ids[:3]).backward()
    trainable = [p for p in wrapper.parameters() if p.requires_grad]
    ref_trainable = [p for p in reference.parameters() if p.requires_grad]
    for i in range(3):
        grads = torch.autograd.grad(reference(ids[i:i + 1]), ref_trainable)
        for p, g in zip(trainable, grads):
            assert g.abs().max() > 0
            assert torch.allclose(p.grad_sample[i], g, atol=1e-5)


def test_aliased_modules_refused():
    """Opacus would hook a module registered under two names twice and double its per-sample gradients."""
    wrapper = _SumLoss(_nonzero_lora_model(), alias=True)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(_data()[:16]), batch_size=8)
    optimizer = torch.optim.SGD([p for p in wrapper.parameters() if p.requires_grad], lr=0.1)
    with pytest.raises(KefuError, match="reachable twice"):
        make_private(wrapper, optimizer, loader, epsilon=8, delta=1e-3, epochs=1, loss_reduction="sum")
