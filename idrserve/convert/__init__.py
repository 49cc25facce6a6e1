"""`idrserve convert`: TIFF-family files and OME-Zarr into OME-Zarr (NGFF 0.4 or 0.5).

The pieces, each small enough to read alone (the whole story: docs/convert.md):

| module | what |
|---|---|
| `options.py` | the options and `ConvertError` (light: the CLI parser imports it) |
| `metadata.py` | channel names, colours, physical sizes from OME-XML and vendor tags |
| `inputs.py`, `tiffin.py`, `zarrin.py` | the input as bands of rows (tifffile's zarr store, zarr) |
| `plan.py` | the output's levels, chunks, shards and bands; the 2×2 mean |
| `output.py` | the output arrays and the completion journal |
| `document.py` | the NGFF attributes: `multiscales` (units, scales) and `omero` |
| `readback.py` | the finished output read through idrserve's Zarr source |
| `run.py` | the driver: stream bands, build the pyramid, resume, validate, rename |
| `cli.py` | the `convert` subcommand: arguments, progress bar, one-line errors |
"""

from idrserve.convert.options import ConvertError, Options, OptionsError

__all__ = ["ConvertError", "Options", "OptionsError"]
