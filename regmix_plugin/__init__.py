"""regmix-plugin."""
