"""Front layer: the `testlane` command."""
