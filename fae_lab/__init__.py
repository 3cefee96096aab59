"""fae-lab: a diagnostic lab for spectral bias in functional autoencoders.

The package is light to import: JAX is loaded by the modules that need it
(``fae_lab.models``, ``fae_lab.losses``, ``fae_lab.spectral``, ``fae_lab.train``), never here,
so the run store reader and the data tools start fast.
"""

__version__ = "0.1.0"
