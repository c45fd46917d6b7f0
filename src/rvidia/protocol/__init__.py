"""Wire types shared by the master and the workers; depends on nothing else of rvidia."""
