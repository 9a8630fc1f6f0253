"""The verification protocol, shared by training validation and evaluation: the metric
(``verification``: insightface's 10-fold accuracy, TAR@FAR, ROC) and pair sets
(``pair_sets``: loading ``.bin``/pairs.txt/bcolz sets, scoring them with any embedder).

It sits below ``train`` and ``evaluate`` (both read it) and imports neither."""
