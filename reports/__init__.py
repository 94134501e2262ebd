"""Programs that combine the Captum plugin, the Lightning package and the benchmarks:
the demo's report (``python -m reports.demo``, run by ``make demo``)."""
