"""NetAug (Cai et al., ICLR 2022) for tiny models: `netaug.NetAug` runs its recipe in your own training loop."""


def __getattr__(name: str):
    if name == "NetAug":  # imported on first use: `import netaug.config` stays light
        from netaug.train.loop import NetAug

        return NetAug
    raise AttributeError(f"module 'netaug' has no attribute {name!r}")
