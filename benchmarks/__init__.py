"""RVIDIA's benchmarks (see benchmarks/README.md); not part of the installed package."""
