"""Measurement logic of the analysis tools (``tools/analysis_tools``), importable and testable as a library."""
