"""Engines: code that integrates a network's learning process.

* :mod:`neuro_meta.engines.numpy_engine` -- vectorised numpy, batched over tasks.
* :mod:`neuro_meta.engines.brian2_engine` -- the same equations simulated by Brian2.
"""
