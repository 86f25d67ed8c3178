# Per batch of cases x data folder: transpose, crop, normalise, resample, class locations.
# plans.json is an ancient() input: rewriting it with the same content reruns nothing. What matters for
# the data (spacing, normalisation, resampling, ...) is a param, so a real change reruns every case.
# One rule per batch, its {folder} any data folder the plans can have (DATA_FOLDERS says whose plans make
# each; those the plans lack are never asked for). The batch's manifest is its only output (case_files
# says why): what reads a whole data folder depends on the manifests.
for batch, cases in BATCHES.items():

    rule:
        name:
            f"preprocess_{batch}"
        input:
            verified=RESULTS.batch_manifest("verify", batch),
            plans=preprocessing_plans,
            dataset_json=ancient(DATASET_JSON),
        output:
            manifest=RESULTS.batch_manifest("preprocessed/{folder}", batch),
        log:
            RESULTS.log(f"preprocess/{{folder}}/{batch}.log"),
        benchmark:
            RESULTS.benchmark(f"preprocess/{{folder}}/{batch}.tsv")
        wildcard_constraints:
            folder=DATA_FOLDER_PATTERN,
        conda:
            ENV
        resources:
            mem_mb=preprocessing_mem(cases),
            runtime=per_case_runtime(cases),
        params:
            cases=cases,
            raw=raw_files(cases),
            configuration=preprocessing_configuration,
            signature=preprocessing_params,
            outputs=preprocessed_case_files,
        script:
            "../scripts/preprocess.py"
