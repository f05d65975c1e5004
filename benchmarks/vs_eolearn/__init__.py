"""eoflow vs eo-learn 1.5.7 on the seed's feature chain, measured side by side (issue 7).

``python -m benchmarks.vs_eolearn prepare|run|report|all`` -- see ``README`` in RESULTS.md.

This package's modules are imported from two virtual environments: the project one (eoflow) and
``benchmarks/.work/venv-eolearn`` (eo-learn 1.5.7). Only :mod:`benchmarks.vs_eolearn.common` is
shared, and it needs nothing but numpy and the standard library.
"""
