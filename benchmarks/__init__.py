"""Side-by-side benchmarks of attribution methods."""
