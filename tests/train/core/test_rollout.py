"""RolloutBuffer: each slot's reward and ending attach to its own last action; dead slots store nothing."""

from __future__ import annotations

import numpy as np
import pytest

from shoal.train.core.rollout import RolloutBuffer

T, F = True, False


def make(rows: int = 3, horizon: int = 4, target: int = 100, state_size: int = 0) -> RolloutBuffer:
    return RolloutBuffer(
        rows, horizon, target, (2,), np.float32, (), np.int64, mask_width=2, state_size=state_size
    )


def act(buf: RolloutBuffer, rows: list[int], step: int, values: list[float] | None = None) -> None:
    r = np.array(rows)
    values = values if values is not None else [10.0 * step + row for row in rows]
    obs = np.array([[step, row] for row in rows], np.float32)
    buf.act(
        r,
        obs,
        np.array([step] * len(rows)),
        np.full(len(rows), -0.5, np.float32),
        np.array(values, np.float32),
        agent_ids=r % 3,
    )


def finish(
    buf: RolloutBuffer,
    rewards: list[float],
    terminals: list[bool],
    truncations: list[bool],
    masks: list[bool],
    final_values: list[float] | None = None,
) -> np.ndarray:
    return buf.finish(
        np.arange(len(masks)),
        np.array(rewards, np.float32),
        np.array(terminals),
        np.array(truncations),
        np.array(masks),
        None if final_values is None else np.array(final_values, np.float32),
    )


def transitions(buf: RolloutBuffer) -> list[dict]:
    """Stored transitions in (segment, step) order."""
    data = buf.data()
    out = []
    for s in range(data.num_segments):
        for t in range(buf.horizon):
            if data.valid[s, t]:
                out.append(
                    {
                        "row": int(data.rows[s]),
                        "obs": data.obs[s, t].tolist(),
                        "reward": data.rewards[s, t],
                        "value": data.values[s, t],
                        "next_value": data.next_values[s, t],
                        "terminal": bool(data.terminals[s, t]),
                        "truncation": bool(data.truncations[s, t]),
                        "start": bool(data.starts[s, t]),
                        "done": bool(data.dones[s, t]),
                    }
                )
    return out


def test_turn_based_rewards_attach_to_each_slots_last_action() -> None:
    buf = make()
    buf.begin()
    # t0: rows 0 and 1 act, row 2 is a padded slot (never live)
    act(buf, [0, 1], 0)
    # t1: only row 0 must act; row 1 waits (its transition stays pending)
    finish(buf, [1.0, 0.0, 9.0], [F, F, F], [F, F, F], [T, F, F])
    act(buf, [0], 1)
    # t2: row 1's turn: it receives the reward earned meanwhile (summed); row 0 waits
    finish(buf, [0.0, 2.5, 9.0], [F, F, F], [F, F, F], [F, T, F])
    act(buf, [1], 2)
    buf.bootstrap(buf.waiting_rows(), np.array([99.0]))
    got = transitions(buf)
    assert [(g["row"], g["obs"]) for g in got] == [(0, [0.0, 0.0]), (1, [0.0, 1.0])]
    row0, row1 = got
    assert row0["reward"] == 1.0 and row0["next_value"] == 10.0  # the value row 0 computed at t1
    assert row1["reward"] == 2.5 and row1["next_value"] == 21.0  # row 1's value at t2
    assert row0["start"] and row1["start"]  # first actions of their episodes
    assert buf.pending.tolist() == [True, True, False]  # t1 of row 0 and t2 of row 1 carry over
    assert 2 not in [g["row"] for g in got]  # the padded slot never reaches the learner


def test_same_step_autoreset_terminal_and_truncation_bootstrap() -> None:
    buf = make(rows=2)
    buf.begin()
    act(buf, [0, 1], 0)
    # row 0 terminates and already shows the next episode (masks True); row 1 is truncated
    finish(buf, [1.0, 1.0], [T, F], [F, T], [T, T], final_values=[123.0, 7.0])
    act(buf, [0, 1], 1)
    finish(buf, [0.0, 0.0], [F, F], [F, F], [T, T])
    buf.bootstrap(buf.waiting_rows(), np.array([5.0, 6.0]))
    got = transitions(buf)
    first0, second0, first1, second1 = got
    assert first0["terminal"] and first0["next_value"] == 0.0 and first0["done"]
    assert first1["truncation"] and first1["next_value"] == 7.0 and first1["done"]
    assert second0["start"] and second1["start"]  # the LSTM resets where the new episodes begin
    assert second0["next_value"] == 5.0 and second1["next_value"] == 6.0
    assert second0["done"] and second1["done"]  # end of the rollout: the trace is cut there


def test_dead_agent_is_reported_once_then_stores_nothing() -> None:
    buf = make(rows=2)
    buf.begin()
    act(buf, [0, 1], 0)
    finish(buf, [-1.0, 1.0], [T, F], [F, F], [F, T])  # row 0 dies: terminal, not live any more
    for step in range(1, 4):
        act(buf, [1], step)
        finish(buf, [5.0, 1.0], [F, F], [F, F], [F, T])  # junk reward on the dead slot is ignored
    buf.bootstrap(buf.waiting_rows(), np.zeros(1, np.float32))
    assert [g["row"] for g in transitions(buf)].count(0) == 1
    assert buf.stored == 5  # 1 for the dead agent, 4 for the survivor


def test_segments_split_at_the_horizon_and_the_rollout_counts_transitions() -> None:
    buf = make(rows=2, horizon=3, target=8)
    buf.begin()
    act(buf, [0, 1], 0)
    step = 0
    while not buf.full:
        step += 1
        finish(buf, [1.0, 1.0], [F, F], [F, F], [T, T])
        act(buf, [0, 1], step)
    buf.bootstrap(buf.waiting_rows(), np.zeros(2, np.float32))
    data = buf.data()
    assert buf.stored == 8
    assert data.valid.sum(1).tolist() == [3, 3, 1, 1]  # two full segments per row... and two partial ones
    assert sorted(data.rows.tolist()) == [0, 0, 1, 1]
    assert data.dones[data.valid].sum() == 4  # every segment's last step is a cut
    # a full segment's last step bootstraps from the first value of the row's next segment
    assert data.next_values[0, 2] == data.values[2 if data.rows[2] == data.rows[0] else 3, 0]


def test_data_refuses_missing_bootstrap() -> None:
    buf = make(rows=1)
    buf.begin()
    act(buf, [0], 0)
    finish(buf, [1.0], [F], [F], [T])
    with pytest.raises(RuntimeError, match="bootstrap"):
        buf.data()


def test_lstm_state_of_each_segment_is_the_state_before_its_first_step() -> None:
    buf = make(rows=1, horizon=2, state_size=3)
    buf.begin()
    for step in range(5):
        h = np.full((1, 3), step, np.float32)
        buf.act(
            np.array([0]),
            np.zeros((1, 2), np.float32),
            np.array([0]),
            np.zeros(1, np.float32),
            np.zeros(1, np.float32),
            states=(h, -h),
        )
        finish(buf, [0.0], [F], [F], [T])
    buf.bootstrap(buf.waiting_rows(), np.zeros(1, np.float32))
    data = buf.data()
    assert data.states is not None
    assert data.states[0][:, 0].tolist() == [0.0, 2.0, 4.0] and data.states[1][:, 0].tolist() == [
        -0.0,
        -2.0,
        -4.0,
    ]


def test_carry_state_round_trip() -> None:
    buf = make()
    buf.begin()
    act(buf, [0, 2], 0)
    state = buf.carry_state()
    other = make()
    other.load_carry_state(state)
    assert other.pending.tolist() == [True, False, True]
    again = other.carry_state()
    for key in ("rows", "obs", "actions", "values", "starts"):
        np.testing.assert_array_equal(again[key], state[key])


@pytest.mark.parametrize("seed", range(3))
def test_lockstep_fast_path_equals_the_general_path(seed: int) -> None:
    rng = np.random.default_rng(seed)
    script = [
        (rng.normal(size=4).astype(np.float32), rng.random(4) < 0.1, rng.random(4) < 0.1) for _ in range(40)
    ]

    def play(lockstep: bool) -> tuple:
        buf = RolloutBuffer(4, 5, 30, (2,), np.float32, (), np.int64, mask_width=2, state_size=2)
        out = []
        for _rollout in range(3):
            buf.begin()
            buf._lockstep = buf._lockstep and lockstep
            step = 0
            while not buf.full:
                rewards, terminals, truncations = script[step % len(script)]
                values = np.full(4, step, np.float32)
                h = np.full((4, 2), step, np.float32)
                buf.act(
                    buf.all_rows,
                    np.full((4, 2), step, np.float32),
                    np.arange(4),
                    values - 1,
                    values,
                    states=(h, h + 1),
                )
                buf.finish(
                    buf.all_rows, rewards, terminals, truncations, np.ones(4, bool), final_values=values + 100
                )
                step += 1
            assert buf._lockstep == lockstep  # the fast path really ran
            buf.bootstrap(buf.waiting_rows(), np.full(len(buf.waiting_rows()), -7.0, np.float32))
            data = buf.data()
            out.append({k: v for k, v in vars(data).items() if v is not None and k != "states"})
            out[-1]["h"] = data.states[0]
        return out

    fast, slow = play(True), play(False)
    for a, b in zip(fast, slow, strict=True):
        assert a.keys() == b.keys()
        for key in a:
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)
