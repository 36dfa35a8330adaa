"""The speed tricks (tune_p7/core/fastpath.py) compute what they replace."""
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from conftest import small_config
from tune_p7.core import fastpath
from tune_p7.core.fastpath import RETRIEVAL_BLOCK, release_free_memory, use_bf16
from tune_p7.core.loop import TrainStep, make_optimizer
from tune_p7.core.metrics import retrieval_ranks_xctx
from tune_p7.core.model import build_model
from tune_p7.data.batches import SplitTensors
from tune_p7.data.loading import load


def test_last_position_shortcut_equals_the_full_encoder():
    """forward computes only the last position in the last layer: the same as encoder(h)[:, -1] (eval mode)."""
    torch.manual_seed(0)
    model = build_model(small_config(context_length=5, n_layers=3), dim=32).eval()
    x = F.normalize(torch.randn(6, 5, 32), dim=-1)
    with torch.no_grad():
        h = model.proj(x) + model.pos[-x.shape[1]:]
        full = model.anchor(model.head(model.encoder(h)[:, -1]), x)
        fast = model(x)
    assert torch.allclose(fast.raw, full.raw, atol=1e-5)
    assert torch.allclose(fast.q, full.q, atol=1e-5)


@pytest.mark.parametrize("p", [0.1, 0.3])
def test_dropout_keeps_1_minus_p_scaled_and_is_seeded(p):
    """The encoder's dropout: each element kept with probability 1 - p (to 2^-16) and scaled by 1 / (1 - p), the same
    mask for the same torch seed, none in eval mode."""
    drop = build_model(small_config(dropout=p), dim=16).encoder.layers[0].dropout.train()
    x = torch.ones(1_000_003)  # not a multiple of 4: the mask is cut from whole 64-bit draws
    torch.manual_seed(0)
    y = drop(x)
    kept = y != 0
    assert abs(float(kept.float().mean()) - (1 - p)) < 5 * math.sqrt(p * (1 - p) / x.numel())
    assert torch.allclose(y[kept], torch.full_like(y[kept], 1 / (1 - p)))
    torch.manual_seed(0)
    assert torch.equal(drop(x), y)
    assert not torch.equal(drop(x), y)  # the next call draws a new mask
    assert torch.equal(drop.eval()(x), x)


@pytest.mark.parametrize("grad_clip", [1e-3, 1e6])  # clipping on every step / never
def test_clipping_inside_fused_adamw_equals_clip_grad_norm(small_store, grad_clip):
    """TrainStep clips by scaling the gradients inside fused AdamW (clip_and_step); after a few steps the weights match
    clip_grad_norm_ followed by the same AdamW (fp32, same batches, same dropout)."""
    cfg = small_config(precision="fp32", grad_clip=grad_clip, dropout=0.1)
    st = SplitTensors(load(small_store).train, cfg.context_length)
    torch.manual_seed(0)
    models = {"inside": build_model(cfg, st.chunks.shape[1]), "clip_grad_norm_": build_model(cfg, st.chunks.shape[1])}
    start = {k: v.clone() for k, v in models["inside"].state_dict().items()}
    models["clip_grad_norm_"].load_state_dict(start)
    steps = {k: TrainStep(cfg, m, make_optimizer(cfg, m), st, bf16=False) for k, m in models.items()}
    ref = steps["clip_grad_norm_"]
    assert ref.opt.defaults["fused"]
    ref.update = lambda: (torch.nn.utils.clip_grad_norm_(ref.params, grad_clip), ref.opt.step())
    for step in steps.values():
        torch.manual_seed(1)
        gen = torch.Generator().manual_seed(1)
        for s in range(3):
            step(torch.arange(s * 16, (s + 1) * 16), gen, cfg.w_teacher)
    after = {k: m.state_dict() for k, m in models.items()}
    for name, w in after["inside"].items():
        torch.testing.assert_close(w, after["clip_grad_norm_"][name], rtol=1e-5, atol=1e-6)
    assert any(not torch.equal(w, start[name]) for name, w in after["inside"].items())  # it trained


def torch_wrapper_calls(fn) -> int:
    """How often ``fn()`` entered torch.optim's step wrapper (_use_grad_for_differentiable's _use_grad, which
    imports torch._dynamo), seen through sys.setprofile."""
    calls = []
    sys.setprofile(lambda frame, event, arg: calls.append(1) if event == "call" and
                   frame.f_code.co_name == "_use_grad" else None)
    try:
        fn()
    finally:
        sys.setprofile(None)
    return len(calls)


@pytest.mark.parametrize("fused", [True, False])
def test_adamw_takes_torchs_steps_and_keeps_its_state_dict(fused):
    """fastpath.AdamW against torch.optim.AdamW (built first: torch then hooks its class's step) from the same weights
    and gradients, a clipping grad_scale where fused: the same weights bit for bit and the same state dict, and
    never through torch's step wrapper. After each loads the other's state, one more step still agrees."""
    torch.manual_seed(0)
    theirs, ours = torch.nn.Linear(8, 4), torch.nn.Linear(8, 4)
    ours.load_state_dict(theirs.state_dict())
    start = ours.weight.detach().clone()
    opts = [torch.optim.AdamW(theirs.parameters(), lr=1e-2, weight_decay=0.1, fused=fused),
            fastpath.AdamW(ours.parameters(), lr=1e-2, weight_decay=0.1, fused=fused)]
    x = torch.randn(6, 16, 8)

    def step(m, opt, xb):
        m(xb).pow(2).sum().backward()
        opt.grad_scale = torch.tensor(1.5) if fused else None
        opt.step()
        opt.zero_grad()
        assert all(p.grad is None for p in m.parameters())

    wrapped = {}
    for m, opt in zip((theirs, ours), opts):
        wrapped[type(opt)] = sum(torch_wrapper_calls(lambda: step(m, opt, xb)) for xb in x[:5])
    assert wrapped == {torch.optim.AdamW: 5, fastpath.AdamW: 0}
    assert all(torch.equal(a, b) for a, b in zip(ours.parameters(), theirs.parameters()))
    assert not torch.equal(ours.weight, start)

    def same_state(a: dict, b: dict) -> bool:
        return a["param_groups"] == b["param_groups"] and a["state"].keys() == b["state"].keys() and all(
            torch.equal(a["state"][k][n], b["state"][k][n]) for k in a["state"] for n in a["state"][k])

    assert same_state(opts[0].state_dict(), opts[1].state_dict())
    mine, its = opts[1].state_dict(), opts[0].state_dict()
    opts[1].load_state_dict(its)
    opts[0].load_state_dict(mine)
    for m, opt in zip((theirs, ours), opts):
        step(m, opt, x[5])
    assert all(torch.equal(a, b) for a, b in zip(ours.parameters(), theirs.parameters()))
    assert same_state(opts[0].state_dict(), opts[1].state_dict())


def test_adamw_refuses_differentiable():
    with pytest.raises(ValueError, match="differentiable"):
        fastpath.AdamW(torch.nn.Linear(2, 2).parameters(), differentiable=True)


def test_training_and_a_restore_import_no_torch_dynamo(small_store, tmp_path):
    """A trial's whole fit (bf16 autocast, fused steps with clipping, the checkpoint's state dict), then a restore
    from that checkpoint as a resumed trial does it, in a fresh process: torch._dynamo stays unimported (its import
    costs a trial worker 1.2-1.9 CPU-s before the first epoch)."""
    prog = ("import sys\nfrom conftest import small_config\nfrom tune_p7.core.loop import fit\n"
            "from tune_p7.data.loading import load\nfrom tune_p7.tuning import checkpoint\n"
            f"data, ckpt = load({str(small_store)!r}), {str(tmp_path)!r}\n"
            "cfg = small_config(precision='bf16', grad_clip=1e-3)\n"
            "fit(cfg.replace(epochs=2), data, report=lambda m, st: st and checkpoint.save(ckpt, st, m))\n"
            "rows = fit(cfg.replace(epochs=3), data, state=checkpoint.load(ckpt))\n"
            "print([r['epoch'] for r in rows], 'torch._dynamo' in sys.modules)\n")
    r = subprocess.run([sys.executable, "-c", prog], capture_output=True, text=True, timeout=120,
                       cwd=Path(__file__).resolve().parents[1])
    assert r.returncode == 0 and r.stdout.split() == ["[3]", "False"], r.stdout + r.stderr[-2000:]


def test_retrieval_in_blocks_ranks_as_one_matmul():
    """Ranks computed RETRIEVAL_BLOCK queries at a time equal those of a single (N, M) score matrix."""
    g = torch.Generator().manual_seed(0)
    n, m = 3 * RETRIEVAL_BLOCK + 5, 400
    queries = F.normalize(torch.randn(n, 16, generator=g), dim=-1)
    bank = F.normalize(torch.randn(m, 16, generator=g), dim=-1)
    targets, context = torch.randint(m, (n,), generator=g), torch.randint(m, (n, 4), generator=g)
    blocked = retrieval_ranks_xctx(queries, bank, targets, context, RETRIEVAL_BLOCK)
    whole = retrieval_ranks_xctx(queries, bank, targets, context, n)
    assert all(torch.equal(a, b) for a, b in zip(blocked, whole))


def test_releasing_free_memory_keeps_live_tensors():
    """malloc_trim hands back only free heap pages: tensors alive across it are unchanged (glibc: it is found)."""
    x = torch.randn(1000, 100)
    before = x.clone()
    garbage = [torch.randn(1000, 1000) for _ in range(4)]  # 32 MB freed before the trim
    del garbage
    release_free_memory()
    assert torch.equal(x, before)
    assert fastpath._MALLOC_TRIM is not None  # this machine is glibc Linux


def test_bf16_follows_precision_and_auto_follows_the_timed_check():
    """precision bf16 / fp32 decide alone; auto is bf16 on CPU exactly when the timed matmul check says so."""
    assert use_bf16(small_config(precision="bf16")) and not use_bf16(small_config(precision="fp32"))
    assert use_bf16(small_config(precision="auto")) == fastpath.cpu_bf16_is_fast()
    assert math.isfinite(fastpath.bf16_matmul_speedup(reps=1)) and fastpath.bf16_matmul_speedup(reps=1) > 0
