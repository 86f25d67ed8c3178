# Per-case crop to the non-zero region: shapes, spacing, bounding box and foreground intensities. The raw
# files are verify's inputs; a job that reads them after it depends on the batch's verify manifest instead
# (fewer files for Snakemake to track per case, which counts at 10 000 cases).
for batch, cases in BATCHES.items():

    rule:
        name:
            f"crop_{batch}"
        input:
            verified=RESULTS.batch_manifest("verify", batch),
        output:
            manifest=RESULTS.batch_manifest("crop", batch),
        log:
            RESULTS.log(f"crop/{batch}.log"),
        group:
            f"cases_{batch}"
        conda:
            ENV
        resources:
            mem_mb=raw_mem_mb(cases),
            runtime=per_case_runtime(cases, resampled=False),
        params:
            cases=cases,
            raw=raw_files(cases),
            outputs=case_files(
                RESULTS.records("crop"), records=".json", foreground="_fg.npy"
            ),
        script:
            "../scripts/crop.py"
