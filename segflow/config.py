"""The workflow's configuration: what the user set, typed by the schema, with the demo's budget or nnU-Net's
defaults for the rest.

Snakemake hands ``--config`` values over as text below the top level (``train='{epochs: 50}'`` arrives as
``{"epochs": "50"}``, ``folds='[0]'`` as ``["0"]``), so values are first converted to the types the schema
asks for. A dataset other than the demo then gets nnU-Net's defaults from the schema (five folds, 1000
epochs of 250 iterations, 50 validation iterations); the demo gets its tiny budget (``DEMO_BUDGET``) for
every key the user left unset. A value the schema refuses is an error naming the key.
"""

from __future__ import annotations

import copy
import re

import jsonschema

from segflow.errors import InputError

# The demo's budget: two of the five folds, three epochs of ten iterations, small jobs. One thread each: the
# demo's convolutions are too small to share among threads, so jobs side by side finish sooner (the whole demo
# on 2 cores: 107 s against 139 s with 2 threads per job). Its 10 cases in 2 batches, not 8 of one or two
# cases: each batch is a job, whose start costs more than its cases (97 s against 107 s).
DEMO_BUDGET = {
    "case_batches": 2,
    "folds": [0, 1],
    "train": {
        "epochs": 3,
        "iterations_per_epoch": 10,
        "val_iterations": 3,
        "threads": 1,
        "runtime_minutes": 30,
    },
    "inference": {"threads": 1, "runtime_minutes": 30},
}
NULL_WORDS = ("null", "~")
INTEGER = re.compile(r"[+-]?\d+")


def resolve(config: dict, schema: dict) -> dict:
    """The configuration the workflow runs with: ``config`` (as Snakemake merged it) converted to the
    schema's types, the demo's budget where the demo runs, the schema's defaults for every key left unset."""
    resolved = as_schema_types(copy.deepcopy(config), schema)
    if resolved.get("dataset", "demo") == "demo":
        resolved = merged(DEMO_BUDGET, resolved)
    check(resolved, schema)
    fill_defaults(resolved, schema)
    return resolved


def merged(base: dict, override: dict) -> dict:
    """``base`` updated by ``override``, key by key into nested mappings (how Snakemake merges configs)."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merged(out[key], value)
        else:
            out[key] = value
    return out


def types_of(schema: dict) -> list[str]:
    kind = schema.get("type", [])
    return [kind] if isinstance(kind, str) else list(kind)


def as_schema_types(value, schema: dict):
    """``value`` with text converted where the schema wants a number, a boolean, null or a list."""
    options = schema.get("oneOf") or schema.get("anyOf")
    if options:
        for option in options:
            candidate = as_schema_types(value, option)
            if jsonschema.Draft202012Validator(option).is_valid(candidate):
                return candidate
        return value
    kinds = types_of(schema)
    if isinstance(value, str):
        value = typed_text(value, kinds)
    if "array" in kinds:
        if value is not None and not isinstance(value, list | dict):
            value = [value]  # --config folds=0 means [0]
        if isinstance(value, list):
            return [as_schema_types(v, schema.get("items", {})) for v in value]
    if "object" in kinds and isinstance(value, dict):
        properties = schema.get("properties", {})
        return {k: as_schema_types(v, properties.get(k, {})) for k, v in value.items()}
    return value


def typed_text(text: str, kinds: list[str]):
    if "null" in kinds and text in NULL_WORDS:
        return None
    if "integer" in kinds and INTEGER.fullmatch(text):
        return int(text)
    if "number" in kinds:
        try:
            return float(text)
        except ValueError:
            pass
    if "boolean" in kinds and text.lower() in ("true", "false"):
        return text.lower() == "true"
    return text


def key_path(path) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(the whole config)"


def check(config: dict, schema: dict) -> None:
    """Raise an InputError naming the first key whose value the schema refuses, and what it accepts."""
    validator = jsonschema.Draft202012Validator(schema)
    error = jsonschema.exceptions.best_match(validator.iter_errors(config))
    if error is None:
        return
    where = key_path(error.absolute_path)
    described = schema
    for part in error.absolute_path:
        if isinstance(part, str):
            described = described.get("properties", {}).get(part, {})
    hint = described.get("description") or f"see config/schema.yaml for what `{where}` accepts"
    raise InputError(
        f"config key `{where}`: {error.message}.",
        fix=f"{hint}; e.g. --config {example(where)}",
    )


def example(where: str) -> str:
    top = where.split(".")[0].split("[")[0]
    return {
        "folds": "folds='[0, 1, 2, 3, 4]'",
        "train": "train='{epochs: 50, iterations_per_epoch: 250}'",
        "inference": "inference='{mirror: false}'",
        "configurations": "configurations='[3d_fullres, 2d]'",
    }.get(top, f"{top}=VALUE")


def fill_defaults(config: dict, schema: dict) -> None:
    """Set every key the user left out to the schema's default, into nested objects."""
    for key, spec in schema.get("properties", {}).items():
        if key not in config and "default" in spec:
            config[key] = copy.deepcopy(spec["default"])
        if isinstance(config.get(key), dict) and "properties" in spec:
            fill_defaults(config[key], spec)
