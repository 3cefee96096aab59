"""Test fixtures that need no JAX: fabricated runs written with the real store writer and the
real data generator (:mod:`fae_lab.testing.fake_runs`), for tests, dashboard work and the
dashboard benchmark. Not used by training."""
