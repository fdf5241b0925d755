"""Evaluating a registered model (``hrm eval``): accuracy curves against ACT segments and votes, and their plot.
A job: imports the layers below it (core, serving, tracking, data, train)."""
