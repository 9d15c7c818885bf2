"""The public namespace: sorted `__all__`, every name resolves, nothing private leaks."""

from __future__ import annotations

import importlib

import pytest

import quantlab


def test_all_is_sorted_and_resolves() -> None:
    assert quantlab.__all__ == sorted(quantlab.__all__)
    for name in quantlab.__all__:
        assert getattr(quantlab, name) is not None


def test_unknown_attribute_raises() -> None:
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        quantlab.nope  # noqa: B018


@pytest.mark.parametrize(
    "module",
    [
        "quantlab.core",
        "quantlab.bus",
        "quantlab.ingest",
        "quantlab.features",
        "quantlab.signals",
        "quantlab.execution",
        "quantlab.risk",
        "quantlab.portfolio",
        "quantlab.engine",
    ],
)
def test_package_all_is_sorted(module: str) -> None:
    mod = importlib.import_module(module)
    names = list(mod.__all__)
    assert len(names) == len(set(names))
    # isort-style order, as ruff's RUF022 keeps it: CONSTANTS, Classes, functions
    assert names == sorted(names, key=lambda n: (not n.isupper(), not n[:1].isupper(), n))
    for name in mod.__all__:
        assert hasattr(mod, name), f"{module}.{name}"
