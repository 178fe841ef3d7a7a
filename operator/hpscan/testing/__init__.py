"""Stand-ins for systems that cannot run on a developer machine; used by the tests, named as stand-ins."""
