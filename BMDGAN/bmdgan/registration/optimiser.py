"""Optimisers of the six pose parameters: batched CMA-ES and a short gradient refinement (Adam).

Parameters are ``(rx, ry, rz, tx, ty, tz)`` (degrees, degrees, degrees, mm, mm, mm; see
:mod:`bmdgan.projection.pose`). Both optimisers work on parameters divided by a per-parameter ``scale``
(e.g. 4 degrees and 8 mm), so that one unit is a comparable step in every direction.

Why CMA-ES (Hansen 2016; the optimiser of Otake et al. 2012): the similarity of a DRR to a radiograph is
noisy and has many shallow local optima; CMA-ES samples a population around its mean, adapts the step
sizes and their correlations (rotation-translation coupling), and evaluates the whole population at once,
which the projector renders in one batched call.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

CostBatch = Callable[[np.ndarray], np.ndarray]
"""Costs (B,) of parameter rows (B, 6): lower is better (e.g. minus the gradient correlation)."""


@dataclass
class SearchResult:
    """Best parameters (6,) found, their cost, the work done and the best cost after each generation/step."""

    parameters: np.ndarray
    cost: float
    evaluations: int
    iterations: int
    history: list[float] = field(default_factory=list)
    stopped: str = ""


def cmaes_search(
    cost: CostBatch,
    start: np.ndarray,
    scale: np.ndarray,
    *,
    bounds: np.ndarray | None = None,
    population: int = 12,
    max_generations: int = 40,
    sigma: float = 1.0,
    tolerance: float = 0.02,
    seed: int = 0,
    free: np.ndarray | None = None,
    on_generation: Callable[[int, float], None] | None = None,
) -> SearchResult:
    """Minimise ``cost`` with CMA-ES from ``start`` (6,) with step ``sigma * scale`` (degrees/mm).

    bounds: (6, 2) lower/upper limits in parameter units (None: unbounded). free: bool (6,), the
    parameters searched (the others stay at ``start``; default all). Stops after ``max_generations``,
    or when the step size falls below ``tolerance`` (in units of ``scale``), or when the cmaes package
    reports convergence. The whole population goes to ``cost`` at once.
    """
    from cmaes import CMA

    scale = np.asarray(scale, dtype=float)
    start = np.asarray(start, dtype=float)
    free = np.ones(len(start), dtype=bool) if free is None else np.asarray(free, dtype=bool)

    def full(rows: np.ndarray) -> np.ndarray:
        """Parameter rows (B, 6) in degrees/mm from searched, scaled rows (B, free)."""
        result = np.repeat(start[None], len(rows), axis=0)
        result[:, free] = rows * scale[free]
        return result

    scaled_bounds = None if bounds is None else np.asarray(bounds, dtype=float)[free] / scale[free, None]
    optimiser = CMA(
        mean=start[free] / scale[free],
        sigma=float(sigma),
        bounds=scaled_bounds,
        seed=int(seed),
        population_size=int(population),
    )
    best_x, best_cost = start.copy(), float(cost(start[None])[0])
    evaluations, history, stopped = 1, [], "generations"
    generation = 0
    for generation in range(1, int(max_generations) + 1):
        samples = np.stack([optimiser.ask() for _ in range(optimiser.population_size)])
        costs = np.asarray(cost(full(samples)), dtype=float)
        evaluations += len(samples)
        optimiser.tell(list(zip(samples, costs)))
        index = int(np.argmin(costs))
        if costs[index] < best_cost:
            best_cost, best_x = float(costs[index]), full(samples[index : index + 1])[0]
        history.append(best_cost)
        if on_generation is not None:
            on_generation(generation, best_cost)
        if optimiser.should_stop():
            stopped = "converged"
            break
        if _step_size(optimiser) < tolerance:
            stopped = "tolerance"
            break
    # the distribution mean averages out the similarity's noise: keep it when it is at least as good
    mean = full(np.asarray(optimiser.mean, dtype=float)[None])[0]
    mean_cost = float(cost(mean[None])[0])
    evaluations += 1
    if mean_cost <= best_cost:
        best_x, best_cost = mean, mean_cost
    return SearchResult(best_x, best_cost, evaluations, generation, history, stopped)


def _step_size(optimiser) -> float:
    """Largest standard deviation of the search distribution (in scaled units)."""
    try:
        covariance = optimiser._C  # cmaes keeps the covariance privately; fall back to sigma if renamed
        return float(optimiser._sigma * np.sqrt(np.max(np.diag(covariance))))
    except AttributeError:
        return float(getattr(optimiser, "_sigma", np.inf))


def adam_refine(
    loss: Callable[[torch.Tensor], torch.Tensor],
    start: np.ndarray,
    scale: np.ndarray,
    *,
    steps: int = 10,
    learning_rate: float = 0.05,
    on_step: Callable[[int, float], None] | None = None,
) -> SearchResult:
    """A few Adam steps on ``loss(parameters (6,) tensor) -> scalar`` through the differentiable projector.

    learning_rate is in units of ``scale`` (e.g. 0.05 x 1 degree). Returns the best parameters seen
    (the first one is the start itself), so a refinement can never make the result worse.
    """
    scale_t = torch.as_tensor(np.asarray(scale, dtype=float))
    variable = torch.as_tensor(np.asarray(start, dtype=float) / np.asarray(scale, dtype=float)).clone()
    variable.requires_grad_(True)
    optimiser = torch.optim.Adam([variable], lr=float(learning_rate))
    best_x, best_cost, history = np.asarray(start, dtype=float).copy(), np.inf, []
    for step in range(int(steps) + 1):
        optimiser.zero_grad()
        value = loss(variable * scale_t)
        current = float(value.detach())
        if current < best_cost:
            best_cost, best_x = current, (variable.detach() * scale_t).numpy().copy()
        history.append(best_cost)
        if on_step is not None:
            on_step(step, best_cost)
        if step == steps:
            break
        value.backward()
        optimiser.step()
    return SearchResult(best_x, best_cost, int(steps) + 1, int(steps), history, "steps")
