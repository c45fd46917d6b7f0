"""Job kinds: one module each, found by ``rvidia.kinds.registry``."""
