"""Triton kernels of logo_attn, installed as ``logo_attn.kernels`` (never import as top-level ``kernels``)."""
