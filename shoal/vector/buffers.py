"""The vector env's buffers: every emulator buffer for all envs, plus actions, packed into one block of bytes.

One block means one allocation, which the multiprocessing backend places in shared memory and hands to every
worker; each array is a numpy view at a 64-byte aligned offset. Rows are env-major: env ``e`` owns rows
``e * agents_per_env`` to ``(e + 1) * agents_per_env`` of every array.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from shoal.emulation import ActionLayout, Buffers

__all__ = ["BufferLayout", "env_buffers", "row_slice"]

_ALIGN = 64

Spec = dict[str, tuple[tuple, np.dtype]]


@dataclass(frozen=True)
class BufferLayout:
    """Where each array of the vector env lives inside one flat block of bytes.

    Attributes:
        fields: ``(name, shape, dtype, byte_offset)`` per array. Names are the :class:`Buffers` fields of the
            emulators (``obs`` ``[num_agents, flat_size]``, ``rewards`` ``float32[num_agents]``, ``terminals``,
            ``truncations``, ``masks`` ``bool[num_agents]``, ``agent_types`` ``int32[num_agents]``, optional
            ``action_masks`` ``bool[num_agents, width]``) plus ``actions`` ``[num_agents, *flat_action_shape]``.
        agents_per_env: slots per env.
        nbytes: size of the whole block.
    """

    fields: tuple[tuple[str, tuple[int, ...], np.dtype, int], ...]
    agents_per_env: int
    nbytes: int

    @classmethod
    def build(cls, spec: Spec, action_layout: ActionLayout, num_envs: int) -> BufferLayout:
        """Lay out the buffers of ``num_envs`` emulators whose per-emulator ``buffer_spec()`` is ``spec``."""
        agents_per_env = int(spec["obs"][0][0])
        rows = num_envs * agents_per_env
        entries = [(name, (rows, *shape[1:]), np.dtype(dtype)) for name, (shape, dtype) in spec.items()]
        entries.append(("actions", (rows, *action_layout.flat_shape), np.dtype(action_layout.flat_dtype)))
        fields = []
        offset = 0
        for name, shape, dtype in entries:
            fields.append((name, shape, dtype, offset))
            offset += -(-math.prod(shape) * dtype.itemsize // _ALIGN) * _ALIGN
        return cls(tuple(fields), agents_per_env, max(offset, _ALIGN))

    def views(self, block: Any) -> dict[str, np.ndarray]:
        """Numpy views of every array inside ``block`` (anything exposing the buffer protocol, ``nbytes`` long)."""
        raw = np.frombuffer(block, dtype=np.uint8, count=self.nbytes)
        out = {}
        for name, shape, dtype, offset in self.fields:
            size = math.prod(shape) * dtype.itemsize
            out[name] = raw[offset : offset + size].view(dtype).reshape(shape)
        return out

    def allocate(self) -> dict[str, np.ndarray]:
        """Zeroed arrays in fresh process-local memory (serial and Ray backends)."""
        return self.views(bytearray(self.nbytes))


def env_buffers(arrays: dict[str, np.ndarray], env: int, agents_per_env: int) -> Buffers:
    """The :class:`Buffers` of env ``env``: row views ``[env * A, (env + 1) * A)`` of ``arrays`` (no copy)."""
    rows = slice(env * agents_per_env, (env + 1) * agents_per_env)
    names = ("obs", "rewards", "terminals", "truncations", "masks", "agent_types", "action_masks")
    return Buffers(**{name: arrays[name][rows] for name in names if name in arrays})


def row_slice(arrays: dict[str, np.ndarray], start: int, stop: int) -> dict[str, np.ndarray]:
    """Views of rows ``[start, stop)`` of every array."""
    return {name: array[start:stop] for name, array in arrays.items()}
