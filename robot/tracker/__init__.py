"""A position source for a legged robot's torso: its position and heading in the world.

``protocol`` (the pose datagram: layout, CRC32, encoder and decoder, pure), ``udp``
(:class:`~robot.tracker.udp.PoseSender` for a motion-capture bridge and the emulator,
:class:`~robot.tracker.udp.PoseReceiver` on loopback with its counters), ``estimator``
(:class:`~robot.tracker.estimator.LegOdometry`, the fallback for a robot without motion capture: heading from the IMU,
position from the stance feet) and ``source`` (what the controller asks of either: the
:class:`~robot.tracker.source.PoseSource` protocol and the :class:`~robot.tracker.source.PoseSample` it returns). The
hardware config's ``tracker`` section chooses (``robot.config.TrackerConfig``). Like ``robot.imu``, this package
imports nothing from ``robot.config`` at import time, so the config can use the protocol's constants.
"""
