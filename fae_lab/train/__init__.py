"""The training engine: ``fae-lab train`` and the functions behind it.

Importing this package is light; :mod:`fae_lab.train.run` loads JAX.
"""
