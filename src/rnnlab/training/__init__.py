"""Training methods torch lacks: learning rules (truncated BPTT, RTRL, block update, Green's function), their cost."""

from rnnlab.training.rules import RULES, TrainingSettings, make_rule

__all__ = ["RULES", "TrainingSettings", "make_rule"]
