"""The MLflow side: runs and their metrics (``runs``), the logged model and the registry (``registry``), buffered
logging through outages (``buffer``), the code version (``version``). Imports ``pipeline.core`` and the served model
(``pipeline.serving``) only."""
