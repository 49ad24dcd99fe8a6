"""Analysis: numbers about models and machines, no artifacts (task parameters, latency and memory benchmark,
sparse storage and latency, the CUDA self-check)."""
