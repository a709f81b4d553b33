"""embedcache: run frozen backbones once, train fusion heads from cached HDF5 embedding stores."""

__version__ = "0.1.0"
