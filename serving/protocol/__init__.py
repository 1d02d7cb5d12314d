"""Protocol adapters: decode wire formats into serving.types, call the dataplane, encode back."""
