"""EvoGM's two generators and their training, as the paper states them (docs/algorithm.md).

Two MLPs of one shape map a coefficient vector to a coefficient vector,
N → 128 → 256 → 256 → 256 → 128 → N, ReLU between layers, Tanh on the output. G₋₊ (``lose2win``)
maps losers to winners and proposes candidates; G₊₋ (``win2lose``) maps winners to losers and
exists only for the cycle term. Per full-batch step, with W the winners, L an equally large
random subset of the losers (paired by index) and μ⁺ the mean of all winners:

    L_opt = MSE(G₋₊(L), μ⁺)
    L_cyc = MSE(G₊₋(G₋₊(L)), L) + MSE(G₋₊(G₊₋(W)), W)
    L     = cycle_scale · L_cyc + opt_scale · L_opt        (100 and 1 in the paper)

>>> import numpy as np
>>> pair = GeneratorPair(3, seed=0, hidden_sizes=(8, 8))
>>> rng = np.random.default_rng(0)
>>> pair.train(np.full((2, 3), 0.5), rng.uniform(-1, 1, (5, 3)), steps=5, rng=rng)["total"] > 0
True
>>> pair.propose(np.zeros((4, 3))).shape
(4, 3)

Everything runs on the CPU in float32. Initialization is seeded inside ``torch.random.fork_rng``
and batches are drawn from the caller's numpy generator, so training is reproducible and never
touches the global random state. ``threads`` (default 1: these MLPs are small, one thread is
fastest, see benchmarks/search_functions.py) is set for the duration of a call and then restored.
"""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import torch
from torch import nn

from evogm.search.base import PAPER_HIDDEN_SIZES


def make_generator(dim: int, hidden_sizes=PAPER_HIDDEN_SIZES) -> nn.Sequential:
    """dim → hidden… → dim, ReLU between layers, Tanh on the output (so proposals lie in (−1, 1))."""
    sizes = [dim, *hidden_sizes]
    layers: list[nn.Module] = []
    for n_in, n_out in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(n_in, n_out), nn.ReLU()]
    return nn.Sequential(*layers, nn.Linear(sizes[-1], dim), nn.Tanh())


def mse(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean over batch and dimensions (b may broadcast, e.g. μ⁺ of shape (1, N))."""
    return ((a - b.expand_as(a)) ** 2).mean()


def generator_loss(lose2win, win2lose, winners: torch.Tensor, losers: torch.Tensor,
                   winner_mean: torch.Tensor, cycle_scale: float, opt_scale: float) -> dict:
    """The paper's loss for one paired batch; ``win2lose=None`` is the single-generator ablation
    (no cycle term). winners, losers: (n, N) paired by row; winner_mean: (1, N)."""
    fake_winners = lose2win(losers)
    opt = mse(fake_winners, winner_mean)
    if win2lose is None:
        cycle = torch.zeros((), dtype=opt.dtype)
    else:
        cycle = mse(win2lose(fake_winners), losers) + mse(lose2win(win2lose(winners)), winners)
    return {"total": cycle_scale * cycle + opt_scale * opt, "cycle": cycle, "opt": opt}


def paired_batch(winners: np.ndarray, losers: np.ndarray, rng: np.random.Generator):
    """The full smaller side and a random subset of the larger side of the same size, redrawn on
    every call (the paper's sampling of the product H⁻ × H⁺). No losers: the winners pair with
    themselves."""
    if len(losers) == 0:
        losers = winners
    n = min(len(winners), len(losers))
    pick = lambda rows: rows if len(rows) == n else rows[rng.choice(len(rows), n, replace=False)]
    return pick(winners), pick(losers)


@contextmanager
def torch_threads(threads: int | None):
    """Use ``threads`` intra-op threads inside the block, then restore the previous setting."""
    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


class GeneratorPair:
    """G₋₊ and (unless ``dual=False``) G₊₋ with one Adam optimizer over both."""

    def __init__(self, dim: int, *, seed: int, hidden_sizes=PAPER_HIDDEN_SIZES, dual: bool = True,
                 lr: float = 1e-4, cycle_scale: float = 100.0, opt_scale: float = 1.0,
                 threads: int | None = 1):
        self.cycle_scale, self.opt_scale, self.threads = cycle_scale, opt_scale, threads
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.lose2win = make_generator(dim, hidden_sizes)  # first, so single and dual share it
            self.win2lose = make_generator(dim, hidden_sizes) if dual else None
        params = [p for g in (self.lose2win, self.win2lose) if g is not None for p in g.parameters()]
        self.adam = torch.optim.Adam(params, lr=lr, foreach=True)  # same math, fewer small ops

    def train(self, winners: np.ndarray, losers: np.ndarray, *, steps: int, rng) -> dict:
        """``steps`` full-batch Adam steps on (H⁺, H⁻); returns the last step's loss parts."""
        winner_mean = torch.as_tensor(winners.mean(axis=0, keepdims=True), dtype=torch.float32)
        loss = {}
        with torch_threads(self.threads):
            for _ in range(steps):
                w, l = (torch.as_tensor(a, dtype=torch.float32) for a in paired_batch(winners, losers, rng))
                loss = generator_loss(self.lose2win, self.win2lose, w, l, winner_mean,
                                      self.cycle_scale, self.opt_scale)
                self.adam.zero_grad()
                loss["total"].backward()
                self.adam.step()
        return {k: float(v.detach()) for k, v in loss.items()}

    def propose(self, population: np.ndarray) -> np.ndarray:
        """G₋₊ applied to every row, clipped to [−1, 1]. (n, N) → (n, N) float64."""
        with torch_threads(self.threads), torch.no_grad():
            out = self.lose2win(torch.as_tensor(population, dtype=torch.float32))
        return np.clip(out.double().numpy(), -1.0, 1.0)
