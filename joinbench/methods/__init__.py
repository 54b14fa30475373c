"""joinbench's own methods: JoIN and its variants (:mod:`.join`) and the ``predictions:DIR``
adapter (:mod:`.predictions`). Every other method lives in :mod:`joinbench.baselines` (the rule
is stated there). Importing this package registers them."""
from . import predictions  # noqa: F401
from . import join  # noqa: F401
