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


def test_typed_getters_name_what_was_expected() -> None:
    root = Fields({"dist": "gamma", "high": float("inf"), "low": float("nan"), "n": 0, "mean": [1, float("inf")],
                   "cov": [[1.0, 0.0], [0.0]], "names": ["a", ""], "std": -1.0}, "parameters.kp", "r.yaml")
    with pytest.raises(UserError, match=r"^r\.yaml: field parameters\.kp\.dist must be one of uniform, normal; "
                                        r"got 'gamma'$"):
        root.choice("dist", ("uniform", "normal"))
    assert root.number("high", finite=False) == float("inf")
    with pytest.raises(UserError, match=r"field parameters\.kp\.high must be a finite number \(uniform draws "
                                        r"between two finite bounds\); got inf$"):
        root.number("high", expected="a finite number (uniform draws between two finite bounds)")
    with pytest.raises(UserError, match=r"field parameters\.kp\.low must be a number \(not NaN\); got nan$"):
        root.number("low", finite=False)
    with pytest.raises(UserError, match=r"field parameters\.kp\.n must be an integer >= 1; got 0$"):
        root.integer("n", low=1)
    assert root.numbers("mean", 2, finite=False) == (1.0, float("inf"))
    with pytest.raises(UserError, match=r"field parameters\.kp\.mean must be a list of 2 finite numbers; "):
        root.numbers("mean", 2)
    with pytest.raises(UserError, match=r"field parameters\.kp\.cov must be a 2x2 matrix: a list of 2 rows of 2 "):
        root.matrix("cov", 2, 2)
    with pytest.raises(UserError, match=r"field parameters\.kp\.names must be a list of 2 parameter names; "):
        root.strings("names", 2, "parameter names")
    with pytest.raises(UserError, match=r"^r\.yaml: field parameters\.kp\.std names a problem$"):
        root.refuse("std", "names a problem")


def test_only_names_a_misspelt_key_before_any_read_and_items_are_indexed() -> None:
    entry = Fields({"dist": "uniform", "hihg": 2.0}, "parameters.kp", "r.yaml")
    with pytest.raises(UserError, match=r"unknown field parameters\.kp\.hihg \(did you mean 'high'\?\); "
                                        r"expected one of: dist, low, high$"):
        entry.only("dist", "low", "high")
    blocks = Fields({"layout": [{"start": 0}, {"start": "x"}]}, "", "r.yaml").items("layout")
    assert blocks[0].count("start") == 0
    with pytest.raises(UserError, match=r"field layout\[1\]\.start must be an integer >= 0; got 'x'$"):
        blocks[1].count("start")


class _Keys(Fields):
    noun = "metadata key"
    missing_note = " (damaged file)"


def test_a_subclass_renames_the_field_and_explains_a_missing_one() -> None:
    props = _Keys({"obs_size": "x"}, "", "p.onnx")
    with pytest.raises(UserError, match=r"^p\.onnx: metadata key obs_size must be an integer; got 'x'$"):
        props.integer("obs_size")
    with pytest.raises(UserError, match=r"^p\.onnx: metadata key env_id is missing \(damaged file\)$"):
        props.text("env_id")
    empty = _Keys({"engine": ""}, "", "p.onnx")
    assert empty.text("engine", empty=True) == ""
    with pytest.raises(UserError, match=r"metadata key engine must be a non-empty string; got ''$"):
        empty.text("engine")
