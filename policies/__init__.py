"""Soft Actor-Critic, TD3 and DDPG on one off-policy core, and CrossQ; training, evaluation and checkpoints.

Modules: :mod:`policies.sac` (``sac_update``; :mod:`policies.sac_reference`, the same update with autograd, is its
tested reference), :mod:`policies.crossq`, :mod:`policies.td3` (``td3_update``, DDPG's too),
:mod:`policies.exploration` (TD3's and DDPG's Gaussian or Ornstein-Uhlenbeck noise), :mod:`policies.networks`
(actor, critic ensemble, hand-written backward passes, ``PolicyModule``), :mod:`policies.replay` (buffer,
``Batch``), :mod:`policies.her` (Hindsight Experience Replay), :mod:`policies.normalizer` (running observation
statistics), :mod:`policies.offpolicy` (learner interface, fused Adam), :mod:`policies.config` (``TrainConfig``),
:mod:`policies.train` (the loop) and the parts it calls: :mod:`policies.agent` (learner, policy, normalization,
checkpoints), :mod:`policies.observations`, :mod:`policies.collector` (environments, stepping, evaluation),
:mod:`policies.metrics` and :mod:`policies.rundir` (the run directory); :mod:`policies.evaluate` (``evaluate``),
:mod:`policies.checkpoint` (``load_checkpoint``, ``policy_from_checkpoint``), :mod:`s2r.commands.policies` (``s2r
train``, ``s2r eval``).
"""
