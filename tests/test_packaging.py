"""What the project ships besides code: the conda environment of the rules and the formatting of the rule files."""

import os
import re
import subprocess
import sys
import tomllib

import pytest
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


def without_wait_policy(**env: str) -> dict:
    """This process's environment without an OpenMP wait policy (importing segflow set one here), plus ``env``."""
    return {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"} | env


def spin_count(code: str, **env: str) -> str:
    """How long torch's OpenMP (libgomp) lets an idle thread spin before it sleeps, in a fresh process running
    ``code`` then torch: as libgomp reports it."""
    environment = without_wait_policy(**env, OMP_DISPLAY_ENV="VERBOSE")
    probe = f"{code}\nimport torch\ntorch.set_num_threads(2)\ntorch.ones(100_000).sum()"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=environment, check=True)
    return re.search(r"GOMP_SPINCOUNT = '(\d+)'", result.stderr)[1]


@pytest.mark.parametrize("first", ["import segflow.config", "import segflow.cli"])
def test_segflows_processes_wait_passively_unless_the_user_says_otherwise(first):
    """The workflow (its Snakefile imports segflow.config; its jobs inherit the environment) and the `segflow`
    commands make torch's idle OpenMP threads sleep instead of spinning; a policy set by the user is kept."""
    assert spin_count(first) == "0"
    assert spin_count("") == "300000"  # torch alone: libgomp's default
    assert spin_count(first, OMP_WAIT_POLICY="ACTIVE") == "30000000000"
    snakefile = (REPO / "Snakefile").read_text()
    assert snakefile.index("from segflow.config import") < snakefile.index("include:")


def test_the_benchmarks_run_nnunetv2_as_its_users_run_it():
    """segflow's default wait policy stays out of nnunetv2's processes in the benchmarks; a user's own reaches
    both."""
    code = "import sys; sys.path.insert(0, sys.argv[1]); import benchlib; print(benchlib.nnunet_env(benchlib.REPO)"
    code += ".get('OMP_WAIT_POLICY'), benchlib.as_nnunet_users_have_it().get('OMP_WAIT_POLICY'))"
    for policy, expected in ((None, "None None"), ("ACTIVE", "ACTIVE ACTIVE")):
        env = without_wait_policy(**({"OMP_WAIT_POLICY": policy} if policy else {}))
        result = subprocess.run(
            [sys.executable, "-c", code, str(REPO / "bench")], capture_output=True, text=True, env=env, check=True
        )
        assert result.stdout.split() == expected.split()
