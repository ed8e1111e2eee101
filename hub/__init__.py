"""Hub glue: settings, pipeline wiring used by DAGs and the CLI, and the `hub` command."""
