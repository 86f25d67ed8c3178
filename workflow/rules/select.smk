# The best configuration or ensemble by cross-validation Dice, and its postprocessing (selection.json).
# dataset.json is copied beside plans.json so that {results}/{dataset} is a complete model folder; config.yaml
# records the run's configuration (selection.json's `reproduce` command passes it to snakemake).
rule select:
    input:
        unpack(selection_inputs),
    output:
        selection=RESULTS.selection,
        dataset_json=RESULTS.dataset_json,
        config=RESULTS.config,
    log:
        RESULTS.log("select.log"),
    conda:
        ENV
    params:
        candidates=selection_params,
        folds=CV_FOLDS,
        results=results_dir,
        labels_dir=raw_labels_dir,
        test_images=test_images_folder(),
    script:
        "../scripts/select.py"
