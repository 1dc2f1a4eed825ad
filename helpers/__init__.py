"""gemma-facts: teach a small Gemma to answer only from the document it is given.

The package holds the logic; the notebooks in ``notebooks/`` explain and call into it.
Submodules are imported lazily by their users so that ``import helpers`` stays cheap.
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
