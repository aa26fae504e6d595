"""Registry of the prior methods that Uni-Instruct unifies (paper Table 1; digest §4), and of Uni-Instruct.

``names()`` lists the prior methods, ``get(name)`` returns a :class:`Method` (``get(UNI_INSTRUCT)``: Uni-Instruct
itself, the table's last row); an unknown name raises ValueError listing the valid ones. Each method's generator
loss is its published form (``methods/catalog.py``).
"""

from uniinstruct.methods.base import (EXTRAS, Method, PathBatch, data_fidelity_extra, gan_extra, regression_extra,
                                      reward_extra)
from uniinstruct.methods.catalog import UNI_INSTRUCT, catalog, uni_instruct_method

_REGISTRY: dict[str, Method] = {m.name: m for m in [*catalog(), uni_instruct_method()]}


def names() -> list[str]:
    """The prior methods, in the order of the paper's table (Uni-Instruct, its last row, is ``UNI_INSTRUCT``)."""
    return [name for name in _REGISTRY if name != UNI_INSTRUCT]


def get(name: str) -> Method:
    """The method called ``name``."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown method {name!r}; valid names: {', '.join(_REGISTRY)}")
    return _REGISTRY[name]


__all__ = ["EXTRAS", "UNI_INSTRUCT", "Method", "PathBatch", "data_fidelity_extra", "gan_extra", "get", "names",
           "regression_extra", "reward_extra"]
