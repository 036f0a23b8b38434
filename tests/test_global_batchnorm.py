"""GlobalBatchNorm2d on 2 gloo processes equals BatchNorm2d on the whole batch."""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn as nn

from secateurs.train import GlobalBatchNorm2d


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


MOMENTA = [0.1, None]


def _worker(rank: int, port: int, x, grad_out, queue) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        for momentum in MOMENTA:  # both in one pair of processes: starting them is most of the cost
            torch.manual_seed(0)
            bn = GlobalBatchNorm2d(3, momentum=momentum)
            bn.weight.data.uniform_(0.5, 1.5)
            bn.bias.data.uniform_(-0.5, 0.5)
            part = x.chunk(2)[rank].clone().requires_grad_(True)
            for _ in range(2):  # two steps: running statistics accumulate
                y = bn(part)
            (y * grad_out.chunk(2)[rank]).sum().backward()
            # numpy arrays travel by value; torch tensors would be shared through file descriptors
            # that vanish when this process exits before the parent reads them.
            arrays = [
                t.detach().numpy().copy() for t in (y, part.grad, bn.weight.grad, bn.running_mean, bn.running_var)
            ]
            queue.put((momentum, rank, *arrays, int(bn.num_batches_tracked)))
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def two_processes():
    """The input, the output gradient, and per (momentum, rank) what the rank's GlobalBatchNorm2d
    gave: output, input gradient, weight gradient, running mean and variance, batches tracked."""
    torch.manual_seed(1)
    x = torch.randn(8, 3, 5, 5) * 3 + 1
    grad_out = torch.randn(8, 3, 5, 5)
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    port = _free_port()
    procs = [ctx.Process(target=_worker, args=(r, port, x, grad_out, queue)) for r in range(2)]
    for p in procs:
        p.start()
    results = {}
    for _ in range(len(procs) * len(MOMENTA)):
        momentum, rank, *values, tracked = queue.get(timeout=120)
        results[momentum, rank] = [torch.from_numpy(v) for v in values] + [tracked]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    return x, grad_out, results


@pytest.mark.parametrize("momentum", MOMENTA)
def test_two_processes_match_one_batchnorm(two_processes, momentum):
    x, grad_out, both = two_processes
    results = {r: both[momentum, r] for r in (0, 1)}
    torch.manual_seed(0)
    ref = nn.BatchNorm2d(3, momentum=momentum)
    ref.weight.data.uniform_(0.5, 1.5)
    ref.bias.data.uniform_(-0.5, 0.5)
    full = x.clone().requires_grad_(True)
    for _ in range(2):
        y = ref(full)
    (y * grad_out).sum().backward()
    y0, y1 = results[0][0], results[1][0]
    torch.testing.assert_close(torch.cat([y0, y1]), y.detach(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(torch.cat([results[0][1], results[1][1]]), full.grad, rtol=1e-4, atol=1e-5)
    # DDP averages parameter gradients over processes; the sum of both equals the full-batch one.
    torch.testing.assert_close(results[0][2] + results[1][2], ref.weight.grad, rtol=1e-4, atol=1e-5)
    for r in (0, 1):
        torch.testing.assert_close(results[r][3], ref.running_mean, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(results[r][4], ref.running_var, rtol=1e-5, atol=1e-6)
        assert results[r][5] == int(ref.num_batches_tracked)
