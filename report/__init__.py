"""Presentation: the iteration report page (page.py) and the metric figures and tables it shares
with `src compare` (plots.py). Nothing here computes a metric."""
