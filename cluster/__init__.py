"""The local Kubernetes harness: tool build, control plane scripts and the test node agent."""
