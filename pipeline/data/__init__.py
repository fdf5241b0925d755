"""Dataset generation (``hrm data build``, Ray Data) and loading (``pipeline.data.loader``).

Submodules import Ray only when a function needs it; importing this package is cheap.
"""
