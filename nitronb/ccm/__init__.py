"""The manager: a CCM-shaped service (``/v1/...``) and its client.

``CCMClient`` is what notebooks use; ``nitronb.ccm.service.Service`` holds the rules and
``nitronb.ccm.server`` runs them over HTTP.
"""

from __future__ import annotations

from nitronb.ccm.client import CCMClient, manager_url

__all__ = ["CCMClient", "manager_url", "app_config_id", "open_envelope", "new_enclave_key",
           "workflow_graph", "new_node_id", "APP_CONFIG_PREFIX"]


def __getattr__(name: str):
    if name in ("app_config_id", "workflow_graph", "new_node_id", "APP_CONFIG_PREFIX"):
        from nitronb.ccm import runtime

        return getattr(runtime, name)
    if name in ("open_envelope", "new_enclave_key"):
        from nitronb.ccm import provisioning

        return getattr(provisioning, name)
    raise AttributeError(f"module 'nitronb.ccm' has no attribute {name!r}")
