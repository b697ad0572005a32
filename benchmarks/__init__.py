"""Benchmarks and the sample images they (and the tests) run on."""
