"""The `regmix` subcommands, one module per stage, in the pipeline's order (see regmix_plugin/__main__.py)."""
