"""Watching a policy: frames of evaluation episodes into an mp4 or a gif, or a window on screen.

The env is built with ``render_mode="rgb_array"`` to record (``"human"`` to watch). To record, it is wrapped so that
its ``render()`` is called inside its own ``reset()`` and ``step()``: every episode's last frame is kept, before the
emulator resets the env for the next one. For a PettingZoo env that is the whole env's frame, all agents together
(a turn-based game gives one frame per move).
Videos need the ``video`` extra (``pip install "shoal[video]"``: imageio, and imageio-ffmpeg for mp4).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from pettingzoo import AECEnv, ParallelEnv
from pettingzoo.utils.wrappers import BaseParallelWrapper, BaseWrapper

from shoal.errors import APIUsageError, EnvError
from shoal.train.runs.resolve import EnvFn
from shoal.wrappers import WrappedEnvFn

__all__ = ["FrameRecorder", "VideoWriter", "check_display", "with_render_mode"]

log = logging.getLogger(__name__)

_INSTALL = 'pip install "shoal[video]"'


def check_display() -> None:
    """Raise :class:`APIUsageError` when no window can open: on Linux and BSD, no X11 or Wayland display and no
    SDL video driver chosen (``SDL_VIDEODRIVER``)."""
    if sys.platform.startswith(("linux", "freebsd", "openbsd")) and not any(
        os.environ.get(name) for name in ("DISPLAY", "WAYLAND_DISPLAY", "SDL_VIDEODRIVER")
    ):
        raise APIUsageError(
            "rendering to a window needs a display, and neither DISPLAY nor WAYLAND_DISPLAY is set (e.g. over ssh "
            "or in a container); record a video instead: shoal eval RUN --video episodes.mp4 (video=... in Python)"
        )


def with_render_mode(env_fn: Callable[[], Any], mode: str) -> Callable[[], Any]:
    """``env_fn`` building its env with ``render_mode=mode``: an :class:`EnvFn` gets the keyword; any other
    callable is used as it is, and its env must already have that render mode (checked when it is built)."""
    if isinstance(env_fn, EnvFn):
        return dataclasses.replace(env_fn, kwargs={**env_fn.kwargs, "render_mode": mode})
    if isinstance(env_fn, WrappedEnvFn):
        return dataclasses.replace(env_fn, env_fn=with_render_mode(env_fn.env_fn, mode))
    return env_fn


class FrameRecorder:
    """An env constructor that keeps the env it builds, to call its ``render()`` (one env: the serial backend
    builds it in this process).

    Args:
        env_fn: the constructor (see :func:`with_render_mode`). mode: the render mode the env must have.
        name: how errors name the env.
    """

    def __init__(self, env_fn: Callable[[], Any], mode: str, name: str) -> None:
        self.env_fn, self.mode, self.name = env_fn, mode, name
        self.env: Any = None

    def __call__(self) -> Any:
        try:
            env = self.env_fn()
        except TypeError as exc:
            if "render_mode" not in str(exc):
                raise
            raise APIUsageError(f"env {self.name!r} cannot render: its constructor takes no render_mode ({exc})") \
                from exc
        if getattr(env, "render_mode", None) != self.mode:
            raise APIUsageError(
                f"env {self.name!r} has render_mode={getattr(env, 'render_mode', None)!r}, not {self.mode!r}: it "
                f"cannot {'record frames' if self.mode == 'rgb_array' else 'open a window'}. Build it with "
                f"render_mode={self.mode!r} (an env named by its ENV string gets it automatically)"
            )
        self.env = env
        self.pending: list[np.ndarray] = []
        return env if self.mode != "rgb_array" else _filmed(env, self)

    def capture(self) -> None:
        """Keep the env's current frame (called by the wrapper after the env's reset and each step)."""
        self.pending.append(self.frame())

    def take(self) -> list[np.ndarray]:
        """The frames captured since the last call, oldest first."""
        frames, self.pending = self.pending, []
        return frames

    def frame(self) -> np.ndarray:
        """The env's current frame, ``uint8[height, width, 3]``."""
        frame = self.env.render()
        if isinstance(frame, list | tuple) and frame and isinstance(frame[0], np.ndarray):
            frame = frame[-1]  # render modes that return every frame since the last call
        if not (isinstance(frame, np.ndarray) and frame.ndim == 3 and frame.shape[2] in (3, 4)):
            raise EnvError(f"env {self.name!r}: render() with render_mode='rgb_array' returned "
                           f"{type(frame).__name__} {getattr(frame, 'shape', '')}, not an RGB image "
                           "(uint8[height, width, 3])")
        return np.ascontiguousarray(frame[..., :3], dtype=np.uint8)


def _filmed(env: Any, recorder: FrameRecorder) -> Any:
    """``env`` wrapped to capture a frame after its reset and after each step (Gymnasium, PettingZoo parallel or
    AEC); the wrapper passes everything else through."""
    if isinstance(env, gym.Env):
        return _FilmedEnv(env, recorder)
    if isinstance(env, ParallelEnv):
        return _FilmedParallelEnv(env, recorder)
    if isinstance(env, AECEnv):
        return _FilmedAECEnv(env, recorder)
    return env  # another kind of env: evaluate takes its frame after the vector step


class _FilmedEnv(gym.Wrapper):
    def __init__(self, env: gym.Env, recorder: FrameRecorder) -> None:
        super().__init__(env)
        self._recorder = recorder

    def reset(self, **kwargs: Any) -> Any:
        out = self.env.reset(**kwargs)
        self._recorder.capture()
        return out

    def step(self, action: Any) -> Any:
        out = self.env.step(action)
        self._recorder.capture()
        return out


class _FilmedParallelEnv(BaseParallelWrapper):
    def __init__(self, env: ParallelEnv, recorder: FrameRecorder) -> None:
        super().__init__(env)
        self._recorder = recorder

    def reset(self, seed: int | None = None, options: dict | None = None) -> Any:
        out = self.env.reset(seed=seed, options=options)
        self._recorder.capture()
        return out

    def step(self, actions: Any) -> Any:
        out = self.env.step(actions)
        self._recorder.capture()
        return out


class _FilmedAECEnv(BaseWrapper):
    def __init__(self, env: AECEnv, recorder: FrameRecorder) -> None:
        super().__init__(env)
        self._recorder = recorder

    def reset(self, seed: int | None = None, options: dict | None = None) -> None:
        self.env.reset(seed=seed, options=options)
        self._recorder.capture()

    def step(self, action: Any) -> None:
        # the emulator steps agents that are already done with None (PettingZoo's contract); nothing moves on
        # screen, so no frame
        agent = self.env.agent_selection
        done = self.env.terminations.get(agent, False) or self.env.truncations.get(agent, False)
        self.env.step(action)
        if not done:
            self._recorder.capture()


class VideoWriter:
    """Frames into ``path``: an mp4 (H.264 through imageio-ffmpeg), or a gif when ``path`` ends in ``.gif`` or
    ffmpeg is not available (then ``path`` with a ``.gif`` suffix, with a warning).

    Attributes:
        path: the file written. frames: frames written so far.

    Raises:
        APIUsageError: imageio is not installed (the message says ``pip install "shoal[video]"``).
    """

    def __init__(self, path: str | Path, fps: float = 30.0) -> None:
        try:
            import imageio.v2 as imageio
        except ImportError as exc:
            raise APIUsageError(f"recording a video needs imageio: {_INSTALL}") from exc
        if not (isinstance(fps, int | float) and fps > 0):
            raise APIUsageError(f"fps must be a positive number, got {fps!r}")
        path = Path(path)
        as_gif = path.suffix.lower() == ".gif"
        if not as_gif and not _has_ffmpeg():
            log.warning("no ffmpeg for an mp4 (%s): writing a gif instead", _INSTALL)
            path, as_gif = path.with_suffix(".gif"), True
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path, self.frames = path, 0
        if as_gif:
            self._writer = imageio.get_writer(path, mode="I", duration=1000.0 / fps, loop=0)
        else:  # even sides for yuv420p, resized only when a side is odd
            self._writer = imageio.get_writer(path, fps=fps, macro_block_size=2)

    def append(self, frame: np.ndarray) -> None:
        """Add one ``uint8[height, width, 3]`` frame."""
        self._writer.append_data(frame)
        self.frames += 1

    def close(self) -> None:
        self._writer.close()


def _has_ffmpeg() -> bool:
    try:
        import imageio_ffmpeg

        imageio_ffmpeg.get_ffmpeg_exe()
    except (ImportError, RuntimeError):
        return False
    return True
