"""Files shipped with s2r (hardware configs, realities, randomization priors), found through ``importlib.resources``.

They are package data (``pyproject.toml``), so an installed wheel finds them as a checkout does; nothing looks them
up relative to a source file's parents. A command given a shipped file's name (``--robot dclaw``) or the README's
relative path (``--robot hardware_configs/dclaw.yaml``) from any directory gets the shipped file.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

from s2r.core.errors import UserError

HARDWARE_CONFIGS = "hardware_configs"
"""The package of the hardware configs (``dclaw.yaml``, ``dkitty.yaml``) and, in ``reality/``, the realities."""
REALITY_DIR = "reality"
"""The folder of the shipped reality files inside :data:`HARDWARE_CONFIGS`."""


def shipped_file(package: str, *parts: str) -> Path:
    """The data file ``parts`` of the installed package ``package`` (e.g. ``"hardware_configs", "dclaw.yaml"``)."""
    root = resources.files(package)
    if not isinstance(root, Path):
        # A zipped install would need a temporary copy of every file; pip and setuptools install on disk.
        raise UserError(f"the package {package!r} is not installed as files on disk ({root}); reinstall s2r with pip")
    path = root.joinpath(*parts)
    if not path.is_file():
        raise UserError(f"the shipped file {'/'.join(parts)!r} of {package!r} is missing from this install ({path})")
    return path


def config_path(path: str | os.PathLike[str], *folder: str) -> Path:
    """``path`` when it exists; else the shipped file it names, if any: ``hardware_configs/...`` from any directory,
    or a bare name without suffix (``dclaw``) as ``NAME.yaml`` in the shipped ``folder`` of
    :data:`HARDWARE_CONFIGS`. Anything else comes back unchanged, for the reader to report as missing."""
    p = Path(path)
    if p.exists() or p.is_absolute():
        return p
    if p.parts[:1] == (HARDWARE_CONFIGS,) and len(p.parts) > 1:
        parts = p.parts[1:]
    elif len(p.parts) == 1 and not p.suffix:
        parts = (*folder, f"{p.name}.yaml")
    else:
        return p
    root = resources.files(HARDWARE_CONFIGS).joinpath(*parts)
    return root if isinstance(root, Path) and root.is_file() else p
