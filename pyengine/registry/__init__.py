"""The registry side of the engine: the OCI distribution HTTP client (``client``), its
authentication and the stored credentials (``auth``), and pull/push between a registry and
the image store (``transfer``). Nothing here is imported by ``import pyengine.cli``."""
