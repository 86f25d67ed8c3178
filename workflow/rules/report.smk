# What `snakemake --report report.html` shows besides the training curves (progress.png, marked in train.smk):
# tables of the dataset, plans, cross-validation and selection, and overlays of a few validation and test cases.
rule report_tables:
    input:
        unpack(report_table_inputs),
    output:
        dataset=report(
            RESULTS.report("dataset.html"),
            caption="../report/dataset.rst",
            category="1. Dataset",
        ),
        plans=report(
            RESULTS.report("plans.html"),
            caption="../report/plans.rst",
            category="2. Plans",
        ),
        crossval=report(
            RESULTS.report("crossval.html"),
            caption="../report/crossval.rst",
            category="4. Cross-validation",
        ),
        selection=report(
            RESULTS.report("selection.html"),
            caption="../report/selection.rst",
            category="5. Selection",
        ),
        budget=report(
            RESULTS.report("budget.html"),
            caption="../report/budget.rst",
            category="3. Training",
        ),
    log:
        RESULTS.log("report/tables.log"),
    conda:
        ENV
    params:
        fold_dirs=report_fold_dirs,
    script:
        "../scripts/report_tables.py"


rule report_overlays:
    input:
        unpack(report_overlay_inputs),
    output:
        validation=report(
            [RESULTS.report(f"overlays/validation_fold_{f}.png") for f in CV_FOLDS],
            caption="../report/overlay.rst",
            category="6. Overlays",
            subcategory="cross-validation",
        ),
        test=report(
            [RESULTS.report(f"overlays/test_{c}.png") for c in OVERLAY_TEST_CASES],
            caption="../report/overlay.rst",
            category="6. Overlays",
            subcategory="test images",
        ),
    log:
        RESULTS.log("report/overlays.log"),
    conda:
        ENV
    params:
        folds=CV_FOLDS,
        test_cases=OVERLAY_TEST_CASES,
        results=results_dir,
        raw=raw_dir,
        ending=DATASET.file_ending,
        channels=DATASET.num_channels,
    script:
        "../scripts/report_overlays.py"
