"""Browser tests of the dashboard (a package, so its module names stay unique across tests/)."""
