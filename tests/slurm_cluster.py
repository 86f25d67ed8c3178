"""The local SLURM cluster for the tests (a pytest plugin of conftest.py): its fixture, the workflow through
profiles/slurm, SLURM's own records of the jobs, and the demo's SLURM run, which starts in the background with the
demo's local run.

That run spends most of its three minutes waiting, not computing: on the one-minute time limit that kills its
frozen training (slurmctld checks limits every 30 s), on job starts and on status checks. Started before the
demo's local run (conftest.py: demo_run), it waits while the other tests run; its test collects what it left."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from datetime import datetime
from pathlib import Path

import pytest
from conftest import REPO, run_snakemake, snakemake_command

PROFILE = REPO / "profiles" / "slurm"
LOCAL_SLURM = REPO / "tests" / "slurm" / "local_slurm.sh"
#: Starts snakemake with the SLURM executor's status checks at a steady interval.
LAUNCHER = [str(REPO / "tests" / "slurm" / "steady_status_checks.py")]
DEMO = "Task900_SegflowDemo"
#: The local cluster has no accounting database, hence squeue for the job states; status checks start after 2 s
#: instead of 40, and come every 2 s instead of 10 and more (tests/slurm/steady_status_checks.py), so that the
#: tests do not idle.
SLURM_ARGS = (
    "--profile",
    str(PROFILE),
    "--slurm-status-command",
    "squeue",
    "--slurm-init-seconds-before-status-checks",
    "2",
    "--seconds-between-status-checks",
    "2",
)
#: The demo's SLURM run: two batches instead of eight, one configuration and one fold, for fewer submissions. No
#: output its test compares depends on how cases are batched or on which other candidates and folds train.
SLURM_DEMO_CONFIG = {"case_batches": 2, "configurations": "[3d_fullres]", "folds": "[0]"}


@pytest.fixture(scope="session")
def slurm():
    """A running SLURM, or the local one started for these tests and stopped after them. It is started only
    where asked for: in CI (SEGFLOW_CI=1, where a missing SLURM fails) or with SEGFLOW_START_SLURM=1; it
    needs root and Debian (slurm-wlm and munge from apt). Anywhere else the tests are skipped."""
    if subprocess.run(["bash", str(LOCAL_SLURM), "status"], capture_output=True).returncode == 0:
        yield
        return
    ci, asked = os.environ.get("SEGFLOW_CI"), os.environ.get("SEGFLOW_START_SLURM")
    if not (ci or asked):
        pytest.skip(
            "no SLURM is running: start one (tests/slurm/local_slurm.sh start, as root on Debian) or set "
            "SEGFLOW_START_SLURM=1 to let the tests install, start and stop it"
        )
    if os.geteuid() != 0:
        message = "no local SLURM, and only root can start one (tests/slurm/local_slurm.sh start)"
    else:
        started = subprocess.run(["bash", str(LOCAL_SLURM), "start"], capture_output=True, text=True)
        if started.returncode == 0:
            yield
            subprocess.run(["bash", str(LOCAL_SLURM), "stop"], capture_output=True)
            return
        message = f"tests/slurm/local_slurm.sh start failed:\n{started.stdout}{started.stderr}"
    if ci:
        pytest.fail(message)
    pytest.skip(message)


def run_on_slurm(workdir: Path, *args, config: dict | None = None, check: bool = True):
    """The workflow through profiles/slurm, waiting for its end."""
    return run_snakemake(workdir, *SLURM_ARGS, *args, config=config, check=check, launcher=LAUNCHER)


def slurm_records(workdir: Path, since: datetime) -> list[dict]:
    """SLURM's records of the jobs submitted from ``workdir`` at ``since`` or later (``scontrol show job``, kept
    for an hour after a job ends: an earlier session may have used the same folder), with the rule parsed from the
    comment the executor sets (``rule_<name>`` or ``rule_<name>_wildcards_<values>``)."""
    text = subprocess.run(["scontrol", "-d", "-o", "show", "job"], capture_output=True, text=True, check=True).stdout
    records = []
    for line in text.splitlines():
        fields = dict(item.split("=", 1) for item in line.split() if "=" in item)
        if fields.get("WorkDir") != str(workdir):
            continue
        if datetime.fromisoformat(fields["SubmitTime"]) < since.replace(microsecond=0):
            continue
        rule, _, wildcards = fields["Comment"].removeprefix("rule_").partition("_wildcards_")
        fields["rule"], fields["wildcards"] = rule, wildcards
        records.append(fields)
    return records


class SlurmDemoRun:
    """The demo's 3d_fullres fold 0 through profiles/slurm, running in the background from its start, with the
    watcher that freezes its training after two of its three epochs. Once it has ended: ``records`` (SLURM's,
    read as it ended) and ``stopped`` (the frozen job's id)."""

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.started = datetime.now()
        self.stopped: list = []
        self.records: list[dict] = []
        command = snakemake_command(workdir, *SLURM_ARGS, config=SLURM_DEMO_CONFIG, launcher=LAUNCHER)
        self.output = workdir / "snakemake.out"
        with open(self.output, "w") as out:
            self.process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
        self.threads = [
            threading.Thread(target=self._freeze_after_epochs, args=("3d_fullres", 0, 2), daemon=True),
            threading.Thread(target=self._record_the_end, daemon=True),
        ]
        for thread in self.threads:
            thread.start()

    def _freeze_after_epochs(self, configuration: str, fold: int, epochs: int) -> None:
        """Wait until the SLURM job training (configuration, fold) has logged ``epochs`` finished epochs, then stop
        all its processes (SIGSTOP to the batch step and every job step) and cut its time limit to a minute: from
        then on only that limit ends it, however fast or slow this machine is, and no other job runs under a limit it
        could miss on a busy machine. The later it is frozen, the less of that minute is left to wait. Appends the
        job id to ``stopped``; gives up when the workflow has ended."""
        log = self.workdir / "results" / DEMO / "train" / configuration / f"fold_{fold}" / "training_log.jsonl"
        while self.process.poll() is None:
            if log.is_file() and len(log.read_text().splitlines()) >= epochs:
                running = [
                    r
                    for r in slurm_records(self.workdir, self.started)
                    if r["rule"] == "train"
                    and r["wildcards"] == f"{configuration}_{fold}"
                    and r["JobState"] == "RUNNING"
                ]
                if running:
                    job = running[0]["JobId"]
                    subprocess.run(["scancel", "--full", "--signal=STOP", job], check=True)
                    subprocess.run(["scontrol", "update", f"JobId={job}", "TimeLimit=1"], check=True)
                    self.stopped.append(job)
                    return
            time.sleep(0.2)

    def _record_the_end(self) -> None:
        self.process.wait()
        self.records = slurm_records(self.workdir, self.started)

    def finish(self) -> None:
        """Wait for the run; an AssertionError with snakemake's last words where it failed."""
        for thread in self.threads:
            thread.join()
        if self.process.returncode != 0:
            raise AssertionError(f"snakemake failed ({self.process.returncode}):\n{self.output.read_text()[-6000:]}")

    def stop(self) -> None:
        """End what is still running (a session cut short): snakemake, then the jobs it left in the queue."""
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait()
        for record in slurm_records(self.workdir, self.started):
            if record["JobState"] in ("PENDING", "RUNNING", "SUSPENDED"):
                subprocess.run(["scancel", "--full", record["JobId"]], capture_output=True)


@pytest.fixture(scope="session")
def slurm_demo_run(slurm, tmp_path_factory):
    """The demo's SLURM run, started (not finished): its test calls ``finish``."""
    run = SlurmDemoRun(tmp_path_factory.mktemp("slurm_demo"))
    yield run
    run.stop()
