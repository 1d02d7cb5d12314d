"""Canary rollouts: analyse canary against stable on Prometheus data and move traffic.

``decision`` is the pure verdict, ``prometheus`` reads the numbers, ``kserve`` and ``inpod``
move traffic (InferenceService objects, or our own traffic policy), ``cli`` wires them up.
"""
