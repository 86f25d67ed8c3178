# Aggregate the per-case crop records into nnU-Net's dataset fingerprint.
rule fingerprint:
    input:
        records=[f"{OUT}/crop/{c}.json" for c in DATASET.cases],
        foreground=[f"{OUT}/crop/{c}_fg.npy" for c in DATASET.cases],
    output:
        f"{OUT}/fingerprint.json",
    log:
        f"{LOGS}/fingerprint.log",
    benchmark:
        f"{OUT}/benchmarks/fingerprint.tsv"
    conda:
        ENV
    resources:
        mem_mb=lambda wildcards, input: int(1000 + 3 * input.size_mb),
    script:
        "../scripts/fingerprint.py"
