"""Enclaves from the outside: how an application owner's app becomes a measured enclave image,
how it is run, and how its attestation documents are issued and verified.

- image: :mod:`~nitronb.enclave.dockerfile` (reading an app's Dockerfile),
  :mod:`~nitronb.enclave.image` (the app image and the enclave image),
  :mod:`~nitronb.enclave.measure` (PCR0/1/2, as ``nitro-cli build-enclave`` computes them),
  :mod:`~nitronb.enclave.engine` (the container engine);
- running: :mod:`~nitronb.enclave.node_agent` and :mod:`~nitronb.enclave.node_agent_api` (the
  node agent), :mod:`~nitronb.enclave.backends` (container or sandboxed process),
  :mod:`~nitronb.enclave.sandbox`, :mod:`~nitronb.enclave.supervisor`,
  :mod:`~nitronb.enclave.runner` (a run from the client's side);
- attestation: :mod:`~nitronb.enclave.nsm` (the local Nitro Secure Module),
  :mod:`~nitronb.enclave.attestation` (the document format, parsed) and
  :mod:`~nitronb.enclave.verification` (verifying attestation documents).

What runs inside the enclave is :mod:`nitronb.enclave_os`, copied into images, never imported here
but by path. May import: the base modules, :mod:`nitronb.local` and :mod:`nitronb.enclave_os`.
"""
