"""Services layer: server processes (engines, backends, instances, registry). Imports only core."""
