"""How much of torchvision's classification zoo the engine prunes, exactly, and how fast.

For each model (random weights, 10 classes, BN statistics and affine terms made
trained-looking as in ``tests/test_engine.py``):

* traced or not; channel groups in all and prunable; every non-prunable group with its reason;
* exactness, every prunable group: one unit per conv group (one unit where no grouped conv
  is involved) removed with ``prune_channels`` must give the outputs of the original model
  with those channels zeroed at their producers, in float64, within 1e-9 of the output scale;
* end to end: ``secateurs.prune(model, "l1", macs_reduction=0.5, finetune="none",
  latency=False, evaluate_before=False, input_shape=...)``, wall time and MACs reached; and
  next to it Torch-Pruning's ``MagnitudePruner`` (L1, global ranking, classifier ignored),
  stepped until the MACs fall by half (``iterative_steps=20`` up to a 90% ratio), timed
  from the dependency graph build to the last step, its MAC count after each step included
  (ours counts MACs too, for its cost model); its error when it fails. One configuration
  of Torch-Pruning is tried: a failure may be this configuration's, not the library's.

Inputs are 64x64 (96x96 for inception_v3, whose minimum is 75) to keep the float64 walk
short on a shared CPU; one torch thread.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/torchvision_coverage.py [--models resnet18 ...]
"""

from __future__ import annotations

import argparse
import copy
import importlib.metadata
import random
import sys
import time
import traceback
from collections import defaultdict
from typing import Any

import torch
import torch.nn as nn
from _common import machine, machine_line, markdown_table, write_results

import secateurs
from secateurs.graph import ChannelGraph, Unit, prune_channels, trace
from secateurs.models._torchvision import import_torchvision

MODELS = [
    "resnet18",
    "resnet50",
    "resnext50_32x4d",
    "wide_resnet50_2",
    "mobilenet_v2",
    "mobilenet_v3_large",
    "efficientnet_b0",
    "efficientnet_v2_s",
    "regnet_x_400mf",
    "regnet_y_400mf",
    "mnasnet1_0",
    "shufflenet_v2_x1_0",
    "squeezenet1_0",
    "densenet121",
    "googlenet",
    "inception_v3",
    "vgg11_bn",
    "alexnet",
    "convnext_tiny",
]
OPTIONS = {
    "googlenet": {"aux_logits": False, "init_weights": True},
    "inception_v3": {"aux_logits": False, "init_weights": True},
}
SIDE = {"inception_v3": 96}
TOLERANCE = 1e-9
CLASSES = 10


def build(name: str) -> nn.Module:
    tvm = import_torchvision()
    torch.manual_seed(0)
    model = getattr(tvm, name)(num_classes=CLASSES, **OPTIONS.get(name, {}))
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for key, p in model.named_parameters():
            if key.endswith("layer_scale"):  # ConvNeXt starts at 1e-6, which would hide every block
                p.uniform_(0.3, 1.0)
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                n = m.num_features
                m.running_mean.copy_(torch.randn(n, generator=g) * 0.2)
                m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
                m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                m.bias.copy_(torch.randn(n, generator=g) * 0.5)
    return model.eval()


def _classes(group, graph: ChannelGraph) -> list[list[Unit]]:
    """The group's units classed by the conv groups their members fall in."""
    classes: dict[tuple, list[Unit]] = defaultdict(list)
    for u in group.units:
        sig = []
        for m in u.members:
            gc = graph.grouped_convs.get(m.module)
            if gc is not None and m.kind in ("in", "out"):
                sig.append((m.module, m.kind, gc.group_of(m.kind, m.index)))
        classes[tuple(sig)].append(u)
    return list(classes.values())


def _zeroed(model: nn.Module, units: list[Unit]) -> nn.Module:
    ref = copy.deepcopy(model)
    modules = dict(ref.named_modules())
    with torch.no_grad():
        for u in units:
            for m in u.members:
                if m.kind in ("out", "bn"):
                    layer = modules[m.module]
                    layer.weight[m.index] = 0
                    if layer.bias is not None:
                        layer.bias[m.index] = 0
    return ref


def _request(units: list[Unit]) -> dict[str, list[int]]:
    request: dict[str, list[int]] = defaultdict(list)
    for u in units:
        m = next(m for m in u.members if m.kind in ("out", "bn"))
        request[m.module].append(m.index)
    return dict(request)


def walk(model: nn.Module, graph: ChannelGraph, x: torch.Tensor) -> dict[str, Any]:
    """Every prunable group: one unit per conv group removed, against zeroing."""
    rng = random.Random(0)
    with torch.no_grad():
        original = model(x)
    worst, inexact, vacuous = 0.0, [], []
    for g in graph.prunable_groups:
        units = [rng.choice(c) for c in _classes(g, graph)]
        pruned = copy.deepcopy(model)
        prune_channels(pruned, torch.zeros_like(x), _request(units), graph=graph)
        with torch.no_grad():
            want, got = _zeroed(model, units)(x), pruned(x)
        scale = want.abs().max().item()
        err = (got - want).abs().max().item() / scale
        worst = max(worst, err)
        if err > TOLERANCE:
            inexact.append(g.name)
        if (original - want).abs().max().item() <= 10 * TOLERANCE * scale:
            vacuous.append(g.name)
    return {
        "groups_tried": len(graph.prunable_groups),
        "inexact": inexact,
        "worst_relative_error": worst,
        "no_visible_effect": vacuous,
    }


def ours(model: nn.Module, side: int) -> dict[str, Any]:
    t = time.perf_counter()
    pruned, result = secateurs.prune(
        model,
        "l1",
        macs_reduction=0.5,
        finetune="none",
        latency=False,
        evaluate_before=False,
        input_shape=(3, side, side),
    )
    seconds = time.perf_counter() - t
    shape = (3, side, side)
    return {
        "seconds": round(seconds, 2),
        "macs_reduction": round(1 - secateurs.count_macs(pruned, shape) / secateurs.count_macs(model, shape), 4),
    }


def theirs(model: nn.Module, side: int) -> dict[str, Any]:
    import torch_pruning as tp

    model = copy.deepcopy(model)
    x = torch.zeros(1, 3, side, side)
    base, _ = tp.utils.count_ops_and_params(model, x)
    head = [m for m in model.modules() if isinstance(m, nn.Linear) and m.out_features == CLASSES]
    try:
        t = time.perf_counter()
        pruner = tp.pruner.MagnitudePruner(
            model,
            x,
            importance=tp.importance.MagnitudeImportance(p=1),
            global_pruning=True,
            pruning_ratio=0.9,
            iterative_steps=20,
            ignored_layers=head,
        )
        macs, steps = base, 0
        while macs > 0.5 * base and steps < 20:
            pruner.step()
            steps += 1
            macs, _ = tp.utils.count_ops_and_params(model, x)
        seconds = time.perf_counter() - t
        with torch.no_grad():
            model(x)
    except Exception as e:  # their failure is a result, reported with its message
        return {"error": f"{type(e).__name__}: {str(e).splitlines()[0][:160]}"}
    return {"seconds": round(seconds, 2), "macs_reduction": round(1 - macs / base, 4), "steps": steps}


def one(name: str, with_tp: bool) -> dict[str, Any]:
    side = SIDE.get(name, 64)
    row: dict[str, Any] = {"model": name, "input": [1, 3, side, side]}
    model = build(name)
    try:
        t = time.perf_counter()
        graph = trace(model, torch.zeros(1, 3, side, side))
        row["trace_seconds"] = round(time.perf_counter() - t, 2)
    except Exception as e:
        row["traced"] = False
        row["error"] = f"{type(e).__name__}: {e}"
        return row
    row["traced"] = True
    row["groups"], row["prunable"] = len(graph.groups), len(graph.prunable_groups)
    row["not_prunable"] = [
        {"group": g.name, "size": g.size, "reason": g.reason} for g in graph.groups if not g.prunable
    ]
    double = model.double()
    row["exactness"] = walk(
        double,
        trace(double, torch.zeros(1, 3, side, side, dtype=torch.float64)),
        torch.randn(1, 3, side, side, dtype=torch.float64, generator=torch.Generator().manual_seed(2)),
    )
    model = model.float()
    row["ours"] = ours(model, side)
    if with_tp:
        row["torch_pruning"] = theirs(model, side)
    return row


def _cell(r: dict | None) -> str:
    if r is None:
        return "-"
    if "error" in r:
        return f"failed: {r['error']}"
    return f"{r['seconds']:.1f} s ({100 * r['macs_reduction']:.1f}%)"


def report(rows: list[dict], data: dict) -> str:
    table = []
    for r in rows:
        if not r["traced"]:
            table.append([r["model"], "no", "-", "-", "-", "-"])
            continue
        ex = r["exactness"]
        exact = "all" if not ex["inexact"] else f"{len(ex['inexact'])} inexact"
        quiet = f"; {len(ex['no_visible_effect'])} without visible effect" if ex["no_visible_effect"] else ""
        table.append(
            [
                r["model"],
                "yes",
                f"{r['prunable']}/{r['groups']}",
                f"{exact} of {ex['groups_tried']} (worst {ex['worst_relative_error']:.1e}{quiet})",
                _cell(r.get("ours")),
                _cell(r.get("torch_pruning")),
            ]
        )
    reasons = []
    for r in rows:
        for g in r.get("not_prunable", []):
            if g["reason"] not in ("network input", "network output"):
                reasons.append(f"- {r['model']}: `{g['group']}` ({g['size']} units): {g['reason']}")
    sections = [
        "Groups: prunable / all (every model also keeps its input and output channels). Exact: groups whose removal "
        "(one unit per conv group) equals zeroing in float64 within 1e-9 of the output scale, of the groups tried "
        '(all prunable ones); a removal "without visible effect" moved the output by less than 1e-8 of its scale (the '
        "unit's channels are dead after a ReLU on this input), so its check proves little. Time: `prune(l1, 50% MACs, no fine-tuning)` end to end, MACs reduction reached in "
        "brackets; Torch-Pruning: MagnitudePruner (L1, global) stepped to 50% MACs, dependency graph included.",
        markdown_table(["model", "traced", "groups prunable", "exact", "secateurs", "Torch-Pruning"], table),
        "## Groups kept, other than each network's input and output\n\n" + ("\n".join(reasons) or "none"),
    ]
    return "\n\n".join(
        [
            "# torchvision classification CNNs: coverage, exactness, time",
            f"Machine: {machine_line(data['machine'])}",
            f"Command: `{data['command']}`",
            *sections,
        ]
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", nargs="+", default=MODELS)
    p.add_argument("--no-torch-pruning", action="store_true")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    with_tp = not args.no_torch_pruning
    rows = []
    for name in args.models:
        try:
            rows.append(one(name, with_tp))
        except Exception as e:  # a crash in one model must not lose the others
            traceback.print_exc()
            rows.append({"model": name, "traced": False, "error": f"{type(e).__name__}: {e}"})
        print(rows[-1]["model"], {k: v for k, v in rows[-1].items() if k != "not_prunable"}, flush=True)
    data = {
        "machine": machine(),
        "command": " ".join(["python", *sys.argv]),
        "rows": rows,
        "torchvision": importlib.metadata.version("torchvision"),
        "torch_pruning": importlib.metadata.version("torch-pruning") if with_tp else None,
    }
    md = report(rows, data)
    write_results("torchvision_coverage", data, md)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
