"""Model control: the traffic-policy store that every process of a deployment follows."""
