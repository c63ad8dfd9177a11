"""The torso IMU of a legged robot: its serial frame protocol, a non-blocking reader, and an in-process mock.

``protocol`` (frame layout, CRC, encoder and decoder, pure), ``mounting`` (sensor frame <-> torso frame),
``reader`` (:class:`~robot.imu.reader.ImuReader` on a serial port or any byte source) and ``mock`` (frames
as a device would stream them, on a fake clock, for unit tests). The emulator serves the same frames from
the simulated torso (``robot.emulator.imu``). This package imports nothing from ``robot.config`` at import
time, so the config can use the protocol's constants.
"""
