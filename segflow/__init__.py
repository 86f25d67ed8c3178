"""segflow: the nnU-Net method as a Snakemake workflow.

The package mirrors the workflow's stages, one module per stage. Every module can be used and tested
without Snakemake; the rule scripts in ``workflow/scripts`` only translate the ``snakemake`` object into
calls of these functions.
"""

__version__ = "0.1.0"
