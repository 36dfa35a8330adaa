"""Model: both architectures from one config, unit outputs, a learned lambda, order-aware encoder, the
true anchoring bound."""
import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import small_config
from tune_p7.core.model import anchor_blend, build_model


@pytest.mark.parametrize("arch", ["transformer", "lstm"])
def test_builds_from_config_and_outputs_unit_vectors(arch):
    model = build_model(small_config(arch=arch, context_length=5), dim=32)
    p = model(F.normalize(torch.randn(3, 5, 32), dim=-1))
    assert p.q.shape == p.raw.shape == (3, 32)
    assert torch.allclose(p.q.norm(dim=-1), torch.ones(3), atol=1e-5)


def test_default_sizes_match_the_original():
    from tune_p7.core.config import P7Config

    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert abs(count(build_model(P7Config(), 768)) / 1e6 - 13.7) < 0.1
    assert abs(count(build_model(P7Config(arch="lstm"), 768)) / 1e6 - 5.4) < 0.1


@pytest.mark.parametrize("arch", ["transformer", "lstm"])
def test_lambda_receives_a_gradient_and_starts_at_init(arch):
    model = build_model(small_config(arch=arch, lambda_init=0.7), dim=16)
    assert math.isclose(model.anchor.lam().item(), 0.7, rel_tol=1e-5)
    p = model(F.normalize(torch.randn(4, 3, 16), dim=-1))
    (p.q[:, 0].sum()).backward()
    assert model.anchor.logit.grad is not None and model.anchor.logit.grad.abs().item() > 0


def test_transformer_sees_the_order_of_the_context():
    torch.manual_seed(0)
    model = build_model(small_config(dropout=0.0), dim=16).eval()
    x = F.normalize(torch.randn(1, 3, 16), dim=-1)
    swapped = x[:, [1, 0, 2]]  # same last chunk, same centroid, other order
    assert not torch.allclose(model(x).raw, model(swapped).raw, atol=1e-4)


@settings(max_examples=200, deadline=None)
@given(st.floats(0.0, 1.0), st.integers(0, 2**31 - 1))
def test_anchoring_bound_holds_when_raw_is_not_opposite_the_centroid(lam, seed):
    g = torch.Generator().manual_seed(seed)
    ctx = F.normalize(torch.randn(1, 4, 8, generator=g, dtype=torch.float64), dim=-1)
    raw = F.normalize(torch.randn(1, 8, generator=g, dtype=torch.float64), dim=-1)
    c = F.normalize(ctx.mean(1), dim=-1)
    if (raw * c).sum() < 0:
        raw = raw - 2 * (raw * c).sum() * c  # reflect to the centroid's side
    q = anchor_blend(raw, ctx, torch.tensor(lam, dtype=torch.float64))
    bound = (1 - lam) / math.sqrt(lam ** 2 + (1 - lam) ** 2)
    assert (q * c).sum().item() >= bound - 1e-9


def test_anchoring_bound_fails_for_an_opposite_prediction():
    ctx = torch.tensor([[[1.0, 0.0], [1.0, 0.0]]])
    raw = torch.tensor([[-1.0, 0.0]])  # cos(raw, centroid) = -1
    q = anchor_blend(raw, ctx, torch.tensor(0.8))
    bound = 0.2 / math.sqrt(0.8 ** 2 + 0.2 ** 2)
    assert (q * ctx.mean(1)).sum().item() == pytest.approx(-1.0)
    assert (q * ctx.mean(1)).sum().item() < bound
