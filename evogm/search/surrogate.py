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

Matérn-5/2 kernel with one length scale per coordinate (ARD), a signal variance and a noise
variance (the dev score of a merge is a sample mean, so its noise is real), fitted by maximizing
the marginal likelihood (its gradient in closed form) with L-BFGS from three starts (smooth, short
length scales, the last fit): from a single start the fit can end at a flat model that calls every
difference noise (``restarts=False`` drops the short start once a last fit exists: fewer fits per
ask). The length scales have the log-normal prior that makes vanilla GPs work in dozens of dimensions
(Hvarfner, Hellsten & Nardi, ICML 2024: location √2 + ½·log d, scale √3); ``lengthscale`` sets the
prior's median instead, the same in every dimension (``lengthscale=1.0``: half the width of the box
[−1, 1]). The dimension-scaled prior is meant for points spread over the whole box; the rows a
screening search evaluates are steps around its best ones, and a length scale many times the box
(about 26 at d = 40) makes the model's mean a trend it extrapolates across the box; on merges, whose
scores do change slowly across the box, the long scales are the better model.
``lengthscale="auto"`` fits both priors and keeps the fit whose leave-one-out means order the
losses best, as ``warp="auto"`` does for the warp (both at once: all four fits). The losses are replaced
by the normal scores of their ranks before fitting (``warp``): merge landscapes are mostly bad
merges with a few good ones, a heavy tail a stationary GP fits badly, and only the order of the
losses matters to the search. ``warp="auto"`` fits both the ranks' scores and the standardized
losses and keeps the fit whose leave-one-out posterior means have the higher rank correlation with
the losses (computed in closed form from the factorized kernel): the ranks stretch the best few
losses apart, which costs precision on a smooth bowl, and the losses themselves let a heavy tail of
bad merges dominate the fit; which of the two predicts held-out order better decides. Inputs are
coefficients, used as they are. Everything runs in float64 on the CPU and draws its random numbers
from the caller's numpy generator only, so it is reproducible.

``sum_input=True`` gives the kernel one more input, the coefficients' sum over √d (the merge's
position along the all-ones direction), with its own length scale: an ARD kernel only has length
scales along the axes, and on a merge landscape the all-ones direction is where task arithmetic's
global scale and a component the experts share both lie.
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


def _normal_pdf(z: np.ndarray) -> np.ndarray:
    return np.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi)


def _normal_cdf(z: np.ndarray) -> np.ndarray:
    return torch.special.ndtr(torch.as_tensor(z)).numpy()


def matern52(a: torch.Tensor, b: torch.Tensor, lengthscales: torch.Tensor) -> torch.Tensor:
    """k(a, b) / σ² for rows of a and b: (1 + √5 r + 5r²/3) · exp(−√5 r), r the scaled distance."""
    d = torch.cdist(a / lengthscales, b / lengthscales).clamp_min(1e-12)
    s = math.sqrt(5.0) * d
    return (1.0 + s + s * s / 3.0) * torch.exp(-s)


class GaussianProcess:
    """fit(X, y) then predict / thompson; ``steps``: L-BFGS iterations per fit."""

    NOISE_FLOOR = 1e-4  # variance, in standardized units
    SHORT = 1.0  # the median length scale lengthscale="auto" tries next to the dimension-scaled prior

    def __init__(self, steps: int = 15, warp: bool | str = True, threads: int | None = 1, sum_input: bool = False,
                 lengthscale: float | str | None = None, restarts: bool = True):
        self.steps, self.warp, self.threads, self.sum_input = steps, warp, threads, sum_input
        self.restarts = restarts  # False: once a fit exists, no start from short length scales
        self.lengthscale = lengthscale  # the prior's median length scale; None: √2 + ½·log d in log space
        self.raw: torch.Tensor | None = None  # log length scales (d), log signal var, log noise var
        self.last_raw: dict[tuple, torch.Tensor] = {}  # the last fit's parameters, per (warp, prior location)

    def fit(self, X: np.ndarray, y: np.ndarray) -> "GaussianProcess":
        finite = np.isfinite(y)
        X, y = np.asarray(X, dtype=np.float64)[finite], np.asarray(y, dtype=np.float64)[finite]
        self.X = self._inputs(torch.as_tensor(X))
        scaled = math.sqrt(2.0) + 0.5 * math.log(self.X.shape[1])  # the dimension-scaled prior's location
        if self.lengthscale == "auto":
            locs = [scaled, math.log(self.SHORT)]
        else:
            locs = [math.log(self.lengthscale) if self.lengthscale else scaled]
        warps = [True, False] if self.warp == "auto" else [bool(self.warp)]
        with torch_threads(self.threads):
            if len(warps) * len(locs) > 1:  # every fit; keep the one whose held-out predictions rank best
                fits = [(self._fit_to(y, warp, loc), self._held_out_order(y)) for warp in warps for loc in locs]
                vars(self).update(max(fits, key=lambda fit: fit[1])[0])
            else:
                self._fit_to(y, warps[0], locs[0])
        return self

    def _fit_to(self, y: np.ndarray, warp: bool, prior_loc: float) -> dict:
        """Fit the GP to y (to its rank scores with ``warp``), its length scales' prior centred on
        exp(prior_loc); returns the fitted state."""
        z = normal_scores(y) if warp else y
        self.shift, self.scale, self.warped, self.prior_loc = float(z.mean()), float(z.std()) or 1.0, warp, prior_loc
        self.y = torch.as_tensor((z - self.shift) / self.scale)
        dim = self.X.shape[1]
        starts = [torch.tensor([loc] * dim + [0.0, math.log(noise)], dtype=torch.float64)
                  for loc, noise in ((prior_loc, 0.1), (0.0, 0.01))]  # the prior's centre, and short length scales
        last = self.last_raw.get((warp, prior_loc))
        if last is not None and len(last) == dim + 2:
            starts = (starts if self.restarts else starts[:1]) + [last]
        self.raw = self.last_raw[(warp, prior_loc)] = min((self._optimize(s) for s in starts),
                                                          key=lambda fit: fit[0])[1]
        self._factorize()
        return {k: getattr(self, k) for k in ("shift", "scale", "warped", "prior_loc", "y", "raw", "L", "alpha")}

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

    def expected_improvement(self, Xc: np.ndarray, n: int) -> np.ndarray:
        """Indices of ``n`` distinct candidates chosen greedily by expected improvement (below the
        best observed loss), each pick added to the data at its posterior mean before the next
        (the "kriging believer"), so a batch spreads out instead of repeating one point."""
        Xc = np.asarray(Xc, dtype=np.float64)
        X, y, L, alpha = self.X, self.y, self.L, self.alpha
        chosen: list[int] = []
        try:
            for _ in range(n):
                mean, sd = (v / self.scale for v in self.predict(Xc))  # standardized units
                mean -= self.shift / self.scale
                gain = (self.y.min().item() - mean) / sd
                ei = sd * (gain * _normal_cdf(gain) + _normal_pdf(gain))
                ei[chosen] = -np.inf
                pick = int(np.argmax(ei))
                chosen.append(pick)
                picked = self._inputs(torch.as_tensor(Xc[pick : pick + 1]))
                self._condition(torch.cat([self.X, picked]), torch.cat([self.y, torch.tensor([mean[pick]])]))
        finally:
            self.X, self.y, self.L, self.alpha = X, y, L, alpha
        return np.array(chosen)

    def _condition(self, X: torch.Tensor, y_standardized: torch.Tensor) -> None:
        """The same kernel on other data (kernel inputs; no refit)."""
        self.X, self.y = X, y_standardized
        with torch_threads(self.threads):
            self._factorize()

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
        """The kernel's inputs: the coefficients, and with ``sum_input`` their sum over √d."""
        if not self.sum_input:
            return X
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
