"""The client APIs llamashim speaks: one module (or folder) per dialect; see :mod:`llamashim.web.dialect`."""
