import torch
from torch import nn

from kefu.train.dropout import BitsDropout, use_bits_dropout
from tiny import make_model


def test_drop_rate_scale_and_gradient_follow_the_mask():
    torch.manual_seed(0)
    drop = BitsDropout(0.1)
    x = torch.ones(400, 500, requires_grad=True)
    y = drop(x)
    dropped = (y == 0).float().mean().item()
    assert abs(dropped - 0.1) < 0.003  # 200,000 draws: 0.003 is > 4 standard deviations
    assert torch.allclose(y[y != 0], torch.tensor(1 / 0.9))
    y.sum().backward()
    assert torch.equal(x.grad == 0, y == 0)  # the gradient passes exactly where the input did
    # rows are not correlated: the four 16-bit draws of one 64-bit integer are independent
    assert abs((y[:, 0::4] == 0).float().mean().item() - 0.1) < 0.005


def test_eval_mode_and_p0_are_identity_and_seed_repeats():
    x = torch.randn(3, 5)
    drop = BitsDropout(0.3).eval()
    assert drop(x) is x
    train = BitsDropout(0.3)
    torch.manual_seed(5)
    a = train(x)
    torch.manual_seed(5)
    assert torch.equal(a, train(x))
    assert BitsDropout(0.0)(x) is x


def test_replaces_every_lora_dropout_of_a_peft_model():
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(make_model("llama"), LoraConfig(r=4, lora_dropout=0.1, target_modules="all-linear"))
    lora_layers = [m for m in model.modules() if isinstance(getattr(m, "lora_dropout", None), nn.ModuleDict)]
    assert use_bits_dropout(model) == len(lora_layers) > 0
    assert all(isinstance(m.lora_dropout["default"], BitsDropout) for m in lora_layers)


def test_an_impossible_probability_is_refused():
    import pytest

    for p in (-0.1, 1.0):
        with pytest.raises(ValueError, match="dropout probability"):
            BitsDropout(p)
