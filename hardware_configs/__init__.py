"""The shipped hardware configs (one YAML file per robot) and, in ``reality/``, emulator realities.

A package only so that they ship as package data; read them through :mod:`s2r.core.resources`.
"""
