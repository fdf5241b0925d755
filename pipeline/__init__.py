"""The Ray and MLflow jobs around HRM: data generation, training, sweeps, tracking and serving."""
