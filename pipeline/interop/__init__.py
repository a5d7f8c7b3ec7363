"""Optional bridges to other lensing libraries.

:mod:`pipeline.interop.autoarray` hands lenspipe datasets to PyAutoArray / PyAutoLens and back
(``pip install "lenspipe[autoarray]"``, Python >= 3.12). Importing this package loads neither
autoarray nor JAX: the library is imported when a function is called.
"""

from __future__ import annotations

from pipeline.interop.autoarray import from_autoarray, to_autoarray, to_autoarray_from_store

__all__ = ["from_autoarray", "to_autoarray", "to_autoarray_from_store"]
