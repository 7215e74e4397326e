"""What people stepping through the notebooks use: the steps (one verb per notebook, reached as
``from nitronb import steps``), their displays and pictures, the widgets, and the papermill runner
that executes the notebooks for ``nitronb walkthrough``, alone or in batches.

The top layer beside :mod:`nitronb.cli`: it may import every other part of nitronb, and nothing
below imports it.
"""
