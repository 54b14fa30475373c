"""The training wing: what every training (GAN priors, encoders, the U-Net) shares."""
