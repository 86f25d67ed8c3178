from segflow.jobs import run_job, write_batch_manifest
from segflow.preprocess import preprocess_batch

sm = snakemake  # noqa: F821 (injected by Snakemake)
run_job(
    sm.log[0],
    preprocess_batch,
    sm.params.cases,
    sm.params.raw["images"],
    sm.params.raw["labels"],
    sm.input.plans,
    sm.input.dataset_json,
    sm.params.configuration,
    list(sm.output.data),
    list(sm.output.seg),
    list(sm.output.properties),
)
write_batch_manifest(sm)
