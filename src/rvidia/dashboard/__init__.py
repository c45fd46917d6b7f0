"""Static files of the dashboard the master serves at ``/``."""
