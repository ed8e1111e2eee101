"""Writer of the unified community database and the front-desk lookup."""
