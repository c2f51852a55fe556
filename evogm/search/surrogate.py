"""A small Gaussian-process model of the search history, to screen candidates before evaluating them.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> X = rng.uniform(-1, 1, (30, 2)); y = np.sum(X**2, axis=1)
>>> gp = GaussianProcess().fit(X, y)
>>> mean, _ = gp.predict(np.array([[0.0, 0.0], [0.9, 0.9]]))
>>> bool(mean[0] < mean[1])
True
>>> gp.thompson(rng.uniform(-1, 1, (200, 2)), 3, rng).shape   # 3 distinct picks from 200 candidates
(3,)

The model, and why each part (docs/algorithm.md has the measurements):
- Matérn-5/2 kernel with one length scale per coordinate (ARD), a signal and a noise variance (a
  dev score is a sample mean: its noise is real), fitted by maximizing the marginal likelihood
  (gradient in closed form) with L-BFGS.
- Inputs: the coefficients, and their sum over √d with its own length scale. An ARD kernel only has
  length scales along the axes; on a merge landscape the all-ones direction (task arithmetic's
  global scale, a component the experts share) matters most.
- Targets: the normal scores of the losses' ranks. Merge landscapes are mostly bad merges with a few
  good ones, a heavy tail a stationary GP fits badly, and only the order matters to the search.
- Length scales: two log-normal priors are fitted at every refit, the dimension-scaled one that
  makes vanilla GPs work in dozens of dimensions (Hvarfner, Hellsten & Nardi, ICML 2024: location
  √2 + ½·log d, scale √3) and one centred at half the box; the fit whose leave-one-out means
  order the losses best (closed form) is kept.
- Starts: the prior's centre and the last fit (short length scales on the first fit): from a
  single start the fit can end at a flat model that calls every difference noise.

Everything runs in float64 on the CPU and draws random numbers from the caller's numpy generator
only, so it is reproducible.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from evogm.search.generators import torch_threads


def normal_scores(y: np.ndarray) -> np.ndarray:
    """Each value replaced by the normal quantile of its rank, (rank − ½)/n; ties share a score.

    >>> normal_scores(np.array([5.0, -1.0, 100.0])).round(3).tolist()
    [0.0, -0.967, 0.967]
    """
    order = np.argsort(y, kind="stable")
    ranks = np.empty(len(y))
    ranks[order] = np.arange(len(y))
    for value in np.unique(y[np.r_[False, np.diff(y[order]) == 0]] if len(y) > 1 else []):
        ranks[y == value] = ranks[y == value].mean()
    return torch.special.ndtri(torch.as_tensor((ranks + 0.5) / len(y))).numpy()


def _rank_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's correlation of a and b (0 where either is constant)."""
    ra, rb = (np.argsort(np.argsort(v, kind="stable"), kind="stable").astype(float) for v in (a, b))
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denominator = math.sqrt(float(ra @ ra) * float(rb @ rb))
    return float(ra @ rb) / denominator if denominator else 0.0


def matern52(a: torch.Tensor, b: torch.Tensor, lengthscales: torch.Tensor) -> torch.Tensor:
    """k(a, b) / σ² for rows of a and b: (1 + √5 r + 5r²/3) · exp(−√5 r), r the scaled distance."""
    d = torch.cdist(a / lengthscales, b / lengthscales).clamp_min(1e-12)
    s = math.sqrt(5.0) * d
    return (1.0 + s + s * s / 3.0) * torch.exp(-s)


class GaussianProcess:
    """fit(X, y) then predict / thompson / descend; ``steps``: L-BFGS iterations per fit."""

    NOISE_FLOOR = 1e-4  # variance, in standardized units
    SHORT = 1.0  # the second prior's median length scale: half the box [−1, 1]

    def __init__(self, steps: int = 15, threads: int | None = 1):
        self.steps, self.threads = steps, threads
        self.raw: torch.Tensor | None = None  # log length scales (d), log signal var, log noise var
        self.last_raw: dict[float, torch.Tensor] = {}  # the last fit's parameters, per prior location

    def fit(self, X: np.ndarray, y: np.ndarray) -> "GaussianProcess":
        """Fit with each length-scale prior; keep the fit whose held-out predictions rank best."""
        finite = np.isfinite(y)
        X, y = np.asarray(X, dtype=np.float64)[finite], np.asarray(y, dtype=np.float64)[finite]
        self.X = self._inputs(torch.as_tensor(X))
        scaled = math.sqrt(2.0) + 0.5 * math.log(self.X.shape[1])  # the dimension-scaled prior's location
        with torch_threads(self.threads):
            fits = [(self._fit_to(y, loc), self._held_out_order(y)) for loc in (scaled, math.log(self.SHORT))]
            vars(self).update(max(fits, key=lambda fit: fit[1])[0])
        return self

    def _fit_to(self, y: np.ndarray, prior_loc: float) -> dict:
        """Fit the GP to y's rank scores, its length scales' prior centred on exp(prior_loc); returns
        the fitted state."""
        z = normal_scores(y)
        self.shift, self.scale, self.prior_loc = float(z.mean()), float(z.std()) or 1.0, prior_loc
        self.y = torch.as_tensor((z - self.shift) / self.scale)
        dim = self.X.shape[1]
        starts = [torch.tensor([loc] * dim + [0.0, math.log(noise)], dtype=torch.float64)
                  for loc, noise in ((prior_loc, 0.1), (0.0, 0.01))]  # the prior's centre, and short length scales
        last = self.last_raw.get(prior_loc)
        if last is not None and len(last) == dim + 2:
            starts = starts[:1] + [last]
        self.raw = self.last_raw[prior_loc] = min((self._optimize(s) for s in starts), key=lambda fit: fit[0])[1]
        self._factorize()
        return {k: getattr(self, k) for k in ("shift", "scale", "prior_loc", "y", "raw", "L", "alpha")}

    def _held_out_order(self, y: np.ndarray) -> float:
        """Rank correlation of the current fit's leave-one-out means (closed form) with the losses y."""
        loo = self.y - self.alpha / torch.cholesky_inverse(self.L).diagonal()
        return _rank_correlation(loo.numpy(), y)

    def predict(self, Xc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Posterior mean and standard deviation of the loss (original units) at the rows of Xc."""
        with torch_threads(self.threads), torch.no_grad():
            ls, sf2, _ = self._params(self.raw)
            Ks = sf2 * matern52(self._inputs(torch.as_tensor(np.asarray(Xc, dtype=np.float64))), self.X, ls)
            mean = Ks @ self.alpha
            v = torch.linalg.solve_triangular(self.L, Ks.T, upper=False)
            var = (sf2 - (v * v).sum(0)).clamp_min(1e-12)
        return (mean.numpy() * self.scale + self.shift, var.sqrt().numpy() * self.scale)

    def believing(self, pending: np.ndarray) -> "GaussianProcess":
        """A copy of the fit that also holds the rows still being evaluated, each believed to score
        the posterior mean there (the kriging believer): its variance there collapses, so that a
        draw from it looks elsewhere. The fitted hyperparameters are kept; this GP is unchanged."""
        if len(pending) == 0:
            return self
        copy = GaussianProcess(self.steps, self.threads)
        vars(copy).update(vars(self))
        with torch_threads(self.threads), torch.no_grad():
            ls, sf2, _ = self._params(self.raw)
            X = self._inputs(torch.as_tensor(np.asarray(pending, dtype=np.float64)))
            believed = (sf2 * matern52(X, self.X, ls)) @ self.alpha  # standardized, as self.y
            copy.X, copy.y = torch.cat([self.X, X]), torch.cat([self.y, believed])
            copy._factorize()
        return copy

    def thompson(self, Xc: np.ndarray, n: int, rng: np.random.Generator, shortlist: int = 300) -> np.ndarray:
        """Indices of ``n`` distinct candidates: each the minimizer of one joint posterior sample.

        The joint sample is drawn over the ``shortlist`` candidates with the lowest mean − 2·sd (a
        candidate outside it is almost never a sample's minimizer), so its cost does not grow with
        the pool."""
        if len(Xc) > shortlist:
            mean, sd = self.predict(Xc)
            keep = np.argsort(mean - 2.0 * sd, kind="stable")[:shortlist]
            return keep[self.thompson(Xc[keep], n, rng, shortlist)]
        with torch_threads(self.threads), torch.no_grad():
            ls, sf2, _ = self._params(self.raw)
            Xc_t = self._inputs(torch.as_tensor(np.asarray(Xc, dtype=np.float64)))
            Ks = sf2 * matern52(Xc_t, self.X, ls)
            v = torch.linalg.solve_triangular(self.L, Ks.T, upper=False)
            cov = sf2 * matern52(Xc_t, Xc_t, ls) - v.T @ v
            cov.diagonal().add_(1e-6 * float(sf2))
            chol, _ = torch.linalg.cholesky_ex(cov)
            z = torch.as_tensor(rng.standard_normal((len(Xc), n)))
            samples = (Ks @ self.alpha)[:, None] + chol @ z  # (m, n) standardized
        chosen: list[int] = []
        for column in samples.T.numpy():
            order = np.argsort(column, kind="stable")
            chosen.append(int(next(i for i in order if i not in chosen)))
        return np.array(chosen)

    def descend(self, starts: np.ndarray, steps: int = 20, bounds=(-1.0, 1.0)) -> np.ndarray:
        """Each start moved downhill on the posterior mean (projected gradient steps in the box)."""
        with torch_threads(self.threads):
            ls, sf2, _ = (p.detach() for p in self._params(self.raw))
            x = torch.as_tensor(np.asarray(starts, dtype=np.float64)).clone().requires_grad_(True)
            adam = torch.optim.Adam([x], lr=0.02)
            for _ in range(steps):
                adam.zero_grad()
                (sf2 * matern52(self._inputs(x), self.X, ls) @ self.alpha).sum().backward()
                adam.step()
                with torch.no_grad():
                    x.clamp_(*bounds)
        return x.detach().numpy()

    def _inputs(self, X: torch.Tensor) -> torch.Tensor:
        """The kernel's inputs: the coefficients, and their sum over √d."""
        return torch.cat([X, X.sum(1, keepdim=True) / math.sqrt(X.shape[1])], dim=1)

    # --- fitting ---------------------------------------------------------------------------------

    def _params(self, raw: torch.Tensor):
        dim = len(raw) - 2
        return raw[:dim].exp(), raw[dim].exp(), raw[dim + 1].exp() + self.NOISE_FLOOR

    def _neg_log_posterior(self, raw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The negative log marginal likelihood plus the priors' terms, and its gradient in ``raw``.

        The gradient is the closed form (Rasmussen & Williams, eq. 5.9): −½·tr((ααᵀ − K⁻¹)·∂K/∂θ),
        with ∂k/∂log ℓⱼ = σ²·(5/3)·(1 + s)·e⁻ˢ·(Δxⱼ/ℓⱼ)² for the Matérn-5/2 kernel; it costs a
        Cholesky inverse and a few n×n products instead of autograd's backward through them
        (benchmarks/search_cost.py prints the asks' seconds), and agrees with autograd to rounding."""
        dim = len(raw) - 2
        ls, sf2, noise = self._params(raw)
        scaled = self.X / ls
        s = math.sqrt(5.0) * torch.cdist(scaled, scaled).clamp_min(1e-12)
        decay = torch.exp(-s)
        K = sf2 * (1.0 + s + s * s / 3.0) * decay
        K.diagonal().add_(noise)
        L, _ = torch.linalg.cholesky_ex(K)
        alpha = torch.cholesky_solve(self.y[:, None], L)[:, 0]
        log_ls = raw[:dim]
        prior = ((log_ls - self.prior_loc) ** 2).sum() / 6.0  # log-normal(loc, √3) on each length scale
        prior = prior + 0.5 * (raw[-2] / 2.0) ** 2 + 0.5 * ((raw[-1] - math.log(0.01)) / 3.0) ** 2
        value = 0.5 * self.y @ alpha + L.diagonal().log().sum() + prior
        W = torch.outer(alpha, alpha) - torch.cholesky_inverse(L)  # ∂nll/∂K = −W/2
        M = W * (sf2 * 5.0 / 3.0) * (1.0 + s) * decay  # symmetric; Σ_ab M_ab (x_aj − x_bj)² in matrix form
        grad = torch.empty_like(raw)
        grad[:dim] = (log_ls - self.prior_loc) / 3.0 - (M.sum(1) @ (scaled * scaled) - (scaled * (M @ scaled)).sum(0))
        w_diagonal = W.diagonal()
        # ∂K/∂log σ² = K − noise·I
        grad[dim] = raw[-2] / 4.0 - 0.5 * ((W * K).sum() - noise * w_diagonal.sum())
        grad[dim + 1] = (raw[-1] - math.log(0.01)) / 9.0 - 0.5 * (noise - self.NOISE_FLOOR) * w_diagonal.sum()
        return value, grad

    def _optimize(self, start: torch.Tensor) -> tuple[float, torch.Tensor]:
        """L-BFGS from ``start``: (negative log posterior, parameters); a failed step keeps the start."""
        raw = start.clone().requires_grad_(True)
        lbfgs = torch.optim.LBFGS([raw], lr=0.5, max_iter=self.steps, line_search_fn="strong_wolfe")

        def closure():
            with torch.no_grad():
                value, raw.grad = self._neg_log_posterior(raw)
            return value

        try:
            lbfgs.step(closure)
        except RuntimeError:  # a singular step
            pass
        for candidate in (raw.detach().clamp(-6.0, 6.0), start):
            with torch.no_grad():
                value = float(self._neg_log_posterior(candidate)[0])
            if math.isfinite(value):
                return value, candidate
        return math.inf, start

    def _factorize(self) -> None:
        with torch.no_grad():
            ls, sf2, noise = self._params(self.raw)
            K = sf2 * matern52(self.X, self.X, ls) + noise * torch.eye(len(self.X), dtype=torch.float64)
            self.L, _ = torch.linalg.cholesky_ex(K)
            self.alpha = torch.cholesky_solve(self.y[:, None], self.L)[:, 0]
