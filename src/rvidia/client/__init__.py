"""Talking to a master from Python: the REST client, job handles, the executor, LocalCluster."""
