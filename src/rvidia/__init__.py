"""RVIDIA: a master splits heavy jobs into chunks and workers on other computers run them.

The public Python API is ``connect``, ``LocalCluster``, ``JobFailed`` and the ``Job`` handle.
"""

from __future__ import annotations

__version__ = "0.1.0"

from rvidia.client.api import Cluster, Job, JobFailed, MasterUnreachable, connect
from rvidia.client.local import LocalCluster

__all__ = ["Cluster", "Job", "JobFailed", "LocalCluster", "MasterUnreachable", "connect", "__version__"]
