from segflow.crop import crop_batch
from segflow.jobs import run_job, write_batch_manifest

sm = snakemake  # noqa: F821 (injected by Snakemake)
run_job(
    sm.log[0],
    crop_batch,
    sm.params.cases,
    sm.params.raw["images"],
    sm.params.raw["labels"],
    list(sm.output.records),
    list(sm.output.foreground),
)
write_batch_manifest(sm)
