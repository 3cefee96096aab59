"""The decoder's and encoder's empirical NTK on the evaluation grid, beside measured learning rates.

Modules (import the one you need; this package imports nothing, so the dashboards can read
:mod:`fae_lab.ntk.rates` and :mod:`fae_lab.ntk.store` without JAX):

- :mod:`fae_lab.ntk.kernel` (JAX): dense and matrix-free NTK of a function on the grid, top
  eigenpairs, per-mode rates f_nᴴ K f_n;
- :mod:`fae_lab.ntk.model` (JAX): the FAE's Ker_dec, Ker_enc and Ker_FAE for test fields;
- :mod:`fae_lab.ntk.spectra` (NumPy): shell averages over |n| bins, eigenvector centroids;
- :mod:`fae_lab.ntk.store` (NumPy, xarray): ``ntk.zarr`` in the run store;
- :mod:`fae_lab.ntk.rates` (NumPy): measured per-band decay rates and their rank correlation
  with the NTK's;
- :mod:`fae_lab.ntk.cli` / :mod:`fae_lab.ntk.run` : ``fae-lab ntk RUN``.
"""
