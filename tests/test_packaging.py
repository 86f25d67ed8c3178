"""What the project ships besides code: the conda environment of the rules and the formatting of the rule files."""

import subprocess
import sys
import tomllib

import yaml
from conftest import REPO


def test_conda_environment_lists_the_dependencies_of_pyproject():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    environment = yaml.safe_load((REPO / "envs" / "segflow.yaml").read_text())
    pip = next(d["pip"] for d in environment["dependencies"] if isinstance(d, dict))
    assert sorted(d for d in pip if d != "..") == sorted(project["dependencies"])
    assert pip[-1] == ".."  # segflow itself, after its dependencies
    python = next(d for d in environment["dependencies"] if isinstance(d, str) and d.startswith("python="))
    minimum = project["requires-python"].removeprefix(">=")
    assert tuple(map(int, python.removeprefix("python=").split("."))) >= tuple(map(int, minimum.split(".")))


def test_rule_files_are_snakefmt_formatted():
    files = [REPO / "Snakefile", *sorted((REPO / "workflow" / "rules").glob("*.smk"))]
    result = subprocess.run(
        [sys.executable, "-m", "snakefmt", "--check", *map(str, files)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr + result.stdout


def test_the_jobs_that_read_probabilities_start_without_torch():
    """Ensemble, selection and cross-validation jobs read probabilities and label maps: their modules import
    neither torch nor the trainer, so such a job starts in a fraction of a second (README, How it is laid out)."""
    modules = ["segflow.export", "segflow.ensemble", "segflow.select", "segflow.evaluate", "segflow.splits"]
    heavy = ("torch", "segflow.train.loop")
    probe = f"import sys, {', '.join(modules)}; print(sorted(m for m in {heavy} if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]", result.stdout
