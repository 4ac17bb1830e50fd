"""Extended Kalman filter training (Puskorius & Feldkamp 1994), ``optimizer=ekf`` (one covariance) and ``dekf``
(decoupled): the weights are the filter's state, the outputs of a :class:`~rnnlab.training.prediction.Prediction` its
measurement."""

from __future__ import annotations

import logging
from typing import Iterable

import torch
from torch import nn

from rnnlab.errors import ConfigError, require_choice, require_positive
from rnnlab.training.prediction import Closure, Prediction, PredictionOptimizer

log = logging.getLogger(__name__)

EKF_GROUPS = ("global", "tensor", "neuron")
MAX_GLOBAL_EKF_PARAMETERS = 10_000  # the global EKF keeps an n x n covariance: 10k parameters is 400 MB in float32


class ExtendedKalmanFilter(PredictionOptimizer):
    """Extended Kalman filter training (Puskorius & Feldkamp 1994; Haykin, "Kalman Filtering and Neural Networks",
    ch. 2): the weights w are the state of a random walk, the network's outputs the measurement.

        w_k = w_{k-1} + q_k,           q ~ N(0, Q),  Q = ``process_noise`` I
        t_k = h(w_k, x_k) + r_k,       r ~ N(0, R),  R = ``measurement_noise`` I,  P_0 = ``initial_covariance`` I

    One step takes the batch's rows as m = N C measurements: h = the outputs z (``mse``) or softmax(z) against one-hot
    targets (``cross_entropy``), with H = dh/dw [m x n] by autograd (one backward pass per measurement). The update
    (Haykin eqs. 2.6-2.9), for each group i of weights:

        A = (R + sum_i H_i P_i H_i^T)^-1,   K_i = P_i H_i^T A,   w_i += K_i (t - h),   P_i += Q - K_i H_i P_i

    ``groups``: ``global`` keeps one covariance over all n weights (the EKF; n <= 10000); ``tensor`` one per parameter
    tensor and ``neuron`` one per row (the incoming weights of one unit; each bias entry alone) give the decoupled EKF
    (DEKF), which drops the covariances between groups. The measurements are taken in chunks of ``chunk_size`` rows,
    one update each with the innovation t - h - H (w - w_start) of the same linearisation; for the global EKF this
    equals one update with all rows (Kalman updates of independent measurements compose).
    """

    def __init__(
        self,
        params: Iterable[torch.Tensor],
        groups: str = "global",
        initial_covariance: float = 1.0,
        process_noise: float = 1e-4,
        measurement_noise: float = 1.0,
        chunk_size: int = 64,
    ):
        require_choice("groups", groups, EKF_GROUPS)
        require_positive(
            initial_covariance=initial_covariance, measurement_noise=measurement_noise, chunk_size=chunk_size
        )
        if not process_noise >= 0.0:
            raise ConfigError("process_noise", f"must be >= 0, got {process_noise!r}")
        super().__init__(params, dict(process_noise=float(process_noise), measurement_noise=float(measurement_noise)))
        self.groups = groups
        self.initial_covariance = float(initial_covariance)
        self.chunk_size = int(chunk_size)
        self.batched_jacobian = True  # False once the model's backward turned out not to vectorise
        n = sum(p.numel() for p in self.params)
        if groups == "global" and n > MAX_GLOBAL_EKF_PARAMETERS:
            raise ConfigError(
                "groups", f"global needs an n x n covariance and the model has n = {n} weights (at most "
                f"{MAX_GLOBAL_EKF_PARAMETERS}); use optimizer=dekf (groups=neuron or tensor) or a smaller model"
            )

    def blocks(self) -> list[tuple[int, int, int]]:
        """The weight groups as blocks (offset into the flat weights, groups G, group size k), G * k entries each."""
        if self.groups == "global":
            return [(0, 1, sum(p.numel() for p in self.params))]
        blocks, offset = [], 0
        for p in self.params:
            rows = 1 if self.groups == "tensor" or p.dim() == 0 else p.shape[0]
            blocks.append((offset, rows, p.numel() // rows))
            offset += p.numel()
        return blocks

    def covariances(self, blocks, reference: torch.Tensor) -> list[torch.Tensor]:
        """P per block [G, k, k], created as P_0 I at the first step (kept in the optimizer state)."""
        owners = self.params[:1] if self.groups == "global" else self.params
        covariances = []
        for owner, (_, rows, size) in zip(owners, blocks):
            state = self.state[owner]
            if "covariance" not in state:
                eye = torch.eye(size, dtype=reference.dtype, device=reference.device)
                state["covariance"] = (self.initial_covariance * eye).expand(rows, size, size).clone()
            covariances.append(state["covariance"])
        return covariances

    def step(self, closure: Closure) -> torch.Tensor:
        prediction = closure()
        measured, targets = measurement(prediction)
        group = self.param_groups[0]
        blocks = self.blocks()
        covariances = self.covariances(blocks, measured)
        start = self.flat()
        change = torch.zeros_like(start)
        for rows in torch.arange(measured.numel(), device=measured.device).split(self.chunk_size):
            jacobian = self.jacobian(measured, rows)  # [m, n]
            innovation = (targets[rows] - measured[rows].detach()) - jacobian @ change
            pieces = [jacobian[:, offset : offset + g * k].reshape(-1, g, k) for offset, g, k in blocks]  # [m, G, k]
            gains = [torch.einsum("gkl,mgl->gkm", cov, h) for cov, h in zip(covariances, pieces)]  # P_i H_i^T
            innovation_cov = sum(torch.einsum("mgk,gkn->mn", h, ph) for h, ph in zip(pieces, gains))
            innovation_cov = innovation_cov + group["measurement_noise"] * torch.eye(
                len(rows), dtype=measured.dtype, device=measured.device
            )
            factors = torch.linalg.lu_factor(innovation_cov)
            for (offset, g, k), cov, ph in zip(blocks, covariances, gains):
                gain = torch.linalg.lu_solve(*factors, ph.reshape(-1, len(rows)).T).T.reshape(g, k, -1)  # K_i
                change[offset : offset + g * k] += (gain @ innovation).reshape(-1)
                cov -= gain @ ph.transpose(1, 2)
        for cov in covariances:
            cov.copy_(0.5 * (cov + cov.transpose(1, 2)))
            cov.diagonal(dim1=1, dim2=2).add_(group["process_noise"])
        self.set_flat(start + change)
        self.stats = {"covariance_trace": float(sum(cov.diagonal(dim1=1, dim2=2).sum() for cov in covariances))}
        return prediction.value().detach()

    def jacobian(self, measured: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """dh_j/dw for the measurements j in ``rows``: [len(rows), n], one backward pass per row (vectorised by
        ``is_grads_batched`` where the model's operations allow it, else in a loop)."""
        selectors = torch.zeros(len(rows), measured.numel(), dtype=measured.dtype, device=measured.device)
        selectors[torch.arange(len(rows)), rows] = 1.0
        if self.batched_jacobian:
            try:
                grads = torch.autograd.grad(
                    measured, self.params, selectors, retain_graph=True, is_grads_batched=True, allow_unused=True
                )
            except RuntimeError as error:  # an operation without a batching rule (e.g. an out= kernel)
                log.info("batched Jacobian unavailable (%s); one backward pass per measurement", error)
                self.batched_jacobian = False
        if not self.batched_jacobian:
            return torch.stack([self.flat_grad(measured, selector, retain_graph=True) for selector in selectors])
        return torch.cat(
            [(torch.zeros(len(rows), p.numel(), dtype=measured.dtype, device=measured.device) if g is None
              else g.reshape(len(rows), -1)) for p, g in zip(self.params, grads)],
            dim=1,
        )


def measurement(prediction: Prediction) -> tuple[torch.Tensor, torch.Tensor]:
    """The EKF's measurement h [m] and its target [m]: the outputs (mse) or the class probabilities against one-hot
    targets (cross_entropy), flattened over rows and outputs."""
    if prediction.loss == "mse":
        return prediction.outputs.reshape(-1), prediction.targets.reshape(-1).to(prediction.outputs.dtype)
    probabilities = torch.softmax(prediction.outputs, dim=-1)
    one_hot = nn.functional.one_hot(prediction.targets, probabilities.shape[-1]).to(probabilities.dtype)
    return probabilities.reshape(-1), one_hot.reshape(-1)
