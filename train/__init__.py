"""nordlys.train: fine-tune an ImageNet backbone into a two-class aurora/other model (needs torch)."""
