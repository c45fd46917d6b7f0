"""Master tests (a package, so test module names like test_api stay unique across tests/)."""
