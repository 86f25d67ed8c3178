from pathlib import Path

from segflow.io import load_json
from segflow.jobs import run_job
from segflow.report import budget_rows, crossval_rows, dataset_rows, plan_rows, selection_rows, write_table

sm = snakemake  # noqa: F821 (injected by Snakemake)


def write_tables():
    i, o = sm.input, sm.output
    dataset_json = load_json(i.dataset_json)
    fingerprint, verified = load_json(i.fingerprint), load_json(i.verify_report)
    write_table(dataset_rows(dataset_json, fingerprint, verified), o.dataset, "Dataset and fingerprint")
    rows = [row for plans in i.plans for row in plan_rows(load_json(plans))]
    write_table(rows, o.plans, "Plans per planner and configuration")
    files = list(i.summaries) + [Path(folder) / "summary.json" for folder in i.ensembles]
    summaries = {Path(f).parent.name: load_json(f) for f in files}  # crossval/<candidate or ensemble>/
    write_table(crossval_rows(summaries, dataset_json["labels"]), o.crossval, "Cross-validation metrics")
    write_table(selection_rows(load_json(i.selection)), o.selection, "Selection and postprocessing")
    budget = budget_rows(load_json(i.budget), sm.params.fold_dirs)
    write_table(budget, o.budget, "Training time: the budget's estimate and the folds' epochs")


run_job(sm.log[0], write_tables)
