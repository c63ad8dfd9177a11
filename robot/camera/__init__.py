"""A camera on the robot: frames read through OpenCV, timestamped on the controller's clock, watched for staleness.

``reader`` (:class:`~robot.camera.reader.CameraReader`: the newest valid frame, its counters, the lock-step protocol;
the :class:`~robot.camera.reader.FrameSource` protocol it reads from) and ``opencv``
(:class:`~robot.camera.opencv.OpenCvFrameSource`, ``cv2.VideoCapture`` on a USB index or a stream URL; the ``camera``
extra). The emulator serves its rendering as an MJPEG stream over HTTP (``robot.emulator.camera``), which the same
reader opens by URL.
"""
