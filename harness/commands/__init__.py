"""One module per command group; `harness.cli` imports only the one a command line names."""
