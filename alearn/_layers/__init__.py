"""Private machinery of the wrappers: the per-call Tape, the rule-aware linear maps
(``rule_linear``: a custom VJP whose backward is the rule's), receivers, the linear
operators, the exact convolution forms and the autotuner that picks among them. Not public API: models are plain Flax, trained
through ``alearn.wrap`` / ``alearn.wrap_nnx`` (README, "How a rule plugs in"). The
rule-aware ``Dense``/``Conv`` modules remain for the library's own tests and AL internals."""

from alearn._layers import conv_autotune, conv_impl
from alearn._layers.conv import Conv
from alearn._layers.dense import Dense
from alearn._layers.linear import apply_rule, rule_linear
from alearn._layers.ops import ConvOp, DenseOp, LinearOp
from alearn._layers.pool import max_pool
from alearn._layers.receiver import rule_receiver
from alearn._layers.tape import Tape

__all__ = ["Conv", "ConvOp", "Dense", "DenseOp", "LinearOp", "Tape", "apply_rule", "max_pool",
           "conv_autotune", "conv_impl", "rule_linear", "rule_receiver"]
