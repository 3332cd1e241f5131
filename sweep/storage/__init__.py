"""Where sweep state lives: one storage root per sweep that every node reaches.

- :mod:`sweep.storage.posix`: create-if-absent commits and single-writer replaces on a
  shared POSIX filesystem;
- :mod:`sweep.storage.lease`: renewable, expiring claims (configuration and driver leases);
- :mod:`sweep.storage.visibility`: refuse a root, or a tracking server, that a node cannot reach.
"""

from sweep.storage.lease import LEASE_TTL_S, Lease, LeaseLost, LeaseRecord, this_process
from sweep.storage.posix import PosixStorage

__all__ = ["LEASE_TTL_S", "Lease", "LeaseLost", "LeaseRecord", "PosixStorage", "this_process"]
