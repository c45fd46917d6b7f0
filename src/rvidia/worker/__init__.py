"""The worker: the agent that talks to the master and the pool of chunk processes."""
