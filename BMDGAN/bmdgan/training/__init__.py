"""Training of the decomposition networks (stages 1 and 2, hierarchical learning), CPU, GPU and torchrun/DDP."""
