"""Benchmarks of pyro-vae: speed as ratios against plain-PyTorch floors, quality against the
literature. ``python -m benchmarks`` (``make bench``) and ``python -m benchmarks.published``
(``make bench-published``) write BENCHMARKS.md; see that file for the figures and their commands.
Never imported by the package or by ``make test`` (one smoke test runs the CLI at toy size)."""
