"""Ray Tune sweeps of the training job (``hrm tune``): halting limits, H/L cycle counts and other training-config
values, one Ray Train run per trial, ASHA early stopping on every evaluation, MLflow parent and nested runs.
A job: imports the layers below it (core, serving, tracking, data, train)."""
