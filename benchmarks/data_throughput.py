"""Is the data path free? Training-loop throughput on real data vs the model alone.

The model alone: forward + backward + SGD step on one fixed random batch, no data at all.
The training loop: ``secateurs.train`` on Fashion-MNIST with augmentation (random crop
with padding and flip, done on tensors), metrics and progress bookkeeping included.
Goal (issue 2): the loop reaches at least 90% of the model-alone throughput.

    .venv/bin/python benchmarks/data_throughput.py [--models resnet20 ...] [--steps 60]
"""

from __future__ import annotations

import argparse
import sys
import time

import torch
from _common import machine, machine_line, markdown_table, write_results

from secateurs.data import LoaderConfig, load_dataset, make_loader
from secateurs.models import create_model
from secateurs.train import TrainConfig, dist_info, train
from secateurs.train.distributed import training_device


def model_alone(name: str, batch: int, steps: int, device: torch.device) -> float:
    warmup = steps  # as many untimed steps as the training loop's untimed first epoch
    torch.manual_seed(0)
    model = create_model(name, num_classes=10, in_channels=1).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True, weight_decay=5e-4)
    x, y = torch.randn(batch, 1, 32, 32, device=device), torch.randint(0, 10, (batch,), device=device)
    for i in range(warmup + steps):
        if i == warmup:
            t0 = time.perf_counter()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return batch * steps / (time.perf_counter() - t0)


def training_loop(name: str, data, batch: int, steps: int, device: torch.device) -> float:
    torch.manual_seed(0)
    model = create_model(name, num_classes=10, in_channels=1)
    # Epoch 1 warms up (allocator, kernels); epoch 2 is timed. Both are `steps` long.
    config = TrainConfig(
        epochs=2, batch_size=batch, lr=0.01, max_steps_per_epoch=steps, progress=False, device=str(device), amp=False
    )
    return train(model, data, None, config).history[-1]["train_samples_per_s"]


def loader_alone(data, batch: int, steps: int) -> float:
    loader = make_loader(data, LoaderConfig(batch_size=batch, train=True))
    loader.set_epoch(0)
    t0 = time.perf_counter()
    for i, _ in zip(range(steps), loader):
        pass
    return batch * steps / (time.perf_counter() - t0)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["resnet20", "mobilenet_v2"])
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--device", default="auto")
    args = p.parse_args(argv)
    device = training_device(args.device, dist_info())  # the trainer's own "auto" rule
    data = load_dataset("fashion-mnist", "train")
    rows, results = [], []
    loader_rate = loader_alone(data, args.batch_size, 200)
    for name in args.models:
        alone = model_alone(name, args.batch_size, args.steps, device)
        loop = training_loop(name, data, args.batch_size, args.steps, device)
        ratio = loop / alone
        results.append(
            {
                "model": name,
                "model_alone_samples_per_s": alone,
                "train_loop_samples_per_s": loop,
                "ratio": ratio,
                "goal_met": ratio >= 0.9,
            }
        )
        rows.append([name, f"{alone:.0f}", f"{loop:.0f}", f"{100 * ratio:.1f}%", "yes" if ratio >= 0.9 else "NO"])
        print(rows[-1], file=sys.stderr)
    m = machine()
    command = "python benchmarks/data_throughput.py " + " ".join(argv if argv is not None else sys.argv[1:])
    md = "\n\n".join(
        [
            "# Data path throughput (Fashion-MNIST, batch %d)" % args.batch_size,
            f"Machine: {machine_line(m)}",
            f"Command: `{command.strip()}`",
            markdown_table(
                ["model", "model alone (samples/s)", "training loop, real data (samples/s)", "loop / alone", ">= 90%"],
                rows,
            ),
            f"Loader alone (augmented batches, no model): {loader_rate:.0f} samples/s.",
            "Model alone = forward + backward + SGD step on one fixed random batch. Training loop = "
            "`secateurs.train` on Fashion-MNIST with random crop + flip, timed over its second epoch "
            f"of {args.steps} steps.",
        ]
    )
    write_results(
        "data_throughput",
        {
            "machine": m,
            "command": command.strip(),
            "batch_size": args.batch_size,
            "steps": args.steps,
            "loader_alone_samples_per_s": loader_rate,
            "device": str(device),
            "models": results,
        },
        md,
    )
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
