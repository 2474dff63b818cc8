"""regmix-plugin: RegMix data-mixture search for LitGPT.

``regmix_plugin.MixtureData`` is the DataModule to name in a ``litgpt pretrain`` recipe; the ``regmix``
command runs the other stages (prepare, sample, sweep, fit, optimize, recipe).
"""

__version__ = "0.1.0"


def __getattr__(name: str):
    # Lazy, so `import regmix_plugin` (and the `regmix` CLI) does not pay for torch/litgpt unless needed.
    if name == "MixtureData":
        from regmix_plugin.pretrain.mixture_data import MixtureData

        return MixtureData
    if name == "MixtureCallback":
        from regmix_plugin.pretrain.stream import MixtureCallback

        return MixtureCallback
    if name == "RegMixDController":
        from regmix_plugin.pretrain.controller import RegMixDController

        return RegMixDController
    raise AttributeError(f"module 'regmix_plugin' has no attribute {name!r}")


__all__ = ["MixtureCallback", "MixtureData", "RegMixDController", "__version__"]
