"""Net definitions (NetSpec), the model registry, weights and net loading."""
