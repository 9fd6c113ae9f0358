"""autorec-bench: a comparative benchmark suite for AutoRec vs matrix factorization.

The core (``autorec.data``, ``autorec.splits``, ``autorec.metrics``) is framework-free: it imports
numpy, scipy and pandas only.  Each framework's models live in their own module
(``autorec.models.torch``, ``autorec.models.mxnet``) and are imported lazily.
"""

__version__ = "0.1.0"
