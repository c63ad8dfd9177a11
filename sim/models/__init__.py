"""Scene descriptions (MJCF for MuJoCo, URDF for PyBullet) generated from one set of numbers."""
