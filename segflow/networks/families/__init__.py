"""One module per network family (segflow.networks.family.Family); segflow.networks lists them."""
