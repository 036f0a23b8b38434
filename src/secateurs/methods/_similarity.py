"""fcs's within-group machinery on plain matrices: 1-D K-means bins of the channels' feature
L1, cosine similarity from a Gram matrix, and the greedy removal order (see :mod:`.fcs`)."""

from __future__ import annotations

import numpy as np
import torch


def kmeans_bins(values: np.ndarray, bins: int, seed: int, restarts: int = 4) -> np.ndarray:
    """1-D K-means labels; at most as many bins as distinct values, deterministic for ``seed``."""
    from sklearn.cluster import KMeans
    from threadpoolctl import threadpool_limits

    k = min(bins, len(np.unique(values)))
    if k <= 1:
        return np.zeros(len(values), dtype=np.int64)
    # One thread: sklearn's multi-threaded Lloyd step sums partial results in whatever order
    # the threads finish, which can move a bin boundary between runs (or between DDP ranks).
    with threadpool_limits(1):
        km = KMeans(n_clusters=k, n_init=restarts, random_state=seed).fit(values.reshape(-1, 1))
    return km.labels_.astype(np.int64)


def cosine(gram: torch.Tensor) -> torch.Tensor:
    norms = gram.diagonal().clamp_min(0).sqrt()
    return gram / (norms[:, None] * norms[None, :]).clamp_min(torch.finfo(torch.float64).tiny)


def greedy_order(
    similarity: torch.Tensor, bins: torch.Tensor, a: torch.Tensor
) -> tuple[list[int], list[float], list[int]]:
    """Removal order by similarity, each removal's similarity to its closest kept bin-mate,
    and that bin-mate (its *partner*, kept when it went).

    Stops when every bin is down to one channel: those are never removed by similarity.
    Each removal recomputes only the rows whose closest bin-mate it was, so a group of C
    channels costs O(C^2) per removal at worst, not always.
    """
    s = similarity.clone()
    s[bins[:, None] != bins[None, :]] = -torch.inf
    s.fill_diagonal_(-torch.inf)
    best, partner = s.max(1)  # each channel's closest kept bin-mate
    order: list[int] = []
    sims: list[float] = []
    partners: list[int] = []
    while True:
        top = best.max()
        if top == -torch.inf:  # no kept channel has a kept bin-mate
            return order, sims, partners
        tied = (best == top).nonzero().flatten()
        i = int(tied[torch.argmin(a[tied])])  # argmin takes the first (lowest index) of equal a
        order.append(i)
        sims.append(float(top))
        partners.append(int(partner[i]))
        s[i, :] = -torch.inf
        s[:, i] = -torch.inf
        best[i] = -torch.inf
        stale = (partner == i).nonzero().flatten()
        stale = stale[best[stale] > -torch.inf]  # removed channels stay out
        if len(stale):
            best[stale], partner[stale] = s[stale].max(1)
