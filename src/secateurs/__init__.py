"""secateurs: structured pruning of trained CNNs into physically smaller, faster models.

The public API::

    import secateurs
    model = secateurs.create_model("resnet56", num_classes=10, in_channels=1)
    secateurs.measure(model, (1, 32, 32))
    pruned, report = secateurs.prune(model, "l1-capped", macs_reduction=0.5, train_set=..., test_set=...)
    secateurs.save(model, "model.safetensors", meta={...})
    model = secateurs.load("model.safetensors")

    # Any traceable nn.Module, any Dataset of (image, label) or DataLoader:
    pruned, report = secateurs.prune(net, "l1", macs_reduction=0.5, train_set=my_dataset,
                                     example_inputs=torch.randn(1, 3, 224, 224))
    net = secateurs.load("pruned.safetensors", arch=build_net)   # its factory; no pickle

    # A layer type of your own: one LayerType (see secateurs.graph.layers), registered once.
    secateurs.register_layer(secateurs.LayerType("my-conv", (MyConv,), role="out", flow=..., prune=..., ...))
"""

from ._version import __version__
from .data import as_loader, list_datasets, load_dataset
from .errors import CheckpointError, ConfigError, DatasetError, PruningError, SecateursError, TraceError
from .graph import ChannelGraph, LayerType, prune_channels, register_layer, trace
from .io import load, read_meta, save
from .measure import Measurement, count_macs, count_params, measure
from .methods import list_methods, register_method
from .models import create_model, list_models, register_model
from .pipeline import PruneConfig, PruneResult, prune
from .train import TrainConfig, evaluate, train

__all__ = [
    "ChannelGraph",
    "LayerType",
    "CheckpointError",
    "ConfigError",
    "DatasetError",
    "Measurement",
    "PruningError",
    "SecateursError",
    "PruneConfig",
    "PruneResult",
    "TraceError",
    "TrainConfig",
    "list_methods",
    "prune",
    "prune_channels",
    "register_layer",
    "register_method",
    "trace",
    "__version__",
    "as_loader",
    "count_macs",
    "count_params",
    "create_model",
    "evaluate",
    "list_datasets",
    "list_models",
    "load",
    "load_dataset",
    "measure",
    "read_meta",
    "register_model",
    "save",
    "train",
]
