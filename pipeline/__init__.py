"""The Ray and MLflow jobs around HRM: data generation, training, sweeps, tracking and serving.

Layers, bottom up (a package imports only from layers below it; tests/pipeline/test_layers.py holds the list):
``core`` (foundations) → ``serving`` (the served model) → ``tracking`` (MLflow) → ``data`` → ``train`` → the jobs
above them (``evaluate``, ``tune``, ``benchmark``, ``demo``) → ``explore`` (the notebooks' helpers) → ``cli``.
"""
