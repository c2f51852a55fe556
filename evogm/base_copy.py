"""Where the Merger keeps θ₀, the base values of the parameters experts change.

Every candidate is written as θ₀ + Σ λτ, so θ₀ must survive the writes: a second copy of every
touched parameter. Where that copy lives is a trade of memory for switch time:

- "device": next to the model (fastest; costs the touched parameters' size on the model's device);
- "host": in host memory (a model on a GPU spends no device memory on it; one host-to-device copy
  per switch);
- "disk": in an unnamed temporary file, read back on every switch (no memory of the process; the
  operating system's page cache keeps it when memory is free). For a large model on a small host.

Each copy is exact: the bytes of the parameter as it was when the Merger was built.

>>> import torch
>>> p = torch.arange(4.0)
>>> copy = BaseCopy.of("disk", [p])
>>> _ = p.mul_(10)
>>> copy.restore(0, p)
>>> p.tolist()
[0.0, 1.0, 2.0, 3.0]
"""

from __future__ import annotations

import os
import tempfile
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

PLACES = ("device", "host", "disk")


class BaseCopy:
    """θ₀ of a list of tensors, kept in memory ("device", "host") or in a temporary file ("disk")."""

    def __init__(self, place: str, tensors: list[torch.Tensor]):
        self.place, self.shapes = place, [(t.shape, t.dtype) for t in tensors]
        if place == "disk":
            self._file, self._offsets = _spill(tensors)
        else:
            where = (lambda t: t.device) if place == "device" else (lambda t: "cpu")
            self._tensors = [t.detach().to(where(t), copy=True) for t in tensors]

    @classmethod
    def of(cls, place: str, tensors: list[torch.Tensor]) -> "BaseCopy":
        if place not in PLACES:
            from evogm.registry import unknown_name
            raise unknown_name("base copy place", place, PLACES)
        return cls(place, tensors)

    def restore(self, index: int, out: torch.Tensor) -> None:
        """out ← θ₀ of tensor `index` (out: its shape, any dtype and device)."""
        if self.place != "disk":
            out.copy_(self._tensors[index], non_blocking=True)
            return
        shape, dtype = self.shapes[index]
        direct = out.device.type == "cpu" and out.dtype == dtype and out.is_contiguous()
        target = out if direct else _torch().empty(shape, dtype=dtype)
        _read(self._file, self._offsets[index], target)
        if not direct:
            out.copy_(target)

    def get(self, index: int) -> torch.Tensor:
        """θ₀ of tensor `index` as a tensor (a fresh CPU one for "disk")."""
        if self.place != "disk":
            return self._tensors[index]
        shape, dtype = self.shapes[index]
        target = _torch().empty(shape, dtype=dtype)
        _read(self._file, self._offsets[index], target)
        return target


def _torch():
    """torch, imported when a copy is made: the config reads PLACES without it."""
    import torch

    return torch


def _bytes(t: torch.Tensor) -> memoryview:
    """The tensor's storage as writable bytes (CPU, contiguous)."""
    return memoryview(t.view(-1).view(_torch().uint8).numpy())


def _spill(tensors: list[torch.Tensor]):
    file = tempfile.TemporaryFile(prefix="evogm-base-")  # unnamed: gone when closed or at exit
    offsets, offset = [], 0
    for t in tensors:
        data = t.detach().to("cpu").contiguous()
        view, done = _bytes(data), 0
        while done < len(view):  # pwrite may write less than asked (Linux: at most 2 GiB a call)
            done += os.pwrite(file.fileno(), view[done:], offset + done)
        offsets.append(offset)
        offset += done
    return file, offsets


def _read(file, offset: int, target: torch.Tensor) -> None:
    view, done = _bytes(target), 0
    while done < len(view):  # preadv may return short
        done += os.preadv(file.fileno(), [view[done:]], offset + done)
