"""Flax networks: im2col layers, MAXL's models (Linen: `models`; NNX:
`nnx_models`), the K-Means autoencoder, and `functional`, which turns a
Linen or NNX module into the params, model state and apply the core runs."""
