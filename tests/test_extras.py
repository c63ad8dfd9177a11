"""A missing optional dependency is reported with the extra that installs it."""

import pytest

from s2r.core.extras import MissingExtra, require


def test_missing_extra_names_the_extra_and_the_package() -> None:
    with pytest.raises(MissingExtra) as err:
        require("s2r_no_such_module_xyz", extra="pybullet", purpose="the PyBullet engine")
    message = str(err.value)
    assert "s2r[pybullet]" in message
    assert "s2r_no_such_module_xyz" in message
    assert "the PyBullet engine" in message


def test_present_module_passes() -> None:
    require("numpy", extra="none", purpose="nothing")
