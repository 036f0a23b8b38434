"""What ``--round-to 8`` buys in latency: the same model pruned with ``l1`` to the same MACs
reduction, with free widths and with every narrowed layer at a multiple of 8, each timed
interleaved against the unpruned model (:func:`secateurs.measure.compare_latency`) at batch
1 and 64. Widths that are multiples of 8 suit the vectorised convolution kernels; whether
that shows on a given CPU is what this measures.

    .venv/bin/python benchmarks/round_to.py                       # resnet56 and mobilenet_v2, 50% MACs
    .venv/bin/python benchmarks/round_to.py --models resnet56 --reduction 0.5 --budget 30

The weights are the zoo's initialisation (latency does not depend on their values), so no
baseline is needed; run it on an idle machine (the report says when it was not).
"""

from __future__ import annotations

import argparse
import sys

import torch
from _common import machine, machine_line, markdown_table, write_results

import secateurs
from secateurs.measure import compare_latency

SHAPE = (1, 32, 32)


def pruned(model: torch.nn.Module, reduction: float, round_to: int) -> tuple[torch.nn.Module, float]:
    out, result = secateurs.prune(
        model,
        "l1",
        macs_reduction=reduction,
        finetune="none",
        latency=False,
        input_shape=SHAPE,
        round_to=round_to,
        evaluate_before=False,
    )
    return out, result.achieved


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["resnet56", "mobilenet_v2"])
    p.add_argument("--reduction", type=float, default=0.5)
    p.add_argument("--budget", type=float, default=20.0, help="seconds of timing per comparison")
    args = p.parse_args(argv)
    rows, results = [], []
    for name in args.models:
        torch.manual_seed(0)
        base = secateurs.create_model(name, num_classes=10, in_channels=1)
        for round_to in (1, 8):
            model, achieved = pruned(base, args.reduction, round_to)
            c = compare_latency(base, model, SHAPE, budget_s=args.budget, labels=("unpruned", "pruned"))
            d = c.to_dict()
            results.append({"model": name, "round_to": round_to, "macs_reduction": achieved, "comparison": d})
            b = d["batches"]
            rows.append(
                [
                    name,
                    round_to,
                    f"{100 * achieved:.1f}",
                    *(f"{b[k]['b']['median_ms']:.2f} ms ({b[k]['ratio']:.2f}x)" for k in ("1", "64")),
                    "yes" if d["reliable"] else "no: " + "; ".join(d["reasons"]),
                ]
            )
            print(rows[-1], file=sys.stderr)
    m = machine()
    command = "python benchmarks/round_to.py " + " ".join(argv if argv is not None else sys.argv[1:])
    md = "\n\n".join(
        [
            "# `--round-to 8` against free widths: latency at the same MACs",
            f"Machine: {machine_line(m)}",
            f"Command: `{command.strip()}`",
            markdown_table(
                [
                    "model",
                    "round_to",
                    "MACs reduction (%)",
                    "pruned b1 (speed-up)",
                    "pruned b64 (speed-up)",
                    "reliable",
                ],
                rows,
            ),
            "l1 to the MACs target, no fine-tuning; each pruned model timed interleaved with the unpruned one "
            "(medians; speed-up = unpruned median / pruned median), at the thread count of "
            "`secateurs.measure.compare.default_threads`.",
        ]
    )
    write_results("round_to", {"machine": m, "command": command, "results": results}, md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
