"""The scheduler and its records: pure logic, no I/O and no clock of its own."""
