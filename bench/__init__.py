"""Benchmarks of proxmox-operator: ratios against a baseline measured in the same process tree."""
