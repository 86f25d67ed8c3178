"""segflow: the nnU-Net method as a Snakemake workflow.

The package mirrors the workflow's stages, one module per stage. Every module can be used and tested
without Snakemake; the rule scripts in ``workflow/scripts`` only translate the ``snakemake`` object into
calls of these functions.
"""

import os

__version__ = "0.1.0"

# OpenMP threads with nothing to do sleep instead of spinning (libgomp, torch's OpenMP, spins by default). On a
# machine busier than its cores (Snakemake's other jobs, loader workers, a shared node) spinning threads take
# the cores from those that work: two 2-thread trainings on 2 cores ran 2.4 times faster passive; alone, no
# slower (README, "A busy CPU"). Set on import, before torch starts its OpenMP: the workflow (its jobs inherit
# it) and `segflow` commands import segflow first. A value of the user's own is kept.
WAIT_POLICY_SET_BY_SEGFLOW = "OMP_WAIT_POLICY" not in os.environ
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
