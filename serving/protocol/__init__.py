"""Protocol adapters: decode wire formats into serving.inference, call the dataplane, encode back."""
