"""Deployment: what a device or a model zoo receives from a trained task or backbone (ONNX graphs, released
packages, pruned and packed sparse backbones) and the multi-task demo's arguments."""
