"""Shared test set-up: tests run on the CPU and never touch the network."""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
