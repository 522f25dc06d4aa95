"""Twins of pyai's models in other frameworks, the peers pyai is validated and timed against.

Only tests and benchmarks (benchmarks/, `pyai.bench`) import them; `import pyai` never does, so pyai
runs without the frameworks they need.
"""
