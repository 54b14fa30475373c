"""GAN priors for JoIN: a pure-PyTorch StyleGAN2 (model), its trainer, loaders and FD-VGG.

Submodules are imported lazily by their users (``joinbench.gan.model``, ``.train``,
``.bank``, ``.fd``, ``.cli``) so importing this package stays cheap.
"""
