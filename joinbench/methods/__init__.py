"""joinbench's own methods (JoIN and its variants) and the ``predictions:DIR`` adapter.
Importing this package registers them."""
from . import predictions  # noqa: F401
from . import join  # noqa: F401
