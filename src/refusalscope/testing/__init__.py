"""Slow, literal implementations of the fast paths (SAE-in-the-loop LA-IG, full-decode
clamping): what the tests and benchmarks compare the fast ones against."""
