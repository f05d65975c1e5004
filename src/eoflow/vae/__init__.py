"""Byte-level encoder-decoder transformer with a beta-VAE bottleneck for pixel time series.

Modules: :mod:`~eoflow.vae.serialize` (s-expressions), :mod:`~eoflow.vae.tokenizer` (byte ids),
:mod:`~eoflow.vae.corruption` (T5 span corruption), :mod:`~eoflow.vae.model` (the network),
:mod:`~eoflow.vae.data` (streaming Zarr reader), :mod:`~eoflow.vae.train` (pretrain, finetune,
predict), :mod:`~eoflow.vae.explore` (latent space), :mod:`~eoflow.vae.config` (YAML schema),
:mod:`~eoflow.vae.presto` (Presto arrays -> samples store).  Importing this package does not import
torch; import the submodules you need.
"""
