"""Architecture tests of the model zoo.

Two kinds of checks: literature sizes of VGG-16 and the CIFAR ResNets, counted by hand
from the papers' layer formulas (not from the model code); and, for every registered
model, the structural promises the pruning engine relies on (FX-traceable, only
Conv2d/BN/Linear hold parameters, no shared or functional activations, every
parameter trained, ONNX export).
"""

from __future__ import annotations

import operator

import pytest
import torch
import torch.nn as nn

from secateurs.errors import ConfigError
from secateurs.measure import count_macs
from secateurs.models import create_model, list_models

ALL_MODELS = list_models()
TINY_MODELS = list_models("test_*")

#: Written out again on purpose: the hand count must not share a table with the model.
VGG16_WIDTHS = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]

#: name -> (params, params tolerance, MACs, MACs tolerance) at 3x32x32, 10 classes.
LITERATURE_CIFAR = {
    "vgg16": (14.7e6, 0.1e6, 313e6, 2e6),  # Li et al. 2017, Table 1: 1.5e7 params, 3.13e8 FLOPs
    "resnet56": (0.85e6, 0.01e6, 125e6, 2e6),  # He et al. 2016 / Li et al. 2017: 1.25e8 FLOPs
    "resnet20": (0.27e6, 0.01e6, 41e6, 1e6),  # He et al. 2016, Table 6: 0.27 M
}
#: Published ImageNet figures (3x224x224, 1000 classes) of the families' reference code.
LITERATURE_IMAGENET = {
    "mobilenet_v1": (4.2e6, 0.05e6, 569e6, 5e6),  # Howard et al. 2017
    "mobilenet_v2": (3.5e6, 0.05e6, 300e6, 5e6),  # Sandler et al. 2018
    "shufflenet_v1": (1.9e6, 0.1e6, 140e6, 5e6),  # Zhang et al. 2018 (1x, g=3)
    "shufflenet_v2": (2.3e6, 0.05e6, 146e6, 3e6),  # Ma et al. 2018 (1x)
    "ghostnet": (5.2e6, 0.05e6, 141e6, 3e6),  # Han et al. 2020 (1.0x)
}


pytestmark = pytest.mark.usefixtures("one_thread")


def num_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def hooked_macs(model: nn.Module, size: int) -> int:
    """MACs as the library measures them (``secateurs.measure.count_macs``), checked here
    against the hand counts below."""
    return count_macs(model, (3, size, size))


def vgg16_hand_count(num_classes: int = 10) -> tuple[int, int]:
    """Conv3x3 (no bias) + BN per width at 32x32, 2x2 pools, then Linear(512, classes)."""
    params = macs = 0
    c_in, hw = 3, 32
    for v in VGG16_WIDTHS:
        if v == "M":
            hw //= 2
            continue
        params += 9 * c_in * v + 2 * v
        macs += hw * hw * v * c_in * 9
        c_in = v
    return params + 512 * num_classes + num_classes, macs + 512 * num_classes


def cifar_resnet_hand_count(n: int, num_classes: int = 10) -> tuple[int, int]:
    """He et al. CIFAR ResNet with n basic blocks per stage and 1x1+BN projections."""
    params, macs = 3 * 16 * 9 + 2 * 16, 32 * 32 * 16 * 3 * 9  # stem conv3x3 + BN
    c_in, hw = 16, 32
    for width, first_stride in ((16, 1), (32, 2), (64, 2)):
        for i in range(n):
            stride = first_stride if i == 0 else 1
            hw //= stride
            params += 9 * c_in * width + 2 * width + 9 * width * width + 2 * width
            macs += hw * hw * width * 9 * (c_in + width)
            if stride != 1 or c_in != width:
                params += c_in * width + 2 * width
                macs += hw * hw * width * c_in
            c_in = width
    return params + 64 * num_classes + num_classes, macs + 64 * num_classes


def test_vgg16_matches_hand_count_and_literature() -> None:
    model = create_model("vgg16")
    params, macs = vgg16_hand_count()
    assert num_params(model) == params
    assert hooked_macs(model, 32) == macs
    lit_p, tol_p, lit_m, tol_m = LITERATURE_CIFAR["vgg16"]
    assert abs(params - lit_p) <= tol_p and abs(macs - lit_m) <= tol_m


@pytest.mark.parametrize("name,n", [("resnet20", 3), ("resnet32", 5), ("resnet56", 9), ("resnet110", 18)])
def test_cifar_resnet_matches_hand_count(name: str, n: int) -> None:
    model = create_model(name)
    params, macs = cifar_resnet_hand_count(n)
    assert num_params(model) == params
    assert hooked_macs(model, 32) == macs
    if name in LITERATURE_CIFAR:
        lit_p, tol_p, lit_m, tol_m = LITERATURE_CIFAR[name]
        assert abs(params - lit_p) <= tol_p and abs(macs - lit_m) <= tol_m


@pytest.mark.parametrize("name", sorted(LITERATURE_IMAGENET))
def test_imagenet_sizes_match_literature(name: str) -> None:
    model = create_model(name, num_classes=1000, stem="imagenet")
    lit_p, tol_p, lit_m, tol_m = LITERATURE_IMAGENET[name]
    assert abs(num_params(model) - lit_p) <= tol_p
    assert abs(hooked_macs(model, 224) - lit_m) <= tol_m


@pytest.mark.parametrize("name", ALL_MODELS)
def test_forward_shape_cifar_stem(name: str) -> None:
    model = create_model(name, num_classes=10, in_channels=1, stem="cifar").eval()
    with torch.no_grad():
        assert model(torch.randn(2, 1, 32, 32)).shape == (2, 10)


@pytest.mark.parametrize("name", ALL_MODELS)
def test_forward_shape_imagenet_stem(name: str) -> None:
    size = 224 if name in TINY_MODELS else 64  # full models at 224 would be slow on CPU
    model = create_model(name, num_classes=10, stem="imagenet").eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, size, size)).shape == (2, 10)


@pytest.mark.parametrize("stem", ["cifar", "imagenet"])
@pytest.mark.parametrize("name", TINY_MODELS)
def test_odd_input_sizes(name: str, stem: str) -> None:
    model = create_model(name, stem=stem).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, 33, 47)).shape == (2, 10)


@pytest.mark.parametrize("name", ALL_MODELS)
def test_fx_trace_matches_eager(name: str) -> None:
    model = create_model(name).eval()
    traced = torch.fx.symbolic_trace(model)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(traced(x), model(x), atol=1e-5, rtol=0)


#: The only non-module ops a graph pass may meet: adds, SE multiplies, concats, chunks,
#: and the shape reads and reshapes of the channel shuffle.
ALLOWED_FUNCTIONS = {operator.add, operator.mul, operator.getitem, operator.floordiv, getattr, torch.cat}
ALLOWED_METHODS = {"chunk", "view", "transpose", "reshape"}


@pytest.mark.parametrize("name", ALL_MODELS)
def test_graph_has_only_module_activations(name: str) -> None:
    graph = torch.fx.symbolic_trace(create_model(name)).graph
    called = [n.target for n in graph.nodes if n.op == "call_module"]
    assert len(called) == len(set(called)), "a module is called at two places"
    assert {n.target for n in graph.nodes if n.op == "call_function"} <= ALLOWED_FUNCTIONS
    assert {n.target for n in graph.nodes if n.op == "call_method"} <= ALLOWED_METHODS


FAMILY_OPTIONS = [
    ("mobilenet_v1", {"width_mult": 0.25}),
    ("mobilenet_v2", {"width_mult": 0.5}),
    ("mobilenet_v2", {"width_mult": 1.4}),
    ("shufflenet_v1", {"groups": 8}),
    ("shufflenet_v2", {"width_mult": 0.5}),
    ("ghostnet", {"width_mult": 0.5}),
    ("ghostnet", {"width_mult": 1.3}),
]


@pytest.mark.parametrize("name,kwargs", FAMILY_OPTIONS)
def test_family_options_trace(name: str, kwargs: dict) -> None:
    model = create_model(name, **kwargs).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(torch.fx.symbolic_trace(model)(x), model(x), atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", ALL_MODELS)
def test_only_conv_bn_linear_hold_parameters(name: str) -> None:
    for mod_name, m in create_model(name).named_modules():
        if any(True for _ in m.parameters(recurse=False)):
            assert isinstance(m, (nn.Conv2d, nn.BatchNorm2d, nn.Linear)), mod_name


@pytest.mark.parametrize("name", ALL_MODELS)
def test_every_parameter_gets_a_gradient(name: str) -> None:
    model = create_model(name).train()
    model(torch.randn(2, 3, 32, 32)).sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing


@pytest.mark.parametrize("name", TINY_MODELS)
def test_tiny_variants_are_small(name: str) -> None:
    assert num_params(create_model(name)) < 60_000


@pytest.mark.filterwarnings("ignore:You are using the legacy TorchScript-based ONNX export")
@pytest.mark.parametrize("name", TINY_MODELS)
def test_onnx_export_matches_eager(name: str, tmp_path) -> None:
    ort = pytest.importorskip("onnxruntime")
    model = create_model(name).eval()
    x = torch.randn(2, 3, 32, 32)
    path = tmp_path / f"{name}.onnx"
    torch.onnx.export(model, (x,), str(path), dynamo=False)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (out,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    with torch.no_grad():
        torch.testing.assert_close(torch.from_numpy(out), model(x), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("name", ALL_MODELS)
def test_unknown_stem_is_a_config_error(name: str) -> None:
    with pytest.raises(ConfigError, match="tiny.*cifar, imagenet"):
        create_model(name, stem="tiny")


def test_unknown_argument_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="depth"):
        create_model("resnet56", depth=56)


@pytest.mark.parametrize("name,kwargs", [("shufflenet_v1", {"groups": 5}), ("shufflenet_v2", {"width_mult": 0.75})])
def test_unknown_family_option_is_a_config_error(name: str, kwargs: dict) -> None:
    with pytest.raises(ConfigError, match=str(next(iter(kwargs.values())))):
        create_model(name, **kwargs)
