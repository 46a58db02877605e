"""The network: S4D layer, Transformer blocks, conditioning, U-Net and heads (DESIGN.md, network contract)."""

from models.config import ModelConfig
from models.optim import param_groups
from models.s4d import S4D, S4DKernel
from models.unet import ABRNet, build_model

__all__ = ["ABRNet", "ModelConfig", "S4D", "S4DKernel", "build_model", "param_groups"]
