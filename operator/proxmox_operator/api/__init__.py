"""The ProxmoxCluster API, one package per version (``v1alpha1``): the models the CRD is generated from, and the
condition types and reasons the operator writes."""
