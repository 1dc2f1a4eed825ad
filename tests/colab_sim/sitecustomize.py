"""Imported at interpreter start when this folder is on PYTHONPATH: Colab's kernel has google.colab loaded.

So ``"google.colab" in sys.modules`` is true before the first cell, as on Colab.
"""

import google.colab  # noqa: F401
