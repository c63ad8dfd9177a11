"""Soft Actor-Critic and TD3 on one off-policy core; training, evaluation and checkpoints."""
