# The best configuration or ensemble by cross-validation Dice, and its postprocessing (selection.json).
# dataset.json is copied beside plans.json so that {results}/{dataset} is a complete model folder.
rule select:
    input:
        unpack(selection_inputs),
    output:
        selection=f"{OUT}/selection.json",
        dataset_json=f"{OUT}/dataset.json",
    log:
        f"{LOGS}/select.log",
    conda:
        ENV
    params:
        candidates=selection_params,
        folds=CV_FOLDS,
        results=results_dir,
        labels_dir=raw_labels_dir,
    script:
        "../scripts/select.py"
