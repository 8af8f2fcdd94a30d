"""Benchmarks behind ``voip-codec bench``: they print figures, they never assert timings."""
