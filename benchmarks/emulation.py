"""Emulation overhead, side by side with the raw env and with gymnasium.spaces.flatten/unflatten.

Targets: the emulated CartPole keeps >= 90% of the raw step rate; flatten+unflatten of a NetHack-like Dict is
>= 5x faster than gymnasium.spaces.flatten + unflatten.

    python benchmarks/emulation.py [--seconds 0.5] [--rounds 150]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import gymnasium as gym
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import line, rate, verdict
from shoal.emulation import Flattener, compile_layout, emulate, unflatten
from tests.zoo import NETHACK_SPACE


def cartpole(rounds: int) -> tuple[float, float, float]:
    """Step rates of the raw env, the emulator, and the thinnest Python wrapper that auto-resets (a floor): each
    the rate of its fastest chunk of 4096 steps over ``rounds`` interleaved rounds. Short chunks and many rounds
    keep a burst of load from another tenant of the machine out of the figure: it slows a few chunks, not all."""
    # Actions are prepared up front for all loops (numpy integers for the raw env, [1] arrays for the wrappers) so
    # that each loop times only the step calls.
    actions = list(np.random.default_rng(0).integers(0, 2, 4096))
    batched = [np.array([a]) for a in actions]
    raw = gym.make("CartPole-v1")
    raw.reset(seed=0)

    def raw_steps() -> int:
        for a in actions:
            _, _, terminated, truncated, _ = raw.step(a)
            if terminated or truncated:
                raw.reset()
        return len(actions)

    env = emulate(gym.make("CartPole-v1"))
    env.reset(seed=0)

    def emulated_steps() -> int:
        for a in batched:
            env.step(a)
        return len(batched)

    thin = gym.make("CartPole-v1")
    thin.reset(seed=0)

    def thin_step(action: np.ndarray) -> tuple:
        obs, reward, terminated, truncated, info = thin.step(action[0])
        if terminated or truncated:
            obs, _ = thin.reset()
        return obs, reward, terminated, truncated, [info]

    def thin_steps() -> int:
        for a in batched:
            thin_step(a)
        return len(batched)

    loops = (raw_steps, emulated_steps, thin_steps)
    best = [float("inf")] * len(loops)  # seconds per step of each loop's fastest chunk
    for _ in range(rounds):  # one chunk of each per round, interleaved to share the machine's noise fairly
        for k, loop in enumerate(loops):
            start = time.perf_counter()
            steps = loop()
            best[k] = min(best[k], (time.perf_counter() - start) / steps)
    raw_rate, emu_rate, thin_rate = (1.0 / b for b in best)
    return raw_rate, emu_rate, thin_rate


def nethack(seconds: float) -> tuple[float, float]:
    space = NETHACK_SPACE
    space.seed(0)
    sample = space.sample()
    layout = compile_layout(space)
    row = np.zeros(layout.flat_size, layout.flat_dtype)
    writer = Flattener(layout, row)

    def shoal_round_trip() -> int:
        for _ in range(100):
            writer.write(sample)
            unflatten(layout, row)
        return 100

    def gym_round_trip() -> int:
        for _ in range(100):
            gym.spaces.unflatten(space, gym.spaces.flatten(space, sample))
        return 100

    return rate(gym_round_trip, seconds), rate(shoal_round_trip, seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=0.5, help="length of one NetHack measurement")
    parser.add_argument("--rounds", type=int, default=150,
                        help="interleaved CartPole rounds of 4096 steps per loop; each loop's fastest is kept")
    args = parser.parse_args()
    raw_rate, emu_rate, thin_rate = cartpole(args.rounds)
    print(line("CartPole-v1 raw env loop", raw_rate, "steps/s"))
    print(line("CartPole-v1 shoal GymnasiumEmulator", emu_rate, "steps/s", raw_rate, "raw"))
    print(line("floor: step+autoreset wrapper, no emulation", thin_rate, "steps/s", raw_rate, "raw"))
    gym_rate, shoal_rate = nethack(args.seconds)
    print(line("NetHack-like Dict gymnasium flatten+unflatten", gym_rate, "round trips/s"))
    print(line("NetHack-like Dict shoal flatten+unflatten", shoal_rate, "round trips/s", gym_rate, "gymnasium"))
    print(verdict("CartPole emulated / raw step rate", emu_rate / raw_rate, 0.9))
    print(verdict("NetHack-like Dict flatten+unflatten, shoal / gymnasium", shoal_rate / gym_rate, 5.0))


if __name__ == "__main__":
    main()
