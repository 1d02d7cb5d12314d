"""The request core: dataplane, router, shadow, validation, admission limits, fault injection.

It knows no protocol: adapters (serving.protocol) decode into serving.inference types and call
the dataplane; the model store (serving.repository.store) below it holds the loaded versions.
"""
