# Aggregate the per-case crop records into nnU-Net's dataset fingerprint.
rule fingerprint:
    input:
        batch_manifests("crop"),
    output:
        RESULTS.fingerprint,
    log:
        RESULTS.log("fingerprint.log"),
    benchmark:
        RESULTS.benchmark("fingerprint.tsv")
    conda:
        ENV
    resources:
        mem_mb=lambda wildcards, input: int(1000 + 3 * input.size_mb),
    script:
        "../scripts/fingerprint.py"
