"""Soft Actor-Critic and TD3 on one off-policy core; training, evaluation and checkpoints.

Modules: :mod:`policies.sac` (``sac_update``), :mod:`policies.td3` (``td3_update``),
:mod:`policies.networks` (actor, twin critic, hand-written backward passes, ``PolicyModule``),
:mod:`policies.replay` (buffer, ``Batch``), :mod:`policies.normalizer` (running observation
statistics), :mod:`policies.offpolicy` (learner interface, fused Adam), :mod:`policies.config`
(``TrainConfig``), :mod:`policies.train` (the loop and the run directory),
:mod:`policies.evaluate` (``evaluate``), :mod:`policies.checkpoint` (``load_checkpoint``,
``policy_from_checkpoint``), :mod:`s2r.commands.policies` (``s2r train``, ``s2r eval``).
"""
