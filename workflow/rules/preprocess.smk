# Per configuration x batch of cases: transpose, crop, normalise, resample, class locations.
# plans.json is an ancient() input: rewriting it with the same content reruns nothing. What matters for
# the data (spacing, normalisation, resampling, ...) is a param, so a real change reruns every case.
# One rule per data configuration a plan can have (those it lacks are never asked for): literal output
# paths keep the DAG of a large dataset fast to build (a {configuration} wildcard in thousands of per-case
# outputs made every lookup of a preprocessed file scan all of them).
for configuration in DATA_CONFIGURATIONS:
    for batch, cases in BATCHES.items():

        rule:
            name:
                f"preprocess_{configuration}_{batch}"
            input:
                images=[f for c in cases for f in raw_images(c)],
                labels=[raw_label(c) for c in cases],
                plans=planned_plans(configuration),
                dataset_json=ancient(DATASET_JSON),
            output:
                data=per_case(f"{OUT}/preprocessed/{configuration}/{{case}}.npy", cases),
                seg=per_case(
                    f"{OUT}/preprocessed/{configuration}/{{case}}_seg.npy", cases
                ),
                properties=per_case(
                    f"{OUT}/preprocessed/{configuration}/{{case}}.json", cases
                ),
            log:
                f"{LOGS}/preprocess/{configuration}/{batch}.log",
            benchmark:
                f"{OUT}/benchmarks/preprocess/{configuration}/{batch}.tsv"
            conda:
                ENV
            resources:
                mem_mb=lambda wildcards, input: batch_mem_mb(
                    wildcards, input, factor=60
                ),
            params:
                cases=cases,
                channels=DATASET.num_channels,
                configuration=configuration,
                signature=preprocessing_params(configuration),
            script:
                "../scripts/preprocess.py"
