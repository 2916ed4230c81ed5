"""The batch script of a slurm-proxy job: it only holds the allocation for ssh sessions."""

from __future__ import annotations

from .config import Profile


def batch_script(profile: Profile) -> str:
    return f"""#!/bin/sh
# slurm-proxy: holds this allocation for ssh sessions (profile {profile.name}).
exec sleep 2147483647
"""
