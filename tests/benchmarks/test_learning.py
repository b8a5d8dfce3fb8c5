"""benchmarks/learning.py: the suite runs shoal, the CleanRL scripts and SB3 on real envs and prints their rows."""

from __future__ import annotations

import math
import subprocess

import pytest

from benchmarks import learning


def test_a_tiny_cartpole_suite_prints_one_row_per_implementation_with_numbers(tmp_path, capsys) -> None:
    runs = learning.main(["--envs", "CartPole-v1", "--steps", "2048", "--seeds", "1", "--workers", "1",
                          "--plots", str(tmp_path)])
    out = capsys.readouterr().out

    assert [r.job.impl for r in runs] == ["shoal PPO", "CleanRL PPO", "SB3 PPO"]
    for run in runs:
        assert run.steps == 2048, run.job.impl  # each trains whole rollouts of 512 (shoal, CleanRL) or 256 (SB3)
        assert run.curve and all(step <= 2048 for step, _ in run.curve), run.job.impl
        # CartPole returns are episode lengths: at least 8 (the shortest possible) and at most 500
        assert 8 <= run.final <= run.best <= 500, run.job.impl
        assert run.sps > 0 and run.seconds > 0
    assert runs[0].eval is not None and 8 <= runs[0].eval <= 500  # shoal's deterministic evaluation
    assert runs[2].eval is not None and 8 <= runs[2].eval <= 500  # SB3's

    rows = [line.split() for line in out.splitlines() if line.startswith("CartPole-v1 ")]
    assert [row[1:3] for row in rows] == [["shoal", "PPO"], ["CleanRL", "PPO"], ["SB3", "PPO"]]
    for row, run in zip(rows, runs, strict=True):
        assert row[3] == "2.048k" and row[4] == "1"
        assert float(row[5]) == pytest.approx(run.final, abs=0.05)  # final
        assert float(row[6]) == pytest.approx(run.best, abs=0.05)  # best
        assert float(row[-1].replace(",", "")) == pytest.approx(run.sps, abs=0.5)  # steps/s
    assert "CartPole-v1: shoal PPO final" in out and "x CleanRL PPO (target >= 2x)" in out
    assert (tmp_path / "CartPole-v1.png").stat().st_size > 1000


def test_the_continuous_action_cleanrl_script_runs_and_its_episodes_parse(tmp_path) -> None:
    argv = learning.cleanrl_command("Pendulum-v1", 512, 3)
    assert argv[1].endswith("cleanrl_ppo_continuous_action.py")
    # a smaller rollout and update than the published defaults, only to keep the test short
    argv += ["--num-steps", "256", "--num-minibatches", "4", "--update-epochs", "1"]
    proc = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, check=False, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    episodes, sps = learning.parse_cleanrl(proc.stdout)
    # Pendulum-v1 episodes last 200 steps: two of them end within 512 steps, at steps 200 and 400
    assert [step for step, _ in episodes] == [200, 400]
    assert all(-16.3 * 200 <= value <= 0 for _, value in episodes)  # rewards lie in [-16.27, 0]
    assert sps > 0 and math.isfinite(sps)
    assert (tmp_path / "runs").is_dir()  # its TensorBoard events, where it was run


def test_zoo_schedules_and_normalization_follow_the_zoo() -> None:
    kwargs, n_envs, normalize = learning.zoo_kwargs(learning.ZOO_PPO["CartPole-v1"])
    assert n_envs == 8 and not normalize
    assert kwargs["learning_rate"](1.0) == pytest.approx(1e-3)
    assert kwargs["learning_rate"](0.25) == pytest.approx(2.5e-4)
    assert kwargs["clip_range"](0.5) == pytest.approx(0.1)
    kwargs, n_envs, normalize = learning.zoo_kwargs(learning.ZOO_PPO["Acrobot-v1"])
    assert n_envs == 16 and normalize and "normalize" not in kwargs and kwargs["n_steps"] == 256


def test_running_mean_averages_the_last_window_of_episodes() -> None:
    episodes = [(10 * i, float(i)) for i in range(1, 31)]
    curve = learning.running_mean(episodes, window=20)
    assert curve[0] == (10, 1.0) and curve[1] == (20, 1.5)
    assert curve[-1] == (300, pytest.approx(sum(range(11, 31)) / 20))


def test_unknown_env_and_reference_names_are_refused_with_the_choices() -> None:
    with pytest.raises(SystemExit, match=r"unknown env 'CartPole-v0'.*CartPole-v1"):
        learning.main(["--envs", "CartPole-v0"])
    with pytest.raises(SystemExit, match=r"unknown ref 'rllib'.*cleanrl, sb3"):
        learning.main(["--refs", "rllib"])


def test_a_failing_job_comes_back_with_its_error_instead_of_ending_the_suite() -> None:
    run = learning.run_job(learning.Job("CartPole-v1", "SB3 SAC", 1, 1000))
    assert run.error is not None and "no rl-baselines3-zoo hyperparameters for SB3 SAC on CartPole-v1" in run.error
    assert run.curve == [] and math.isnan(run.final)


def test_the_cartpole_time_bound_is_also_judged_as_a_ratio_to_sb3_in_the_same_run() -> None:
    def run(impl: str, seed: int, seconds: float, value: float, steps: int = 100_352,
            error: str | None = None) -> learning.Run:
        job = learning.Job("CartPole-v1", impl, seed, steps)
        return learning.Run(job, steps, seconds, 5000.0, [(steps, value)], value, error)

    def ratio_line(runs: list[learning.Run]) -> str:
        return next(line for line in learning.targets(runs) if "SB3 PPO's mean wall time" in line)

    shoal = [run("shoal PPO", 1, 20.0, 500.0), run("shoal PPO", 2, 24.0, 500.0)]
    lines = learning.targets([*shoal, run("SB3 PPO", 1, 60.0, 500.0), run("SB3 PPO", 2, 64.0, 500.0)])
    # over 10 s: the absolute bound is missed; 24 s is 0.39x SB3's 62 s, under 10 s / 15 s = 0.67x
    assert any(line.startswith("CartPole-v1: shoal PPO eval >= 475") and line.endswith("MISSED") for line in lines)
    line = ratio_line([*shoal, run("SB3 PPO", 1, 60.0, 500.0), run("SB3 PPO", 2, 64.0, 500.0)])
    assert "under 0.67x" in line and line.endswith("24.0 s = 0.39x of 62.0 s -> met")

    assert ratio_line([run("shoal PPO", 1, 50.0, 500.0), run("SB3 PPO", 1, 60.0, 500.0)]).endswith("MISSED")  # 0.83x
    assert ratio_line([run("shoal PPO", 1, 5.0, 400.0), run("SB3 PPO", 1, 60.0, 500.0)]).endswith("MISSED")  # < 475
    # a failed SB3 seed (0 s, no curve) does not halve SB3's time; a shorter SB3 run is no reference
    mixed = ratio_line([*shoal, run("SB3 PPO", 1, 60.0, 500.0), run("SB3 PPO", 2, 0.0, math.nan, error="boom")])
    assert mixed.endswith("24.0 s = 0.40x of 60.0 s -> met")
    for refs in ([run("SB3 PPO", 1, 0.0, math.nan, error="boom")], [run("SB3 PPO", 1, 6.0, 500.0, steps=10_240)]):
        assert ratio_line([*shoal, *refs]).endswith("not checked (budget or seeds below the target's, or no "
                                                    "finished episode)")
