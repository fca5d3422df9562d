"""Benchmarks (`python -m app bench ...`): stage figures (stages.py), fan-out, the naive baseline, and
the end-to-end run under websocket load (e2e/)."""
