"""joinbench: a benchmark and evaluation harness for intrinsic image decomposition.

Public entry points are the registries (``create_method``, ``create_dataset``,
``create_metric``, ``create_forward_model`` and their ``list_*``) and the ``joinbench`` CLI.
"""
from .registry import (  # noqa: F401
    create_dataset, create_forward_model, create_method, create_metric,
    list_datasets, list_forward_models, list_methods, list_metrics,
    register_dataset, register_forward_model, register_method, register_metric,
)

__version__ = "0.1.0"
