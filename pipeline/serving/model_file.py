"""The file MLflow runs to build the served model ("models from code"): the model is made here, not unpickled.

Logged by ``pipeline.tracking.registry.log_model``; it finds ``pipeline`` and ``hrm`` in the model's ``code/``
folder."""

import mlflow.models

from pipeline.serving.pyfunc import HRMSolver

mlflow.models.set_model(HRMSolver())
