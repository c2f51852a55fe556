"""Scripts that measure evogm's speed, memory and search quality; each prints what it measured.

Run them from the repository root as modules, e.g. ``python -m benchmarks.landscapes --quick``.
"""
