"""Checkpoints (safetensors + JSON, no pickle), resume state, and export."""

from .checkpoint import load, read_header, read_meta, save
from .tree import load_tree, save_tree

__all__ = ["load", "load_tree", "read_header", "read_meta", "save", "save_tree"]
