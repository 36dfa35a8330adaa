"""Batches: a split's windows gathered as context, next, prev and ids, and hard negatives drawn from the window's
own article."""
import numpy as np
import torch

from tune_p7.data.batches import SplitTensors
from tune_p7.data.loading import load


def test_batch_parts_and_hard_negatives_from_the_same_article(small_store):
    split = load(small_store).train
    st = SplitTensors(split, 5)
    idx = torch.arange(0, 40, 3)
    b = st.batch(idx)
    w = st.windows[idx]
    assert torch.equal(b.next, st.chunks[w[:, -1]].float())
    assert torch.equal(b.prev, st.chunks[w[:, -2]].float())
    assert torch.equal(b.prev_gate, st.chunks[w[:, -3]].float())
    rows, valid = st.hard_negatives(idx, 6, torch.Generator().manual_seed(0))
    assert valid.all()
    article = np.searchsorted(split.offsets, rows.numpy(), side="right") - 1
    assert (article == np.searchsorted(split.offsets, w[:, :1].numpy(), side="right") - 1).all()
    assert not (rows.unsqueeze(-1) == w.unsqueeze(1)).any()  # neither the target nor in the window
