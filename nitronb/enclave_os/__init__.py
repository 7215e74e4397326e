"""The enclave OS part of an enclave image: the launcher that attests, is provisioned and starts
the app. Everything in this package is measured into PCR1 and copied into enclave images, so it
imports nothing of nitronb outside this package: the Python standard library and
``cryptography`` only."""
