"""Training methods torch lacks: learning rules (truncated BPTT, RTRL, the BPTT/RTRL hybrid) and their cost."""

from rnnlab.training.rules import RULES, TrainingSettings, make_rule

__all__ = ["RULES", "TrainingSettings", "make_rule"]
