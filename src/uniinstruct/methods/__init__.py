"""Registry of the prior methods that Uni-Instruct unifies (paper Table 1; digest §4).

``names()`` lists them, ``get(name)`` returns a :class:`Method`; an unknown name raises ValueError
listing the valid ones. Each method's generator loss is its published form (``methods/catalog.py``).
"""

from uniinstruct.methods.base import (EXTRAS, Method, PathBatch, data_fidelity_extra, gan_extra, regression_extra,
                                      reward_extra)
from uniinstruct.methods.catalog import catalog

_REGISTRY: dict[str, Method] = {m.name: m for m in catalog()}


def names() -> list[str]:
    """The registered methods, in the order of the paper's table."""
    return list(_REGISTRY)


def get(name: str) -> Method:
    """The method called ``name``."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown method {name!r}; valid names: {', '.join(_REGISTRY)}")
    return _REGISTRY[name]


__all__ = ["EXTRAS", "Method", "PathBatch", "data_fidelity_extra", "gan_extra", "get", "names", "regression_extra",
           "reward_extra"]
