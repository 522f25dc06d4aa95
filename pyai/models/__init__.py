"""pyai's models, one file each, built from `pyai.nn` layers."""

from pyai.models.mlp import MLP, fit

__all__ = ["MLP", "fit"]
