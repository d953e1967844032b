"""The image side of the engine: the content-addressed store, references and archives."""
