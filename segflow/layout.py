"""The results folder of a run, ``{results}/{dataset}``: every path segflow writes or reads there, in one place.

The rules, the CLI, the report, prediction and the exporters all ask ``Results`` for a path. Its methods take the
parts that vary (a candidate's name, a fold, a case); given Snakemake wildcards such as ``"{candidate}"`` they
return the rule's pattern, given values the file itself, so a rule's output and the code that reads it cannot
drift apart. Paths are strings (what Snakemake expects); wrap them in ``Path`` where a ``Path`` is wanted.

The folder, as a workflow run leaves it (a complete model folder for ``segflow predict -m``)::

    plans.json, plans_<planner>[_<network>].json, dataset.json, selection.json, config.yaml
    verify_report.json, fingerprint.json, splits.json, budget.json
    raw/                      an MSD task converted into nnU-Net v2's raw layout
    verify/, crop/            per-case records
    preprocessed/<folder>/    <case>.npy, <case>_seg.npy, <case>.json per data folder
    batches/<stage>/<batch>.json   what each batch job wrote (segflow.batches)
    train/<candidate>/fold_<k>/    checkpoint_final.pt, progress.png, validation/
    crossval/<candidate>/     summary.json, per_case.csv; crossval/ensemble__<a>__<b>/
    predictions/<case><ending>
    report/, logs/, benchmarks/
"""

from __future__ import annotations

from dataclasses import dataclass

FINAL_CHECKPOINT = "checkpoint_final.pt"
ENSEMBLE_PREFIX = "ensemble__"


def ensemble_name(first: str, second: str) -> str:
    """The cross-validation folder name of two candidates' ensemble."""
    return f"{ENSEMBLE_PREFIX}{first}__{second}"


def ensemble_pairs(names: list[str]) -> list[tuple[str, str]]:
    """Every pair of the run's candidates, in their order: the ensembles cross-validation evaluates."""
    return [(a, b) for i, a in enumerate(names) for b in names[i + 1 :]]


def _file(name: str) -> property:
    """A file or folder of the whole dataset, at the top of the results folder."""
    return property(lambda self: self.path(name), doc=f"``{name}``")


@dataclass(frozen=True)
class Results:
    root: str

    def __post_init__(self):
        object.__setattr__(self, "root", str(self.root))

    def path(self, *parts) -> str:
        return "/".join([self.root, *map(str, parts)])

    # Files of the whole dataset.
    def plans(self, planner: str | None = None, network: str | None = None) -> str:
        """A planner's plans (the default planner's without one), with ``network`` in place of its own."""
        from segflow.candidates import DEFAULT_NETWORK, DEFAULT_PLANNER, plans_file  # here: the CLI starts light

        return self.path(plans_file(planner or DEFAULT_PLANNER, network or DEFAULT_NETWORK))

    def candidate_plans(self, candidate) -> str:
        """The plans file of a candidate (segflow.candidates.Candidate): its planner's, with its network."""
        return self.path(candidate.plans_file)

    dataset_json = _file("dataset.json")
    selection = _file("selection.json")
    config = _file("config.yaml")
    verify_report = _file("verify_report.json")
    fingerprint = _file("fingerprint.json")
    splits = _file("splits.json")
    budget = _file("budget.json")
    raw = _file("raw")

    # Per-case stages.
    def records(self, stage: str) -> str:
        """The folder of a per-case stage's files (verify, crop)."""
        return self.path(stage)

    preprocessed = _file("preprocessed")

    def data_folder(self, folder: str) -> str:
        return self.path("preprocessed", folder)

    def batch_manifest(self, stage: str, batch: str) -> str:
        """The file a batch job of ``stage`` writes last: its cases and their files (segflow.batches)."""
        return self.path("batches", stage, f"{batch}.json")

    # Training and cross-validation.
    def fold(self, candidate: str, fold) -> str:
        return self.path("train", candidate, f"fold_{fold}")

    def candidate_folds(self, candidate: str) -> str:
        """The folder of a candidate's folds."""
        return self.path("train", candidate)

    def checkpoint(self, candidate: str, fold, name: str = FINAL_CHECKPOINT) -> str:
        return self.path("train", candidate, f"fold_{fold}", name)

    def progress(self, candidate: str, fold) -> str:
        return self.path("train", candidate, f"fold_{fold}", "progress.png")

    def validation(self, candidate: str, fold) -> str:
        return self.path("train", candidate, f"fold_{fold}", "validation")

    def crossval(self, name: str) -> str:
        """A candidate's or an ensemble's cross-validation folder."""
        return self.path("crossval", name)

    def crossval_summary(self, name: str) -> str:
        return self.path("crossval", name, "summary.json")

    def crossval_table(self, name: str) -> str:
        return self.path("crossval", name, "per_case.csv")

    def ensemble(self, first: str, second: str) -> str:
        return self.crossval(ensemble_name(first, second))

    def cross_validation_file(self, name: str, case: str, ending: str, fold) -> str:
        """A case's cross-validation prediction by candidate or ensemble ``name`` (fold: the case's)."""
        if name.startswith(ENSEMBLE_PREFIX):
            return self.path("crossval", name, f"{case}{ending}")
        return self.path("train", name, f"fold_{fold}", "validation", f"{case}{ending}")

    # Test predictions, the report, logs and benchmarks.
    def prediction(self, case: str, ending: str) -> str:
        return self.path("predictions", f"{case}{ending}")

    def report(self, *parts) -> str:
        return self.path("report", *parts)

    def log(self, *parts) -> str:
        """``logs/<parts>`` (the last part names the file, with its ending)."""
        return self.path("logs", *parts)

    def benchmark(self, *parts) -> str:
        return self.path("benchmarks", *parts)


def training_targets(results: Results, candidates: list[str], folds: list) -> list[str]:
    return [path for c in candidates for f in folds for path in (results.checkpoint(c, f), results.progress(c, f))]


def validation_dirs(results: Results, candidate: str, folds: list) -> list[str]:
    return [results.validation(candidate, f) for f in folds]


def ensemble_dirs(results: Results, candidates: list[str]) -> list[str]:
    return [results.ensemble(a, b) for a, b in ensemble_pairs(candidates)]


def crossval_summaries(results: Results, candidates: list[str]) -> list[str]:
    return [results.crossval_summary(c) for c in candidates]


def crossvalidation_targets(results: Results, candidates: list[str], cv_folds: list) -> list[str]:
    """Cross-validation of each candidate and ensemble, and the selection (none without validation folds)."""
    if not cv_folds:
        return []
    return crossval_summaries(results, candidates) + ensemble_dirs(results, candidates) + [results.selection]


def prediction_targets(results: Results, cases, ending: str) -> list[str]:
    return [results.prediction(case, ending) for case in cases]
