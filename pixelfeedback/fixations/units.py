"""Tagged fixation units: the (tag, c, y, x) arrays every rule maps, and their integer keys.

A tag numbers one (batch item, class) of a trace; units of different tags never mix.
"""
from dataclasses import dataclass

import numpy as np

from python_layers import ToolkitError


@dataclass
class Units:
    """A batch of tagged units: int64 arrays of equal length."""
    tag: np.ndarray
    c: np.ndarray
    y: np.ndarray
    x: np.ndarray

    @classmethod
    def of(cls, c, y, x, tag=0):
        """Units from lists or arrays (a scalar ``tag`` applies to all): for hand-built
        tests and seeds."""
        c, y, x = (np.asarray(v, np.int64).reshape(-1) for v in (c, y, x))
        tag = np.broadcast_to(np.asarray(tag, np.int64), c.shape).copy()
        return cls(tag, c, y, x)

    def __len__(self):
        return len(self.tag)

    def take(self, index):
        """The units at ``index`` (a boolean mask or integer rows)."""
        return Units(self.tag[index], self.c[index], self.y[index], self.x[index])

    def as_set(self):
        """{(tag, c, y, x)}: the units as a set of tuples, for tests and messages."""
        return set(zip(*(a.tolist() for a in (self.tag, self.c, self.y, self.x))))


def no_units():
    """An empty ``Units``."""
    empty = np.zeros(0, np.int64)
    return Units(empty, empty, empty, empty)


def concat_units(parts):
    """One ``Units`` of ``parts`` in order (empty when there are none)."""
    if not parts:
        return no_units()
    if len(parts) == 1:
        return parts[0]
    return Units(*(np.concatenate([getattr(p, f) for p in parts])
                   for f in ("tag", "c", "y", "x")))


def shape3(shape):
    """A blob's per-item shape as (C, H, W): 2-D blobs are (C, 1, 1)."""
    shape = tuple(int(s) for s in shape)
    if len(shape) == 4:
        return shape[1:]
    if len(shape) == 2:
        return (shape[1], 1, 1)
    raise ToolkitError(f"blob of shape {shape}: fixations handle N x C x H x W and N x C blobs")


def encode(units, shape):
    """int64 keys ``((tag*C + c)*H + y)*W + x`` of units in a blob of per-item ``shape``."""
    C, H, W = shape
    return ((units.tag * C + units.c) * H + units.y) * W + units.x


def decode(keys, shape):
    """The ``Units`` of ``encode``'s keys."""
    C, H, W = shape
    x = keys % W
    rest = keys // W
    y = rest % H
    rest //= H
    return Units(rest // C, rest % C, y, x)


def unravel(flat_index, shape):
    """(c, y, x) of flat indices into a (C, H, W) blob."""
    c, rest = np.divmod(flat_index, shape[1] * shape[2])
    y, x = np.divmod(rest, shape[2])
    return c, y, x
