"""autorec-bench: a comparative benchmark suite for AutoRec vs matrix factorization.

The core (``autorec.data``, ``autorec.splits``, ``autorec.metrics``) is framework-free: it imports
numpy, scipy and pandas only.  Each framework's models live in their own module
(``autorec.models.torch``, ``autorec.models.mxnet``) and are imported lazily.
"""

from autorec.env import apply_wait_policy

__version__ = "0.1.0"

# The OpenMP wait policy AUTOREC_OMP_WAIT_POLICY asks for (default: the runtime's own; see
# autorec.env), set before torch or mxnet load their runtime and inherited by every worker process.
apply_wait_policy()
