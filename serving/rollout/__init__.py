"""Canary rollouts: analyse canary against stable on Prometheus data and move traffic.

``decision`` is the pure verdict, ``prometheus`` reads the numbers, ``kserve`` moves traffic on
InferenceService objects; ``servertarget`` (one server), ``fleet`` (a host's processes) and
``configmap`` (an InferenceService's pods) move our own traffic policy (``--mode inpod``, chosen
in ``targets``); ``cli`` wires them up.
"""
