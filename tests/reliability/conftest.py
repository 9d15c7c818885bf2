"""The reliability suite: faults, bad input and security, each test recording its figures
(`quantlab.testing.reliability.record`) for `quantlab check reliability`'s report.

Every test here is marked ``reliability`` (skipped by ``make test-fast``).
"""

from __future__ import annotations

from pathlib import Path

import pytest

HERE = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.reliability)
