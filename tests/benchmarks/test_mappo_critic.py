"""benchmarks/mappo_critic.py: each critic design's configuration and the verdict against the residual critic."""

from __future__ import annotations

from benchmarks import mappo_critic
from shoal.train.api import trainer_class
from shoal.train.mappo.trainer import MAPPOTrainer


def test_each_design_trains_what_its_name_says() -> None:
    residual, one_mlp, ippo = (mappo_critic.config("simple_spread_v3", d, 1000, 3) for d in mappo_critic.DESIGNS)
    assert (residual.algo, residual.resolved().critic_residual) == ("mappo", True)
    assert (one_mlp.algo, one_mlp.resolved().critic_residual) == ("mappo", False)
    assert (ippo.algo, ippo.value_norm, ippo.critic_residual) == ("ppo", "running", False)
    assert trainer_class(ippo) is MAPPOTrainer  # IPPO: the MAPPO trainer with a local critic
    # every design takes simple_spread's MAPPO preset (gamma 0.95) and the same budget, seed and episode length
    for cfg in (residual, one_mlp, ippo):
        resolved = cfg.resolved()
        assert (resolved.gamma, resolved.total_steps, resolved.seed) == (0.95, 1000, 3)
        assert resolved.env_kwargs == {"max_cycles": 25} and resolved.agent_ids
    assert mappo_critic.config("simple_reference_v3", "IPPO", 10, 1).resolved().gamma == 0.99  # no preset there


def test_the_residual_critic_meets_a_design_it_matches_within_one_standard_deviation() -> None:
    def runs(*finals: float) -> list[dict[str, float]]:
        return [{"final": f} for f in finals]

    by = {("e", "residual"): runs(-10.0, -11.0), ("e", "one MLP"): runs(-9.5, -10.7), ("e", "IPPO"): runs(-9.0, -9.1)}
    lines = mappo_critic.verdicts(by, ["e"], ["residual", "one MLP", "IPPO"])
    assert lines == ["e: residual final -10.50 (2 seed(s)) vs one MLP -10.10 (2 seed(s)) -> met",
                     "e: residual final -10.50 (2 seed(s)) vs IPPO -9.05 (2 seed(s)) -> MISSED"]
    assert mappo_critic.verdicts({("e", "IPPO"): runs(-9.0)}, ["e"], ["residual", "IPPO"]) == []  # nothing to judge
