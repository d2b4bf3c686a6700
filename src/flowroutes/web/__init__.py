"""The local routes explorer served by `flowroutes serve`: a FastAPI app (`app.create_app`) and a static page.

Reads traces through the public API; never writes model files and never loads a model the command line did
not name. The inspect views read the model through `flowroutes.inspection` and the adapters.
"""
