"""The OMERO reader worker: a small process that talks Ice to OMERO and HTTP to idrserve.

omero-py needs zeroc-ice 3.6, which installs only on Python <= 3.10 (or from OME's prebuilt
wheels), while the server runs on 3.11+. So the OMERO calls live in their own process, started
with the interpreter of `scripts/setup_omero.sh`'s virtualenv, and the server reads raw tiles
and metadata from it over loopback HTTP (docs/omero.md). This package must therefore import
nothing else from idrserve and keep to Python 3.10 syntax and standard library.
"""
