# segflow: the nnU-Net method as a Snakemake workflow. See README.md for how to run it.
from pathlib import Path

import yaml

from snakemake.utils import min_version

from segflow.config import resolve
from segflow.errors import InputError, stop_workflow

min_version("9.0")


configfile: Path(workflow.basedir) / "config" / "config.yaml"


# config.yaml holds no budget: the demo brings its own, every other dataset gets nnU-Net's (the schema's).
try:
    RESOLVED_CONFIG = resolve(
        config,
        yaml.safe_load((Path(workflow.basedir) / "config" / "schema.yaml").read_text()),
    )
except InputError as err:
    stop_workflow(err, "bad config")
config.clear()
config.update(RESOLVED_CONFIG)


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/candidates.smk"
include: "workflow/rules/resources.smk"
include: "workflow/rules/targets.smk"
include: "workflow/rules/inputs.smk"
include: "workflow/rules/demo.smk"
include: "workflow/rules/convert.smk"
include: "workflow/rules/verify.smk"
include: "workflow/rules/crop.smk"
include: "workflow/rules/fingerprint.smk"
include: "workflow/rules/plan.smk"
include: "workflow/rules/budget.smk"
include: "workflow/rules/splits.smk"
include: "workflow/rules/preprocess.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/validate.smk"
include: "workflow/rules/crossval.smk"
include: "workflow/rules/select.smk"
include: "workflow/rules/predict.smk"
include: "workflow/rules/report.smk"


# Bookkeeping that reads and writes a few small JSON or HTML files runs on the submit host, not as cluster jobs:
# a queue wait each would cost more than the job, and plan, crossval and select lie on the way to the next stage.
# (demo_dataset and convert_dataset_json, where they exist, are declared local in their own files.)
localrules:
    all,
    preprocessing,
    training,
    crossvalidation,
    prediction,
    verify_report,
    splits,
    plan,
    plan_preset,
    network_plans,
    crossval,
    select,
    report_tables,


rule all:
    default_target: True
    input:
        STATIC_TARGETS,
        planned_targets,


# Stage targets: `snakemake --cores all preprocessing` runs everything up to the preprocessed arrays of every
# planned configuration and the budget of their training (budget.json, shown on the terminal), and stops there
# (`plan` stops after plans.json, `budget` after budget.json; `training` after the trained folds;
# `crossvalidation` after cross-validation, ensembles and the selection; `prediction` after the test images).
rule preprocessing:
    input:
        RESULTS.verify_report,
        RESULTS.budget,
        lambda wildcards: preprocessed_targets(),


rule training:
    input:
        RESULTS.budget,
        lambda wildcards: training_targets(),


rule crossvalidation:
    input:
        RESULTS.budget,
        lambda wildcards: crossvalidation_targets(),


rule prediction:
    input:
        RESULTS.budget,
        lambda wildcards: prediction_targets(),
