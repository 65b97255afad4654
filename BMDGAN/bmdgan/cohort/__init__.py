"""Virtual cohorts: simulated radiographs with ground truth from real CTs (bone, soft tissue and pose varied)."""
