"""Face embedding models: backbones (one file per family), margin heads, and the factory."""
