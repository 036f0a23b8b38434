"""CIFAR-style model zoo with ImageNet stems. Importing this package registers every model."""

from . import ghostnet, mobilenet_v1, mobilenet_v2, resnet, shufflenet_v1, shufflenet_v2, vgg  # noqa: F401  (registration)
from ._registry import ARCH_ATTR, create_model, list_models, model_entrypoint, register_model

__all__ = ["ARCH_ATTR", "create_model", "list_models", "model_entrypoint", "register_model"]
