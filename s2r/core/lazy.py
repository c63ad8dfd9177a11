"""A package's public names, imported from its modules on first use (PEP 562 module ``__getattr__``).

``import policies`` must not load torch, nor ``import robot`` the simulator: a package lists where each public name
lives, and the module holding it is imported when the name is first asked for.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(package: str, where: Mapping[str, tuple[str, ...]], defined: tuple[str, ...] = ()) -> tuple[
        Callable[[str], Any], Callable[[], list[str]], list[str]]:
    """``(__getattr__, __dir__, __all__)`` for ``package`` whose public names are ``where``'s, ``{module: (name,
    ...)}`` with modules relative to the package (``"config"`` for ``policies.config``), and ``defined``, those the
    package defines itself. A name asked for is imported from its module and kept in the package, so the next access
    is a plain attribute. Type checkers see the names through the package's ``if TYPE_CHECKING:`` imports, written
    ``import Name as Name`` (an explicit re-export); ``tests/test_api.py`` checks that they match ``where``."""
    home = {name: module for module, names in where.items() for name in names}
    if len(home) != sum(len(names) for names in where.values()):
        raise ValueError(f"{package}: a public name is listed under two modules")
    clash = sorted(name for name, module in home.items() if name in where)
    if clash:
        # Importing the submodule would set the package attribute of that name to the module.
        raise ValueError(f"{package}: public name(s) {clash} are also submodule names")
    twice = sorted(set(defined) & set(home))
    if twice:
        raise ValueError(f"{package}: public name(s) {twice} are both defined in the package and listed under a module")

    def __getattr__(name: str) -> Any:
        module = home.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{module}"), name)
        setattr(sys.modules[package], name, value)
        return value

    def __dir__() -> list[str]:
        return sorted({*vars(sys.modules[package]), *home})

    return __getattr__, __dir__, sorted([*defined, *home])
