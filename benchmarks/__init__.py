"""Step and input-pipeline benchmarks. Run as modules: `python -m benchmarks.step_bench`."""
