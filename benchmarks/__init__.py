"""Benchmarks of logo_attn: op timings against the peers a user would write, and the cost scaling study.

Run the scripts from the repository root (``python benchmarks/bench_ops.py``,
``python benchmarks/flops_vs_timesformer.py --quick``); each puts the root on ``sys.path`` so the
shared modules here import as ``benchmarks.*`` and an uninstalled checkout still finds ``logo_attn``.
"""
