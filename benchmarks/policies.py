"""Default-policy forward time on a NetHack-like Dict observation, side by side with a hand-written MLP.

shoal's policy reads the emulator's raw byte rows (int16 glyph grids, int64 stats, uint8 text...), unflattens
them without copying, converts and scales each leaf inside its encoder, concatenates and runs the trunk and heads.
The reference is the plain concat-MLP one would write by hand on input that was already flattened to float32
(its flattening is not timed). Both sample actions and compute log-prob, entropy and value for one batch.

Target: shoal's forward within 1.5x of the hand-written MLP's time.

    python benchmarks/policies.py [--batch 4096] [--rounds 7] [--threads N] [--hidden 128]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from gymnasium import spaces
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from shoal.emulation import ActionLayout, compile_layout, flatten
from shoal.policies import Policy, float_features
from tests.zoo import NETHACK_SPACE

NUM_ACTIONS = 23
TARGET = 1.5


class ConcatMLP(nn.Module):
    """The hand-written baseline: float32 ``[B, F]`` -> 2-layer MLP -> categorical actor and value head."""

    def __init__(self, in_features: int, hidden: int, num_actions: int) -> None:
        super().__init__()
        self.trunk = nn.Sequential(nn.Linear(in_features, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU())
        self.actor = nn.Linear(hidden, num_actions)
        self.critic = nn.Linear(hidden, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        h = self.trunk(x)
        dist = torch.distributions.Categorical(logits=self.actor(h))
        action = dist.sample()
        return action, dist.log_prob(action), dist.entropy(), self.critic(h).squeeze(-1)


def nethack_rows(batch: int, seed: int = 0) -> torch.Tensor:
    """``[batch, flat_size]`` uint8 byte rows of random NetHack-like observations (256 samples, tiled)."""
    layout = compile_layout(NETHACK_SPACE)
    NETHACK_SPACE.seed(seed)
    distinct = np.stack([flatten(layout, NETHACK_SPACE.sample()) for _ in range(min(batch, 256))])
    return torch.from_numpy(np.ascontiguousarray(np.resize(distinct, (batch, layout.flat_size))))


def best_time(fn: Callable[[], object]) -> float:
    """Seconds for one call of ``fn`` (no autograd), best of three after a warm-up call."""
    with torch.no_grad():
        fn()
        best = float("inf")
        for _ in range(3):
            start = time.perf_counter()
            fn()
            best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=4096)
    parser.add_argument("--rounds", type=int, default=7, help="interleaved rounds; the best of each side is kept")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--hidden", type=int, default=128)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    layout = compile_layout(NETHACK_SPACE)
    rows = nethack_rows(args.batch)
    policy = Policy(layout, ActionLayout(spaces.Discrete(NUM_ACTIONS)), hidden_size=args.hidden).eval()
    flat_float = float_features(layout, rows).contiguous()  # the baseline's pre-flattened input (not timed)
    baseline = ConcatMLP(flat_float.shape[1], args.hidden, NUM_ACTIONS).eval()

    shoal_time = mlp_time = float("inf")
    for _ in range(args.rounds):  # interleave so both sides share the machine's noise
        mlp_time = min(mlp_time, best_time(lambda: baseline(flat_float)))
        shoal_time = min(shoal_time, best_time(lambda: policy(rows)))

    ratio = shoal_time / mlp_time
    print(f"NetHack-like Dict, batch {args.batch}, hidden {args.hidden}, {torch.get_num_threads()} torch threads")
    print(f"  input: shoal {rows.shape[1]} bytes/row ({len(layout.leaves)} leaves, mixed dtypes); "
          f"MLP {flat_float.shape[1]} float32/row, pre-flattened")
    print(f"{'hand-written concat MLP (float32 input)':<48} {mlp_time * 1e3:9.2f} ms/batch")
    print(f"{'shoal default Policy (raw byte rows)':<48} {shoal_time * 1e3:9.2f} ms/batch   "
          f"{ratio:5.2f}x MLP (target <= {TARGET})")
    print(f"{'':<48} {args.batch / shoal_time:9,.0f} rows/s (shoal)  {args.batch / mlp_time:,.0f} rows/s (MLP)")
    print(f"target {'met' if ratio <= TARGET else 'MISSED'}: ratio {ratio:.2f} vs {TARGET}")


if __name__ == "__main__":
    main()
