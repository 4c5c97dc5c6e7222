"""Flax networks: im2col layers, MAXL's models, the K-Means autoencoder."""
