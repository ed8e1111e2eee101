"""Identity resolution across departments with stable person keys."""
