"""The served model: the MLflow pyfunc (``pyfunc``, built by ``model_file``), the code it ships (``code``), its
answers read back (``answers``) and ``hrm serve``'s supervisor (``supervise``). Imports ``pipeline.core`` only."""
