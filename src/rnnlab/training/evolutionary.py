"""Evolutionary weight searches, ``optimizer=cmaes`` (CMA-ES through ``cma``) and ``genetic`` (a real-coded genetic
algorithm through ``nevergrad``): candidates scored by the batch loss of a
:class:`~rnnlab.training.prediction.Prediction`, no gradients."""

from __future__ import annotations

import math
from typing import Iterable

import numpy as np
import torch

from rnnlab.errors import ConfigError, require_positive
from rnnlab.training.prediction import Closure, PredictionOptimizer

FAILED_LOSS = 1e30  # what the evolutionary searches score a candidate whose loss is not finite


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
