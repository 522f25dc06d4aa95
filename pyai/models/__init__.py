"""pyai's models, one file each, built from `pyai.nn` layers: the model and nothing else (their
training loops are in `pyai.training`, their checkpoint format in `pyai.checkpoint`)."""

from pyai.models.dcgan import DCGAN
from pyai.models.gan import GAN
from pyai.models.gpt import GPT
from pyai.models.mlp import MLP

__all__ = ["DCGAN", "GAN", "GPT", "MLP"]
