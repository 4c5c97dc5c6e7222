"""Figures and tables of finished runs (`python -m experiments.analyze`).

`runs` finds and reads run folders; `curves` (paper Fig. 3 and 4),
`knowledge` (what the labels know, DESIGN §6) and `usage` read
metrics.jsonl; `table` writes results.md; `forward` runs the
restored networks on test images for `tsne` (Fig. 5), `invented` (Fig. 6)
and the end-of-training label histogram in `usage` (restored by
`maxl_jax.training.restore`); `plots` saves a figure beside its numbers;
`report` writes report.md; `build` puts them together. Nothing here
writes into a run folder.
"""
