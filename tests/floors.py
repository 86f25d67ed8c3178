"""The lowest versions pyproject.toml allows of the packages whose floors CI tests (numpy, torch): run as a
script, the pins that install them (``.ci/run`` makes the plain environment with them)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"
TESTED = ("numpy", "torch")


def floors() -> dict[str, str]:
    """{package: lowest version} of the TESTED packages, from their ``>=`` bounds in pyproject.toml."""
    dependencies = tomllib.loads(PYPROJECT.read_text())["project"]["dependencies"]
    found = {}
    for requirement in dependencies:
        match = re.match(r"([A-Za-z0-9_.-]+)\s*>=\s*([0-9.]+)", requirement)
        if match and match.group(1).lower() in TESTED:
            found[match.group(1).lower()] = match.group(2)
    missing = set(TESTED) - set(found)
    if missing:
        raise SystemExit(f"pyproject.toml gives no >= floor for {sorted(missing)}")
    return found


if __name__ == "__main__":
    print(" ".join(f"{name}=={version}" for name, version in floors().items()))
