"""bmz-cosdd: unsupervised microscopy denoisers trained and shipped to the BioImage Model Zoo."""

__version__ = "0.1.0"
