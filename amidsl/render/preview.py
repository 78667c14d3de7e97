"""The plan preview: phases and numbered actions with the commands they run, as text or JSON.

JSON schema "amidsl.plan/1" (stable; fields are only ever added):

    {"schema": "amidsl.plan/1", "amidsl_version": str, "spec": str, "title": str,
     "settings": {name: shown value (secrets as their run-time source)},
     "runtime_inputs": [{"env": str, "what": str}],
     "runtime_overrides": [{"env": str, "what": str}],
     "strategy": {"bundler": str, "on the node": str, "stays in the image": str,
                  "the node needs": str, "secrets": str},
     "phases": [{"name": str, "warnings": [str], "notes": [str],
                 "actions": [{"index": int (from 1), "type": snake_case action type,
                              "runs_on": "node" | "controller", "description": str,
                              "fields": {field: value}, "commands": [bash line]}]}]}

In "fields", a run-time value is {"runtime": setting, "produced_by": phase}, a secret reference is
{"env": var, "what": text}, an optional flag is {"flag": "-t", "env": var, "what": text}, and a staged
file is {"staged_env": var, "what": text, "local_path": path or null, "secret": bool}; a value the
controller makes at run time (AES key, presigned URLs) is {"controller_secret": name, "what": text}.
"""

from __future__ import annotations

import dataclasses
import json
import re
from typing import Any

from amidsl import __version__
from amidsl.model.actions import (
    CONTROLLER_ACTIONS,
    Action,
    ControllerSecret,
    EnvSecret,
    ExistingPaths,
    OptionalArg,
    RemoteFile,
    RunnerValue,
    RuntimeValue,
    StagedFile,
)
from amidsl.model.plan import Plan
from amidsl.printable import printable
from amidsl.render.shell import render_action, runtime_inputs, runtime_overrides
from amidsl.render.summary import plan_title, public_settings
from amidsl.settings import SECRET_KEYS
from amidsl.strategies import strategy_of

SCHEMA = "amidsl.plan/1"
LONG_CONTENT_LINES = 40


def action_type(action: Action) -> str:
    """The snake_case name of an action's type (`InstallPackages` -> `install_packages`)."""
    return re.sub(r"(?<=[a-z])([A-Z])", r"_\1", type(action).__name__).lower()


def _json_value(value: Any) -> Any:
    if isinstance(value, RuntimeValue):
        return {"runtime": value.setting, "produced_by": value.produced_by}
    if isinstance(value, EnvSecret):
        return {"env": value.env_var, "what": value.what}
    if isinstance(value, ControllerSecret):
        return {"controller_secret": value.name, "what": value.what}
    if isinstance(value, OptionalArg):
        return {"flag": value.flag, "env": value.value.env_var, "what": value.value.what}
    if isinstance(value, ExistingPaths):
        return {"existing_paths": list(value.paths), "separator": value.separator}
    if isinstance(value, RunnerValue):
        return {"env": value.env_var, "what": value.what, "default": value.default}
    if isinstance(value, StagedFile):
        return {
            "staged_env": value.env_var,
            "what": value.what,
            "local_path": value.local_path,
            "secret": value.secret,
        }
    if isinstance(value, (tuple, list)):
        return [_json_value(v) for v in value]
    if isinstance(value, dict):
        return {k: _json_value(v) for k, v in value.items()}
    return value


def _fields(action: Action) -> dict[str, Any]:
    fields = {}
    for field in dataclasses.fields(action):
        if field.name == "description":
            continue
        value = getattr(action, field.name)
        if field.name in ("params", "env", "request"):
            value = {k: v for k, v in value}
        fields[field.name] = _json_value(value)
    return fields


def plan_to_dict(plan: Plan) -> dict[str, Any]:
    """The plan as plain JSON-ready data (schema amidsl.plan/1)."""
    return {
        "schema": SCHEMA,
        "amidsl_version": __version__,
        "spec": plan.spec_name,
        "title": plan_title(plan),
        "settings": dict(public_settings(plan.settings)),
        "runtime_inputs": [{"env": env, "what": what} for env, what in runtime_inputs(plan)],
        "runtime_overrides": [{"env": env, "what": what} for env, what in runtime_overrides(plan)],
        "strategy": {
            "bundler": plan.settings.bundler,
            **dict(strategy_of(plan.settings).summary(plan.settings)),
        },
        "phases": [
            {
                "name": phase.name,
                "warnings": list(phase.warnings),
                "notes": list(phase.notes),
                "actions": [
                    {
                        "index": index,
                        "type": action_type(action),
                        "runs_on": "controller" if isinstance(action, CONTROLLER_ACTIONS) else "node",
                        "description": action.description,
                        "fields": _fields(action),
                        "commands": render_action(action),
                    }
                    for index, action in phase.numbered()
                ],
            }
            for phase in plan.phases
        ],
    }


def render_json(plan: Plan) -> str:
    """The plan preview as JSON text (sorted keys, so the same plan gives the same bytes)."""
    return json.dumps(plan_to_dict(plan), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def _shown(plan: Plan, name: str, value: str) -> str:
    """A setting as the preview prints it: string values quoted; numbers, flags and descriptions bare."""
    raw = getattr(plan.settings, name, None)
    if isinstance(raw, str) and name not in SECRET_KEYS and name != "certificate_pem":
        return json.dumps(value, ensure_ascii=False)
    return value


def render_text(plan: Plan) -> str:
    """The plan preview as text: settings, then each phase's numbered actions and commands."""
    lines = [f"amidsl plan for {plan_title(plan)}", "", "settings:"]
    width = max(len(name) for name, _ in public_settings(plan.settings))
    for name, value in public_settings(plan.settings):
        lines.append(f"  {name.ljust(width)}  {_shown(plan, name, value)}")
    lines += ["", f"build strategy: {plan.settings.bundler}"]
    lines += [f"  {topic}: {text}" for topic, text in strategy_of(plan.settings).summary(plan.settings)]
    inputs = runtime_inputs(plan)
    if inputs:
        lines += ["", "supplied at run time (environment):"]
        lines += [f"  {env}: {what}" for env, what in inputs]
    overrides = runtime_overrides(plan)
    if overrides:
        lines += ["", "may be set at run time (environment; else the default):"]
        lines += [f"  {env}: {what}" for env, what in overrides]
    for phase in plan.phases:
        count = len(phase.actions)
        lines += ["", f"phase {phase.name} ({count} action{'' if count == 1 else 's'})"]
        lines += [f"  note: {note}" for note in phase.notes]
        lines += [f"  WARNING: {warning}" for warning in phase.warnings]
        for index, action in phase.numbered():
            where = " [controller]" if isinstance(action, CONTROLLER_ACTIONS) else ""
            secret = (
                " [secret content not shown]" if (isinstance(action, RemoteFile) and action.secret) else ""
            )
            lines.append(f"  {index}. {action.description}{where}{secret}")
            if isinstance(action, RemoteFile) and (action.content or "").count("\n") > LONG_CONTENT_LINES:
                # A whole program would drown the plan: the script shows it, the preview summarises it.
                size = len(action.content.encode()) if action.content else 0
                lines.append(f"       {action.path}: {size} bytes (`amidsl script` shows the content)")
                continue
            for command in render_action(action):
                for part in command.splitlines() or [""]:
                    lines.append(f"       {part}")
    # A value that reached the plan with a control character in it must not drive the terminal.
    return printable("\n".join(lines)) + "\n"
