"""A conv narrowed on both its filters and its input channels: the one-pass copy used for
large weights gives exactly ``weight[rows][:, cols]`` (the two-pass reference), as the
small-weight path does."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from secateurs.graph.layers import CONV, Journal
from secateurs.graph.layers.conv import _ONE_PASS


@pytest.mark.parametrize("width", [16, 256])  # 16*16*9 weights: two passes; 256*256*9 >= 2**19: one pass
@pytest.mark.parametrize("channels_last", [False, True])
def test_rows_and_columns_removed_equal_the_two_pass_reference(width, channels_last):
    torch.manual_seed(0)
    conv = nn.Conv2d(width, width, 3, padding=1, bias=True)
    if channels_last:
        conv = conv.to(memory_format=torch.channels_last)
    assert (conv.weight.numel() >= _ONE_PASS) == (width == 256)
    w, b = conv.weight.detach().clone(), conv.bias.detach().clone()
    out_rm, in_rm = list(range(0, width, 3)), [1, 2, width - 1]
    rows = torch.tensor([i for i in range(width) if i not in out_rm])
    cols = torch.tensor([i for i in range(width) if i not in in_rm])

    j = Journal()
    CONV.prune(j, conv, {"out": out_rm, "in": in_rm})

    assert torch.equal(conv.weight, w.index_select(0, rows).index_select(1, cols))
    assert torch.equal(conv.bias, b.index_select(0, rows))
    assert (conv.in_channels, conv.out_channels) == (len(cols), len(rows))
    assert isinstance(conv.weight, nn.Parameter) and conv.weight.requires_grad
    x = torch.randn(2, len(cols), 5, 5)
    ref = torch.nn.functional.conv2d(x, w[rows][:, cols], b[rows], padding=1)
    torch.testing.assert_close(conv(x), ref)
    j.undo()  # the journal puts the original weight back
    assert torch.equal(conv.weight, w) and conv.in_channels == width
