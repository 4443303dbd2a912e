"""Shared test set-up."""

import os

# Before torch is imported by any test module: see semipkd/__init__.py for why.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
