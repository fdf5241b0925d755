"""Training HRM on Ray Train, tracked in MLflow."""
