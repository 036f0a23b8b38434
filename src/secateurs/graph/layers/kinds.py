"""The built-in module types and ops the engine knows, each list written once.

Every other module reads these tuples (the layer types in this package, the op tables
of ``graph/_handlers.py`` and ``graph/_fold_rules.py``); nothing else spells out a list
of convolutions, norms or activations.

Differences between the lists that are real, not accidental:

* Padding modules and ``F.pad`` move channels one to one (trace), but a constant padded
  with zeros is no longer a constant, so the fold has no rule for them.
* Average pooling moves channels one to one, but with zero padding counted it changes a
  constant near the borders: it has its own fold rule, which marks the fold approximate.
* :data:`RELU_TYPES` is a subset of :data:`ACTIVATIONS`: the activations whose output
  is zero exactly where their input is ``<= 0``, through which ``probability`` reads a
  BatchNorm's ``P(y <= 0)``.
* :data:`GATES` are activations too, but used as gates (squeeze-excite) rather than after
  a BatchNorm, so feature maps are not read after them.
"""

from __future__ import annotations

import operator

import torch
import torch.nn as nn
import torch.nn.functional as F

CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
CONV_TRANSPOSES = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)

#: Scalar functions applied to every element: output channel c is a function of input channel c.
ACTIVATIONS = (
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.ELU,
    nn.SELU,
    nn.CELU,
    nn.GELU,
    nn.SiLU,
    nn.Mish,
    nn.Hardswish,
    nn.Hardsigmoid,
    nn.Sigmoid,
    nn.Tanh,
    nn.Hardtanh,
    nn.Softplus,
)
RELU_TYPES = (nn.ReLU, nn.ReLU6)
GATES = (nn.Sigmoid, nn.Hardsigmoid, nn.Tanh)

#: The identity in eval mode: a value passes unchanged.
PASSTHROUGH = (nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout)
#: Each output element is one of its channel's input elements (or a mean over a whole
#: channel): a constant channel stays the same constant.
SAME_VALUE = (
    nn.MaxPool1d,
    nn.MaxPool2d,
    nn.MaxPool3d,
    nn.AdaptiveAvgPool1d,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveAvgPool3d,
    nn.AdaptiveMaxPool1d,
    nn.AdaptiveMaxPool2d,
    nn.AdaptiveMaxPool3d,
    nn.Upsample,
    nn.UpsamplingNearest2d,
    nn.UpsamplingBilinear2d,
)
AVG_POOLS = (nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d)
#: Channel-wise as long as they pad spatial dims only (a changed width is caught by the trace).
PADS = (
    nn.ZeroPad1d,
    nn.ZeroPad2d,
    nn.ConstantPad1d,
    nn.ConstantPad2d,
    nn.ReflectionPad1d,
    nn.ReflectionPad2d,
    nn.ReplicationPad1d,
    nn.ReplicationPad2d,
)

# --- functions and tensor methods ------------------------------------------------------

ACTIVATION_FUNCTIONS = (
    F.relu,
    F.relu6,
    F.leaky_relu,
    F.elu,
    F.gelu,
    F.silu,
    F.mish,
    F.hardswish,
    F.hardsigmoid,
    F.hardtanh,
    F.sigmoid,
    F.tanh,
    F.softplus,
    torch.relu,
    torch.sigmoid,
    torch.tanh,
)
ACTIVATION_METHODS = ("relu", "relu_", "sigmoid", "sigmoid_", "tanh")
#: Element-wise functions of one tensor (and numbers): activations plus clamping.
POINTWISE_FUNCTIONS = (*ACTIVATION_FUNCTIONS, torch.clamp)
POINTWISE_METHODS = (*ACTIVATION_METHODS, "clamp", "clamp_")

SAME_VALUE_FUNCTIONS = (
    torch.clone,
    F.dropout,
    F.dropout2d,
    F.max_pool1d,
    F.max_pool2d,
    F.adaptive_avg_pool1d,
    F.adaptive_avg_pool2d,
    F.adaptive_max_pool2d,
    F.interpolate,
)
SAME_VALUE_METHODS = ("contiguous", "clone", "float", "to", "detach")
AVG_POOL_FUNCTIONS = (F.avg_pool1d, F.avg_pool2d)

#: add/sub/mul/div of two operands (tensors, or a tensor and a number).
ARITHMETIC_FUNCTIONS = (
    operator.add,
    operator.sub,
    operator.mul,
    operator.truediv,
    operator.iadd,
    operator.isub,
    operator.imul,
    operator.itruediv,
    torch.add,
    torch.sub,
    torch.mul,
    torch.div,
)
ARITHMETIC_METHODS = ("add", "add_", "sub", "sub_", "mul", "mul_", "div", "div_")

RESHAPE_FUNCTIONS = (torch.flatten, torch.reshape, torch.squeeze, torch.unsqueeze)
RESHAPE_METHODS = ("view", "reshape", "flatten", "squeeze", "unsqueeze")
CAT_FUNCTIONS = (torch.cat, torch.concat)
REDUCTION_FUNCTIONS = (torch.mean, torch.sum, torch.amax)
REDUCTION_METHODS = ("mean", "sum", "amax")
