"""Core layer: configuration, run identity, errors and waiting. Imports nothing else of testlane."""
