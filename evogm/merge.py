"""Task-arithmetic merging in place: θ(λ) = θ₀ + Σᵢ λᵢ τᵢ written into a resident model.

The Merger keeps θ₀ for every parameter some expert changes and rewrites those parameters from θ₀
on every call, so switching candidates never drifts. LoRA experts stay factored: for one module,
Σᵢ λᵢ sᵢ Bᵢ Aᵢ = B_cat · diag(λ ⊗ s) · A_cat, one matmul from stacked factors; full experts keep
dense task vectors stacked per parameter, merged with one matrix-vector product.

Coefficients have shape (experts,) or (experts, groups); groups split the transformer layers into
contiguous blocks. Tensors outside the layers follow their position: those before the first layer
(embeddings) use the first group, those after it (final norm, head) the last group. In an
encoder-decoder (T5, BART) the encoder's and the decoder's layers are each split by depth, and
group g holds the g-th block of both stacks (so groups ≤ the shallower stack's layers).

>>> merger = Merger(models.model, models.experts, groups=2)          # doctest: +SKIP
>>> model = merger(np.array([[1.0, 0.5], [-0.3, 0.0]]))               # doctest: +SKIP

A search space's candidates (`evogm.space`: TIES, DARE-TIES, linear; weights and densities per
module filter and layer group, or smooth across depth) are written in place by `Merger.candidate`,
from the same θ₀ and task vectors (`Merger.merge`).

Static merges (task arithmetic with a global scale, TIES, DARE) are pure functions over a stack of
dense task vectors, applied per parameter by `Merger.static`.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
from dataclasses import dataclass

import numpy as np
import torch

from evogm.base_copy import BaseCopy
from evogm.errors import EvogmError
from evogm.models import Expert
from evogm.space import GROUP_RULES, LAYER, SPARSE, Candidate, Space, stack_of  # noqa: F401 (GROUP_RULES: export's)

def stack_depths(model: torch.nn.Module) -> dict[str, int]:
    """Layers per stack: {"": n} for a decoder-only model, {"encoder": n, "decoder": m} for an encoder-decoder."""
    if not getattr(model.config, "is_encoder_decoder", False):
        return {"": model.config.num_hidden_layers}
    depths: dict[str, int] = {}
    for name, _ in model.named_parameters():
        match = LAYER.search(name)
        if match:
            stack = stack_of(name, match, True)
            depths[stack] = max(depths.get(stack, 0), int(match[1]) + 1)
    return depths


# ----------------------------------------------------------------------------- static merges
def task_arithmetic(deltas: torch.Tensor, weights: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """scale · Σᵢ wᵢ τᵢ.  deltas: (E, ...) stacked task vectors; weights: (E,)."""
    return scale * torch.tensordot(weights.to(deltas.dtype), deltas, dims=1)


def trim(deltas: torch.Tensor, density) -> torch.Tensor:
    """Keep each expert's top entries by magnitude, zero the rest (TIES step 1). `density`: one for every
    expert, or one per expert; deltas: (E, ...).

    Exactly mergekit's trim (`sparsify.magnitude`), so that an exported TIES merge matches: a density of 1
    or more keeps every entry, else k = max(1, ⌊density · n⌋) entries are kept, the first k of
    `torch.argsort(|τ|, descending=True)`. That ordering is the tie-break: entries tied in magnitude with
    the k-th (common in bfloat16 checkpoints, whose task vectors take few values) are kept in the order
    torch's sort gives them, so that exactly k are kept, as mergekit keeps them. The sort itself is only
    needed for a task vector with such a tie among nonzero entries (which zeros are kept changes nothing):
    otherwise the k largest are the entries at or above the k-th largest magnitude (`_kth_largest`, linear
    time), kept by one pass of `hardshrink` below it.
    """
    densities = list(density) if isinstance(density, (list, tuple)) else [density] * len(deltas)
    if all(d >= 1 for d in densities):
        return deltas
    flat = deltas.reshape(len(deltas), -1)
    n = flat.shape[1]
    rows = [row if d >= 1 else _top(row, max(1, int(d * n))) for row, d in zip(flat, densities)]
    return torch.stack(rows).view(deltas.shape)


def _top(row: torch.Tensor, k: int) -> torch.Tensor:
    """`row` with all but its k largest entries by magnitude zeroed, mergekit's tie-break (see `trim`)."""
    magnitude = row.abs().float()  # mergekit sorts float32 magnitudes
    threshold, tied = _kth_largest(magnitude, k)
    if tied and threshold != 0:  # nonzero entries tie with the k-th: mergekit's order picks which are kept
        keep = torch.zeros_like(magnitude, dtype=torch.bool)
        keep[torch.argsort(magnitude.cpu(), descending=True)[:k].to(keep.device)] = True
        return row * keep
    # |x| > the float32 just below the k-th magnitude ⇔ |x| ≥ it: hardshrink keeps those in one float pass
    below = float(np.nextafter(np.float32(threshold), np.float32(-np.inf)))
    return torch.nn.functional.hardshrink(row.float(), below).to(row.dtype)


def _kth_largest(values: torch.Tensor, k: int) -> tuple[float, bool]:
    """The k-th largest of a 1-D tensor, and whether a smaller-ranked entry ties with it, in linear time:
    numpy's introselect on the CPU (a tenth of the time of torch's kthvalue there), torch's kthvalue on a
    GPU."""
    n = values.numel()
    if values.device.type == "cpu":
        parted = np.partition(values.numpy(), n - k)
        kth = parted[n - k]
        return float(kth), bool(n > k and parted[:n - k].max() == kth)
    kth = values.kthvalue(n - k + 1).values
    return float(kth), int((values >= kth).sum()) != k


def dare_drop(deltas: torch.Tensor, densities, generator: torch.Generator | None = None) -> torch.Tensor:
    """DARE-TIES' drops as mergekit makes them (`sparsify.bernoulli` with `rescale: true`): each entry kept
    with probability density, the kept ones rescaled so that each task vector keeps its L1 norm (none
    rescaled when either norm is below 1e-7); a density of 1 or more keeps every entry. One uniform draw
    per entry of every row, whatever the densities, so that a seed gives every candidate the same drops
    (nested: a higher density keeps a superset)."""
    draws = torch.rand(deltas.shape, generator=generator, device=deltas.device)
    rows = []
    for row, draw, d in zip(deltas, draws, densities):
        if d >= 1:
            rows.append(row)
            continue
        kept = row * (draw < d)
        before, after = row.abs().sum(), kept.abs().sum()
        rows.append(kept if before < 1e-7 or after < 1e-7 else kept * (before / after))
    return torch.stack(rows)


def disjoint_merge(weighted: torch.Tensor, weights: torch.Tensor, normalize: bool = True) -> torch.Tensor:
    """Elect each entry's sign by the weighted sum, then average the agreeing entries (TIES steps 2–3).

    weighted: (E, ...) = wᵢ τᵢ; weights: (E,). Dividing by the agreeing experts' weights makes this the
    disjoint mean when every weight is 1. A zero sum elects +, and a zero divisor is 1, as in mergekit
    (its `normalize: true`), so that an exported TIES merge matches; `normalize=False` sums the agreeing
    entries (mergekit's DARE-TIES default).

    Computed in float passes only (CPU comparisons into bool tensors cost several times a float pass):
    with e = ±1 the elected sign, the agreeing entries are those of relu(e · wτ) above 0, their sum is
    e · Σ relu(e · wτ) (exact: ±1 scales exactly), and an entry agrees where sign(relu(e · wτ)) is 1.
    """
    elected = weighted.sum(0).sign_().add_(0.5).sign_()  # +1 where the sum is ≥ 0 (−0 included), else −1
    agreeing = (weighted * elected).clamp_(min=0)  # |wᵢτᵢ| where it agrees with the elected sign, else 0
    total = agreeing.sum(0).mul_(elected)
    if not normalize:
        return total
    w = weights.to(weighted.dtype).view(-1, *[1] * (weighted.dim() - 1))
    divisor = (w * agreeing.sign_()).sum(0)
    divisor.add_(divisor.abs().sign_().neg_().add_(1))  # a zero divisor becomes 1; the others gain exactly 0
    return total.div_(divisor)


def ties(deltas: torch.Tensor, weights: torch.Tensor, density: float = 0.2, scale: float = 1.0) -> torch.Tensor:
    """TIES-merging: trim, elect sign, disjoint mean; then a global scale."""
    w = weights.to(deltas.dtype).view(-1, *[1] * (deltas.dim() - 1))
    return scale * disjoint_merge(w * trim(deltas, density), weights)


def dare(deltas: torch.Tensor, weights: torch.Tensor, density: float = 0.5, scale: float = 1.0,
         consensus: bool = False, generator: torch.Generator | None = None) -> torch.Tensor:
    """DARE: drop each entry with probability 1 − density, rescale survivors by 1/density, then sum
    (or, with consensus=True, TIES' sign election and disjoint mean: DARE-TIES)."""
    keep = torch.rand(deltas.shape, generator=generator, device=deltas.device) < density
    sparse = deltas * keep / density
    w = weights.to(deltas.dtype).view(-1, *[1] * (deltas.dim() - 1))
    if consensus:
        return scale * disjoint_merge(w * sparse, weights)
    return scale * (w * sparse).sum(0)


STATIC_METHODS = {"task_arithmetic": task_arithmetic, "ties": ties, "dare": dare}


def method_defaults(method: str) -> dict:
    """A static merge's options and their defaults (density, scale, consensus), as its function declares them."""
    params = inspect.signature(STATIC_METHODS[method]).parameters.values()
    return {p.name: p.default for p in params if p.default is not inspect.Parameter.empty and p.name != "generator"}


def static_options(method: str, **options) -> dict:
    """The options a static merge runs with: the given ones, checked (`check_static_options`), over
    the method's defaults.

    >>> static_options("ties", scale=0.5)
    {'density': 0.2, 'scale': 0.5}
    """
    check_static_options(method, options)
    return {**method_defaults(method), **options}


def check_static_options(method: str, options: dict, where: str = "") -> None:
    """Refuse, in one line, options a static merge cannot run with: an unknown method, an option the
    method does not take, a density outside (0, 1], a scale that is not a finite number, a consensus
    that is not true or false. The one place of these rules: `evogm merge` calls it before loading
    anything, every static merge (`Merger.static`) calls it, and a run config's `baselines.options`
    can be checked with it when the config loads. `where` prefixes the option names in the message
    (`"--"` for the command line, `"baselines.options.ties."` for a config).

    A density of 0 keeps nothing (and DARE would divide by it); above 1 is no fraction: TIES would keep
    every entry and DARE would scale every one by 1/density, a silently different merge.

    >>> check_static_options("dare", {"density": 2}, "--")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    evogm.errors.EvogmError: --density 2 is not a number in (0, 1]: ...
    """
    if method not in STATIC_METHODS:
        from evogm.registry import unknown_name
        raise unknown_name("merge method", method, STATIC_METHODS)
    defaults = method_defaults(method)
    for name, value in options.items():
        key = f"{where}{name}"
        if name not in defaults:
            takers = [m for m in STATIC_METHODS if name in method_defaults(m)]
            raise EvogmError(f"{key} is not an option of {method}",
                             f"{method} takes {', '.join(where + k for k in defaults)}",
                             f"remove {key}" + (f", or merge with {' or '.join(takers)}" if takers else ""))
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if name == "density" and not (number and 0 < value <= 1):
            raise EvogmError(f"{key} {value!r} is not a number in (0, 1]",
                             "it is the fraction of each task vector TIES keeps, or the probability that DARE keeps "
                             "an entry: 0 keeps nothing, and above 1 is no fraction",
                             f"give a density above 0 and at most 1 ({defaults['density']} is {method}'s default)")
        if name == "scale" and not (number and math.isfinite(value)):
            raise EvogmError(f"{key} {value!r} is not a finite number", "it scales the merged update",
                             f"give a finite {key} (1 adds the merged update as it is)")
        if name == "consensus" and not isinstance(value, bool):
            raise EvogmError(f"{key} {value!r} is not true or false", "it switches TIES' sign election on or off",
                             f"give {key} true or false")


# ----------------------------------------------------------------------------- in-place merger
@dataclass
class _Slot:
    """Everything needed to rewrite one parameter: θ₀ and its experts' stacked updates."""

    name: str
    param: torch.nn.Parameter
    index: int  # its θ₀'s index in the Merger's BaseCopy
    group: int
    full_experts: torch.Tensor | None = None  # (k,) long: which experts the dense rows belong to
    full: torch.Tensor | None = None  # (k, numel) stacked dense task vectors
    lora_expert: torch.Tensor | None = None  # (R,) long: the expert of each stacked rank column
    lora_scale: torch.Tensor | None = None  # (R,) each column's LoRA scaling s
    A: torch.Tensor | None = None  # (R, d_in) stacked A factors
    B: torch.Tensor | None = None  # (d_out, R) stacked B factors
    before_layers: bool = False  # outside the layers, before them (embeddings)
    place: object = None  # evogm.space.Place: where it takes a search space's values (None: no space)
    lora_columns: dict | None = None  # expert → (start, end, s): its columns of the stacked factors

    def experts(self) -> list[int]:
        """The experts that change this parameter, in order."""
        full = [] if self.full is None else self.full_experts.tolist()
        return sorted(full + list(self.lora_columns or {}))

    def dense(self) -> torch.Tensor:
        """(k, *shape) float32: the task vectors of `experts()` as dense tensors, LoRA experts' made
        from their factors here (s · B A), so that they are dense only while a merge needs their entries."""
        full = {} if self.full is None else dict(zip(self.full_experts.tolist(), self.full))
        experts = self.experts()
        out = torch.empty((len(experts), *self.param.shape), dtype=torch.float32, device=self.param.device)
        for row, e in zip(out, experts):
            if e in full:
                row.copy_(full[e].view(self.param.shape))
            else:
                start, end, scaling = self.lora_columns[e]
                torch.matmul(self.B[:, start:end].float(), self.A[start:end].float(), out=row).mul_(scaling)
        return out

    def write_update(self, update: torch.Tensor, base: BaseCopy) -> None:
        """param ← θ₀ + update (float32), rounded once to the parameter's dtype."""
        acc = torch.empty_like(self.param.data, dtype=torch.float32)
        base.restore(self.index, acc)
        self.param.data.copy_(acc.add_(update))

    def write(self, lam: torch.Tensor, base: BaseCopy) -> None:
        """param ← θ₀ + Σ_full λ τ + B · diag(λ s) · A.  lam: (E,) this parameter's group's coefficients.

        A float32 (or float64) parameter is written in place. A bfloat16 or float16 one is summed in a
        float32 buffer of its shape and rounded once, so that λ, the LoRA factors and the sum keep
        float32 precision (the buffer is one tensor's, transient).
        """
        out = self.param.data
        exact = out.dtype in (torch.float32, torch.float64)
        acc = out if exact else torch.empty_like(out, dtype=torch.float32)
        base.restore(self.index, acc)
        if self.full is not None and exact:
            acc.view(-1).addmv_(self.full.T, lam[self.full_experts].to(out.dtype))
        elif self.full is not None:
            for row, weight in zip(self.full, lam[self.full_experts].tolist()):  # one device sync per tensor
                acc.view(-1).add_(row, alpha=weight)
        if self.A is not None:
            acc.addmm_((self.B * (lam[self.lora_expert] * self.lora_scale)).to(acc.dtype), self.A.to(acc.dtype))
        if not exact:
            out.copy_(acc)


class Merger:
    """Writes θ₀ + Σ λ τ into `model` in place; any real λ, no drift across calls.

    θ₀ is what the model holds when the Merger is built: build it on the freshly loaded base (and
    `reset()` before building another Merger on the same model). `base_copy` says where θ₀ of the
    touched parameters is kept: "device" (next to the model), "host" or "disk" (`evogm.base_copy`).

    >>> merger = Merger(model, experts)            # doctest: +SKIP
    >>> merger(np.array([0.7, -0.2, 1.5]))          # doctest: +SKIP
    """

    def __init__(self, model: torch.nn.Module, experts: list[Expert], groups: int = 1, base_copy: str = "device",
                 space: Space | None = None):
        if groups < 1:
            raise ValueError(f"groups must be ≥ 1, got {groups}")
        self.model, self.experts, self.groups, self.space = model, list(experts), groups, None
        self.seq2seq = bool(getattr(model.config, "is_encoder_decoder", False))
        self.depths = stack_depths(model)
        self.n_layers = min(self.depths.values())  # the most groups this model takes
        if groups > self.n_layers:
            raise EvogmError(f"{groups} layer groups asked for", f"the model has only {self.n_layers} layers"
                             + (" in its shallower stack" if self.seq2seq else ""),
                             f"use at most {self.n_layers} groups (models.groups, or fewer comma-separated --weights)")
        order = [name for name, _ in model.named_parameters()]
        touched = set().union(*(e.params for e in experts)) if experts else set()
        first_layer = next((i for i, n in enumerate(order) if LAYER.search(n)), len(order))
        params = dict(model.named_parameters())
        names = [(i, n) for i, n in enumerate(order) if n in touched]
        self._slots = [self._slot(k, n, params[n], i < first_layer) for k, (i, n) in enumerate(names)]
        if space is not None:
            self.use_space(space)  # before θ₀ is copied: a bad filter is refused at once
        self.base = BaseCopy.of(base_copy, [params[n] for _, n in names])  # θ₀ of the touched parameters

    def use_space(self, space: Space | None) -> None:
        """Merge the candidates of `space` (`candidate`): each parameter's place in it, found once. A
        filter that takes no parameter the experts change is refused (`Space.check_filters`)."""
        if space is not None:
            if space.groups != self.groups or len(space.experts) != len(self.experts):
                raise ValueError(f"a space of {len(space.experts)} experts × {space.groups} groups for a Merger of "
                                 f"{len(self.experts)} × {self.groups}")
            space.check_filters([slot.name for slot in self._slots])
            for slot in self._slots:
                slot.place = space.place(slot.name, self.layer_of(slot.name), slot.before_layers)
        self.space = space

    @property
    def names(self) -> list[str]:
        return [e.name for e in self.experts]

    @property
    def dim(self) -> int:
        return len(self.experts) * self.groups

    def group_of(self, name: str, before_layers: bool = False) -> int:
        """Which coefficient group a parameter follows (see the module docstring)."""
        layer = self.layer_of(name)
        if layer:
            return layer[0] * self.groups // layer[1]
        return 0 if before_layers else self.groups - 1

    def layer_of(self, name: str) -> tuple[int, int] | None:
        """(the index of a parameter's layer, its stack's depth), or None outside the layers."""
        match = LAYER.search(name)
        if match:
            return int(match[1]), self.depths[stack_of(name, match, self.seq2seq)]
        return None

    def after_layers(self) -> list[str]:
        """The parameters the experts change that come after the layers (final norm, head)."""
        return [slot.name for slot in self._slots if self.layer_of(slot.name) is None and not slot.before_layers]

    def coefficients(self, coefficients) -> np.ndarray:
        """Any accepted shape → (experts, groups). A flat vector is expert-major: index = e·groups + g."""
        lam = np.asarray(coefficients, dtype=np.float64)
        n = len(self.experts)
        if lam.shape == (n,):
            lam = np.repeat(lam[:, None], self.groups, axis=1)
        elif lam.shape == (n * self.groups,):
            lam = lam.reshape(n, self.groups)
        if lam.shape != (n, self.groups):
            raise ValueError(f"coefficients of shape {lam.shape} do not fit {n} experts × {self.groups} groups")
        if not np.isfinite(lam).all():
            raise ValueError("coefficients must be finite")
        return lam

    @torch.no_grad()
    def __call__(self, coefficients) -> torch.nn.Module:
        lam = self.coefficients(coefficients)
        columns = torch.as_tensor(lam.T, device=self._device(), dtype=torch.float32)  # (groups, experts)
        for slot in self._slots:
            slot.write(columns[slot.group], self.base)
        return self.model

    @torch.no_grad()
    def candidate(self, x) -> torch.nn.Module:
        """Write a candidate of the search space (the vector an optimizer asked) into the model: the
        Merger's own task arithmetic for the default space (x is λ), else `merge(space.decode(x))`."""
        if self.space is None or self.space.plain:
            return self(x)
        return self.merge(self.space.decode(x))

    @torch.no_grad()
    def merge(self, candidate: Candidate) -> torch.nn.Module:
        """Write a merge of the search space into the model, in place, from θ₀.

        Task arithmetic and linear merges go through the factored path (`_Slot.write`: LoRA experts stay
        factored): λ = scale · w, or for linear w / Σw (mergekit's normalized average). TIES and
        DARE-TIES need each task vector's entries: per parameter, its experts' task vectors are stacked
        densely (LoRA ones made from their factors), trimmed (`trim`) or dropped (`dare_drop`, seeded per
        parameter), weighted, and merged by sign election and disjoint mean (`disjoint_merge`), on the
        model's device, then scaled and added to θ₀ in float32 and rounded once.
        """
        values = [candidate.at(slot.place) for slot in self._slots]
        if candidate.method in SPARSE:
            for index, (slot, (weights, densities)) in enumerate(zip(self._slots, values)):
                self._write_sparse(index, slot, weights, densities, candidate)
            return self.model
        rows = [_linear(weights, slot.name) if candidate.method == "linear" else
                [candidate.scale * w for w in weights] for slot, (weights, _) in zip(self._slots, values)]
        table = torch.tensor(rows, dtype=torch.float32, device=self._device())
        for slot, lam in zip(self._slots, table):
            slot.write(lam, self.base)
        return self.model

    def _write_sparse(self, index: int, slot: _Slot, weights: list[float], densities: list[float],
                      candidate: Candidate) -> None:
        experts = slot.experts()
        deltas = slot.dense()  # (k, *shape) float32, transient
        d = [densities[e] for e in experts]
        if candidate.method == "ties":
            kept = trim(deltas, d)
        else:
            generator = torch.Generator(device=deltas.device).manual_seed(candidate.seed * 1_000_003 + index)
            kept = dare_drop(deltas, d, generator)
        w = torch.tensor([weights[e] for e in experts], dtype=torch.float32, device=deltas.device)
        merged = disjoint_merge(kept.mul_(w.view(-1, *[1] * (kept.dim() - 1))), w, normalize=candidate.normalize)
        if candidate.scale != 1:
            merged = merged * candidate.scale
        slot.write_update(merged, self.base)

    @torch.no_grad()
    def reset(self) -> torch.nn.Module:
        """Back to the base model θ₀."""
        for slot in self._slots:
            self.base.restore(slot.index, slot.param.data)
        return self.model

    @torch.no_grad()
    def static(self, method: str, weights=None, seed: int = 0, **options) -> torch.nn.Module:
        """Write a static merge (task_arithmetic, ties, dare) of the experts into the model.

        weights: (experts,) per-expert weights (default 1 each); options go to the method
        (scale, density, consensus). DARE's drops are seeded per parameter, so a seed gives one merge.
        """
        options = static_options(method, **options)  # refuses a density outside (0, 1], …
        fn = STATIC_METHODS[method]
        w = torch.ones(len(self.experts)) if weights is None else torch.as_tensor(np.asarray(weights, dtype=np.float32))
        for index, slot in enumerate(self._slots):
            deltas = self._dense_stack(slot)  # (E, *shape) float32, transient
            extra = {}
            if method == "dare":
                extra["generator"] = torch.Generator(device=deltas.device).manual_seed(seed * 1_000_003 + index)
            merged = fn(deltas, w.to(deltas.device), **options, **extra)
            base = self.base.get(slot.index).to(merged.device)
            slot.param.data.copy_(base.float() + merged)  # copy_ casts back to the model's dtype
        return self.model

    # -- construction ----------------------------------------------------------------------
    def _slot(self, index: int, name: str, param: torch.nn.Parameter, before_layers: bool) -> _Slot:
        slot = _Slot(name, param, index, self.group_of(name, before_layers), before_layers=before_layers)
        full = [(i, e.deltas[name]) for i, e in enumerate(self.experts) if name in e.deltas]
        if full:
            slot.full_experts = torch.tensor([i for i, _ in full], device=param.device)
            slot.full = torch.stack([d.reshape(-1) for _, d in full]).to(param.dtype)
        lora = [(i, e.factors[name]) for i, e in enumerate(self.experts) if name in e.factors]
        if lora:
            slot.lora_expert = torch.tensor([i for i, f in lora for _ in range(f.rank)], device=param.device)
            slot.lora_scale = torch.tensor([f.scaling for _, f in lora for _ in range(f.rank)],
                                           device=param.device, dtype=torch.float32)
            slot.A = torch.cat([f.A for _, f in lora], dim=0)
            slot.B = torch.cat([f.B for _, f in lora], dim=1)
            ends = np.cumsum([f.rank for _, f in lora]).tolist()
            slot.lora_columns = {i: (end - f.rank, end, f.scaling) for (i, f), end in zip(lora, ends)}
            self._share_factors(name, lora, slot)
        return slot

    def _share_factors(self, name: str, lora: list, slot: _Slot) -> None:
        """Point each expert's factors of `name` at its rows and columns of the stacked ones, so that
        the factors as loaded are freed: one copy in memory instead of two (for 10 rank-16 experts
        on a 0.5B model, 0.35 GB)."""
        start = 0
        for i, factors in lora:
            end = start + factors.rank
            self.experts[i].factors[name] = dataclasses.replace(factors, A=slot.A[start:end], B=slot.B[:, start:end])
            start = end

    def _dense_stack(self, slot: _Slot) -> torch.Tensor:
        zeros = torch.zeros_like(slot.param, dtype=torch.float32)
        return torch.stack([_or(e.dense(slot.name), zeros).float() for e in self.experts])

    def _device(self) -> torch.device:
        return next(self.model.parameters()).device


def _linear(weights: list[float], name: str) -> list[float]:
    """λ of a linear merge (mergekit's normalized average): each weight over their sum."""
    total = sum(weights)
    if total == 0:
        raise FloatingPointError(f"the linear merge's weights of {name} sum to 0 (the average is undefined)")
    return [w / total for w in weights]


def _or(value, default):
    return default if value is None else value
