"""A task's named physical parameters: list, read, and set them from nominal values."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from sim.engines.base import Engine, ParamSpec, UnsupportedParameter


class ParameterSet:
    """Named parameters of one env. Every ``set`` acts on the nominal model, so values never compound."""

    def __init__(self, specs: Iterable[ParamSpec], engine: Engine) -> None:
        self._specs = {s.name: s for s in specs}
        self._engine = engine
        self._values = {name: s.nominal for name, s in self._specs.items()}

    def names(self) -> tuple[str, ...]:
        """Every parameter name, in declaration order."""
        return tuple(self._specs)

    def spec(self, name: str) -> ParamSpec:
        """The description of ``name``; an unknown name is a ``KeyError`` listing the known ones."""
        try:
            return self._specs[name]
        except KeyError:
            raise KeyError(f"unknown parameter {name!r}; known parameters: {', '.join(self._specs)}") from None

    def nominal(self, name: str) -> float:
        """Value of ``name`` in the unperturbed model."""
        return self.spec(name).nominal

    def get(self, name: str) -> float:
        """Current value of ``name``."""
        self.spec(name)
        return self._values[name]

    def supported(self, name: str) -> bool:
        """Whether this env's engine can apply ``name``."""
        spec = self.spec(name)
        return spec.is_env_level or self._engine.supports(spec)

    def set(self, name: str, value: float) -> None:
        """Set ``name`` to ``value`` (its unit), applied from the nominal model."""
        spec = self.spec(name)
        v = spec.validate(value)
        if not spec.is_env_level:
            if not self._engine.supports(spec):
                raise UnsupportedParameter(
                    f"parameter {name!r} is not supported by the {self._engine.name} engine"
                )
            self._engine.set_param(spec, v)
        self._values[name] = v

    def set_many(self, values: Mapping[str, float]) -> None:
        """Set several parameters; all names are checked before any is applied."""
        for name in values:
            self.spec(name)
        for name, v in values.items():
            self.set(name, v)

    def assign(self, values: Mapping[str, float]) -> None:
        """Set ``values``, and every other supported parameter back to nominal: the model is then exactly
        nominal plus ``values``, whatever was set before."""
        # Only parameters away from nominal are put back: resetting a mass recomputes model constants.
        for name in self.names():
            if name not in values and self.supported(name) and self.get(name) != self.nominal(name):
                self.set(name, self.nominal(name))
        self.set_many(values)

    def reset(self) -> None:
        """Every parameter back to nominal."""
        for name, spec in self._specs.items():
            if spec.is_env_level or self._engine.supports(spec):
                self.set(name, spec.nominal)

    def values(self) -> dict[str, float]:
        """``{name: current value}`` for every parameter."""
        return dict(self._values)
