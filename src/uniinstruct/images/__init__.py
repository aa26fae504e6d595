"""The image tiers: offline data sets, a digits classifier for a fast feature space, and FID through clean-fid."""
