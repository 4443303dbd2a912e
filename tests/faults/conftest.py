"""The fault suite (docs/reliability.md): every test carries ``@pytest.mark.fault("what was done")``, one
marker per fault it injects. With ``SEMIPKD_RELIABILITY_JSON=path`` set, the session writes
the faults tried and survived to that file (``benchmarks/reliability.py`` sets it to
``reports/reliability.json``)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

_results: list[dict] = []


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    faults = [m.args[0] for m in item.iter_markers("fault")]
    if not faults:
        return
    if rep.when == "call" or (rep.when == "setup" and not rep.passed):
        status = "skipped" if rep.skipped else ("survived" if rep.passed else "failed")
        for f in reversed(faults):  # decorators apply bottom-up
            _results.append({"fault": f, "test": item.nodeid, "status": status,
                             "seconds": round(getattr(rep, "duration", 0.0), 2)})


def pytest_sessionfinish(session, exitstatus):
    path = os.environ.get("SEMIPKD_RELIABILITY_JSON")
    if not path or not _results:
        return
    from semipkd.io import atomic_write_json

    tried = [r for r in _results if r["status"] != "skipped"]
    atomic_write_json(Path(path), {
        "faults_tried": len(tried),
        "faults_survived": sum(r["status"] == "survived" for r in tried),
        "faults_skipped": sum(r["status"] == "skipped" for r in _results),
        "date": time.strftime("%Y-%m-%d"),
        "faults": _results,
    })
