# Per candidate: one summary over the validation cases of all folds. Per pair of candidates: the
# ensemble of their cross-validation probabilities, written and evaluated like a model's predictions.
from segflow.layout import ensemble_name


rule crossval:
    input:
        lambda wildcards: validation_dirs(wildcards.candidate),
    output:
        summary=RESULTS.crossval_summary("{candidate}"),
        table=RESULTS.crossval_table("{candidate}"),
    log:
        RESULTS.log("crossval/{candidate}.log"),
    wildcard_constraints:
        candidate=CANDIDATE_PATTERN,
    conda:
        ENV
    params:
        labels=DATASET.dataset_json["labels"],
    script:
        "../scripts/crossval.py"


rule ensemble:
    input:
        first=lambda wildcards: validation_dirs(wildcards.first),
        second=lambda wildcards: validation_dirs(wildcards.second),
        dataset_json=DATASET_JSON,
    output:
        directory(RESULTS.ensemble("{first}", "{second}")),
    log:
        RESULTS.log("crossval", ensemble_name("{first}", "{second}") + ".log"),
    wildcard_constraints:
        first=CANDIDATE_PATTERN,
        second=CANDIDATE_PATTERN,
    conda:
        ENV
    params:
        labels_dir=raw_labels_dir,
        tolerance=config["surface_tolerance_mm"],
    script:
        "../scripts/ensemble.py"
