"""Commanded goals: the goal of every episode fixed by the user (``s2r deploy --goal target=1.57``) or one per
episode from a schedule file, instead of the task's own draw (``task.sample_start``).

A goal is the task's goal dict (``{"target": 1.57}``): every named value of the task's ``goal_fields``
(:class:`sim.tasks.spec.GoalField`), in its SI unit and inside its range. A goal schedule is a YAML file::

    # one goal per episode, in order (the run has at most this many episodes)
    goals:
      - {target: 1.57}
      - {target: -0.5}
      - target: 3.0

Every entry names every goal value of the task; an unknown name, a missing one, a value that is not a finite
number or one outside its range is an error naming the entry and the field.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from typing import Any

from s2r.core.errors import ParameterError, UserError, did_you_mean
from s2r.core.fields import Fields
from s2r.core.yamlfile import read_yaml_file
from sim.tasks.spec import GoalField

Goal = dict[str, float]
"""Named goal values (SI units), the task's goal dict."""


def goal_fields(task: object) -> tuple[GoalField, ...]:
    """The named goal values ``task`` can be commanded (its ``goal_fields``; none for a task without them)."""
    fields = getattr(task, "goal_fields", ())
    return tuple(f for f in fields if isinstance(f, GoalField))


def describe_fields(fields: tuple[GoalField, ...]) -> str:
    """``target (rad, -3.1416 to 3.1416)``, for errors and help."""
    return ", ".join(f"{f.name} ({f.unit}, {f.low:.5g} to {f.high:.5g})" for f in fields)


def _problem(fields: tuple[GoalField, ...], goal: Mapping[str, Any], task_name: str) -> str | None:
    """What is wrong with ``goal`` for a task with ``fields`` (``None`` when nothing)."""
    if not fields:
        return f"cannot be commanded: the task {task_name!r} has no named goal values"
    names = [f.name for f in fields]
    for key in goal:
        if key not in names:
            return (f"names {key!r}, which is not a goal of the task {task_name!r}{did_you_mean(str(key), names)}; "
                    f"its goal values: {describe_fields(fields)}")
    missing = [n for n in names if n not in goal]
    if missing:
        return f"lacks {', '.join(missing)}; the task {task_name!r} needs every goal value: {describe_fields(fields)}"
    for f in fields:
        value = goal[f.name]
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            return f"{f.name} must be a finite number ({f.unit}); got {value!r}"
        if not f.low <= value <= f.high:
            return f"{f.name} = {value:g} {f.unit} is outside its range {f.low:.5g} to {f.high:.5g} {f.unit} ({f.doc})"
    return None


def check_goal(task: Any, goal: Mapping[str, Any], parameter: str = "goal") -> Goal:
    """``goal`` as the task's goal dict (floats, the task's order), or a :class:`ParameterError` of ``parameter``
    naming the bad value and what was expected."""
    fields = goal_fields(task)
    problem = _problem(fields, goal, task.spec.name)
    if problem is not None:
        raise ParameterError(parameter, problem)
    return {f.name: float(goal[f.name]) for f in fields}


def parse_goal(text: str) -> dict[str, float]:
    """``NAME=VALUE[,NAME=VALUE...]`` (SI units) as a dict; malformed text is a :class:`ValueError` saying so.
    Names and ranges are checked against the task later (:func:`check_goal`)."""
    goal: dict[str, float] = {}
    for part in text.split(","):
        name, sep, value = part.partition("=")
        name = name.strip()
        if not sep or not name:
            raise ValueError(f"expected NAME=VALUE (e.g. target=1.57), got {part.strip()!r}")
        if name in goal:
            raise ValueError(f"{name!r} is given twice")
        try:
            number = float(value)
        except ValueError:
            raise ValueError(f"{name}: {value.strip()!r} is not a number") from None
        if not math.isfinite(number):
            raise ValueError(f"{name}: {value.strip()!r} is not a finite number")
        goal[name] = number
    return goal


def load_goal_schedule(path: str | os.PathLike[str], task: Any) -> tuple[Goal, ...]:
    """The goals of a schedule file (see the module docstring), each checked against ``task``; a bad file is a
    :class:`UserError` naming the file and the entry."""
    source = f"goal schedule {os.fspath(path)!r}"
    r = Fields(read_yaml_file(os.fspath(path), "goal schedule"), "", source)
    r.only("goals")
    entries = r.items("goals")
    if not entries:
        r.fail("goals", "a non-empty list of goals, one per episode", [])
    fields = goal_fields(task)
    goals = []
    for entry in entries:
        problem = _problem(fields, entry.data, task.spec.name)
        if problem is not None:
            raise UserError(f"{source}: {entry.path} {problem}")
        goals.append({f.name: float(entry.data[f.name]) for f in fields})
    return tuple(goals)


def episode_goals(task: Any, goal: Mapping[str, Any] | None, schedule: str | os.PathLike[str] | None,
                  episodes: int) -> tuple[Goal, ...] | None:
    """One goal per episode, for ``episodes`` episodes: ``goal`` for every one, or the schedule file's in order (it
    must hold at least ``episodes``), each checked against ``task``; ``None`` with neither (the task draws them)."""
    if goal is not None:
        return (check_goal(task, goal),) * episodes
    if schedule is None:
        return None
    goals = load_goal_schedule(schedule, task)
    if len(goals) < episodes:
        raise ParameterError("episodes", f"is {episodes}, but the goal schedule {os.fspath(schedule)!r} holds "
                             f"{len(goals)} goal(s), one per episode")
    return goals
