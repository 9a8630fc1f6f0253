"""Stage 5, evaluate: models x pair sets (report.py, also `recface verify`), IJB-B/C (ijb.py), identification
with unknown rejection (classify.py, classifier.py). The metric itself is in ``protocol/``."""
