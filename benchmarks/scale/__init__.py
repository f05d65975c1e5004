"""Scale curve of eoflow on the SYNTHETIC source: ``python -m benchmarks.scale``."""
