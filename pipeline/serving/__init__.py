"""Serving trained models: the MLflow pyfunc wrapper."""
