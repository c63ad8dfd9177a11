"""The goal-conditioned claw (``s2r/DClawTurnGoal-v0``): gymnasium-robotics' dict convention, a vectorized reward
that agrees with the steps, gymnasium's checker, and Stable-Baselines3's HER training on it unchanged."""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import sim  # noqa: F401  (registers the ids)
from sim.goal_env import GoalEnv
from sim.tasks.dclaw_turn import OBS_LAYOUT, SUCCESS_THRESHOLD_RAD, DClawTurn

GOAL_ID = "s2r/DClawTurnGoal-v0"


def _cos_sin(angle: float | np.ndarray) -> np.ndarray:
    return np.stack([np.cos(angle), np.sin(angle)], axis=-1)


@pytest.mark.parametrize("engine", ["mujoco", "pybullet"])
def test_the_goal_claw_passes_gymnasiums_checker_and_follows_the_dict_convention(engine: str) -> None:
    if engine == "pybullet":
        pytest.importorskip("pybullet")
    env = gym.make(GOAL_ID, engine=engine)
    with pytest.warns(UserWarning, match="infinity"):  # unbounded observation boxes, as the flat tasks have
        check_env(env.unwrapped)
    obs, info = env.reset(seed=3)
    assert set(obs) == {"observation", "achieved_goal", "desired_goal"}
    assert obs["observation"].shape == (OBS_LAYOUT.size - 1,)  # the target error became the desired goal
    assert env.spec is not None and env.spec.max_episode_steps == 40
    # the goal is anywhere on the circle, not only near pi as in the random task
    targets = [math.atan2(*env.reset(seed=s)[0]["desired_goal"][::-1]) for s in range(40)]
    assert min(targets) < -2.0 and max(targets) > 2.0 and any(abs(t) < 1.0 for t in targets)
    assert info["is_success"] in (True, False)
    env.close()


def test_compute_reward_is_vectorized_and_agrees_with_every_step() -> None:
    env = gym.make(GOAL_ID)
    goal_env = env.unwrapped
    assert isinstance(goal_env, GoalEnv)
    obs, _ = env.reset(seed=0)
    achieved, desired, rewards = [], [], []
    for _ in range(10):
        obs, reward, terminated, _truncated, info = env.step(env.action_space.sample())
        achieved.append(obs["achieved_goal"])
        desired.append(obs["desired_goal"])
        rewards.append(reward)
        assert not terminated and info["is_success"] == (reward == 0.0)
    batch = goal_env.compute_reward(np.array(achieved), np.array(desired), [{}] * 10)
    assert batch.shape == (10,) and batch.dtype == np.float32
    np.testing.assert_array_equal(batch, np.array(rewards, dtype=np.float32))
    # relabelled with the goal it reached, every transition is a success (HER's premise)
    np.testing.assert_array_equal(goal_env.compute_reward(np.array(achieved), np.array(achieved), None), 0.0)
    env.close()


def test_goal_distance_wraps_around_and_the_reward_types_differ() -> None:
    task = DClawTurn(variant="goal")
    # 3.1 and -3.1 rad are 0.083 rad apart across pi
    assert task.goal_distance(_cos_sin(3.1), _cos_sin(-3.1)) == pytest.approx(2 * math.pi - 6.2, abs=1e-9)
    angles = np.array([0.0, SUCCESS_THRESHOLD_RAD * 0.9, SUCCESS_THRESHOLD_RAD * 1.1, math.pi])
    sparse = GoalEnv(task, "sparse").compute_reward(_cos_sin(angles), _cos_sin(np.zeros(4)), None)
    dense = GoalEnv(task, "dense").compute_reward(_cos_sin(angles), _cos_sin(np.zeros(4)), None)
    np.testing.assert_array_equal(sparse, [0.0, 0.0, -1.0, -1.0])
    np.testing.assert_allclose(dense, -angles, atol=1e-6)
    with pytest.raises(ValueError, match="reward_type must be one of sparse, dense, got 'shaped'"):
        GoalEnv(task, "shaped")
    assert gym.make(GOAL_ID, reward_type="dense").unwrapped.reward_type == "dense"  # type: ignore[attr-defined]


def test_stable_baselines3_her_trains_on_it_unchanged() -> None:
    sb3 = pytest.importorskip("stable_baselines3")
    from stable_baselines3.her import HerReplayBuffer

    env = gym.make(GOAL_ID)
    model = sb3.SAC("MultiInputPolicy", env, replay_buffer_class=HerReplayBuffer,
                    replay_buffer_kwargs={"n_sampled_goal": 4, "goal_selection_strategy": "future"},
                    buffer_size=1_000, learning_starts=90, batch_size=32, policy_kwargs={"net_arch": [32, 32]},
                    seed=0, device="cpu")
    model.learn(total_timesteps=100)
    assert model.num_timesteps == 100 and model.replay_buffer is not None and model.replay_buffer.size() == 100
    action, _ = model.predict(env.reset(seed=0)[0], deterministic=True)
    assert env.action_space.contains(action)
    env.close()
