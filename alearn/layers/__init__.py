"""Flax layers whose backward pass is delegated to a learning rule."""

from alearn.layers import conv_impl
from alearn.layers.conv import Conv
from alearn.layers.dense import Dense
from alearn.layers.linear import apply_rule, rule_linear
from alearn.layers.ops import ConvOp, DenseOp, LinearOp
from alearn.layers.pool import max_pool
from alearn.layers.receiver import rule_receiver
from alearn.layers.tape import Tape

__all__ = ["Conv", "ConvOp", "Dense", "DenseOp", "LinearOp", "Tape", "apply_rule", "max_pool",
           "conv_impl", "rule_linear", "rule_receiver"]
