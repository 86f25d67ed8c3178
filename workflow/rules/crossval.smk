# Per configuration: one summary over the validation cases of all folds. Per pair of configurations: the
# ensemble of their cross-validation probabilities, written and evaluated like a model's predictions.
rule crossval:
    input:
        lambda wildcards: validation_dirs(wildcards.configuration),
    output:
        summary=f"{OUT}/crossval/{{configuration}}/summary.json",
        table=f"{OUT}/crossval/{{configuration}}/per_case.csv",
    log:
        f"{LOGS}/crossval/{{configuration}}.log",
    wildcard_constraints:
        configuration="2d|3d_fullres|3d_lowres|3d_cascade_fullres",
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
        labels=[raw_label(c) for c in DATASET.cases],
    output:
        directory(f"{OUT}/crossval/ensemble__{{first}}__{{second}}"),
    log:
        f"{LOGS}/crossval/ensemble__{{first}}__{{second}}.log",
    wildcard_constraints:
        first="2d|3d_fullres|3d_lowres|3d_cascade_fullres",
        second="2d|3d_fullres|3d_lowres|3d_cascade_fullres",
    conda:
        ENV
    params:
        labels_dir=raw_labels_dir,
        tolerance=config["surface_tolerance_mm"],
    script:
        "../scripts/ensemble.py"
