"""Hessian-free optimization (Martens 2010; Martens & Sutskever 2011), ``optimizer=hessian_free``: conjugate gradient
on Gauss-Newton-vector products of a :class:`~rnnlab.training.prediction.Prediction`."""

from __future__ import annotations

import math
from typing import Callable, Iterable

import torch

from rnnlab.errors import ConfigError, require_positive
from rnnlab.training.prediction import Closure, Prediction, PredictionOptimizer


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
