"""The recipes shipped with regmix-plugin; installed as the package ``regmix_plugin.recipes``."""
