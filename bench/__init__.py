"""Benchmarks of notebook-agent against the real clearml-agent, on one machine and the embedded server."""
