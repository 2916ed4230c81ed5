"""slurm-proxy: ssh straight onto the compute node of your Slurm job."""

__version__ = "0.1.0"
