"""How a loaded version is called: on the thread pool or inline (predictor), or through the
dynamic batcher (batching). Below the model store, above the runtimes.
"""
