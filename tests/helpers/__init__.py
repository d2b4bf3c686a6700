"""Shared helpers of the tests: tiny models, families, the float64 reference, the browser harness."""
