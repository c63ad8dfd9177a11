"""Default randomization files (YAML), one per robot."""
