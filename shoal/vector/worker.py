"""The multiprocessing worker: one process stepping a group of envs over shared memory, and its wire protocol.

Messages are tiny byte strings over a duplex pipe; observations, rewards, masks and actions never travel, they
live in the shared block. Commands (parent -> worker): ``b"s"`` step, ``b"r" + pickle(seeds)`` reset, ``b"c"``
close. Replies (worker -> parent): ``b"k"`` done with no infos, ``b"i" + pickle((info_pairs, moved))`` done with
the non-empty infos as ``(row, dict)`` pairs, ``b"e" + traceback`` failed (the worker then exits).

Final observations do not travel either: a worker writes each flat ``final_observation`` into its row of a second
shared array (``final``, shaped like the observations), sends None in its place and lists the positions of those
pairs in ``moved``; the parent puts a copy of the row back before the worker can step again.

Waiting is spin-then-block on both sides. Each side bumps a counter in a shared ``int64`` flag array when it
writes a message (``flags[w, CMD]`` by the parent, ``flags[w, DONE]`` by the worker, after the message); the
other side may spin on it, yielding its core between looks, then blocks in the kernel. The messages alone are
authoritative, so a zero spin is correct too. A parent waiting for several workers spins for ``spin_us`` (often
0), sleeps until the first replies, then spins for ``worker_spin_us`` on the others' flags (that worker's core
is free, or shared with a spinner that yields), so each step wakes it once.
"""

from __future__ import annotations

import contextlib
import faulthandler
import io
import multiprocessing
import os
import pickle
import signal
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection
from typing import Any

import numpy as np

from shoal.vector.buffers import BufferLayout, row_slice
from shoal.vector.group import EnvGroup, InfoPairs

__all__ = ["CMD", "DONE", "FLAG_STRIDE", "final_view", "flag_view", "restore_final_observations",
           "spin_until_changed", "stash_final_observations", "worker_main", "yield_core"]

CMD_STEP = b"s"
CMD_RESET = b"r"
CMD_CLOSE = b"c"
REPLY_OK = b"k"
REPLY_INFOS = b"i"
REPLY_ERROR = b"e"

#: Each worker owns ``FLAG_STRIDE`` int64 entries of the flag array (two cache lines): CMD and DONE.
FLAG_STRIDE = 16
CMD = 0
DONE = 8

_IDLE_CHECK_S = 1.0  # how often an idle worker checks that its parent is still alive


def flag_view(block: Any) -> memoryview:
    """An ``int64`` memoryview of the flag array (cheaper to index from Python than a numpy array)."""
    return memoryview(block).cast("B").cast("q")


def final_view(block: Any, layout: BufferLayout) -> np.ndarray:
    """The shared array of final observations inside ``block``: shaped and typed like ``layout``'s ``obs``."""
    shape, dtype = next((shape, dtype) for name, shape, dtype, _ in layout.fields if name == "obs")
    return np.frombuffer(block, dtype=dtype, count=int(np.prod(shape))).reshape(shape)


def stash_final_observations(pairs: InfoPairs, final: np.ndarray) -> list[int]:
    """Move every info's ``final_observation`` that is a flat row of ``final`` into that row.

    Args:
        pairs: ``(row, info)`` pairs of one group, rows local to the group; each info that had a value moved
            is replaced by a copy holding None in its place (the info itself may belong to the env).
        final: the group's rows of the shared final-observation array.

    Returns:
        The positions in ``pairs`` of the moved final observations (any other value is left to pickling).
    """
    moved = []
    row_shape, dtype = final.shape[1:], final.dtype
    for k, (row, info) in enumerate(pairs):
        value = info.get("final_observation")
        if type(value) is np.ndarray and value.shape == row_shape and value.dtype == dtype:
            final[row] = value
            pairs[k] = (row, {**info, "final_observation": None})  # a copy: the dict may be the env's own
            moved.append(k)
    return moved


def restore_final_observations(pairs: InfoPairs, moved: list[int], final: np.ndarray) -> InfoPairs:
    """Undo :func:`stash_final_observations` on the receiving side: each moved info gets a copy of its row."""
    for k in moved:
        row, info = pairs[k]
        info["final_observation"] = final[row].copy()
    return pairs


#: Gives the core to any other runnable process; spinning through it costs a busy core only when it is idle.
yield_core: Callable[[], None] = getattr(os, "sched_yield", lambda: time.sleep(0))


def spin_until_changed(flags: memoryview, index: int, old: int, seconds: float) -> bool:
    """Spin for up to ``seconds`` until ``flags[index] != old``, yielding the core between looks; True if it
    changed."""
    if flags[index] != old:
        return True
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        if flags[index] != old:
            return True
        yield_core()
    return False


def worker_main(index: int, env_fns: Sequence[Callable[[], Any]], first_env: int, block: Any, layout: BufferLayout,
                final_block: Any, flags_block: Any, conn: Connection, inherited: Sequence[Connection],
                emulate_kwargs: dict[str, Any], spin_s: float) -> None:
    """Entry point of worker ``index``: build its envs over the shared ``block``, then serve commands.

    Args:
        index: worker number; its flags start at ``index * FLAG_STRIDE``.
        env_fns: constructors of the worker's envs, global indices ``first_env ...``.
        block: the shared block holding every buffer (see :class:`BufferLayout`).
        final_block: the shared final-observation array (see :func:`final_view`).
        flags_block: the shared ``int64`` flag array.
        conn: this worker's end of its pipe to the parent.
        inherited: parent-side pipe ends this process inherited through fork; closed at once, so the parent
            alone holds them and a worker sees EOF when the parent goes away.
        spin_s: seconds to spin on the command flag before blocking on the pipe.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and closes the workers
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # not the CLI's handler inherited by fork: terminate ends it
    _enable_faulthandler()
    for other in inherited:
        other.close()
    group: EnvGroup | None = None
    try:
        arrays = layout.views(block)
        a = layout.agents_per_env
        rows = row_slice(arrays, first_env * a, (first_env + len(env_fns)) * a)
        group = EnvGroup(env_fns, rows, a, emulate_kwargs, first_env=first_env)
        final = final_view(final_block, layout)[first_env * a : (first_env + len(env_fns)) * a]
        conn.send_bytes(REPLY_OK)
        _serve(group, final, conn, flag_view(flags_block), index * FLAG_STRIDE, spin_s)
    except (EOFError, BrokenPipeError, KeyboardInterrupt):
        pass  # the parent went away or closed us
    except BaseException:
        _report(conn, traceback.format_exc())
    finally:
        if group is not None:
            try:
                group.close()
            except Exception:
                _report(conn, "while closing the envs:\n" + traceback.format_exc())
        conn.close()


def _enable_faulthandler() -> None:
    """Make a native crash print the worker's Python traceback to the process's real stderr (file descriptor 2):
    ``sys.stderr`` may be an object without one (a notebook, a test runner capturing output)."""
    stream = sys.__stderr__ if sys.__stderr__ is not None else sys.stderr
    with contextlib.suppress(AttributeError, ValueError, OSError, io.UnsupportedOperation):
        # Disabled first: enabling again only changes the file, and a library loaded since the parent enabled it
        # (Ray's core, for one) may have replaced its signal handlers.
        faulthandler.disable()
        faulthandler.enable(file=stream)


def _report(conn: Connection, text: str) -> None:
    with contextlib.suppress(OSError):
        conn.send_bytes(REPLY_ERROR + text.encode("utf-8", "replace"))


def _serve(group: EnvGroup, final: np.ndarray, conn: Connection, flags: memoryview, base: int,
           spin_s: float) -> None:
    parent = multiprocessing.parent_process()
    seen = 0
    cmd_index, done_index = base + CMD, base + DONE
    while True:
        if spin_s > 0.0:
            spin_until_changed(flags, cmd_index, seen, spin_s)
        while not conn.poll(_IDLE_CHECK_S):
            if parent is not None and not parent.is_alive():
                return
        message = conn.recv_bytes()
        seen += 1
        command = message[:1]
        if command == CMD_STEP:
            pairs = group.step()
        elif command == CMD_RESET:
            pairs = group.reset(pickle.loads(message[1:]))
        elif command == CMD_CLOSE:
            return
        else:
            raise RuntimeError(f"unknown command {message[:16]!r}")
        if pairs:
            moved = stash_final_observations(pairs, final)
            conn.send_bytes(REPLY_INFOS + pickle.dumps((pairs, moved), pickle.HIGHEST_PROTOCOL))
        else:
            conn.send_bytes(REPLY_OK)
        flags[done_index] = seen
