"""Benchmarks behind ``voip-codec bench``: they print figures, they never assert timings.

A distribution of its own (``voip-codec-bench``, in ``benchmarks/`` of the repository), kept out
of the runtime wheel; it plugs ``bench`` into the ``voip-codec`` command through the
``voip_codec.cli_plugins`` entry point group (:func:`voip_codec_bench.cli.add_parser`).
"""
