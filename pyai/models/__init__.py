"""pyai's models, one file each, built from `pyai.nn` layers."""

from pyai.models.gan import GAN
from pyai.models.gpt import GPT
from pyai.models.mlp import MLP, fit

__all__ = ["GAN", "GPT", "MLP", "fit"]
