"""Training HRM on Ray Train (``hrm train``), tracked in MLflow. Imports core, serving, tracking and data."""
