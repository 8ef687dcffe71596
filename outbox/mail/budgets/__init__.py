"""May this message leave now? Kill switches, DNS blocks, suppression and every send budget."""
