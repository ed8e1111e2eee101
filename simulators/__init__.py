"""Seeded synthetic Hulunbuir population and the six simulated department systems."""
