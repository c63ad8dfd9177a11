"""s2r.core.fields: the one mapping validator; every error names the file and the dotted field."""

from __future__ import annotations

import pytest

from s2r.core.errors import UserError
from s2r.core.fields import Fields


def test_errors_name_the_dotted_field() -> None:
    root = Fields({"encoders": {"valve": {"id": "x"}}}, "", "r.yaml")
    valve = root.child("encoders").child("valve")
    with pytest.raises(UserError, match=r"^r\.yaml: field encoders\.valve\.id must be an integer; got 'x'$"):
        valve.integer("id")
    with pytest.raises(UserError, match=r"^r\.yaml: field encoders\.valve\.scale is missing$"):
        valve.number("scale")
    with pytest.raises(UserError, match=r"^r\.yaml: the top level must be a mapping, got list$"):
        Fields([], "", "r.yaml")


def test_null_is_absent_and_unread_fields_are_refused() -> None:
    root = Fields({"gain": None, "noise": -1.0, "pose": [0, 1.5], "typo": 1}, "", "f.yaml")
    assert root.number("gain", 2.0) == 2.0
    with pytest.raises(UserError, match=r"field noise must be a finite number >= 0; got -1\.0"):
        root.number("noise", 0.0, low=0.0)
    assert root.vector("pose", 2, "rad") == (0.0, 1.5)
    with pytest.raises(UserError, match=r"field pose must be a list of 3 finite numbers \(rad\) or null"):
        root.vector("pose", 3, "rad")
    assert root.vector("absent", 3, "rad") is None
    with pytest.raises(UserError, match=r"unknown field typo; expected one of: absent, gain, noise, pose"):
        root.done()
    assert Fields(None, "imu", "f.yaml", optional=True).flag("enabled", True) is True
