"""Analysis of trained and training networks (CONTRIBUTING.md, 'The layering'): gradient flow through time and the
stability of the recurrence (``gradient_flow``, survey III.B)."""

from rnnlab.analysis.diagnostics_callback import GradientFlowCallback
from rnnlab.analysis.gradient_flow import measure_gradient_flow, recurrent_spectra

__all__ = ["GradientFlowCallback", "measure_gradient_flow", "recurrent_spectra"]
