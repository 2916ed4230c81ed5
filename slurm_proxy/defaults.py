"""Defaults that the config and the layers it configures share, each spelled once: the config
reads them as its keys' defaults, and the login layer as its parameters' (without either
importing the other)."""

from __future__ import annotations

AGENT_IDLE = 600  # seconds the login agent keeps a login no connect uses (ssh's ControlPersist 10m)
