"""Studies: training runs and sweeps that answer a question (transfer, dense tasks, hyper-parameter grid, the main job),
the rank allocation and linear probing they run, and the figure drawn from their results."""
