"""A split as torch tensors on one device, and the training and evaluation batches gathered from it.

The chunk matrix and the window table stay the split's own arrays (zero-copy views, shared through Ray's object
store); a batch gathers its vectors in one indexing op.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch

from tune_p7.data.loading import Split


@dataclass
class Batch:
    context: torch.Tensor  # (B, K, D) float32
    next: torch.Tensor  # (B, D) float32: the target chunk
    prev_gate: torch.Tensor  # (B, D) float32: ctx[-2], the "prev" the directional gate compares with
    ids: torch.Tensor  # (B, K+1) int64 chunk ids (context..., target)

    @property
    def prev(self) -> torch.Tensor:
        """ctx[-1]: the chunk right before the target (the prev of the margin loss and cos_prev)."""
        return self.context[:, -1]


class SplitTensors:
    """A split's arrays as torch tensors (zero-copy views of the numpy arrays) on one device."""

    def __init__(self, split: Split, k: int, device: str = "cpu"):
        with warnings.catch_warnings():  # object-store arrays are read-only; nothing here writes to them
            warnings.simplefilter("ignore", UserWarning)
            self.chunks = torch.from_numpy(split.chunks).to(device)
            self.windows = torch.from_numpy(np.ascontiguousarray(split.windows(k))).to(device)
            self.offsets = torch.from_numpy(split.offsets).to(device)
        self.k = k
        self.device = device
        # the article of each window, found from its target row
        self.window_article = torch.searchsorted(self.offsets, self.windows[:, -1].contiguous(), right=True) - 1

    def __len__(self) -> int:
        return len(self.windows)

    def batch(self, idx: torch.Tensor) -> Batch:
        rows = self.windows[idx]
        vec = self.chunks[rows].float()  # one gather: (B, K+1, D)
        return Batch(vec[:, :-1], vec[:, -1], vec[:, -3], rows)

    def hard_negatives(self, idx: torch.Tensor, h: int, gen: torch.Generator):
        """Sample h chunks per window uniformly from its own article, none in the window.

        Returns ((B, h) chunk rows, (B, h) valid); a window whose article has no other chunk gets valid False.
        Exact, no rejection: draw r among the article's free positions, then step over the window's positions
        (sorted ascending: x += [p <= x] for each p).
        """
        rows = self.windows[idx]
        art = self.window_article[idx]
        start = self.offsets[art].unsqueeze(1)
        count = self.offsets[art + 1].unsqueeze(1) - start
        big = torch.iinfo(torch.long).max
        pos = rows - start
        pos = torch.where((pos >= 0) & (pos < count), pos, big).sort(dim=1).values
        pos[:, 1:] = torch.where(pos[:, 1:] == pos[:, :-1], big, pos[:, 1:])  # a chunk twice in one window
        free = count - (pos < big).sum(1, keepdim=True)
        x = (torch.rand(len(idx), h, generator=gen).to(self.device) * free).long()  # CPU generator: same draws anywhere
        for j in range(pos.shape[1]):
            x = x + (pos[:, j:j + 1] <= x)
        return start + x, (free > 0).expand(-1, h)
