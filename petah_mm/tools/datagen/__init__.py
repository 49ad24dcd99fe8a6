"""Data generation: the generated datasets (toy and real-material sets) that the tests, demos and studies use."""
