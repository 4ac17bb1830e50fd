"""Training methods torch lacks, behind one seam (``rnnlab.training.strategy``): learning rules (truncated BPTT, RTRL,
block update, Green's function), optimizers that read predictions (Hessian-free, EKF, evolutionary searches), and
regularizers."""

from rnnlab.training.rules import RULES, TrainingSettings

__all__ = ["RULES", "TrainingSettings"]
