"""Flax NNX modules that own parameters and call ``ssmjax.ops``; every sequence mixer meets
:class:`~ssmjax.nn.protocols.SequenceMixer`."""

from ssmjax.nn.block import ResidualBlock
from ssmjax.nn.lti import LTICache, OutputHead
from ssmjax.nn.mamba import MambaCache, MambaMixer
from ssmjax.nn.no_gate import NoGateBlock, NoGateCache
from ssmjax.nn.norm import RMSNorm
from ssmjax.nn.protocols import Cache, SequenceMixer
from ssmjax.nn.s4 import S4, LiquidS4
from ssmjax.nn.s4d import S4D
from ssmjax.nn.s5 import S5
from ssmjax.nn.serpent import INNER_SSMS, SeRpEntBlock, make_inner_ssm, register_inner_ssm

__all__ = ["INNER_SSMS", "Cache", "LTICache", "LiquidS4", "MambaCache", "MambaMixer", "NoGateBlock",
           "NoGateCache", "OutputHead", "RMSNorm", "ResidualBlock", "S4", "S4D", "S5", "SeRpEntBlock",
           "SequenceMixer", "make_inner_ssm", "register_inner_ssm"]
