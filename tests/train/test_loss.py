import pytest
import torch
import torch.nn.functional as F

from kefu.train.loss import linear_cross_entropy


def _plain(hidden, weight, targets, softcap=None):
    logits = F.linear(hidden, weight).float()
    if softcap:
        logits = torch.tanh(logits / softcap) * softcap
    return F.cross_entropy(logits, targets, reduction="sum")


@pytest.mark.parametrize("softcap", [None, 3.0])
@pytest.mark.parametrize("chunk_rows", [None, 3])
def test_equals_plain_cross_entropy_and_its_gradient(softcap, chunk_rows):
    torch.manual_seed(0)
    weight = torch.randn(97, 16, dtype=torch.float64)
    hidden = torch.randn(10, 16, dtype=torch.float64)
    targets = torch.randint(0, 97, (10,))
    mine = hidden.clone().requires_grad_()
    loss = linear_cross_entropy(mine, weight, targets, softcap=softcap, chunk_rows=chunk_rows)
    (loss * 0.5).backward()  # the upstream gradient scales the stored one
    ref = hidden.clone().requires_grad_()
    expected = _plain(ref, weight, targets, softcap)
    (expected * 0.5).backward()
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss, expected, rtol=1e-6, atol=1e-5)
    torch.testing.assert_close(mine.grad, ref.grad, rtol=1e-5, atol=1e-7)


def test_bf16_autocast_matches_the_autocast_linear():
    torch.manual_seed(1)
    weight = torch.randn(300, 32).to(torch.bfloat16)
    hidden = torch.randn(7, 32, dtype=torch.bfloat16)
    targets = torch.randint(0, 300, (7,))
    a, b = hidden.clone().requires_grad_(), hidden.clone().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = linear_cross_entropy(a, weight, targets)
        expected = _plain(b, weight, targets)
    loss.backward()
    expected.backward()
    torch.testing.assert_close(loss, expected, rtol=1e-4, atol=1e-3)
    assert a.grad.dtype == torch.bfloat16
    torch.testing.assert_close(a.grad, b.grad, rtol=2e-2, atol=2e-2)


def test_a_target_whose_probability_underflows_keeps_an_exact_finite_loss():
    weight = torch.zeros(5, 2)
    weight[0, 0], weight[1, 0] = 200.0, -200.0  # target 1 is e^-400 below target 0: probability 0 in fp32
    hidden = torch.tensor([[1.0, 0.0], [1.0, 0.0]], requires_grad=True)
    targets = torch.tensor([1, 0])
    loss = linear_cross_entropy(hidden, weight, targets, chunk_rows=1)
    assert torch.isfinite(loss)
    expected = _plain(hidden.detach().double(), weight.double(), targets)
    assert float(loss.detach()) == pytest.approx(float(expected), rel=1e-5)


def test_a_trainable_projection_gets_its_gradient_and_empty_input_gives_zero():
    weight = torch.randn(11, 4, requires_grad=True)
    hidden = torch.randn(3, 4, requires_grad=True)
    linear_cross_entropy(hidden, weight, torch.tensor([1, 2, 3])).backward()
    assert weight.grad is not None and hidden.grad is not None
    empty = torch.randn(0, 4, requires_grad=True)
    loss = linear_cross_entropy(empty, weight.detach(), torch.tensor([], dtype=torch.long))
    loss.backward()
    assert float(loss.detach()) == 0.0 and empty.grad is not None


def test_bf16_chunks_stay_accurate_for_confident_and_unlikely_targets():
    """bf16 logits take the path without an fp32 copy: the loss of every token and the gradient of every row must
    stay within bf16's relative precision of the exact values, also where p(target) = 0.999 (where a rounded
    p - 1 would be off by up to 4x) and where it is tiny."""
    torch.manual_seed(3)
    hidden = torch.randn(12, 16)
    weight = torch.randn(4000, 16) * 0.3
    targets = torch.randint(0, 4000, (12,))
    for row in range(6):  # confident: the target's logit ~7-12 above the rest
        weight[targets[row]] = hidden[row] * (13 + row) / hidden[row].norm() ** 2
    h, w = hidden.bfloat16(), weight.bfloat16()
    logits = (h @ w.t()).double()  # the bf16 logits both paths see, exactly
    exact_terms = -torch.log_softmax(logits, dim=-1)[torch.arange(12), targets]
    assert float(torch.exp(-exact_terms[:6]).min()) > 0.95  # really confident rows
    exact_grad = (torch.softmax(logits, dim=-1) - torch.nn.functional.one_hot(targets, 4000)) @ w.double()
    for n in range(12):
        a = h[n:n + 1].clone().requires_grad_()
        loss = linear_cross_entropy(a, w, targets[n:n + 1])
        loss.backward()
        assert abs(float(loss) - float(exact_terms[n])) <= 2 ** -7 * float(exact_terms[n]) + 1e-6, n
        error = float((a.grad.double() - exact_grad[n]).norm() / exact_grad[n].norm())
        assert error < 2e-2, (n, error)


def test_fp16_chunks_recompute_probabilities_below_the_normal_range():
    """fp16 stores probabilities under 6e-5 as subnormals with few bits: those targets get their exact loss."""
    torch.manual_seed(4)
    hidden = torch.randn(40, 16)
    weight = torch.randn(5000, 16) * 0.8
    targets = torch.randint(0, 5000, (40,))
    h, w = hidden.half(), weight.half()
    logits = (h.float() @ w.float().t()).double()
    exact = -torch.log_softmax(logits, dim=-1)[torch.arange(40), targets]
    assert float(torch.exp(-exact).min()) < 6e-5  # some targets are in fp16's subnormal range
    for n in range(40):
        loss = linear_cross_entropy(h[n:n + 1], w, targets[n:n + 1])
        assert abs(float(loss) - float(exact[n])) <= 2 ** -7 * float(exact[n]) + 1e-3, n


def _peaked(rows=64, vocab=30000, dim=32, shift=0.0, seed=5):
    """bf16 hidden states and an output projection whose softmax looks like a trained LM's: a few likely tokens per
    position and a long flat tail holding ~10% of the mass below the floor. ``shift`` adds a common direction to
    every output embedding (softmax ignores it, so the gradient must too)."""
    torch.manual_seed(seed)
    hidden = torch.randn(rows, dim)
    weight = torch.randn(vocab, dim) * 0.2 / dim ** 0.5
    for row in range(rows):  # three likely tokens for each position
        tokens = torch.randint(0, vocab, (3,))
        weight[tokens] = hidden[row] * torch.tensor([11.0, 10.5, 10.0])[:, None] / hidden[row].norm() ** 2
    weight += shift * torch.randn(dim) / dim ** 0.5
    targets = torch.randint(0, vocab, (rows,))
    return hidden.bfloat16(), weight.bfloat16(), targets


def _exact_grad(h, w, targets):
    logits = (h.double() @ w.double().t())
    return (torch.softmax(logits, -1) - F.one_hot(targets, w.shape[0])) @ w.double()


def _filtered(h, w, targets, floor, chunk_rows=16):
    a = h.clone().requires_grad_()
    loss = linear_cross_entropy(a, w, targets, chunk_rows=chunk_rows, grad_floor=floor)
    loss.backward()
    return loss.detach(), a.grad.double()


def test_filtered_backward_keeps_the_loss_and_stays_within_bf16_error_of_the_gradient():
    """The filter drops most columns here (checked), the loss does not change at all and the gradient moves by
    no more than bf16's own rounding does; a common direction in the output embeddings (which softmax ignores)
    must not leak into the gradient through the left-out mass."""
    from kefu.train import loss as module

    for shift in (0.0, 40.0):
        h, w, targets = _peaked(shift=shift)
        exact = _exact_grad(h, w, targets)
        dense_loss, dense = _filtered(h, w, targets, 0.0)
        probs = torch.softmax(h.float() @ w.float().t(), -1)
        kept = float((probs.view(4, 16, -1).amax(1) >= 2 ** -16).float().mean())
        tail = float((probs * (probs < 2 ** -16)).sum(-1).min())
        assert kept < 0.05 and tail > 0.15, (kept, tail)  # most columns, and much of each row's mass, left out
        loss, grad = _filtered(h, w, targets, 2 ** -16)
        assert torch.equal(loss, dense_loss)
        bf16_error = float((dense - exact).norm() / exact.norm())
        error = float((grad - exact).norm() / exact.norm())
        assert error < max(2 * bf16_error, 5e-3), (shift, error, bf16_error)
        row_error = ((grad - exact).norm(dim=1) / exact.norm(dim=1)).max()
        dense_row_error = ((dense - exact).norm(dim=1) / exact.norm(dim=1)).max()
        assert float(row_error) < max(2 * float(dense_row_error), 1e-2), shift

    # without spreading the left-out mass on the mean embedding, the common direction shows in the gradient
    real = module._filtered_product
    try:
        module._filtered_product = lambda q, t, w, f, m: real(q, t, w, f, torch.zeros_like(m))
        h, w, targets = _peaked(shift=40.0)
        _, grad = _filtered(h, w, targets, 2 ** -16)
    finally:
        module._filtered_product = real
    exact = _exact_grad(h, w, targets)
    assert float((grad - exact).norm() / exact.norm()) > 2e-2


def test_filtered_backward_takes_the_plain_product_when_most_columns_count():
    torch.manual_seed(6)
    h, w = torch.randn(9, 16).bfloat16(), (torch.randn(300, 16) * 0.1).bfloat16()  # nearly uniform softmax
    targets = torch.randint(0, 300, (9,))
    assert torch.equal(_filtered(h, w, targets, 2 ** -16)[1], _filtered(h, w, targets, 0.0)[1])
    fp32 = torch.randn(9, 16, requires_grad=True)  # fp32 chunks are never filtered
    linear_cross_entropy(fp32, w.float(), targets, grad_floor=0.5).backward()
    plain = fp32.detach().clone().requires_grad_()
    _plain(plain, w.float(), targets).backward()
    torch.testing.assert_close(fp32.grad, plain.grad, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="grad_floor"):
        linear_cross_entropy(fp32, w.float(), targets, grad_floor=1.0)
