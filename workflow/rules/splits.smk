# Five-fold cross-validation splits, as nnU-Net makes them (or the user's own splits file).
from segflow.splits import check_folds

USER_SPLITS = config["splits"] or (
    str(DATASET.root / "splits_final.json")
    if (DATASET.root / "splits_final.json").is_file()
    else None
)
try:
    check_folds(
        config["folds"], DATASET.cases, DATASET.root / "dataset.json", USER_SPLITS
    )
except InputError as err:
    stop_workflow(err)


rule splits:
    input:
        [USER_SPLITS] if USER_SPLITS else [],
    output:
        RESULTS.splits,
    log:
        RESULTS.log("splits.log"),
    conda:
        ENV
    params:
        cases=DATASET.cases,
        user_splits=USER_SPLITS,
    script:
        "../scripts/splits.py"
