"""Optimizers torch lacks, chosen as ``optimizer=<name>``: Hessian-free, (decoupled) extended Kalman filter, CMA-ES and
a genetic algorithm.

They need more than the gradient of a scalar loss: Hessian-free multiplies by the loss's curvature through the model's
outputs, the Kalman filters need the Jacobian of every output, and the evolutionary searches set the weights and
compare losses. So their ``step`` takes a closure that returns a :class:`Prediction` — the model's outputs at the
current weights as rows that meet the targets, the targets, and the loss that joins them — and calls it as often as
it needs. They declare this with the class attribute ``needs_predictions``; :class:`rnnlab.tasks.sequence.SequenceTask`
then trains by manual optimization and calls :func:`prediction_optimizer_step` for each batch.

Supported losses: ``mse`` (regression data) and ``cross_entropy`` (classification data); other task kinds are refused
with a ConfigError naming ``optimizer``.

    rows N:  the batch's sequences (one target each), or its valid steps (per-step targets; padding, steps outside
             ``target_mask`` and class targets equal to IGNORE_INDEX dropped)
    mse:           L = 1/(N C) sum_{n,c} (z_nc - t_nc)^2            outputs z [N, C], targets t [N, C]
    cross_entropy: L = 1/N sum_n -log softmax(z_n)[t_n]             outputs z [N, C], targets t [N] class ids

Both are the task's own training loss (``SequenceTask.loss_and_count``) on the same rows.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Iterable

import numpy as np
import torch
from torch import nn

from rnnlab.data.base import IGNORE_INDEX, TaskSpec
from rnnlab.errors import ConfigError, require_choice, require_positive
from rnnlab.models.base import valid_step_mask

if TYPE_CHECKING:
    from rnnlab.tasks.sequence import SequenceTask

log = logging.getLogger(__name__)

LOSS_FOR_KIND = {"regression": "mse", "classification": "cross_entropy"}
EKF_GROUPS = ("global", "tensor", "neuron")
MAX_GLOBAL_EKF_PARAMETERS = 10_000  # the global EKF keeps an n x n covariance: 10k parameters is 400 MB in float32
FAILED_LOSS = 1e30  # what the evolutionary searches score a candidate whose loss is not finite


@dataclass
class Prediction:
    """A batch's outputs at the current weights, as rows that meet the targets.

    outputs: [N, C], a function of the parameters (autograd graph kept when grad mode is on)
    targets: [N, C] float (``mse``) or [N] long class ids (``cross_entropy``)
    loss:    ``mse`` or ``cross_entropy`` (module docstring)
    hidden:  the hidden states at the rows' valid steps [M, H], for structural damping (else None)
    """

    outputs: torch.Tensor
    targets: torch.Tensor
    loss: str
    hidden: torch.Tensor | None = None

    def value(self) -> torch.Tensor:
        """The mean loss L (scalar)."""
        if self.loss == "mse":
            return ((self.outputs - self.targets) ** 2).mean()
        return nn.functional.cross_entropy(self.outputs, self.targets)

    def loss_hessian_product(self, v: torch.Tensor) -> torch.Tensor:
        """H_L v with H_L = d^2 L / dz^2 [N C x N C], for v [N, C] (block diagonal over rows).

        mse: 2/(N C) v.   cross_entropy: (diag(p_n) - p_n p_n^T) v_n / N with p_n = softmax(z_n).
        """
        if self.loss == "mse":
            return v * (2.0 / self.outputs.numel())
        p = torch.softmax(self.outputs.detach(), dim=-1)
        return (p * v - p * (p * v).sum(-1, keepdim=True)) / self.outputs.shape[0]


Closure = Callable[[], Prediction]


class PredictionOptimizer(torch.optim.Optimizer):
    """Base: ``step(closure)`` with ``closure() -> Prediction``; parameters handled as one flat vector.

    ``stats`` holds the last step's diagnostics (floats), which the task logs as ``train/<name>``.
    """

    needs_predictions = True
    wants_hidden = False  # whether the closure must also return the hidden states

    def __init__(self, params: Iterable[torch.Tensor], defaults: dict):
        super().__init__(params, defaults)
        self.stats: dict[str, float] = {}

    @property
    def params(self) -> list[torch.Tensor]:
        return [p for group in self.param_groups for p in group["params"] if p.requires_grad]

    def flat(self) -> torch.Tensor:
        return torch.cat([p.detach().reshape(-1) for p in self.params])

    @torch.no_grad()
    def set_flat(self, vector: torch.Tensor) -> None:
        for p, piece in zip(self.params, vector.split([p.numel() for p in self.params])):
            p.copy_(piece.view_as(p))

    def flat_grad(self, outputs, grad_outputs=None, **kwargs) -> torch.Tensor:
        """d outputs / d params contracted with grad_outputs, flattened [n]; unused parameters give zeros."""
        grads = torch.autograd.grad(outputs, self.params, grad_outputs, allow_unused=True, **kwargs)
        return torch.cat([(torch.zeros_like(p) if g is None else g).reshape(-1) for p, g in zip(self.params, grads)])

    @torch.no_grad()
    def loss_at(self, weights: torch.Tensor, closure: Closure) -> float:
        """The batch loss with the parameters set to ``weights`` [n] (they stay set)."""
        self.set_flat(weights)
        return float(closure().value())


# --------------------------------------------------------------------------------------------------- Hessian-free


class GaussNewton:
    """Products with the Gauss-Newton matrix G = J^T H_L J of a :class:`Prediction` (Schraudolph 2002; Martens 2010,
    section 4.2), J = dz/dtheta [N C x n], and with the structural damping term J_h^T J_h / M_h of the hidden states
    (Martens & Sutskever 2011, section 4): the Gauss-Newton matrix of D = 1/2 mean((h - h_k)^2) over the M_h entries.

    J v is reverse mode applied twice: g(u) = J^T u is linear in a dummy u, so J v = d(v^T g(u))/du (Pearlmutter's
    trick without forward mode, which torch's fused RNN kernels lack). J^T w is one backward pass. The graph of the
    closure's forward pass is built once per step and kept for every product.
    """

    def __init__(self, optimizer: PredictionOptimizer, prediction: Prediction, with_hidden: bool = False):
        self.optimizer = optimizer
        self.prediction = prediction
        self.outputs = [prediction.outputs] + ([prediction.hidden] if with_hidden else [])
        self.dummies = [torch.zeros_like(z, requires_grad=True) for z in self.outputs]
        grads = torch.autograd.grad(
            self.outputs, optimizer.params, self.dummies, create_graph=True, allow_unused=True
        )
        self.used = [i for i, g in enumerate(grads) if g is not None]
        self.transposed = [grads[i] for i in self.used]  # J^T u as a differentiable function of u
        self.sizes = [p.numel() for p in optimizer.params]

    def jacobian_products(self, v: torch.Tensor) -> list[torch.Tensor]:
        """[J v] (and [J_h v]) for a flat v [n]: each shaped like its outputs."""
        pieces = v.split(self.sizes)
        products = torch.autograd.grad(
            self.transposed, self.dummies, [pieces[i].view_as(self.transposed[k]) for k, i in enumerate(self.used)],
            retain_graph=True, allow_unused=True,
        )
        return [torch.zeros_like(z) if jv is None else jv for z, jv in zip(self.outputs, products)]

    def product(self, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """G v and, with hidden states, S v = J_h^T J_h v / M_h, for a flat v [n] (None without)."""
        jv = self.jacobian_products(v)
        gv = self.optimizer.flat_grad(
            self.outputs[0], self.prediction.loss_hessian_product(jv[0]), retain_graph=True
        ).detach()
        if len(jv) == 1:
            return gv, None
        return gv, self.optimizer.flat_grad(self.outputs[1], jv[1] / jv[1].numel(), retain_graph=True).detach()


class HessianFree(PredictionOptimizer):
    """Hessian-free optimization (Martens 2010, "Deep learning via Hessian-free optimization", algorithm 1).

    Each step minimises the damped quadratic model of the batch loss around theta,

        q(d) = L(theta) + g^T d + 1/2 d^T (G + lambda I + lambda mu S) d,

    by conjugate gradient on Gauss-Newton-vector products (:class:`GaussNewton`), starting from ``cg_decay`` times the
    previous step's CG solution (section 4.5), stopping after ``cg_max_iters`` iterations or when the relative progress
    of q over the last k = max(10, i/10) iterations falls below k * ``cg_tolerance`` (section 4.4). With
    ``backtracking`` the iterates at i = ceil(1.3^j) are kept and the last one is walked back while the batch loss
    keeps falling (section 4.6). mu = ``structural_damping`` > 0 adds the hidden-state penalty S of Martens &
    Sutskever 2011 (models with ``run_layers`` and ``readout``).

    Levenberg-Marquardt damping (section 4.1): with the reduction ratio rho = (L(theta + d) - L(theta)) /
    (g^T d + 1/2 d^T G d) (the undamped model), lambda *= ``damping_boost`` when rho < 1/4 and lambda *=
    ``damping_drop`` when rho > 3/4. A step that does not lower the batch loss is undone. The curvature and the
    gradient come from the same batch. Stats: ``damping`` (lambda after the step), ``rho``, ``cg_iters``.
    """

    def __init__(
        self,
        params: Iterable[torch.Tensor],
        damping: float = 1.0,
        damping_boost: float = 1.5,
        damping_drop: float = 2.0 / 3.0,
        cg_max_iters: int = 50,
        cg_tolerance: float = 5e-4,
        cg_decay: float = 0.95,
        backtracking: bool = True,
        structural_damping: float = 0.0,
    ):
        require_positive(damping=damping, cg_max_iters=cg_max_iters, cg_tolerance=cg_tolerance)
        if not damping_boost > 1.0:
            raise ConfigError("damping_boost", f"must be > 1, got {damping_boost!r}")
        if not 0.0 < damping_drop < 1.0:
            raise ConfigError("damping_drop", f"must be in (0, 1), got {damping_drop!r}")
        if not 0.0 <= cg_decay <= 1.0:
            raise ConfigError("cg_decay", f"must be in [0, 1], got {cg_decay!r}")
        if not structural_damping >= 0.0:
            raise ConfigError("structural_damping", f"must be >= 0, got {structural_damping!r}")
        super().__init__(params, dict(damping=float(damping)))
        self.damping_boost = damping_boost
        self.damping_drop = damping_drop
        self.cg_max_iters = int(cg_max_iters)
        self.cg_tolerance = cg_tolerance
        self.cg_decay = cg_decay
        self.backtracking = backtracking
        self.structural_damping = structural_damping
        self.wants_hidden = structural_damping > 0

    @property
    def damping(self) -> float:
        return self.param_groups[0]["damping"]

    @damping.setter
    def damping(self, value: float) -> None:
        for group in self.param_groups:
            group["damping"] = value

    def step(self, closure: Closure) -> torch.Tensor:
        prediction = closure()
        loss = prediction.value()
        gradient = self.flat_grad(loss, retain_graph=True).detach()
        curvature = GaussNewton(self, prediction, with_hidden=self.wants_hidden)
        damping = self.damping

        def products(v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            """((G + lambda I + lambda mu S) v, G v)."""
            gv, sv = curvature.product(v)
            damped = gv + damping * v
            return (damped, gv) if sv is None else (damped + (damping * self.structural_damping) * sv, gv)

        start = self.flat()
        previous = self.state[self.params[0]].get("cg_solution")
        initial = self.cg_decay * previous if previous is not None and previous.shape == start.shape else None
        iterates, iterations = conjugate_gradient(
            products, -gradient, initial, self.cg_max_iters, self.cg_tolerance, self.backtracking
        )
        self.state[self.params[0]]["cg_solution"] = iterates[-1][0].clone()
        # the undamped model's reduction g^T d + 1/2 d^T G d of every kept iterate, before the weights move (the
        # products read the graph of the forward pass at the current weights)
        reductions = [float(gradient @ x + 0.5 * x @ gx) for x, gx in iterates]
        loss_before = float(loss.detach())
        chosen, loss_after = self.backtrack([x for x, _ in iterates], start, closure)
        predicted = reductions[chosen]
        rho = (loss_after - loss_before) / predicted if predicted < 0 else -math.inf
        if loss_after < loss_before:
            self.set_flat(start + iterates[chosen][0])
        else:  # no descent on this batch: undo
            self.set_flat(start)
        self.damping = levenberg_marquardt(damping, rho, self.damping_boost, self.damping_drop)
        self.stats = {"damping": self.damping, "cg_iters": iterations}
        if math.isfinite(rho):
            self.stats["rho"] = rho
        return loss.detach()

    def backtrack(self, iterates: list[torch.Tensor], start: torch.Tensor, closure: Closure) -> tuple[int, float]:
        """The index of the kept CG iterate to step along and its batch loss (inf if not finite): the last one,
        walked back while the loss falls (Martens 2010, section 4.6)."""

        def loss_at(index: int) -> float:
            value = self.loss_at(start + iterates[index], closure)
            return value if math.isfinite(value) else math.inf

        best, best_loss = len(iterates) - 1, loss_at(len(iterates) - 1)
        for index in range(len(iterates) - 2, -1, -1):
            candidate_loss = loss_at(index)
            if not candidate_loss < best_loss:
                break
            best, best_loss = index, candidate_loss
        return best, best_loss


def levenberg_marquardt(damping: float, rho: float, boost: float, drop: float) -> float:
    """Martens 2010, section 4.1: raise lambda when the quadratic model overpredicts the reduction (rho < 1/4), lower
    it when the model is good (rho > 3/4)."""
    if rho < 0.25:
        return damping * boost
    if rho > 0.75:
        return damping * drop
    return damping


def conjugate_gradient(
    products: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
    b: torch.Tensor,
    initial: torch.Tensor | None,
    max_iters: int,
    tolerance: float,
    keep_for_backtracking: bool,
) -> tuple[list[tuple[torch.Tensor, torch.Tensor]], int]:
    """Minimise phi(x) = 1/2 x^T A x - b^T x for symmetric positive definite A.

    ``products(v)`` returns (A v, G v) for a second matrix G (the undamped curvature), whose product with each
    iterate, G x, is carried along at no extra cost. Martens 2010, section 4.4 stopping rule: after iteration
    i > k = max(10, i/10), stop when (phi(x_i) - phi(x_{i-k})) / phi(x_i) < k * tolerance (phi < 0). Returns the
    iterates (x, G x) kept for backtracking (x_i at i = ceil(1.3^j), and always the last) and the iterations done.
    """
    if initial is None:
        x, gx, r = torch.zeros_like(b), torch.zeros_like(b), b.clone()
    else:
        x = initial.clone()
        ax, gx = products(x)
        r = b - ax
    p = r.clone()
    rr = r @ r
    phis: list[float] = []
    kept: list[tuple[torch.Tensor, torch.Tensor]] = []
    kept_at = -1  # the iteration of kept[-1]
    next_kept = 1.0
    iteration = 0
    while iteration < max_iters and rr > 0:
        ap, gp = products(p)
        curvature = p @ ap
        if not curvature > 0:
            break
        alpha = rr / curvature
        x = x + alpha * p
        gx = gx + alpha * gp
        r = r - alpha * ap
        rr_new = r @ r
        p = r + (rr_new / rr) * p
        rr = rr_new
        iteration += 1
        phis.append(float(-0.5 * x @ (b + r)))  # phi(x) = 1/2 x^T (b - r) - b^T x
        if keep_for_backtracking and iteration >= math.ceil(next_kept):
            kept.append((x, gx))
            kept_at = iteration
            while math.ceil(next_kept) <= iteration:
                next_kept *= 1.3
        k = max(10, iteration // 10)
        if iteration > k and phis[-1] < 0 and (phis[-1] - phis[-1 - k]) / phis[-1] < k * tolerance:
            break
    if kept_at != iteration or not kept:
        kept.append((x, gx))
    return kept, iteration


# ------------------------------------------------------------------------------------------- extended Kalman filter


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


# ------------------------------------------------------------------------------------------- evolutionary searches


class EvolutionarySearch(PredictionOptimizer):
    """A weight search that scores candidates by the batch loss (no gradients): one generation per step.

    After the generation the weights become the search's estimate (:meth:`estimate`), kept only if its batch loss is
    below the loss of the weights before the step. The search starts around the weights at the first step; its state
    (a library object) is not checkpointed, so a resumed run restarts the search around the checkpoint's weights.
    ``seed`` null derives the library's seed from torch's (the run's ``seed``). Stats: ``best_loss`` of the generation
    and ``evaluations``, the batch-loss evaluations so far (the budget that compares searches).
    """

    def __init__(self, params: Iterable[torch.Tensor], seed: int | None):
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
            raise ConfigError("seed", f"must be null or an integer >= 0, got {seed!r}")
        super().__init__(params, {})
        self.seed = seed
        self.search = None
        self.evaluations = 0

    def library_seed(self) -> int:
        return (self.seed if self.seed is not None else torch.initial_seed()) % (2**31 - 1) + 1

    @torch.no_grad()
    def step(self, closure: Closure) -> torch.Tensor:
        start = self.flat()
        loss_before = float(closure().value())
        if self.search is None:
            self.search = self.start_search(start.double().cpu().numpy())
        candidates = self.ask()
        losses = []
        for candidate in candidates:
            loss = self.loss_at(torch.as_tensor(candidate, dtype=start.dtype, device=start.device), closure)
            losses.append(loss if math.isfinite(loss) else FAILED_LOSS)
        self.evaluations += len(candidates) + 2
        self.tell(candidates, losses)
        estimate = torch.as_tensor(self.estimate(candidates, losses), dtype=start.dtype, device=start.device)
        if not self.loss_at(estimate, closure) < loss_before:
            self.set_flat(start)
        self.stats = {"best_loss": min(losses), "evaluations": self.evaluations}
        return torch.tensor(loss_before)

    def start_search(self, x0: np.ndarray):
        raise NotImplementedError

    def ask(self) -> list[np.ndarray]:
        raise NotImplementedError

    def tell(self, candidates: list[np.ndarray], losses: list[float]) -> None:
        raise NotImplementedError

    def estimate(self, candidates: list[np.ndarray], losses: list[float]) -> np.ndarray:
        raise NotImplementedError


class CMAES(EvolutionarySearch):
    """CMA-ES (Hansen & Ostermeier 2001) through the ``cma`` package: a Gaussian search distribution N(m, sigma^2 C)
    whose mean, step size and full covariance adapt to the ranked batch losses of ``popsize`` candidates per step
    (null: cma's 4 + 3 ln n). Starts at m = the weights, sigma = ``sigma0``; the estimate is the mean m."""

    def __init__(
        self,
        params: Iterable[torch.Tensor],
        sigma0: float = 0.1,
        popsize: int | None = None,
        seed: int | None = None,
    ):
        require_positive(sigma0=sigma0)
        if popsize is not None:
            require_positive(popsize=popsize)
        super().__init__(params, seed)
        self.sigma0 = float(sigma0)
        self.popsize = popsize

    def start_search(self, x0):
        import cma

        options = {"seed": self.library_seed(), "verbose": -9, "verb_log": 0, "verb_disp": 0}
        if self.popsize is not None:
            options["popsize"] = int(self.popsize)
        return cma.CMAEvolutionStrategy(x0, self.sigma0, options)

    def ask(self):
        return self.search.ask()

    def tell(self, candidates, losses):
        self.search.tell(candidates, losses)

    def estimate(self, candidates, losses):
        return self.search.mean


class GeneticAlgorithm(EvolutionarySearch):
    """A real-coded genetic algorithm through nevergrad's ``EvolutionStrategy`` (Beyer & Schwefel 2002): each step
    breeds ``offsprings`` children from a population of ``popsize`` parents by Gaussian mutation with a self-adapted
    step size (start ``sigma``) and, with probability ``recombination_ratio``, intermediate crossover with a random
    parent; truncation selection keeps the best ``popsize`` of the children (``only_offsprings``, comma selection,
    which suits losses measured on changing batches) or of children and parents (plus selection). The estimate is the
    generation's best child."""

    def __init__(
        self,
        params: Iterable[torch.Tensor],
        popsize: int = 20,
        offsprings: int = 40,
        sigma: float = 0.1,
        recombination_ratio: float = 0.5,
        only_offsprings: bool = True,
        seed: int | None = None,
    ):
        require_positive(popsize=popsize, offsprings=offsprings, sigma=sigma)
        if not 0.0 <= recombination_ratio <= 1.0:
            raise ConfigError("recombination_ratio", f"must be in [0, 1], got {recombination_ratio!r}")
        if only_offsprings and offsprings < popsize:
            raise ConfigError("offsprings", f"must be >= popsize={popsize} with only_offsprings=true, got {offsprings}")
        super().__init__(params, seed)
        self.popsize = int(popsize)
        self.offsprings = int(offsprings)
        self.sigma = float(sigma)
        self.recombination_ratio = float(recombination_ratio)
        self.only_offsprings = bool(only_offsprings)
        self.pending: list = []

    def start_search(self, x0):
        import nevergrad as ng

        parametrization = ng.p.Array(init=x0, mutable_sigma=True).set_mutation(sigma=self.sigma)
        parametrization.random_state.seed(self.library_seed())
        strategy = ng.optimizers.EvolutionStrategy(
            recombination_ratio=self.recombination_ratio, popsize=self.popsize, offsprings=self.offsprings,
            only_offsprings=self.only_offsprings, ranker="simple",
        )
        return strategy(parametrization=parametrization, budget=None)

    def ask(self):
        self.pending = [self.search.ask() for _ in range(self.offsprings)]
        return [candidate.value for candidate in self.pending]

    def tell(self, candidates, losses):
        for candidate, loss in zip(self.pending, losses):
            self.search.tell(candidate, loss)

    def estimate(self, candidates, losses):
        return candidates[int(np.argmin(losses))]


# ----------------------------------------------------------------------------------------------- the task's side


def needs_predictions(optimizer_factory) -> bool:
    """Whether the optimizer config (a class or a ``functools.partial`` of one) builds a PredictionOptimizer."""
    target = getattr(optimizer_factory, "func", optimizer_factory)
    return bool(getattr(target, "needs_predictions", False))


def check_prediction_optimizer(optimizer_factory, spec: TaskSpec, scheduler_factory=None, rule=None) -> bool:
    """True when ``optimizer_factory`` builds a :class:`PredictionOptimizer` that can train ``spec``'s data; raise
    ConfigError(``optimizer...``) for data it cannot train or a bad hyperparameter, and for a scheduler or a learning
    rule other than bptt (``rule``: the task's ``rnnlab.training.rules`` object, None for bptt)."""
    if not needs_predictions(optimizer_factory):
        return False
    name = getattr(optimizer_factory, "func", optimizer_factory).__name__
    if rule is not None:
        raise ConfigError(
            "training.rule", f"{name} updates once per batch from the whole batch; use training.rule=bptt"
        )
    if spec.kind not in LOSS_FOR_KIND:
        raise ConfigError(
            "optimizer", f"{name} trains regression (MSE) and classification (cross-entropy) data; this data is "
            f"{spec.kind}. Supported: {', '.join(LOSS_FOR_KIND)}; use a gradient optimizer (adam, sgd, ...) for it"
        )
    if scheduler_factory is not None:
        raise ConfigError("scheduler", f"{name} has no learning rate to schedule; use scheduler=none")
    try:
        optimizer_factory(params=[torch.zeros(1, requires_grad=True)])  # checks the hyperparameters, allocates little
    except ConfigError as error:
        raise error.with_prefix("optimizer") from None
    return True


def batch_prediction(task: "SequenceTask", batch: dict, start_state, with_hidden: bool) -> Prediction:
    """The closure's body: the task's model on ``batch`` (stateful data from ``start_state``), as rows and targets."""
    spec = task.spec
    if spec.stateful:
        task.carried_state["train"] = start_state
    hidden = None
    if with_hidden:
        inputs = batch["inputs"] if task.embedding is None else task.embedding(batch["inputs"])
        layers, _ = task.model.run_layers(inputs, batch["lengths"], start_state if spec.stateful else None)
        outputs = task.model.readout(layers)
        hidden = layers[valid_step_mask(batch["lengths"], *layers.shape[:2], layers.device)]
    else:
        outputs = task.run_model(batch, "train")
    predictions = task.head(outputs, batch["lengths"])
    targets = batch["targets"]
    if spec.per_step:
        valid = valid_step_mask(batch["lengths"], *predictions.shape[:2], predictions.device)
        if batch.get("target_mask") is not None:
            valid = valid & batch["target_mask"]
        predictions, targets = predictions[valid], targets[valid]
    loss = LOSS_FOR_KIND[spec.kind]
    if loss == "cross_entropy":
        keep = targets != IGNORE_INDEX
        predictions, targets = predictions[keep], targets[keep]
    else:
        targets = targets.reshape(predictions.shape).to(predictions.dtype)
    return Prediction(predictions, targets, loss, hidden)


def prediction_optimizer_step(task: "SequenceTask", batch: dict) -> torch.Tensor | None:
    """``SequenceTask.training_step`` under manual optimization for a :class:`PredictionOptimizer`.

    Logs ``train/loss`` and the metrics at the weights before the step (as automatic optimization does), then lets
    the optimizer call the closure as often as it needs; its ``stats`` are logged as ``train/<name>``. The Lightning
    hooks around an optimizer step (``on_before_optimizer_step``) run after each closure call.
    """
    optimizer = task.optimizers()
    start_state = task.carried_state.get("train")
    with torch.no_grad():
        loss = task.shared_step(batch, "train")
    if not torch.isfinite(loss):
        task.diverged_at_step = task.global_step
        task.trainer.should_stop = True
        return None
    if task.regularization.penalty(task) is not None:
        raise ConfigError("regularizer", f"{type(optimizer.optimizer).__name__} minimises the data loss only; "
                          "penalties (l1, l2, norm_stabilizer) are not supported with it, hooks (dropout, ...) are")
    next_state = task.carried_state.get("train")
    with_hidden = optimizer.optimizer.wants_hidden
    readout = getattr(task.model, "readout", None)
    if with_hidden and not (hasattr(task.model, "run_layers") and isinstance(readout, nn.Module)):
        raise ConfigError("optimizer.structural_damping", "needs a model with run_layers and readout; set it to 0")
    optimizer.step(closure=lambda: batch_prediction(task, batch, start_state, with_hidden))
    if task.spec.stateful:
        task.carried_state["train"] = next_state
    for name, value in optimizer.optimizer.stats.items():
        task.log(f"train/{name}", float(value), on_step=True, on_epoch=False)
    return loss
