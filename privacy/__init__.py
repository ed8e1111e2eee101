"""Privacy engine: policy as code, keyring, pseudonymisation operators, reveal and audit."""
