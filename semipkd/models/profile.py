"""Command line of the cost profile: ``python -m semipkd.models.profile NAME... [options]``.

Prints parameters, MACs and CPU (and GPU) latency per backbone; ``all`` profiles every
registered one. The functions are in :mod:`semipkd.models.cost` and exported by the package
(``from semipkd.models import profile``); import them from there, not from this module.
"""

from .cost import main

if __name__ == "__main__":
    raise SystemExit(main())
